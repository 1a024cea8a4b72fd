//! `GET /mcp/insights`: the seed's analyses, one per call, computed from the data rather than
//! left to a model reading rows. The SQL ones (`services::insights`) answer with the statement
//! they ran; `dependencies`, `timeline` and `compare` are `/mcp/stats` figures arranged for the
//! question.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
};
use remora_kfl::{CompileOptions, Table};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AnalyzerState, ApiError, stats};
use crate::services::{
    insights::{Analysis, Params, statements},
    query,
    sql::{self, Limits, Sources},
};

/// `/mcp/insights` parameters.
#[derive(Debug, Deserialize)]
pub struct InsightsQuery {
    db: String,
    analysis: String,
    #[serde(default)]
    kfl: String,
    limit: Option<usize>,
    /// retries: the longest gap between repeats, ms (default 1000).
    window_ms: Option<u64>,
    /// journey: `correlation` or `client`; correlation: `dst` or `src`.
    by: Option<String>,
    /// timeline: `second` or `minute` (default).
    resolution: Option<String>,
    /// compare: window A and B, unix ms.
    a_start: Option<i64>,
    a_end: Option<i64>,
    b_start: Option<i64>,
    b_end: Option<i64>,
    /// Include the SQL each part ran.
    #[serde(default)]
    sql: bool,
}

/// Every analysis name, for errors and discovery.
pub const ANALYSES: &str = "retries, churn, resets, correlation, nesting, errors_503, \
                            dependencies, journey, timeline, compare";

/// `GET /mcp/insights?db=&analysis=&kfl=&limit=...`.
pub async fn insights(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<InsightsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::bad(format!(
            "{e}; `db` and `analysis` ({ANALYSES}) are required"
        ))
    })?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    match q.analysis.as_str() {
        "dependencies" | "timeline" | "compare" => stats_based(&s, &q, limit).await,
        name => {
            let analysis = Analysis::parse(name).ok_or_else(|| {
                ApiError::bad(format!("analysis `{name}` is not one of: {ANALYSES}"))
            })?;
            let params = Params {
                kfl: q.kfl.clone(),
                limit,
                window_ms: q.window_ms.unwrap_or(1000),
                by: q.by.clone().unwrap_or_default(),
            };
            let sources = Sources {
                dissection: Some(s.jobs.db(&q.db)?),
                ..Sources::default()
            };
            let _slot = s.query_slot().await?;
            let limits = Limits {
                max_rows: limit,
                ..Limits::default()
            };
            let ctx = sql::session(&sources, &limits).await?;
            let mut out = Map::new();
            out.insert("analysis".into(), json!(name));
            out.insert(
                "filter_applies_to".into(),
                json!(if analysis.over_conns() {
                    "conns"
                } else {
                    "calls"
                }),
            );
            for (part, statement) in statements(analysis, &params) {
                let answer = sql::run(&ctx, &statement, &limits).await?;
                let rows = super::json::rows_named(&answer.batches, true, 256, |c| c);
                out.insert(part.into(), Value::Array(rows));
                if q.sql {
                    out.insert(format!("{part}_sql"), json!(statement));
                }
            }
            Ok(Json(Value::Object(out)))
        }
    }
}

async fn stats_based(
    s: &AnalyzerState,
    q: &InsightsQuery,
    limit: usize,
) -> Result<Json<Value>, ApiError> {
    let (_slot, ctx) = super::calls::open_calls(s, &q.db).await?;
    let (df, _) = query::filtered(&ctx, Table::Calls, &q.kfl, &CompileOptions::default()).await?;
    let out = match q.analysis.as_str() {
        "dependencies" => {
            // Calls per second over the selection's own span.
            let span = df
                .clone()
                .aggregate(
                    vec![],
                    vec![
                        datafusion::functions_aggregate::expr_fn::min(
                            datafusion::logical_expr::col("timestamp"),
                        )
                        .alias("first"),
                        datafusion::functions_aggregate::expr_fn::max(
                            datafusion::logical_expr::col("timestamp"),
                        )
                        .alias("last"),
                    ],
                )?
                .collect()
                .await?;
            let seconds = span_seconds(&span).max(1.0);
            let mut edges = stats::groups(&df, stats::group_key("edge")?, limit, false).await?;
            for e in &mut edges {
                let n = e["count"].as_f64().unwrap_or(0.0);
                e["rate_per_s"] = json!((n / seconds * 1000.0).round() / 1000.0);
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                if let Some((src, dst)) = key.split_once(" → ") {
                    e["src"] = json!(src);
                    e["dst"] = json!(dst);
                }
            }
            json!({"analysis": "dependencies", "span_s": (seconds * 1000.0).round() / 1000.0, "edges": edges})
        }
        "timeline" => {
            let resolution = q.resolution.as_deref().unwrap_or("minute");
            if !matches!(resolution, "second" | "minute") {
                return Err(ApiError::bad("resolution is second or minute"));
            }
            let points =
                stats::groups(&df, stats::group_key(resolution)?, limit.max(1), true).await?;
            json!({"analysis": "timeline", "resolution": resolution, "points": points})
        }
        _ => {
            let (Some(a0), Some(a1), Some(b0), Some(b1)) = (q.a_start, q.a_end, q.b_start, q.b_end)
            else {
                return Err(ApiError::bad(
                    "compare needs a_start, a_end, b_start, b_end (unix ms, inclusive)",
                ));
            };
            let a = stats::window(df.clone(), Some(a0), Some(a1))?;
            let b = stats::window(df, Some(b0), Some(b1))?;
            let path = stats::group_key("path")?;
            let (a_paths, b_paths) = (
                stats::groups(&a, path.clone(), limit, false).await?,
                stats::groups(&b, path, limit, false).await?,
            );
            // Side by side per path, the paths of either window.
            let mut paths: Vec<Value> = Vec::new();
            let find =
                |list: &[Value], key: &Value| list.iter().find(|g| &g["key"] == key).cloned();
            let mut keys: Vec<Value> = a_paths.iter().map(|g| g["key"].clone()).collect();
            for g in &b_paths {
                if !keys.contains(&g["key"]) {
                    keys.push(g["key"].clone());
                }
            }
            for key in keys.into_iter().take(limit) {
                let (x, y) = (find(&a_paths, &key), find(&b_paths, &key));
                let p99 =
                    |v: &Option<Value>| v.as_ref().and_then(|g| g["latency_us"]["p99"].as_i64());
                let rate = |v: &Option<Value>| v.as_ref().and_then(|g| g["error_rate"].as_f64());
                paths.push(json!({
                    "path": key,
                    "a": x, "b": y,
                    "p99_change_us": p99(&y).zip(p99(&x)).map(|(b, a)| b - a),
                    "error_rate_change": rate(&y).zip(rate(&x)).map(|(b, a)| ((b - a) * 10000.0).round() / 10000.0),
                }));
            }
            json!({
                "analysis": "compare",
                "a": {"start": a0, "end": a1, "overall": stats::overall(&a).await?},
                "b": {"start": b0, "end": b1, "overall": stats::overall(&b).await?},
                "paths": paths,
            })
        }
    };
    Ok(Json(out))
}

/// Seconds between the `first` and `last` timestamps of a one-row batch.
fn span_seconds(batches: &[datafusion::arrow::array::RecordBatch]) -> f64 {
    use datafusion::arrow::{
        array::{Array, AsArray},
        compute::cast,
        datatypes::{DataType, Int64Type},
    };
    let Some(b) = batches.first().filter(|b| b.num_rows() > 0) else {
        return 0.0;
    };
    let ns = |name: &str| -> Option<i64> {
        let c = b.column_by_name(name)?;
        if c.is_null(0) {
            return None;
        }
        let c = cast(c, &DataType::Int64).ok()?;
        Some(c.as_primitive::<Int64Type>().value(0))
    };
    match (ns("first"), ns("last")) {
        (Some(a), Some(z)) => (z - a) as f64 / 1e9,
        _ => 0.0,
    }
}
