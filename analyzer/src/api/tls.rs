//! `GET /mcp/tls-status`: per node and per process, whether TLS traffic is decrypted and, if
//! not, why (the library is not hooked, statically linked, Go, Java, rustls, ...), so that an
//! assistant never reads "not decrypted" as "no traffic".

use std::sync::Arc;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::AnalyzerState;

/// Every node's TLS report (the local recorder's, and each remote agent's `GET /v1/tls`), with
/// a summary.
pub async fn tls_status(State(s): State<Arc<AnalyzerState>>) -> Json<Value> {
    Json(collect(&s).await)
}

/// The report [`tls_status`] answers with (also part of `analyze_calls`'s overview).
pub async fn collect(s: &AnalyzerState) -> Value {
    let mut nodes = Vec::new();
    if let Some(local) = s.local_node.get().cloned() {
        let report = tokio::task::spawn_blocking(move || {
            remora_agent::tls::status::report(&local, remora_agent::tls::status::published())
        })
        .await
        .unwrap_or_else(|e| json!({"error": e.to_string()}));
        nodes.push(report);
    }
    if let Some(agents) = s.store.remote_agents().cloned() {
        let answers = tokio::task::spawn_blocking(move || agents.all_json("/v1/tls"))
            .await
            .unwrap_or_default();
        for (node, answer) in answers {
            nodes.push(answer.unwrap_or_else(
                |e| json!({"node": node, "error": e, "enabled": null, "processes": []}),
            ));
        }
    }
    let mut decrypted = 0;
    let mut not_decrypted = Vec::new();
    let mut by_stack = std::collections::BTreeMap::<String, u64>::new();
    for n in &nodes {
        for p in n["processes"].as_array().into_iter().flatten() {
            if p["decrypted"] == true {
                decrypted += 1;
            } else if p["stack"] != "none" {
                *by_stack
                    .entry(p["stack"].as_str().unwrap_or("").to_owned())
                    .or_default() += 1;
                not_decrypted.push(json!({
                    "node": n["node"],
                    "pid": p["pid"],
                    "comm": p["comm"],
                    "stack": p["stack"],
                    "reason": p["reason"],
                }));
            }
        }
    }
    let listed = not_decrypted.len();
    not_decrypted.truncate(200);
    json!({
        "summary": {
            "not_decrypted_listed": not_decrypted.len(),
            "processes_decrypted": decrypted,
            "processes_with_tls_not_decrypted": listed,
            "not_decrypted_by_stack": by_stack,
            "not_decrypted": not_decrypted,
            "note": "Calls of processes whose TLS is not decrypted appear only as TLS handshakes \
                     (tlsx) and connections (conns), never as HTTP calls. Processes with stack \
                     `none` hold sockets but map no TLS library Remora knows.",
        },
        "nodes": nodes,
    })
}
