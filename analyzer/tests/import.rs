//! `remora snapshot import`: a capture file becomes a snapshot, and its dissection through the
//! analyzer finds exactly the calls `remora dissect` finds in the same file.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use remora_analyzer::{api, services::workloads::NoWorkloads};
use serde_json::{Value, json};

const REMORA: &str = env!("CARGO_BIN_EXE_remora");

fn remora(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(REMORA)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running remora: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get(routes: &axum::Router, path: &str) -> Value {
    let (status, v) = api::call_in_process(routes, "t", "GET", path, None).await;
    assert!(status < 400, "{path}: {status} {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_capture_dissects_like_the_file() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    assert!(
        fixtures.is_dir(),
        "shared fixtures missing at {}",
        fixtures.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_s = data.to_str().unwrap();
    // The same capture as pcapng, written by Wireshark's editcap.
    let pcapng = tmp.path().join("get.pcapng");
    let status = Command::new("editcap")
        .args(["-F", "pcapng"])
        .arg(fixtures.join("http-simple-get.pcap"))
        .arg(&pcapng)
        .status()
        .unwrap_or_else(|e| panic!("editcap (Wireshark's, `cargo xtask setup` installs it): {e}"));
    assert!(status.success(), "editcap failed");
    for (pcap, name) in [
        (fixtures.join("arkime_synthetic.pcap"), "ark"),
        (fixtures.join("http-simple-get.pcap"), "get"),
        (pcapng, "get-ng"),
    ] {
        let file = pcap.display().to_string();
        let pcap_s = pcap.to_str().unwrap();
        let (ok, out, err) = remora(&[
            "snapshot",
            "import",
            pcap_s,
            name,
            "--data-dir",
            data_s,
            "--json",
        ]);
        assert!(ok, "{err}");
        let manifest: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(manifest["status"], "completed");
        assert!(manifest["packets"].as_u64().unwrap_or(0) > 0, "{manifest}");

        // The same name again is refused, and nothing of the first is lost.
        let (ok, _, err) = remora(&["snapshot", "import", pcap_s, name, "--data-dir", data_s]);
        assert!(!ok && err.contains("already exists"), "{err}");

        let direct = tmp.path().join(format!("direct-{name}"));
        let (ok, _, err) = remora(&["dissect", pcap_s, "--out", direct.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (ok, out, err) = remora(&[
            "calls",
            "--db",
            direct.to_str().unwrap(),
            "--limit",
            "1000",
            "--json",
        ]);
        assert!(ok, "{err}");
        let direct: Value = serde_json::from_str(&out).unwrap();

        let state = api::AnalyzerState::open(&data, "t".into(), Arc::new(NoWorkloads), 1).unwrap();
        let routes = api::router(state);
        let body = json!({"snapshot": name, "name": "d1"});
        let (status, v) =
            api::call_in_process(&routes, "t", "POST", "/mcp/dissections", Some(&body)).await;
        assert!(status < 400, "{v}");
        let mut done = Value::Null;
        for _ in 0..600 {
            done = get(&routes, &format!("/mcp/dissections/{name}/d1")).await;
            if done["status"] != "pending" && done["status"] != "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(done["status"], "completed", "{done}");
        let via = get(&routes, &format!("/mcp/calls?db={name}/d1&limit=1000")).await;
        assert_eq!(via["total"], direct["total"], "{file}");
        let key = |v: &Value| -> Vec<(String, String, String, i64)> {
            let mut k: Vec<_> = v["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["protocol"].as_str().unwrap_or("").to_owned(),
                        c["path"].as_str().unwrap_or("").to_owned(),
                        c["timestamp"].as_str().unwrap_or("").to_owned(),
                        c["status_code"].as_i64().unwrap_or(0),
                    )
                })
                .collect();
            k.sort();
            k
        };
        assert_eq!(key(&via), key(&direct), "{file}: the calls differ");
    }
}
