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
    functions::expr_fn::{coalesce, date_trunc},
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

/// `GET /mcp/stats?db=&kfl=&group_by=`.
pub async fn stats(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("{e}; `db` is required")))?;
    let (_slot, ctx) = super::calls::open_calls(&s, &q.db).await?;
    let (df, _) = query::filtered(&ctx, Table::Calls, &q.kfl, &CompileOptions::default()).await?;

    let overall = df
        .clone()
        .aggregate(vec![], aggregates())?
        .collect()
        .await?;
    let mut out = match overall.first() {
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

    if let Some(group) = q.group_by.as_deref().filter(|g| !g.is_empty()) {
        let key = if group == "minute" {
            date_trunc(lit("minute"), col("timestamp"))
        } else {
            let field = remora_kfl::catalog::lookup(Table::Calls, group)
                .filter(|f| matches!(f.ty, remora_kfl::FieldType::String | remora_kfl::FieldType::Int))
                .and_then(|f| f.column())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "group_by `{group}` is not a string or int field; try path, dst.service.name, src.pod.name, status_code, minute"
                    ))
                })?;
            col(field)
        };
        let limit = q.limit.unwrap_or(100).min(1000);
        let grouped = df
            .aggregate(vec![key.alias("key")], aggregates())?
            .sort(vec![
                col("count").sort(false, false),
                col("key").sort(true, false),
            ])?
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
        out["group_by"] = json!(if group == "minute" {
            "minute"
        } else {
            kfl_name(group)
        });
        out["groups"] = Value::Array(groups);
    }
    Ok(Json(out))
}
