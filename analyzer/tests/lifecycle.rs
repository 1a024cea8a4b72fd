//! Snapshot and dissection lifecycle over the API: a dissection is deleted whole and its name
//! can be used again; a snapshot that cannot be built shows `failed` with the reason.

mod common;

use std::time::Duration;

use common::{fixture, imported};
use remora_analyzer::api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dissections_are_deleted_and_failed_snapshots_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let routes = imported(&data, &fixture("http-301-get.pcap"), "s").await;
    let call = |method: &'static str, path: &'static str, body: Option<serde_json::Value>| {
        let routes = routes.clone();
        async move { api::call_in_process(&routes, "t", method, path, body.as_ref()).await }
    };

    let (status, v) = call("DELETE", "/mcp/dissections/s/d", None).await;
    assert_eq!(status, 200, "{v}");
    assert!(!data.join("dissections/s/d").exists());
    let (status, v) = call("GET", "/mcp/dissections/s/d", None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call("GET", "/mcp/calls?db=s/d", None).await;
    assert_eq!(status, 404, "{v}");
    let (status, v) = call("DELETE", "/mcp/dissections/s/d", None).await;
    assert_eq!(
        (status, v["error"]["kind"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    // The name is free again, and the new dissection answers.
    let (status, v) = call(
        "POST",
        "/mcp/dissections",
        Some(json!({"snapshot": "s", "name": "d"})),
    )
    .await;
    assert!(status < 300, "{v}");
    let mut job = serde_json::Value::Null;
    for _ in 0..800 {
        job = call("GET", "/mcp/dissections/s/d", None).await.1;
        if job["status"] != "pending" && job["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(job["status"], "completed", "{job}");
    let (status, v) = call("GET", "/mcp/calls?db=s/d&limit=1", None).await;
    assert_eq!((status, v["total"].as_u64()), (200, Some(1)), "{v}");

    // A snapshot of a node that recorded nothing: accepted, then `failed` with the reason.
    let (status, v) = call(
        "POST",
        "/mcp/snapshots",
        Some(json!({"name": "bad", "duration": "1m", "nodes": ["no-such-node"]})),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    let mut last = json!(null);
    for _ in 0..200 {
        let (status, v) = call("GET", "/mcp/snapshots/bad", None).await;
        assert_eq!(status, 200, "a failed snapshot is not a 404: {v}");
        if v["status"] != "in_progress" {
            last = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(last["status"], "failed", "{last}");
    assert!(
        last["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no-such-node")),
        "{last}"
    );
    let (status, v) = call("DELETE", "/mcp/snapshots/bad", None).await;
    assert_eq!(status, 200, "{v}");
}

/// A dissection that fails keeps saying so, with its reason, after the analyzer restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dissection_survives_a_restart_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let routes = imported(&data, &fixture("http-301-get.pcap"), "s").await;
    // Break the snapshot's packets: a slice that is not Parquet.
    let mut stack = vec![data.join("snapshots/s")];
    let mut broken = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path.to_string_lossy().contains("packets")
            {
                std::fs::remove_file(&path).unwrap();
                std::fs::write(&path, b"not parquet").unwrap();
                broken += 1;
            }
        }
    }
    assert!(broken > 0);
    let body = json!({"snapshot": "s", "name": "broken"});
    let (status, v) =
        api::call_in_process(&routes, "t", "POST", "/mcp/dissections", Some(&body)).await;
    assert!(status < 300, "{v}");
    let mut failed = json!(null);
    for _ in 0..200 {
        let (_, v) =
            api::call_in_process(&routes, "t", "GET", "/mcp/dissections/s/broken", None).await;
        if v["status"] == "failed" {
            failed = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let reason = failed["error"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("Parquet"), "{failed}");

    // A new analyzer on the same data: the failure and its reason are still there.
    let state = api::AnalyzerState::open(
        &data,
        "t".into(),
        std::sync::Arc::new(remora_analyzer::services::workloads::NoWorkloads),
        1,
    )
    .unwrap();
    let restarted = api::router(state);
    let (status, v) =
        api::call_in_process(&restarted, "t", "GET", "/mcp/dissections/s/broken", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["error"].as_str()),
        (Some("failed"), Some(reason.as_str()))
    );
    let (status, v) =
        api::call_in_process(&restarted, "t", "GET", "/mcp/calls?db=s/broken", None).await;
    assert_eq!(status, 409, "{v}");
    let (status, v) =
        api::call_in_process(&restarted, "t", "DELETE", "/mcp/dissections/s/broken", None).await;
    assert_eq!(status, 200, "{v}");
}
