//! The node API: what this node has recorded, and the slice files themselves.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /v1/health` | node, attached interfaces, uptime, last write error |
//! | `GET /v1/boundaries` | oldest/newest recorded time per kind (unix ms) and drop totals |
//! | `GET /v1/slices?start&end&kind` | finished slices overlapping `[start, end]` (unix ms) |
//! | `GET /v1/slices/{kind}/{file}` | one slice file (Parquet) |
//! | `GET /v1/cgroups` | the pod cgroups of this node: cgroup id → pod UID, container (`cgroups`) |
//! | `GET /metrics` | Prometheus text |
//!
//! Every request needs `Authorization: Bearer <token>`.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    auth::authorized,
    ebpf::Recorder,
    metrics::{self, Metrics},
    store::{self, KINDS, SliceFile},
};

/// What the API handlers share.
pub struct ApiState {
    /// Node name.
    pub node: String,
    /// `<data>/capture/<node>`.
    pub node_dir: std::path::PathBuf,
    /// Bearer token.
    pub token: String,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The loaded recorder (kernel counters, attached interfaces).
    pub recorder: Arc<Mutex<Recorder>>,
    /// When the agent started.
    pub started: Instant,
}

/// The node API's routes, without authentication (the caller adds it over everything).
fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/boundaries", get(boundaries))
        .route("/v1/slices", get(list_slices))
        .route("/v1/slices/{kind}/{file}", get(get_slice))
        .route("/v1/cgroups", get(cgroups))
        .route("/v1/tls", get(tls_status))
        .route("/metrics", get(prometheus))
        .fallback(not_found)
        .with_state(state)
}

/// The API router, behind the bearer token.
pub fn router(state: Arc<ApiState>) -> Router {
    app(state, Router::new())
}

/// The node API merged with the `extra` routes of whoever embeds the agent (the analyzer in
/// `remora up`), under one authentication layer applied last, over the merged whole: a route
/// added by either side, and the fallback, cannot be reached without the token.
pub fn app(state: Arc<ApiState>, extra: Router) -> Router {
    routes(state.clone())
        .merge(extra)
        .layer(middleware::from_fn_with_state(state, require_token))
}

/// Serves the API, and the `extra` routes of whoever embeds the agent (the analyzer in
/// `remora up`), on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    extra: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state, extra).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"kind": kind, "message": message.into()}})),
    )
        .into_response()
}

async fn require_token(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorized(header, &state.token) {
        next.run(req).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`; the token is in the agent's token file \
             (<data-dir>/token by default)",
        )
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see /v1/health, /v1/boundaries, /v1/slices, /metrics",
    )
}

fn kernel_counters(
    state: &ApiState,
) -> (Vec<remora_agent_common::CpuCounters>, Vec<(u32, String)>) {
    match state.recorder.lock() {
        Ok(r) => (r.cpu_counters(), r.attached()),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

async fn health(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let (_, attached) = kernel_counters(&state);
    let last_error = state
        .metrics
        .last_write_error
        .lock()
        .ok()
        .and_then(|e| e.clone());
    Json(json!({
        "status": "ok",
        "node": state.node,
        "uptime_s": state.started.elapsed().as_secs(),
        "interfaces": attached.iter().map(|(i, n)| json!({"ifindex": i, "name": n})).collect::<Vec<_>>(),
        "last_write_error": last_error,
    }))
}

fn ms(ns: i64) -> i64 {
    ns.div_euclid(1_000_000)
}

async fn boundaries(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let all = store::list_node(&state.node_dir);
    let mut kinds = serde_json::Map::new();
    for kind in KINDS {
        let of_kind: Vec<&SliceFile> = all.iter().filter(|s| s.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        kinds.insert(
            kind.to_owned(),
            json!({
                "oldest_ts": of_kind.iter().map(|s| ms(s.start_ns)).min(),
                "newest_ts": of_kind.iter().map(|s| ms(s.end_ns)).max(),
                "files": of_kind.len(),
                "bytes": of_kind.iter().map(|s| s.bytes).sum::<u64>(),
            }),
        );
    }
    let (cpus, _) = kernel_counters(&state);
    let totals = metrics::total(&cpus);
    let in_slices = crate::drops::sum_slices(&all);
    Json(json!({
        "node": state.node,
        "oldest_ts": store::recorded_span(&all).map(|(first, _)| ms(first)),
        "newest_ts": store::recorded_span(&all).map(|(_, last)| ms(last)),
        "kinds": kinds,
        "drops": {
            "packets": totals.dropped_packets,
            "bytes": totals.dropped_bytes,
            "per_cpu": cpus.iter().map(|c| c.dropped_packets).collect::<Vec<_>>(),
            // What the slices on disk carry: the drops of the data still kept (retention
            // deletes a slice's drops with it), charged within 200 ms of happening.
            "in_slices": in_slices,
        },
        // Rows the recorder read but could not keep: slices that failed to write (a full or
        // failing disk) since it started. The last error says why.
        "lost": {
            "slices": state.metrics.slice_write_errors.load(std::sync::atomic::Ordering::Relaxed),
            "rows": state.metrics.rows_lost.load(std::sync::atomic::Ordering::Relaxed),
            "last_error": state.metrics.last_write_error.lock().ok().and_then(|e| e.clone()),
        },
    }))
}

#[derive(Deserialize)]
struct SliceQuery {
    start: Option<i64>,
    end: Option<i64>,
    kind: Option<String>,
}

/// Whether this node reads TLS plaintext, from which libraries, and for which processes not,
/// with why.
async fn tls_status(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let libraries = state
        .recorder
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .tls_status();
    let node = state.node.clone();
    Json(
        tokio::task::spawn_blocking(move || crate::tls::status::report(&node, libraries))
            .await
            .unwrap_or_else(|e| json!({"node": state.node, "error": e.to_string()})),
    )
}

async fn cgroups(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let root = crate::cgroups::root();
    let found = match &root {
        Some(r) => {
            let r = r.clone();
            tokio::task::spawn_blocking(move || crate::cgroups::scan(&r))
                .await
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    Json(json!({
        "node": state.node,
        "root": root.map(|r| r.display().to_string()),
        "cgroups": found,
    }))
}

async fn list_slices(State(state): State<Arc<ApiState>>, Query(q): Query<SliceQuery>) -> Response {
    if let Some(kind) = &q.kind
        && !KINDS.contains(&kind.as_str())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown kind `{kind}`; use one of {}", KINDS.join(", ")),
        );
    }
    let start_ns = q.start.map_or(i64::MIN, |ms| ms.saturating_mul(1_000_000));
    let end_ns = q.end.map_or(i64::MAX, |ms| {
        ms.saturating_mul(1_000_000).saturating_add(999_999)
    });
    let slices: Vec<SliceFile> = store::list_node(&state.node_dir)
        .into_iter()
        .filter(|s| q.kind.as_deref().is_none_or(|k| s.kind == k))
        .filter(|s| s.end_ns >= start_ns && s.start_ns <= end_ns)
        .collect();
    Json(json!({"node": state.node, "slices": slices})).into_response()
}

async fn get_slice(
    State(state): State<Arc<ApiState>>,
    Path((kind, file)): Path<(String, String)>,
) -> Response {
    // Both parts are checked against fixed shapes before any path is built from them.
    if !KINDS.contains(&kind.as_str()) || store::parse_slice_name(&file).is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected /v1/slices/<packets|tls|sockets>/<start>-<end>.parquet",
        );
    }
    let path = state.node_dir.join(&kind).join(&file);
    match tokio::fs::File::open(&path).await {
        Ok(f) => {
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            // Large reads: a slice is tens of MiB, and 4 KiB chunks (the default) cost a third of
            // a snapshot pull's time in per-chunk overhead.
            let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/vnd.apache.parquet".to_owned(),
                    ),
                    (header::CONTENT_LENGTH, len.to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(_) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no slice {kind}/{file}; list them with /v1/slices (retention may have deleted it)"
            ),
        ),
    }
}

async fn prometheus(State(state): State<Arc<ApiState>>) -> Response {
    let (cpus, attached) = kernel_counters(&state);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics::render(&state.node, &state.metrics, &cpus, attached.len()),
    )
        .into_response()
}
