//! Read-only SQL (`POST /sql`, `remora sql`): answers equal DuckDB's on the same Parquet files,
//! `kfl(...)` selects what `/mcp/calls` selects, and nothing that writes, reads files or runs
//! unbounded gets through.

mod common;

use std::path::Path;

use common::{duckdb, fixture, imported, remora};
use datafusion::arrow::ipc::reader::StreamReader;
use remora_analyzer::api;
use serde_json::{Value, json};

async fn post(routes: &axum::Router, body: Value) -> (u16, Value) {
    api::call_in_process(routes, "t", "POST", "/sql", Some(&body)).await
}

/// The rows of a JSON answer as arrays, in column order.
fn values(v: &Value) -> Vec<Vec<Value>> {
    let columns: Vec<&str> = v["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("no columns in {v}"))
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| columns.iter().map(|c| r[*c].clone()).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_like_duckdb_and_only_reads() {
    let pcap = fixture("arkime_synthetic.pcap");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let routes = imported(&data, &pcap, "ark").await;
    let db = data.join("dissections/ark/d");
    let calls = db.join("calls.parquet").display().to_string();
    let conns = db.join("conns.parquet").display().to_string();
    let packets = format!(
        "{}/snapshots/ark/capture/*/packets/*.parquet",
        data.display()
    );

    // The same statement, ours over the tables and DuckDB's over the files.
    let cases = [
        "SELECT protocol, count(*) AS n, sum(elapsed_time) AS t, max(status_code) AS s FROM {calls} GROUP BY protocol ORDER BY protocol",
        "SELECT count(*), sum(packets_c2s + packets_s2c), sum(bytes_c2s), sum(resets) FROM {conns}",
        "SELECT count(*), sum(wire_len), count(DISTINCT src_ip) FROM {packets}",
        "SELECT ip_proto, count(*) FROM {packets} GROUP BY 1 ORDER BY 1",
        "SELECT c.protocol, count(*) FROM {calls} c JOIN {conns} n ON c.conn_id = n.conn_id WHERE n.dst_port = 80 GROUP BY 1 ORDER BY 1",
        "WITH p AS (SELECT path, count(*) AS n FROM {calls} WHERE protocol = 'HTTP' GROUP BY path) SELECT count(*), sum(n) FROM p",
    ];
    for case in cases {
        let ours = case
            .replace("{calls}", "calls")
            .replace("{conns}", "conns")
            .replace("{packets}", "packets");
        let theirs = case
            .replace("{calls}", &format!("'{calls}'"))
            .replace("{conns}", &format!("'{conns}'"))
            .replace("{packets}", &format!("'{packets}'"));
        let (status, v) = post(&routes, json!({"db": "ark/d", "query": ours})).await;
        assert_eq!(status, 200, "{ours}: {v}");
        let want = duckdb(&theirs);
        assert!(!want.is_empty(), "{theirs}: DuckDB found nothing");
        assert_eq!(values(&v), want, "{ours}");
    }

    // The packets table holds every packet of the snapshot.
    let (_, manifest) = api::call_in_process(&routes, "t", "GET", "/mcp/snapshots/ark", None).await;
    let (_, v) = post(
        &routes,
        json!({"snapshot": "ark", "query": "SELECT count(*) AS n FROM packets"}),
    )
    .await;
    assert_eq!(v["rows"][0]["n"], manifest["packets"], "{v}");

    // kfl(...) selects what /mcp/calls selects, and composes with SQL.
    for filter in [
        "http and status_code >= 400",
        "dns",
        r#"path.startsWith("/certsrv")"#,
    ] {
        let (_, page) = api::call_in_process(
            &routes,
            "t",
            "GET",
            &format!(
                "/mcp/calls?db=ark/d&limit=1&kfl={}",
                remora_analyzer::cli::client::encode(filter)
            ),
            None,
        )
        .await;
        let query = format!(
            "SELECT count(*) AS n FROM kfl('{}')",
            filter.replace('\'', "''")
        );
        let (status, v) = post(&routes, json!({"db": "ark/d", "query": query})).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["rows"][0]["n"], page["total"], "{filter}");
        assert!(
            page["total"].as_u64().unwrap() > 0,
            "{filter} selects nothing"
        );
    }
    let (_, v) = post(
        &routes,
        json!({"db": "ark/d", "query": "SELECT count(*) AS n FROM kfl('conns', 'resets > 0')"}),
    )
    .await;
    let want = duckdb(&format!("SELECT count(*) FROM '{conns}' WHERE resets > 0"));
    assert_eq!(v["rows"][0]["n"], want[0][0], "{v}");

    // Refused before anything runs, with the reason.
    for (query, kind) in [
        ("DROP TABLE calls", "not_read_only"),
        ("CREATE TABLE x AS SELECT * FROM calls", "not_read_only"),
        ("CREATE VIEW v AS SELECT 1", "not_read_only"),
        ("INSERT INTO calls SELECT * FROM calls", "not_read_only"),
        ("DELETE FROM calls", "not_read_only"),
        ("COPY calls TO '/tmp/remora-sql-copy.csv'", "not_read_only"),
        (
            "COPY (SELECT 1) TO '/tmp/remora-sql-copy.parquet'",
            "not_read_only",
        ),
        ("SET datafusion.execution.batch_size = 1", "not_read_only"),
        (
            "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
            "not_read_only",
        ),
        ("SELECT * FROM '/etc/passwd'", "invalid_sql"),
        ("SELECT * FROM read_parquet('/etc/passwd')", "invalid_sql"),
        ("SELECT 1; SELECT 2", "invalid_sql"),
        ("SELEC 1", "invalid_sql"),
        ("SELECT * FROM kfl('status_code >')", "invalid_sql"),
        ("SELECT nope FROM calls", "invalid_sql"),
    ] {
        let (status, v) = post(&routes, json!({"db": "ark/d", "query": query})).await;
        assert_eq!(status, 400, "{query}: {v}");
        assert_eq!(v["error"]["kind"], kind, "{query}: {v}");
    }
    assert!(!Path::new("/tmp/remora-sql-copy.csv").exists());

    // Limits: time, memory, rows.
    let (status, v) = post(
        &routes,
        json!({"db": "ark/d", "timeout_ms": 300,
               "query": "SELECT count(*) FROM generate_series(1, 100000000000)"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["kind"].clone()),
        (408, json!("timeout")),
        "{v}"
    );
    let (status, v) = post(
        &routes,
        json!({"db": "ark/d", "memory_mb": 32,
               "query": "SELECT a.value FROM generate_series(1, 10000000) a ORDER BY a.value DESC"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["kind"].clone()),
        (413, json!("memory_limit")),
        "{v}"
    );
    let (_, v) = post(
        &routes,
        json!({"db": "ark/d", "max_rows": 7, "query": "SELECT * FROM packets"}),
    )
    .await;
    assert_eq!(
        (v["row_count"].clone(), v["truncated"].clone()),
        (json!(7), json!(true))
    );

    // CSV and Arrow IPC carry the same rows.
    let query = "SELECT protocol, count(*) AS n FROM calls GROUP BY 1 ORDER BY 1";
    let (_, v) = post(&routes, json!({"db": "ark/d", "query": query})).await;
    let (status, csv) = api::call_in_process_raw(
        &routes,
        "t",
        "POST",
        "/sql",
        Some(&json!({"db": "ark/d", "query": query, "format": "csv"})),
    )
    .await;
    assert_eq!(status, 200);
    let mut expected = String::from("protocol,n\n");
    for row in values(&v) {
        expected.push_str(&format!("{},{}\n", row[0].as_str().unwrap(), row[1]));
    }
    assert_eq!(String::from_utf8_lossy(&csv), expected);
    let (status, ipc) = api::call_in_process_raw(
        &routes,
        "t",
        "POST",
        "/sql",
        Some(&json!({"db": "ark/d", "query": query, "format": "arrow"})),
    )
    .await;
    assert_eq!(status, 200);
    let reader = StreamReader::try_new(std::io::Cursor::new(ipc.to_vec()), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, values(&v).len());

    // Offline: a directory `remora dissect` wrote, no server.
    let out = tmp.path().join("direct");
    let (ok, _, err) = remora(&[
        "dissect",
        pcap.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, stdout, err) = remora(&[
        "sql",
        "--db",
        out.to_str().unwrap(),
        query,
        "--format",
        "csv",
    ]);
    assert!(ok, "{err}");
    assert_eq!(stdout, expected);
    let (ok, _, err) = remora(&["sql", "--db", out.to_str().unwrap(), "DROP TABLE calls"]);
    assert!(!ok && err.contains("not_read_only"), "{err}");
}
