//! `POST /sql`: read-only SQL over a snapshot's tables and its dissection's, answered as JSON,
//! CSV or Arrow IPC.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use datafusion::arrow::{csv, ipc::writer::StreamWriter};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AnalyzerState, ApiError};
use crate::services::sql::{self, Answer, Limits, Sources, SqlError};

/// Most rows one answer holds.
pub const MAX_ROWS: usize = 1_000_000;
/// Longest time limit (the API answers every request within 60 s).
const MAX_TIMEOUT: Duration = Duration::from_secs(55);
/// Largest memory limit.
const MAX_MEMORY_MB: usize = 8192;

/// `POST /sql` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    /// `<snapshot>/<dissection>`: `calls`, `conns`, and the snapshot's tables.
    db: Option<String>,
    /// A snapshot alone: `packets` and `workloads`.
    snapshot: Option<String>,
    /// The statement.
    query: String,
    /// `json` (default), `csv` or `arrow`.
    format: Option<String>,
    /// Rows to return, default 10,000.
    max_rows: Option<usize>,
    /// Time limit, default 30 s.
    timeout_ms: Option<u64>,
    /// Memory limit, default 1024 MiB.
    memory_mb: Option<usize>,
    /// JSON only: bytes kept of each binary value, default 256.
    max_payload_size: Option<usize>,
}

impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        let (status, kind) = match &e {
            SqlError::NotReadOnly(_) => (StatusCode::BAD_REQUEST, "not_read_only"),
            SqlError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_sql"),
            SqlError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            SqlError::Memory { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "memory_limit"),
            SqlError::Execution(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, kind, e.to_string())
    }
}

/// The tables of the request's db or snapshot.
fn sources(s: &AnalyzerState, req: &SqlRequest) -> Result<Sources, ApiError> {
    let mut sources = Sources::default();
    let snapshot = match (&req.db, &req.snapshot) {
        (Some(db), _) => {
            sources.dissection = Some(s.jobs.db(db)?);
            db.split_once('/').map(|(snap, _)| snap.to_owned())
        }
        (None, Some(snap)) => Some(snap.clone()),
        (None, None) => {
            return Err(ApiError::bad(
                "give `db` (<snapshot>/<dissection>: calls, conns, packets, sockets, tls, workloads) or \
                 `snapshot` (packets, sockets, tls, workloads)",
            ));
        }
    };
    if let Some(name) = snapshot {
        // A db made by `remora dissect` has no snapshot: it has calls and conns only.
        match s.store.get(&name) {
            Ok(m) if m.status.is_readable() => {
                sources.packet_dirs = s
                    .store
                    .packet_dirs(&name)?
                    .into_iter()
                    .map(|(_, d)| d)
                    .collect();
                let file = s
                    .store
                    .path(&name)?
                    .join(crate::services::workloads::SNAPSHOT_FILE);
                sources.workloads = Some(file);
            }
            Ok(_) if req.db.is_none() => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "not_ready",
                    format!("snapshot `{name}` is not completed yet; poll get_snapshot"),
                ));
            }
            Err(e) if req.db.is_none() => return Err(e.into()),
            _ => {}
        }
    }
    Ok(sources)
}

fn limits(req: &SqlRequest) -> Result<Limits, ApiError> {
    let default = Limits::default();
    let max_rows = req.max_rows.unwrap_or(default.max_rows);
    if max_rows == 0 || max_rows > MAX_ROWS {
        return Err(ApiError::bad(format!(
            "max_rows is 1 to {MAX_ROWS}; aggregate in SQL for larger answers"
        )));
    }
    Ok(Limits {
        timeout: req
            .timeout_ms
            .map_or(default.timeout, Duration::from_millis)
            .min(MAX_TIMEOUT),
        memory_bytes: req
            .memory_mb
            .map_or(default.memory_bytes, |mb| mb.clamp(16, MAX_MEMORY_MB) << 20),
        max_rows,
    })
}

/// `POST /sql` with `{db | snapshot, query, format?, max_rows?, timeout_ms?, memory_mb?}`.
pub async fn run(
    State(s): State<Arc<AnalyzerState>>,
    body: Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| {
        ApiError::bad(format!(
            "{e}; the body is {{\"db\": \"<snapshot>/<dissection>\", \"query\": \"SELECT ...\"}} \
             with optional format (json|csv|arrow), max_rows, timeout_ms, memory_mb"
        ))
    })?;
    let format = req.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "arrow") {
        return Err(ApiError::bad("format is json, csv or arrow"));
    }
    let mut limits = limits(&req)?;
    let sources = sources(&s, &req)?;
    let _slot = s.query_slot().await?;
    // Each query reserves its memory limit from the SQL budget, so eight at once cannot
    // together outgrow the process that also records.
    let total_mb = crate::services::query::memory_limit() >> 20;
    let mb = (limits.memory_bytes >> 20).clamp(1, total_mb.max(1));
    limits.memory_bytes = limits.memory_bytes.min(mb << 20);
    let _memory = s.sql_memory.try_acquire_many(mb as u32).map_err(|_| {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "busy",
            format!(
                "running SQL queries hold {} of the {total_mb} MiB SQL may use \
                 (--query-memory-mb); retry in a second, or ask for less with memory_mb",
                total_mb - s.sql_memory.available_permits().min(total_mb)
            ),
        );
        e.retry_after = Some(1);
        e
    })?;
    let ctx = sql::session(&sources, &limits).await?;
    let answer = sql::run(&ctx, &req.query, &limits).await?;
    let internal =
        |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string());
    match format {
        "csv" => {
            let mut out = Vec::new();
            {
                let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut out);
                for b in &answer.batches {
                    writer.write(b).map_err(|e| {
                        ApiError::bad(format!(
                            "{e}; CSV holds no binary or nested values: select them with \
                             encode(col, 'hex') or ask for format=json or arrow"
                        ))
                    })?;
                }
            }
            Ok(binary("text/csv; charset=utf-8", out, &answer))
        }
        "arrow" => {
            let mut out = Vec::new();
            {
                let mut writer = StreamWriter::try_new(&mut out, &answer.schema)
                    .map_err(|e| internal(e.to_string()))?;
                for b in &answer.batches {
                    writer.write(b).map_err(|e| internal(e.to_string()))?;
                }
                writer.finish().map_err(|e| internal(e.to_string()))?;
            }
            Ok(binary("application/vnd.apache.arrow.stream", out, &answer))
        }
        _ => Ok(Json(as_json(&answer, req.max_payload_size.unwrap_or(256))).into_response()),
    }
}

/// A CSV or Arrow answer; the row count and the cut travel in headers.
fn binary(content_type: &'static str, body: Vec<u8>, answer: &Answer) -> Response {
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert("x-remora-rows", answer.rows.into());
    h.insert(
        "x-remora-truncated",
        header::HeaderValue::from_static(if answer.truncated { "true" } else { "false" }),
    );
    r
}

/// `{columns: [{name, type}], rows: [{column: value}], row_count, truncated, elapsed_ms}`.
pub fn as_json(answer: &Answer, body_limit: usize) -> Value {
    let columns: Vec<Value> = answer
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut out = json!({
        "columns": columns,
        "rows": super::json::rows_named(&answer.batches, true, body_limit, |c| c),
        "row_count": answer.rows,
        "truncated": answer.truncated,
        "elapsed_ms": answer.elapsed.as_millis() as u64,
    });
    if answer.truncated {
        out["hint"] = json!(
            "more rows matched than max_rows: aggregate, add a WHERE or LIMIT, or raise max_rows"
        );
    }
    out
}
