//! What the analyzer's integration tests share: the `remora` binary, DuckDB as the independent
//! reader of the same Parquet, and a capture imported and dissected through the API.

#![allow(dead_code)] // each test file uses its own part

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use remora_analyzer::{api, services::workloads::NoWorkloads};
use serde_json::{Value, json};

/// The `remora` binary of this build.
pub const REMORA: &str = env!("CARGO_BIN_EXE_remora");

/// Runs `remora args...`: (success, stdout, stderr).
pub fn remora(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(REMORA)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap_or_else(|e| panic!("running remora: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// DuckDB's rows for `sql`, values as JSON (other types as text).
pub fn duckdb(sql: &str) -> Vec<Vec<Value>> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup` (it creates the venv with duckdb)",
        python.display()
    );
    let script = "import duckdb, json, sys\n\
                  rows = duckdb.sql(sys.argv[1]).fetchall()\n\
                  print(json.dumps([[v if isinstance(v, (int, float, str)) or v is None else str(v) for v in r] for r in rows]))";
    let out = Command::new(python)
        .args(["-c", script, sql])
        .output()
        .expect("running duckdb");
    assert!(
        out.status.success(),
        "duckdb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("duckdb json")
}

/// A shared fixture capture.
pub fn fixture(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/pcap")
        .join(name);
    assert!(path.is_file(), "shared fixture missing: {}", path.display());
    path
}

/// An analyzer over `data` (token `t`) in which `pcap` was imported as snapshot `name` and
/// dissected as `<name>/d`.
pub async fn imported(data: &Path, pcap: &Path, name: &str) -> axum::Router {
    let (ok, _, err) = remora(&[
        "snapshot",
        "import",
        pcap.to_str().unwrap(),
        name,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let state = api::AnalyzerState::open(data, "t".into(), Arc::new(NoWorkloads), 1).unwrap();
    let routes = api::router(state);
    let body = json!({"snapshot": name, "name": "d"});
    let (status, v) =
        api::call_in_process(&routes, "t", "POST", "/mcp/dissections", Some(&body)).await;
    assert!(status < 400, "{v}");
    for _ in 0..600 {
        let path = format!("/mcp/dissections/{name}/d");
        let (_, v) = api::call_in_process(&routes, "t", "GET", &path, None).await;
        if v["status"] == "completed" {
            return routes;
        }
        assert!(v["status"] != "failed", "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the dissection of {name} did not finish");
}

/// GETs `path` and returns the JSON, failing on an error status.
pub async fn get(routes: &axum::Router, path: &str) -> Value {
    let (status, v) = api::call_in_process(routes, "t", "GET", path, None).await;
    assert!(status < 400, "{path}: {status} {v}");
    v
}
