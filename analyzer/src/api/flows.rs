//! `/mcp/flows` and `/mcp/flows/summary`: the L4 flows of a dissection (the `conns` table: one
//! row per TCP connection, whatever its protocol) and what TCP went through on them —
//! retransmissions, out-of-order and lost segments, zero windows, duplicate ACKs, handshake
//! and data round trips, how each connection ended — per flow and aggregated per edge, pod,
//! namespace, service, node or minute.

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
    dataframe::DataFrame,
    functions::expr_fn::{coalesce, concat, date_trunc, nullif},
    functions_aggregate::expr_fn::{count, percentile_cont, sum},
    logical_expr::{Expr, col, lit, when},
    prelude::SessionContext,
};
use remora_kfl::{CompileOptions, Table};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AnalyzerState, ApiError, calls::QuerySlot};
use crate::services::query;

type Api<T> = Result<T, ApiError>;

/// Most flows one page returns.
pub const MAX_FLOWS: usize = 1000;

/// `/mcp/flows` parameters.
#[derive(Debug, Deserialize)]
pub struct FlowsQuery {
    db: String,
    #[serde(default)]
    kfl: String,
    limit: Option<usize>,
    cursor: Option<String>,
    /// `time` (default), `retransmissions`, `rtt`, `handshake`, `bytes`, `duration`.
    order: Option<String>,
}

/// `/mcp/flows/summary` parameters.
#[derive(Debug, Deserialize)]
pub struct SummaryQuery {
    db: String,
    #[serde(default)]
    kfl: String,
    /// Comma-separated: `edge` (default), `src`, `dst`, `pod`, `src.pod`, `namespace`,
    /// `service`, `node`, `minute`, `second`, or any string/int field of `conns`.
    group_by: Option<String>,
    limit: Option<usize>,
}

/// Takes a query slot and opens the `conns` table of a completed db.
async fn open_conns<'a>(s: &'a AnalyzerState, db: &str) -> Api<(QuerySlot<'a>, SessionContext)> {
    let slot = s.query_slot().await?;
    let dir = s.jobs.db(db)?;
    let ctx = s.tables.session(&dir).await?;
    if !ctx.table_exist(Table::Conns.name())? {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            format!("{db} has no conns.parquet (dissected by an older Remora); dissect it again"),
        ));
    }
    Ok((slot, ctx))
}

/// A column of `conns`, or zero when the file predates it (a db dissected by an older Remora).
fn column(df: &DataFrame, name: &str) -> Expr {
    if df.schema().field_with_unqualified_name(name).is_ok() {
        col(name)
    } else {
        lit(0i64)
    }
}

/// Both directions of a per-direction count.
fn both(df: &DataFrame, name: &str) -> Expr {
    column(df, &format!("{name}_c2s")) + column(df, &format!("{name}_s2c"))
}

/// The KFL name of a `conns` column.
fn conns_name(column: &str) -> &str {
    remora_tables::Table::Conns
        .column(column)
        .map_or(column, |c| c.kfl)
}

/// `GET /mcp/flows?db=&kfl=&limit=&cursor=&order=`.
pub async fn list_flows(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<FlowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<Value>> {
    let Query(q) =
        q.map_err(|e| ApiError::bad(format!("{e}; `db` (<snapshot>/<dissection>) is required")))?;
    let limit = q.limit.unwrap_or(100);
    if limit > MAX_FLOWS {
        return Err(ApiError::bad(format!(
            "limit {limit} is over {MAX_FLOWS}; page with `cursor`"
        )));
    }
    let offset = q
        .cursor
        .as_deref()
        .map(str::parse::<usize>)
        .transpose()
        .map_err(|_| ApiError::bad("`cursor` is the next_cursor of a previous page"))?
        .unwrap_or(0);
    let (_slot, ctx) = open_conns(&s, &q.db).await?;
    let (df, _) = query::filtered(&ctx, Table::Conns, &q.kfl, &CompileOptions::default()).await?;
    let total = df.clone().count().await?;
    let order = q.order.as_deref().unwrap_or("time");
    let first = match order {
        "time" => col("first_ts").sort(true, false),
        "retransmissions" => both(&df, "retransmissions").sort(false, false),
        "rtt" => column(&df, "data_rtt_us").sort(false, false),
        "handshake" => col("handshake_us").sort(false, false),
        "bytes" => (col("bytes_c2s") + col("bytes_s2c")).sort(false, false),
        "duration" => (col("last_ts") - col("first_ts")).sort(false, false),
        other => {
            return Err(ApiError::bad(format!(
                "order `{other}`: use time, retransmissions, rtt, handshake, bytes or duration"
            )));
        }
    };
    let page = df
        .sort(vec![
            first,
            col("first_ts").sort(true, false),
            col("node").sort(true, false),
            col("conn_id").sort(true, false),
        ])?
        .limit(offset, Some(limit))?
        .collect()
        .await?;
    let flows = super::json::rows_named(&page, false, 256, conns_name);
    let next = offset + flows.len();
    let truncated = next < total;
    Ok(Json(json!({
        "flows": flows,
        "total": total,
        "truncated": truncated,
        "next_cursor": truncated.then(|| next.to_string()),
    })))
}

/// A peer's best name, else its address.
fn who(side: &str, df: &DataFrame) -> Expr {
    let name = column(df, &format!("{side}_name"));
    coalesce(vec![
        nullif(name, lit("")),
        cast_utf8(col(format!("{side}_ip"))),
    ])
}

fn cast_utf8(e: Expr) -> Expr {
    Expr::Cast(datafusion::logical_expr::Cast::new(
        Box::new(e),
        DataType::Utf8,
    ))
}

/// The grouping expression of one `group_by` key.
fn key(df: &DataFrame, name: &str) -> Api<Expr> {
    let dst = || concat(vec![who("dst", df), lit(":"), cast_utf8(col("dst_port"))]);
    Ok(match name {
        "edge" => concat(vec![who("src", df), lit(" → "), dst()]),
        "dst" => dst(),
        "src" => who("src", df),
        "pod" => column(df, "dst_pod_name"),
        "src.pod" => column(df, "src_pod_name"),
        "namespace" => column(df, "dst_namespace"),
        "service" => column(df, "dst_service_name"),
        "node" => col("node"),
        "minute" => date_trunc(lit("minute"), col("first_ts")),
        "second" => date_trunc(lit("second"), col("first_ts")),
        other => {
            let field = remora_kfl::catalog::lookup(Table::Conns, other)
                .filter(|f| {
                    matches!(
                        f.ty,
                        remora_kfl::FieldType::String | remora_kfl::FieldType::Int
                    )
                })
                .and_then(|f| f.column())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "group_by `{other}`: use edge, dst, src, pod, src.pod, namespace, \
                         service, node, minute, second, or a string/int field of conns \
                         (dst.port, l7, close, rst_by)"
                    ))
                })?;
            if df.schema().field_with_unqualified_name(field).is_err() {
                return Err(ApiError::bad(format!(
                    "this db has no `{other}`: it was dissected by an older Remora; dissect \
                     the snapshot again"
                )));
            }
            col(field)
        }
    })
}

fn aggregates(df: &DataFrame) -> Vec<Expr> {
    let p = |c: Expr, q: f64| percentile_cont(c.sort(true, false), lit(q));
    let rtt = column(df, "data_rtt_us");
    let flag = |e: Expr| sum(when(e, lit(1i64)).otherwise(lit(0i64)).unwrap_or(lit(0i64)));
    vec![
        count(lit(1)).alias("connections"),
        sum(col("packets_c2s") + col("packets_s2c")).alias("packets"),
        sum(col("bytes_c2s") + col("bytes_s2c")).alias("bytes"),
        sum(both(df, "retransmissions")).alias("retransmissions"),
        sum(both(df, "out_of_order")).alias("out_of_order"),
        sum(both(df, "lost_segments")).alias("lost_segments"),
        sum(both(df, "zero_windows")).alias("zero_windows"),
        sum(both(df, "dup_acks")).alias("dup_acks"),
        flag(col("resets").gt(lit(0u32))).alias("reset"),
        flag(col("rst_by").eq(lit("client"))).alias("reset_by_client"),
        flag(col("rst_by").eq(lit("server"))).alias("reset_by_server"),
        p(col("handshake_us"), 0.5).alias("handshake_p50"),
        p(col("handshake_us"), 0.99).alias("handshake_p99"),
        p(rtt.clone(), 0.5).alias("rtt_p50"),
        p(rtt, 0.99).alias("rtt_p99"),
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

/// One group's figures, with rates a reader can compare across groups.
fn figures(b: &RecordBatch, row: usize) -> Value {
    let n = |k: &str| num(b, k, row).as_i64().unwrap_or(0);
    let packets = n("packets");
    let rate = |x: i64| {
        if packets > 0 {
            (x as f64 / packets as f64 * 10000.0).round() / 10000.0
        } else {
            0.0
        }
    };
    json!({
        "connections": n("connections"),
        "packets": packets,
        "bytes": n("bytes"),
        "retransmissions": n("retransmissions"),
        "retransmission_rate": rate(n("retransmissions")),
        "out_of_order": n("out_of_order"),
        "lost_segments": n("lost_segments"),
        "zero_windows": n("zero_windows"),
        "dup_acks": n("dup_acks"),
        "resets": {"connections": n("reset"), "by_client": n("reset_by_client"), "by_server": n("reset_by_server")},
        "handshake_us": {"p50": num(b, "handshake_p50", row), "p99": num(b, "handshake_p99", row)},
        "data_rtt_us": {"p50": num(b, "rtt_p50", row), "p99": num(b, "rtt_p99", row)},
    })
}

/// `GET /mcp/flows/summary?db=&kfl=&group_by=&limit=`.
pub async fn summary(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("{e}; `db` is required")))?;
    let (_slot, ctx) = open_conns(&s, &q.db).await?;
    let (df, _) = query::filtered(&ctx, Table::Conns, &q.kfl, &CompileOptions::default()).await?;

    let overall = df
        .clone()
        .aggregate(vec![], aggregates(&df))?
        .collect()
        .await?;
    let mut out = match overall.first() {
        Some(b) if b.num_rows() > 0 => figures(b, 0),
        _ => json!({"connections": 0}),
    };
    // How the connections ended.
    if df.schema().field_with_unqualified_name("close").is_ok() {
        let closes = df
            .clone()
            .aggregate(vec![col("close")], vec![count(lit(1)).alias("n")])?
            .collect()
            .await?;
        let mut close = Map::new();
        for b in &closes {
            let names =
                cast(b.column(0), &DataType::Utf8).map_err(|e| ApiError::bad(e.to_string()))?;
            let names = names.as_string::<i32>();
            for r in 0..b.num_rows() {
                close.insert(names.value(r).to_owned(), num(b, "n", r));
            }
        }
        out["close"] = Value::Object(close);
    }

    let group_by = q.group_by.as_deref().unwrap_or("edge");
    let names: Vec<&str> = group_by
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .collect();
    if names.len() > 3 {
        return Err(ApiError::bad("group_by takes at most 3 keys"));
    }
    if !names.is_empty() {
        let mut keys = Vec::new();
        for (i, name) in names.iter().enumerate() {
            keys.push(key(&df, name)?.alias(format!("k{i}")));
        }
        let limit = q.limit.unwrap_or(100).min(1000);
        let grouped = df
            .clone()
            .aggregate(keys, aggregates(&df))?
            .sort(vec![
                col("connections").sort(false, false),
                col("k0").sort(true, false),
            ])?
            .limit(0, Some(limit))?
            .collect()
            .await?;
        let mut groups = Vec::new();
        for b in &grouped {
            let key_columns: Vec<usize> = (0..names.len()).collect();
            let keys = super::json::rows_named(
                &[b.project(&key_columns)
                    .map_err(|e| ApiError::bad(e.to_string()))?],
                true,
                256,
                |c| c,
            );
            for (r, k) in keys.into_iter().enumerate() {
                let mut g = figures(b, r);
                let mut key = Map::new();
                for (i, name) in names.iter().enumerate() {
                    key.insert((*name).to_owned(), k[format!("k{i}")].clone());
                }
                g["key"] = Value::Object(key);
                groups.push(g);
            }
        }
        out["group_by"] = json!(names);
        out["groups"] = Value::Array(groups);
    }
    Ok(Json(out))
}
