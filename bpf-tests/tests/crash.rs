//! Crash safety: `remora up` is killed with SIGKILL at different points of a dissection, a
//! snapshot and a query (while it records), and
//! restarted on the same data each time. After every restart no partial output is visible, the
//! snapshot is intact, and each dissection is either completed with tables that match the
//! checksums in its status, or failed with the reason.

use std::time::Duration;

use remora_bpf_tests::{
    WebScene,
    netns::{ADDR_B, IF_A},
    proc::AgentProc,
    unreadable_parquet,
};
use serde_json::{Value, json};

const PORT: u16 = 18857;

fn partial_dirs(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || name.ends_with(".creating") {
                out.push(entry.path().display().to_string());
            }
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out
}

/// The dissection completed before any kill still matches its checksums.
fn assert_reference_verifies(agent: &AgentProc) {
    let snap = agent.api_json("/mcp/snapshots/s?verify=true");
    assert_eq!(snap["verified"], true, "{snap}");
    let v = agent.api_json("/mcp/dissections/s/ref?verify=true");
    assert_eq!(
        (&v["status"], &v["verified"]),
        (&json!("completed"), &json!(true)),
        "{v}"
    );
}

#[test]
fn kill_9_mid_dissection_leaves_completed_or_failed_never_half() {
    let scene = WebScene::new("crsh");
    let (pair, data) = (&scene.pair, scene.data.clone());
    let start = || {
        AgentProc::start_up(
            &pair.a,
            &data,
            PORT,
            &["--interfaces", IF_A, "--slice-duration", "1s"],
        )
    };

    // Traffic and a snapshot of it.
    let agent = start();
    for i in 0..300 {
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}:8080/r{i}"),
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    let (status, v) = agent.api_post("/mcp/snapshots", &json!({"name": "s", "duration": "5m"}));
    assert!(status < 300, "{v}");
    let snap = agent.wait_for("/mcp/snapshots/s", |v| v["status"] != "in_progress");
    assert_eq!(snap["status"], "completed", "{snap}");
    let packets = snap["packets"].clone();
    // One dissection that completes before any kill, as the reference.
    agent.api_post("/mcp/dissections", &json!({"snapshot": "s", "name": "ref"}));
    let reference = agent.wait_for("/mcp/dissections/s/ref", |v| v["status"] == "completed");
    let calls = reference["calls_found"].as_u64().unwrap_or(0);
    assert!(calls >= 300, "{reference}");

    // Kill at different points: right after the start, a little later, later still.
    let mut agent = Some(agent);
    for (cycle, delay_ms) in [0u64, 40, 400, 2000].into_iter().enumerate() {
        let running = agent.take().unwrap_or_else(start);
        let name = format!("d{cycle}");
        let (status, v) =
            running.api_post("/mcp/dissections", &json!({"snapshot": "s", "name": name}));
        assert!(status < 300, "{v}");
        std::thread::sleep(Duration::from_millis(delay_ms));
        running.kill9();

        let restarted = start();
        assert!(
            partial_dirs(&data).is_empty(),
            "partial output visible after a restart: {:?}",
            partial_dirs(&data)
        );
        let snap = restarted.api_json("/mcp/snapshots/s");
        assert_eq!(
            (&snap["status"], &snap["packets"]),
            (&json!("completed"), &packets)
        );
        for done in 0..=cycle {
            let path = format!("/mcp/dissections/s/d{done}?verify=true");
            let v: Value = restarted.api_json(&path);
            if done == cycle {
                eprintln!(
                    "killed {delay_ms} ms after starting d{done}: {}",
                    v["status"]
                );
            }
            match v["status"].as_str() {
                Some("completed") => {
                    assert_eq!(v["verified"], true, "{v}");
                    assert_eq!(v["calls_found"].as_u64(), Some(calls), "{v}");
                    let page = restarted.api_json(&format!("/mcp/calls?db=s/d{done}&limit=1"));
                    assert_eq!(page["total"].as_u64(), Some(calls), "{page}");
                }
                Some("failed") => {
                    let reason = v["error"].as_str().unwrap_or_default();
                    assert!(reason.contains("stopped before"), "{v}");
                }
                other => panic!("d{done} after a restart: {other:?} {v}"),
            }
        }
        assert_reference_verifies(&restarted);
        agent = Some(restarted);
    }
    if let Some(a) = agent {
        a.stop();
    }
}

#[test]
fn kill_9_mid_snapshot_and_mid_query_leaves_nothing_half_made() {
    let scene = WebScene::new("crsq");
    let (pair, data) = (&scene.pair, scene.data.clone());
    let start = || {
        AgentProc::start_up(
            &pair.a,
            &data,
            PORT + 1,
            &["--interfaces", IF_A, "--slice-duration", "1s"],
        )
    };
    let agent = start();
    for i in 0..200 {
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}:8080/q{i}"),
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    agent.api_post("/mcp/snapshots", &json!({"name": "s", "duration": "5m"}));
    agent.wait_for("/mcp/snapshots/s", |v| v["status"] == "completed");
    agent.api_post("/mcp/dissections", &json!({"snapshot": "s", "name": "ref"}));
    agent.wait_for("/mcp/dissections/s/ref", |v| v["status"] == "completed");

    let mut agent = Some(agent);
    for (cycle, (what, delay_ms)) in [
        ("snapshot", 0u64),
        ("snapshot", 5),
        ("snapshot", 300),
        ("query", 10),
        ("query", 60),
    ]
    .into_iter()
    .enumerate()
    {
        let running = agent.take().unwrap_or_else(start);
        let name = format!("k{cycle}");
        // Traffic while it happens: the recorder is mid-slice too.
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}:8080/big.bin"),
            ],
        );
        if what == "snapshot" {
            let (status, v) =
                running.api_post("/mcp/snapshots", &json!({"name": name, "duration": "5m"}));
            assert!(status < 300, "{v}");
        } else {
            let ns = running.ns.clone();
            let token = std::fs::read_to_string(data.join("token")).unwrap_or_default();
            std::thread::spawn(move || {
                let body = json!({"db": "s/ref", "query": "SELECT a.path, count(*) FROM calls a, calls b GROUP BY a.path"}).to_string();
                let _ = std::process::Command::new("ip")
                    .args([
                        "netns", "exec", &ns, "curl", "-sS", "-m", "30", "-X", "POST",
                    ])
                    .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
                    .args([
                        "-H",
                        "Content-Type: application/json",
                        "--data-binary",
                        &body,
                    ])
                    .arg(format!("http://127.0.0.1:{}/sql", PORT + 1))
                    .output();
            });
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        running.kill9();

        let restarted = start();
        assert!(
            partial_dirs(&data).is_empty(),
            "partial output visible after a restart: {:?}",
            partial_dirs(&data)
        );
        let bad = unreadable_parquet(&data);
        assert!(
            bad.is_empty(),
            "unreadable files after kill -9 {what}: {bad:?}"
        );
        if what == "snapshot" {
            let (code, body) = restarted.api(&format!("/mcp/snapshots/{name}"));
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            eprintln!(
                "killed {delay_ms} ms into snapshot {name}: {code} {}",
                v["status"]
            );
            match (code, v["status"].as_str()) {
                (404, _) | (200, Some("failed")) => {}
                (200, Some("completed")) => {
                    assert!(v["packets"].as_u64().unwrap_or(0) > 0, "{v}");
                    let checked = restarted.api_json(&format!("/mcp/snapshots/{name}?verify=true"));
                    assert_eq!(checked["verified"], true, "{checked}");
                    let (status, j) = restarted
                        .api_post("/mcp/dissections", &json!({"snapshot": name, "name": "d"}));
                    assert!(status < 300, "{j}");
                    let d = restarted.wait_for(&format!("/mcp/dissections/{name}/d"), |v| {
                        v["status"] != "pending" && v["status"] != "running"
                    });
                    assert_eq!(d["status"], "completed", "{d}");
                }
                other => panic!("snapshot {name} after a restart: {other:?} {v}"),
            }
        }
        assert_reference_verifies(&restarted);
        agent = Some(restarted);
    }
    if let Some(a) = agent {
        a.stop();
    }
}
