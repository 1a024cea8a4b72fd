//! `/mcp/calls`, `/mcp/calls/{id}` and `/mcp/fields`: KFL over a dissection's `calls` table.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use datafusion::{
    common::ScalarValue,
    dataframe::DataFrame,
    logical_expr::{col, lit},
};
use remora_kfl::{CompileOptions, Table};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    AnalyzerState, ApiError,
    json::rows,
    page::{self, Order},
};
use crate::services::query;

type Api<T> = Result<T, ApiError>;

/// Most rows one page returns.
pub const MAX_LIMIT: usize = 1000;
/// Columns of the compact format: enough to see what happened and to filter further.
const COMPACT: [&str; 18] = [
    "id",
    "timestamp",
    "protocol",
    "src_ip",
    "src_port",
    "src_name",
    "src_node_name",
    "dst_ip",
    "dst_port",
    "dst_name",
    "dst_node_name",
    "method",
    "path",
    "status_code",
    "grpc_status",
    "elapsed_time",
    "error_type",
    "dns_questions",
];

/// `/mcp/calls` parameters.
#[derive(Debug, Deserialize)]
pub struct CallsQuery {
    db: String,
    #[serde(default)]
    kfl: String,
    limit: Option<usize>,
    offset: Option<usize>,
    cursor: Option<String>,
    start: Option<i64>,
    end: Option<i64>,
    format: Option<String>,
    #[serde(default)]
    explain: bool,
    /// `time` (default, oldest first) or `slowest` (highest elapsed_time first).
    order: Option<String>,
}

/// A session over the `calls` table of a completed db.
/// Holds one of the analyzer's query slots while it lives.
pub(super) type QuerySlot<'a> = tokio::sync::SemaphorePermit<'a>;

/// Takes a query slot (waiting while every slot is busy) and opens the `calls` table of a
/// completed db.
pub(super) async fn open_calls<'a>(
    s: &'a AnalyzerState,
    db: &str,
) -> Api<(QuerySlot<'a>, datafusion::prelude::SessionContext)> {
    let slot = s.query_slot().await?;
    let dir = s.jobs.db(db)?;
    let ctx = s.tables.session(&dir).await?;
    if !ctx.table_exist(Table::Calls.name())? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{db} has no calls.parquet; run the dissection again"),
        ));
    }
    Ok((slot, ctx))
}

fn ts(ms: i64) -> datafusion::logical_expr::Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ms.saturating_mul(1_000_000)),
        Some("UTC".into()),
    ))
}

/// `GET /mcp/calls?db=&kfl=&limit=&cursor=&start=&end=&format=&explain=`.
pub async fn list_calls(
    State(s): State<Arc<AnalyzerState>>,
    q: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<Value>> {
    let Query(q) =
        q.map_err(|e| ApiError::bad(format!("{e}; `db` (<snapshot>/<dissection>) is required")))?;
    let limit = q.limit.unwrap_or(100);
    if limit > MAX_LIMIT {
        return Err(ApiError::bad(format!(
            "limit {limit} is over {MAX_LIMIT}; page with `cursor`"
        )));
    }
    let offset = match (&q.cursor, q.offset) {
        (Some(c), _) => c
            .parse::<usize>()
            .map_err(|_| ApiError::bad("`cursor` is the next_cursor of a previous page"))?,
        (None, o) => o.unwrap_or(0),
    };
    let format = q.format.as_deref().unwrap_or("compact");
    if !matches!(format, "compact" | "full" | "raw") {
        return Err(ApiError::bad("format is compact, full or raw"));
    }
    let (_slot, ctx) = open_calls(&s, &q.db).await?;
    let (mut df, expr) =
        query::filtered(&ctx, Table::Calls, &q.kfl, &CompileOptions::default()).await?;
    if let Some(start) = q.start {
        df = df.filter(col("timestamp").gt_eq(ts(start)))?;
    }
    if let Some(end) = q.end {
        df = df.filter(col("timestamp").lt_eq(ts(end)))?;
    }
    let order_name = q.order.as_deref().unwrap_or("time");
    let order = Order::parse(order_name)
        .ok_or_else(|| ApiError::bad(format!("order `{order_name}`: use time or slowest")))?;
    let shape = |page: DataFrame| match format {
        "compact" => {
            let schema = page.schema().clone();
            let cols: Vec<&str> = COMPACT
                .iter()
                .copied()
                .filter(|c| schema.field_with_unqualified_name(c).is_ok())
                .collect();
            page.select_columns(&cols)
        }
        "full" => page.drop_columns(&["request_body", "response_body"]),
        _ => Ok(page),
    };
    let raw = format == "raw";
    let spans = s.tables.calls_spans(&s.jobs.db(&q.db)?);
    let (calls, total) = page::page(df, order, offset, limit, &spans, shape, |b| {
        rows(b, raw, 4096)
    })
    .await?;
    let next = offset + calls.len();
    let truncated = next < total;
    let mut out = json!({
        "calls": calls,
        "total": total,
        "truncated": truncated,
        "next_cursor": truncated.then(|| next.to_string()),
    });
    if q.explain {
        out["explain"] = json!(
            remora_kfl::explain(Table::Calls, expr.as_ref()).map_err(|e| ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string()
            ))?
        );
    }
    Ok(Json(out))
}

/// `/mcp/calls/{id}` parameters.
#[derive(Debug, Deserialize)]
pub struct CallQuery {
    db: String,
    max_payload_size: Option<usize>,
}

/// `GET /mcp/calls/{id}?db=`: one call with everything, bodies included.
pub async fn get_call(
    State(s): State<Arc<AnalyzerState>>,
    Path(id): Path<String>,
    q: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
) -> Api<Json<Value>> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("{e}; `db` is required")))?;
    let (_slot, ctx) = open_calls(&s, &q.db).await?;
    let batches = ctx
        .table("calls")
        .await?
        .filter(col("id").eq(lit(id.clone())))?
        .collect()
        .await?;
    let mut found = rows(&batches, true, q.max_payload_size.unwrap_or(65536));
    match found.pop() {
        Some(call) => Ok(Json(call)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no call `{id}` in {}; ids come from /mcp/calls", q.db),
        )),
    }
}

/// `GET /mcp/fields`: the KFL catalog.
pub async fn fields() -> Json<Value> {
    let table = |t: Table| -> Vec<Value> {
        remora_kfl::catalog::fields(t)
            .iter()
            .map(|f| {
                json!({"name": f.name, "type": f.ty.name(), "protocols": f.protocols,
                       "description": f.description, "example": f.example})
            })
            .collect()
    };
    let aliases: Vec<Value> = remora_kfl::ALIASES
        .iter()
        .map(|a| json!({"alias": a.name, "field": a.target}))
        .collect();
    Json(json!({"calls": table(Table::Calls), "conns": table(Table::Conns), "aliases": aliases}))
}
