//! The analyzer's HTTP API (axum): the seed's paths (`/mcp/...`,
//! `/delayed_dissection.DelayedDissection/...`), the same under `/api`, bearer-token auth on
//! every route, errors as `{"error": {kind, message, ...}}` with the right status.

mod calls;
pub use calls::MAX_LIMIT;
pub use flows::MAX_FLOWS;
mod endpoints;
mod flows;
mod insights;
mod json;
mod page;
mod pcap;
mod resolve;
mod snapshots;
mod sql;
mod stats;
mod tls;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use crate::{
    services::jobs::{JobError, Jobs},
    services::snapshots::{SnapshotStore, StoreError},
};

/// Sends one request to the analyzer's `routes` in this process (no socket), with `token`;
/// returns the status and the JSON body (null when the body is not JSON). MCP tools and
/// `remora calls|stats --db DIR` reach the API this way.
pub async fn call_in_process(
    routes: &Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, bytes) = call_in_process_raw(routes, token, method, path, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// [`call_in_process`], with the body as bytes (CSV and Arrow answers of `/sql`).
pub async fn call_in_process_raw(
    routes: &Router,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, bytes::Bytes) {
    use tower::ServiceExt as _;
    let error = |status: u16, kind: &str, message: String| {
        let v = json!({"error": {"kind": kind, "message": message}});
        (status, bytes::Bytes::from(v.to_string()))
    };
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = match req.body(axum::body::Body::from(body)) {
        Ok(r) => r,
        Err(e) => return error(400, "bad_request", e.to_string()),
    };
    let resp = match routes.clone().oneshot(req).await {
        Ok(r) => r,
        Err(e) => return error(500, "internal", e.to_string()),
    };
    let status = resp.status().as_u16();
    match axum::body::to_bytes(resp.into_body(), 1 << 30).await {
        Ok(bytes) => (status, bytes),
        Err(e) => error(500, "internal", format!("reading the answer: {e}")),
    }
}

/// What the handlers share.
pub struct AnalyzerState {
    /// The data directory (`capture/`, `snapshots/`, `dissections/`).
    pub data: PathBuf,
    /// Snapshots.
    pub store: Arc<SnapshotStore>,
    /// Dissection jobs.
    pub jobs: Arc<Jobs>,
    /// Bearer token.
    pub token: String,
    /// Queries running at once, at most.
    pub queries: tokio::sync::Semaphore,
    /// Queries waiting for a slot now.
    waiting: std::sync::atomic::AtomicUsize,
    /// Queries that may wait for a slot; past that a request is answered 429 with
    /// Retry-After instead of queueing without bound.
    pub max_waiting: std::sync::atomic::AtomicUsize,
    /// Sessions over the dissections' tables, kept between requests.
    pub tables: crate::services::query::TableCache,
    /// MiB of memory SQL queries may reserve in total (each its `memory_mb`): as much as the
    /// KFL pool, so that all queries together stay within twice `--query-memory-mb`.
    pub sql_memory: tokio::sync::Semaphore,
    /// Where workload names come from (the watchers, a file, or nothing).
    pub workloads: Arc<dyn crate::services::workloads::WorkloadSource>,
    /// The node this process records (`remora up`), recording from its start even before
    /// its first slice is written.
    pub local_node: std::sync::OnceLock<String>,
}

/// Queries that run at once.
pub const QUERY_SLOTS: usize = 8;

/// Counts a waiting query while it lives.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl AnalyzerState {
    /// A query slot: at once when one is free, after a wait in a bounded queue otherwise, or
    /// 429 with Retry-After when the queue is full.
    pub async fn query_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Ok(slot) = self.queries.try_acquire() {
            return Ok(slot);
        }
        let ahead = self.waiting.fetch_add(1, SeqCst);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.max_waiting.load(SeqCst) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                format!(
                    "{} queries are running and {ahead} waiting; retry in a second",
                    QUERY_SLOTS - self.queries.available_permits()
                ),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        self.queries
            .acquire()
            .await
            .map_err(|_| ApiError::bad("shutting down"))
    }

    /// The analyzer of `data`, with `workers` dissections at once, attributing addresses
    /// with `workloads`.
    pub fn open(
        data: &std::path::Path,
        token: String,
        workloads: Arc<dyn crate::services::workloads::WorkloadSource>,
        workers: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let store = Arc::new(SnapshotStore::open(data)?.with_workloads(workloads.clone()));
        let jobs = Arc::new(Jobs::open(data, store.clone(), workloads.clone(), workers)?);
        Ok(Arc::new(Self {
            data: data.to_owned(),
            store,
            jobs,
            token,
            queries: tokio::sync::Semaphore::new(QUERY_SLOTS),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting: std::sync::atomic::AtomicUsize::new(32),
            tables: Default::default(),
            sql_memory: tokio::sync::Semaphore::new(crate::services::query::memory_limit() >> 20),
            workloads,
            local_node: std::sync::OnceLock::new(),
        }))
    }
}

/// An API error: status, kind, message (and KFL details when the filter is at fault).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    /// Seconds for a `Retry-After` header (an overloaded server's 503).
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, a kind and a message.
    pub fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"kind": kind, "message": message.into()}),
            retry_after: None,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.body }))).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, kind) = match &e {
            StoreError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            StoreError::InvalidWindow(_) => (StatusCode::BAD_REQUEST, "invalid_window"),
            StoreError::Exists(_) => (StatusCode::CONFLICT, "exists"),
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            StoreError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            StoreError::NoSpace { .. } => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
        };
        Self::new(status, kind, e.to_string())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(s) => s.into(),
            JobError::Exists(_) => Self::new(StatusCode::CONFLICT, "exists", e.to_string()),
            JobError::NotReady(_) => Self::new(StatusCode::CONFLICT, "not_ready", e.to_string()),
            JobError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            JobError::Running(_) => Self::new(StatusCode::CONFLICT, "running", e.to_string()),
            JobError::Busy(_) => {
                let mut busy = Self::new(StatusCode::TOO_MANY_REQUESTS, "busy", e.to_string());
                busy.retry_after = Some(5);
                busy
            }
        }
    }
}

impl From<datafusion::error::DataFusionError> for ApiError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        crate::services::query::QueryError::from(e).into()
    }
}

impl From<crate::services::query::QueryError> for ApiError {
    fn from(e: crate::services::query::QueryError) -> Self {
        match e {
            crate::services::query::QueryError::Kfl(k) if k.is_user_error() => Self {
                status: StatusCode::BAD_REQUEST,
                body: serde_json::to_value(k.body()).unwrap_or_else(|_| json!({"kind": "kfl"})),
                retry_after: None,
            },
            crate::services::query::QueryError::DataFusion(d)
                if matches!(
                    d.find_root(),
                    datafusion::error::DataFusionError::ResourcesExhausted(_)
                ) =>
            {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "memory_limit",
                    format!(
                        "queries are using the analyzer's query memory ({} MiB, \
                         REMORA_QUERY_MEMORY_MB): retry shortly, or narrow the filter ({})",
                        crate::services::query::memory_limit() >> 20,
                        d.find_root()
                    ),
                );
                e.retry_after = Some(2);
                e
            }
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

async fn require_token(
    State(state): State<Arc<AnalyzerState>>,
    req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if remora_agent::auth::authorized(header, &state.token) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`; the token is in <data-dir>/token (remora up prints it)",
        )
        .into_response()
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `routes` behind the analyzer's bearer token (for routes built elsewhere, like `/mcp`).
pub fn with_auth(routes: Router, state: Arc<AnalyzerState>) -> Router {
    routes.layer(middleware::from_fn_with_state(state, require_token))
}

/// The analyzer's routes (no fallback: they are merged with the node API's).
pub fn router(state: Arc<AnalyzerState>) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/mcp/data-boundaries", get(snapshots::boundaries))
        .route(
            "/mcp/snapshots",
            get(snapshots::list_snapshots).post(snapshots::create_snapshot),
        )
        .route(
            "/mcp/snapshots/{name}",
            get(snapshots::get_snapshot).delete(snapshots::delete_snapshot),
        )
        .route("/mcp/snapshots/{name}/pcap", get(pcap::export))
        .route(
            "/delayed_dissection.DelayedDissection/Start",
            post(snapshots::start_dissection_grpc),
        )
        .route(
            "/delayed_dissection.DelayedDissection/GetStatus",
            get(snapshots::dissection_status_grpc),
        )
        .route(
            "/mcp/dissections",
            get(snapshots::list_dissections).post(snapshots::start_dissection),
        )
        .route(
            "/mcp/dissections/{snapshot}/{name}",
            get(snapshots::get_dissection).delete(snapshots::delete_dissection),
        )
        .route(
            "/mcp/dissections/{snapshot}/{name}/stop",
            post(snapshots::stop_dissection),
        )
        .route("/mcp/calls", get(calls::list_calls))
        .route("/mcp/calls/{*id}", get(calls::get_call))
        .route("/mcp/fields", get(calls::fields))
        .route("/mcp/stats", get(stats::stats))
        .route("/mcp/insights", get(insights::insights))
        .route("/mcp/flows", get(flows::list_flows))
        .route("/mcp/flows/summary", get(flows::summary))
        .route("/sql", post(sql::run))
        .route("/mcp/resolve/workloads", get(resolve::workloads))
        .route("/mcp/resolve/ips", get(resolve::ips))
        .route("/mcp/coverage", get(resolve::coverage))
        .route("/mcp/tls-status", get(tls::tls_status))
        .route("/mcp/endpoints", get(endpoints::endpoints))
        .route("/openapi.json", get(endpoints::openapi));
    let both = Router::new().merge(routes.clone()).nest("/api", routes);
    both.layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(middleware::from_fn(timeout))
        .with_state(state)
}

/// Requests that take longer than this are answered 503 (dissections run in the background).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {} s; narrow the filter or the time range",
                REQUEST_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
    }
}
