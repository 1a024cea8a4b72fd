//! `/mcp/stats`: the seed's analysis as numbers — count, error rate, status classes, latency
//! percentiles — overall and per group (path, service, pod, status, minute, or any scalar
//! field), in one query instead of reading a thousand rows.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query, State},
};
use datafusion::{
    arrow::{
        array::{Array, AsArray, RecordBatch},
        compute::cast,
        datatypes::{DataType, Float64Type, Int64Type},
    },
    common::ScalarValue,
    dataframe::DataFrame,
    functions::expr_fn::{coalesce, concat, date_trunc, nullif},
    functions_aggregate::expr_fn::{count, percentile_cont, sum},
    logical_expr::{Expr, case, col, lit, when},
};
use remora_kfl::{CompileOptions, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AnalyzerState, ApiError, json::kfl_name};
use crate::services::query;

/// `/mcp/stats` parameters.
#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    db: String,
    #[serde(default)]
    kfl: String,
    group_by: Option<String>,
    limit: Option<usize>,
    /// From this time, unix ms.
    start: Option<i64>,
    /// Until this time, unix ms, inclusive.
    end: Option<i64>,
}

/// A call failed: an error type, an HTTP 5xx, a gRPC status other than OK, a DNS rcode.
pub fn is_error() -> Expr {
    let status = col("status_code");
    col("error_type")
        .is_not_null()
        .or(col("protocol")
            .in_list(vec![lit("HTTP"), lit("HTTP/2")], false)
            .and(status.clone().gt_eq(lit(500))))
        .or(col("protocol")
            .eq(lit("gRPC"))
            .and(coalesce(vec![col("grpc_status"), lit(0i64)]).not_eq(lit(0i64))))
        .or(col("protocol").eq(lit("DNS")).and(status.not_eq(lit(0))))
}

fn status_class() -> Result<Expr, ApiError> {
    let s = col("status_code");
    case(lit(true))
        .when(s.clone().eq(lit(0)), lit("none"))
        .when(s.clone().lt(lit(200)), lit("1xx"))
        .when(s.clone().lt(lit(300)), lit("2xx"))
        .when(s.clone().lt(lit(400)), lit("3xx"))
        .when(s.clone().lt(lit(500)), lit("4xx"))
        .otherwise(lit("5xx"))
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })
}

fn aggregates() -> Vec<Expr> {
    let p = |q: f64| percentile_cont(col("elapsed_time").sort(true, false), lit(q));
    vec![
        count(lit(1)).alias("count"),
        sum(when(is_error(), lit(1i64))
            .otherwise(lit(0i64))
            .unwrap_or(lit(0i64)))
        .alias("errors"),
        p(0.5).alias("p50"),
        p(0.9).alias("p90"),
        p(0.99).alias("p99"),
    ]
}

fn num(b: &RecordBatch, name: &str, row: usize) -> Value {
    let Some(c) = b.column_by_name(name) else {
        return Value::Null;
    };
    if c.is_null(row) {
        return Value::Null;
    }
    match c.data_type() {
        DataType::Float32 | DataType::Float64 => cast(&c.slice(row, 1), &DataType::Float64)
            .map_or(Value::Null, |a| {
                json!(a.as_primitive::<Float64Type>().value(0).round() as i64)
            }),
        _ => cast(&c.slice(row, 1), &DataType::Int64).map_or(Value::Null, |a| {
            json!(a.as_primitive::<Int64Type>().value(0))
        }),
    }
}

fn summary(b: &RecordBatch, row: usize) -> Value {
    let count = num(b, "count", row).as_i64().unwrap_or(0);
    let errors = num(b, "errors", row).as_i64().unwrap_or(0);
    json!({
        "count": count,
        "errors": errors,
        "error_rate": if count > 0 { (errors as f64 / count as f64 * 10000.0).round() / 10000.0 } else { 0.0 },
        "latency_us": {"p50": num(b, "p50", row), "p90": num(b, "p90", row), "p99": num(b, "p99", row)},
    })
}

/// Count, errors, latency percentiles and status classes of `df`'s calls.
pub(super) async fn overall(df: &DataFrame) -> Result<Value, ApiError> {
    let totals = df
        .clone()
        .aggregate(vec![], aggregates())?
        .collect()
        .await?;
    let mut out = match totals.first() {
        Some(b) if b.num_rows() > 0 => summary(b, 0),
        _ => json!({"count": 0}),
    };
    let classes = df
        .clone()
        .aggregate(
            vec![status_class()?.alias("class")],
            vec![count(lit(1)).alias("count")],
        )?
        .collect()
        .await?;
    let mut status = serde_json::Map::new();
    for b in &classes {
        let names = cast(b.column(0), &DataType::Utf8).map_err(|e| ApiError::bad(e.to_string()))?;
        let names = names.as_string::<i32>();
        for r in 0..b.num_rows() {
            status.insert(names.value(r).to_owned(), num(b, "count", r));
        }
    }
    out["status"] = Value::Object(status);
    Ok(out)
}

/// A peer's best name, else its address (with the port for a server).
fn peer(side: &str) -> Expr {
    let address = if side == "dst" {
        concat(vec![
            cast_expr(col("dst_ip"), DataType::Utf8),
            lit(":"),
            cast_expr(col("dst_port"), DataType::Utf8),
        ])
    } else {
        cast_expr(col("src_ip"), DataType::Utf8)
    };
    coalesce(vec![
        nullif(
            cast_expr(col(format!("{side}_name")), DataType::Utf8),
            lit(""),
        ),
        address,
    ])
}

fn cast_expr(e: Expr, to: DataType) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(Box::new(e), to))
}

/// The grouping expression of a `group_by` name.
pub(super) fn group_key(group: &str) -> Result<Expr, ApiError> {
    Ok(match group {
        "minute" => date_trunc(lit("minute"), col("timestamp")),
        "second" => date_trunc(lit("second"), col("timestamp")),
        "edge" => concat(vec![peer("src"), lit(" → "), peer("dst")]),
        _ => {
            let field = remora_kfl::catalog::lookup(Table::Calls, group)
                .filter(|f| matches!(f.ty, remora_kfl::FieldType::String | remora_kfl::FieldType::Int))
                .and_then(|f| f.column())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "group_by `{group}` is not a string or int field; try path, dst.service.name, src.pod.name, status_code, edge, minute, second"
                    ))
                })?;
            col(field)
        }
    })
}

/// Per group of `key`: the figures of [`overall`] but status classes, the largest groups
/// first, or in key order (time lines).
pub(super) async fn groups(
    df: &DataFrame,
    key: Expr,
    limit: usize,
    by_key: bool,
) -> Result<Vec<Value>, ApiError> {
    let order = if by_key {
        vec![col("key").sort(true, false)]
    } else {
        vec![
            col("count").sort(false, false),
            col("key").sort(true, false),
        ]
    };
    let grouped = df
        .clone()
        .aggregate(vec![key.alias("key")], aggregates())?
        .sort(order)?
        .limit(0, Some(limit))?
        .collect()
        .await?;
    let mut groups = Vec::new();
    for b in &grouped {
        let rows = super::json::rows(
            &[b.project(&[0]).map_err(|e| ApiError::bad(e.to_string()))?],
            true,
            256,
        );
        for (r, key) in rows.into_iter().enumerate() {
            let mut g = summary(b, r);
            g["key"] = key.get("key").cloned().unwrap_or(Value::Null);
            groups.push(g);
        }
    }
    Ok(groups)
}

/// Keeps the calls from `start` to `end` (unix ms, inclusive).
pub(super) fn window(
    df: DataFrame,
    start: Option<i64>,
    end: Option<i64>,
) -> Result<DataFrame, ApiError> {
    let ts = |ms: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(ms.saturating_mul(1_000_000)),
            Some("UTC".into()),
        ))
    };
    let mut df = df;
    if let Some(start) = start {
        df = df.filter(col("timestamp").gt_eq(ts(start)))?;
    }
    if let Some(end) = end {
        df = df.filter(col("timestamp").lt(ts(end.saturating_add(1))))?;
    }
    Ok(df)
}

/// `GET /mcp/stats?db=&kfl=&group_by=&start=&end=`.
pub async fn stats(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("{e}; `db` is required")))?;
    let (_slot, ctx) = super::calls::open_calls(&s, &q.db).await?;
    let (df, _) = query::filtered(&ctx, Table::Calls, &q.kfl, &CompileOptions::default()).await?;
    let df = window(df, q.start, q.end)?;
    let mut out = overall(&df).await?;
    if let Some(group) = q.group_by.as_deref().filter(|g| !g.is_empty()) {
        let limit = q.limit.unwrap_or(100).min(1000);
        let by_time = matches!(group, "minute" | "second");
        out["groups"] = Value::Array(groups(&df, group_key(group)?, limit, by_time).await?);
        out["group_by"] = json!(if matches!(group, "minute" | "second" | "edge") {
            group
        } else {
            kfl_name(group)
        });
    }
    Ok(Json(out))
}
