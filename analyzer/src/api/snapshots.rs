//! Data boundaries, snapshots and dissection jobs.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AnalyzerState, ApiError};
use crate::services::snapshots::{CreateRequest, SnapshotStatus};

type Api<T> = Result<T, ApiError>;

fn now_ms() -> i64 {
    remora_kfl::time::now_ns() / 1_000_000
}

/// `GET /mcp/data-boundaries`: the recorded window per node and over all.
pub async fn boundaries(State(s): State<Arc<AnalyzerState>>) -> Api<Json<Value>> {
    let capture = s.data.join("capture");
    let mut nodes = Vec::new();
    let (mut oldest, mut newest) = (i64::MAX, i64::MIN);
    for name in crate::services::snapshots::recorded_nodes(&s.data) {
        let slices = remora_agent::store::list_node(&capture.join(&name));
        let Some((first, last)) = remora_agent::store::recorded_span(&slices) else {
            continue;
        };
        oldest = oldest.min(first);
        newest = newest.max(last);
        nodes.push(json!({
            "name": name,
            "oldest_ts": first / 1_000_000,
            "newest_ts": last / 1_000_000,
            "slices": slices.len(),
            "bytes": slices.iter().map(|f| f.bytes).sum::<u64>(),
            "drops": remora_agent::drops::sum_slices(&slices).packets,
        }));
    }
    if let Some(agents) = s.store.remote_agents().cloned() {
        let local: Vec<String> = nodes
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_owned))
            .collect();
        let answers = agents.all_boundaries_async().await;
        for remote in answers {
            let (name, url) = (remote.node, remote.url);
            match remote.answer {
                Ok(b) => {
                    if local.contains(&name) {
                        continue;
                    }
                    if let (Some(first), Some(last)) = (b["oldest_ts"].as_i64(), b["newest_ts"].as_i64()) {
                        oldest = oldest.min(first.saturating_mul(1_000_000));
                        newest = newest.max(last.saturating_mul(1_000_000));
                    }
                    nodes.push(json!({
                        "name": name,
                        "oldest_ts": b["oldest_ts"],
                        "newest_ts": b["newest_ts"],
                        "bytes": b["kinds"]["packets"]["bytes"],
                        "slices": b["kinds"]["packets"]["files"],
                        "drops": b["drops"]["packets"],
                        "source": url,
                    }));
                }
                Err(e) => nodes.push(json!({
                    "name": name,
                    "source": url, "reachable": false,
                    "error": format!("{e}; this node's traffic cannot be snapshotted until its agent answers"),
                })),
            }
        }
    }
    let cluster = if oldest > newest {
        json!({"oldest_ts": null, "newest_ts": null})
    } else {
        json!({"oldest_ts": oldest / 1_000_000, "newest_ts": newest / 1_000_000})
    };
    Ok(Json(json!({"cluster": cluster, "nodes": nodes})))
}

/// `POST /mcp/snapshots {name, duration | start, end, nodes}`: starts making a snapshot.
pub async fn create_snapshot(
    State(s): State<Arc<AnalyzerState>>,
    body: Result<Json<CreateRequest>, axum::extract::rejection::JsonRejection>,
) -> Api<(StatusCode, Json<Value>)> {
    let Json(req) = body.map_err(|e| {
        ApiError::bad(format!(
            "{e}; send {{\"name\": \"...\", \"duration\": \"1h\"}}"
        ))
    })?;
    let now = now_ms();
    let (start, end) = crate::services::snapshots::window(&req, now)?;
    s.store.reserve(&req.name)?;
    let store = s.store.clone();
    let name = req.name.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.build(&req, start, end, now) {
            tracing::error!(snapshot = %req.name, error = %e, "snapshot failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(
            json!({"name": name, "status": SnapshotStatus::InProgress, "start": start, "end": end}),
        ),
    ))
}

/// `GET /mcp/snapshots`.
pub async fn list_snapshots(State(s): State<Arc<AnalyzerState>>) -> Json<Value> {
    let list: Vec<Value> = s
        .store
        .list()
        .into_iter()
        .map(|m| {
            json!({"name": m.name, "status": m.status, "start": m.start, "end": m.end,
                   "packets": m.packets, "bytes": m.bytes, "nodes": m.nodes.len(),
                   "created_at": m.created_at})
        })
        .collect();
    Json(json!({"snapshots": list}))
}

/// `GET /mcp/snapshots/{name}`: status and contents (files summarised per node).
pub async fn get_snapshot(
    State(s): State<Arc<AnalyzerState>>,
    Path(name): Path<String>,
    Query(q): Query<DissectionQuery>,
) -> Api<Json<Value>> {
    let m = s.store.get(&name)?;
    let mut out = json!({
        "name": m.name, "status": m.status, "reason": m.reason, "start": m.start, "end": m.end,
        "nodes": m.nodes, "files": m.files.len(), "packets": m.packets, "bytes": m.bytes,
        "drops": m.drops, "created_at": m.created_at, "workloads": m.workloads,
    });
    if q.verify {
        let store = s.store.clone();
        add_verification(&mut out, move || store.verify(&name)).await;
    }
    Ok(Json(out))
}

/// `DELETE /mcp/snapshots/{name}`.
pub async fn delete_snapshot(
    State(s): State<Arc<AnalyzerState>>,
    Path(name): Path<String>,
) -> Api<Json<Value>> {
    s.store.delete(&name)?;
    // Its dissections went with it.
    s.tables.forget(&s.data.join("dissections").join(&name));
    Ok(Json(json!({"deleted": name})))
}

/// The seed's Start body.
#[derive(Deserialize)]
pub struct StartGrpc {
    snapshot_name: String,
    dissection_name: String,
}

/// `POST /delayed_dissection.DelayedDissection/Start`.
pub async fn start_dissection_grpc(
    State(s): State<Arc<AnalyzerState>>,
    body: Result<Json<StartGrpc>, axum::extract::rejection::JsonRejection>,
) -> Api<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad(format!(
            "{e}; send {{\"snapshot_name\": \"...\", \"dissection_name\": \"...\"}}"
        ))
    })?;
    let status = s.jobs.start(&b.snapshot_name, &b.dissection_name)?;
    Ok((StatusCode::ACCEPTED, Json(json!(status))))
}

/// The REST Start body.
#[derive(Deserialize)]
pub struct StartRest {
    snapshot: String,
    name: String,
}

/// `POST /mcp/dissections {snapshot, name}`.
pub async fn start_dissection(
    State(s): State<Arc<AnalyzerState>>,
    body: Result<Json<StartRest>, axum::extract::rejection::JsonRejection>,
) -> Api<(StatusCode, Json<Value>)> {
    let Json(b) = body.map_err(|e| {
        ApiError::bad(format!(
            "{e}; send {{\"snapshot\": \"...\", \"name\": \"...\"}}"
        ))
    })?;
    let status = s.jobs.start(&b.snapshot, &b.name)?;
    Ok((StatusCode::ACCEPTED, Json(json!(status))))
}

/// `GetStatus` query: one job, or every job.
#[derive(Deserialize)]
pub struct StatusQuery {
    snapshot_name: Option<String>,
    dissection_name: Option<String>,
}

/// `GET /delayed_dissection.DelayedDissection/GetStatus[?snapshot_name&dissection_name]`.
pub async fn dissection_status_grpc(
    State(s): State<Arc<AnalyzerState>>,
    Query(q): Query<StatusQuery>,
) -> Api<Json<Value>> {
    match (q.snapshot_name, q.dissection_name) {
        (Some(snap), Some(name)) => Ok(Json(json!(s.jobs.status(&snap, &name)?))),
        (snap, None) => Ok(Json(json!({"dissections": s.jobs.list(snap.as_deref())?}))),
        (None, Some(_)) => Err(ApiError::bad("give snapshot_name with dissection_name")),
    }
}

/// `GET /mcp/dissections[?snapshot=]`.
#[derive(Deserialize)]
pub struct ListQuery {
    snapshot: Option<String>,
}

/// `GET /mcp/dissections`.
pub async fn list_dissections(
    State(s): State<Arc<AnalyzerState>>,
    Query(q): Query<ListQuery>,
) -> Api<Json<Value>> {
    Ok(Json(
        json!({"dissections": s.jobs.list(q.snapshot.as_deref())?}),
    ))
}

/// `GET /mcp/snapshots/{name}?verify=true` and `GET /mcp/dissections/{snapshot}/{name}?verify=true`
/// parameters.
#[derive(Debug, Deserialize, Default)]
pub struct DissectionQuery {
    /// Recompute the files' checksums and say whether they match.
    #[serde(default)]
    verify: bool,
}

/// `GET /mcp/dissections/{snapshot}/{name}[?verify=true]`.
pub async fn get_dissection(
    State(s): State<Arc<AnalyzerState>>,
    Path((snapshot, name)): Path<(String, String)>,
    Query(q): Query<DissectionQuery>,
) -> Api<Json<Value>> {
    let mut out = json!(s.jobs.status(&snapshot, &name)?);
    if q.verify {
        let jobs = s.jobs.clone();
        add_verification(&mut out, move || jobs.verify(&snapshot, &name)).await;
    }
    Ok(Json(out))
}

/// Recomputes checksums off the async workers (it reads whole files) and adds `verified` and,
/// when they differ, `verify_error` to `out`.
async fn add_verification(
    out: &mut Value,
    verify: impl FnOnce() -> Result<(), String> + Send + 'static,
) {
    let result = tokio::task::spawn_blocking(verify)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    out["verified"] = json!(result.is_ok());
    if let Err(e) = result {
        out["verify_error"] = json!(e);
    }
}

/// `DELETE /mcp/dissections/{snapshot}/{name}`: a finished dissection, tables and status.
pub async fn delete_dissection(
    State(s): State<Arc<AnalyzerState>>,
    Path((snapshot, name)): Path<(String, String)>,
) -> Api<Json<Value>> {
    let dir = s.jobs.db_dir(&snapshot, &name)?;
    s.jobs.delete(&snapshot, &name)?;
    s.tables.forget(&dir);
    Ok(Json(json!({"deleted": format!("{snapshot}/{name}")})))
}

/// `POST /mcp/dissections/{snapshot}/{name}/stop`.
pub async fn stop_dissection(
    State(s): State<Arc<AnalyzerState>>,
    Path((snapshot, name)): Path<(String, String)>,
) -> Api<Json<Value>> {
    Ok(Json(json!(s.jobs.stop(&snapshot, &name)?)))
}
