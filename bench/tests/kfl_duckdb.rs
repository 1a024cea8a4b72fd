//! KFL answered by Remora (compiled to DataFusion expressions over Parquet) and the same
//! question written by hand in SQL and answered by DuckDB over the same file: every case must
//! select exactly the same rows. Cases live in `kfl_cases.txt`.

use std::{
    collections::BTreeSet,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use datafusion::arrow::{
    array::{Array, AsArray, RecordBatch},
    compute::cast,
    datatypes::DataType,
};
use remora_analyzer::{pipeline::calls_batch, services::query};
use remora_bench::synth::{Rng, Shop, calls, conns};
use remora_kfl::{CompileOptions, Table};
use remora_tables::{TableWriter, conns::batch as conns_batch};

/// 2026-11-24T10:00:00Z: the fixture's first call.
const START_NS: i64 = 1_795_514_400_000_000_000;
/// `now()` in the cases: two seconds after the start (the fixture spans three).
const NOW_NS: i64 = START_NS + 2_000_000_000;

struct Case {
    line: usize,
    kfl: String,
    sql: String,
}

fn cases() -> Vec<Case> {
    let text = include_str!("kfl_cases.txt");
    let mut out = Vec::new();
    let mut kfl: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(k) = line.strip_prefix("kfl:") {
            kfl = Some((i + 1, k.trim().to_owned()));
        } else if let (Some(more), Some((_, k))) = (line.strip_prefix("  "), kfl.as_mut()) {
            // Continuation lines (two leading spaces) make multi-line filters.
            k.push('\n');
            k.push_str(more);
        } else if let Some(s) = line.strip_prefix("sql:") {
            let (line, kfl) = kfl
                .take()
                .unwrap_or_else(|| panic!("sql without kfl at line {}", i + 1));
            out.push(Case {
                line,
                kfl,
                sql: s.trim().to_owned(),
            });
        }
    }
    out
}

/// The first column of every batch, as text.
fn ids(batches: &[RecordBatch]) -> BTreeSet<String> {
    batches
        .iter()
        .flat_map(|b| {
            let ids = cast(b.column(0), &DataType::Utf8).expect("ids as text");
            let ids = ids.as_string::<i32>();
            (0..ids.len())
                .map(|i| ids.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn fixture(dir: &Path) -> PathBuf {
    let mut rng = Rng::new(7);
    let rows = calls(&mut rng, 3000, START_NS, 1);
    let path = dir.join("calls.parquet");
    let mut w = TableWriter::new(Table::Calls, &path);
    // Two batches, as a dissection writes them; the second as if read from TLS plaintext.
    let (a, b) = rows.split_at(1700);
    for (part, source) in [(a, "ebpf"), (b, "ebpf_tls")] {
        w.write(&calls_batch("node-1", source, part, &Shop::default()).expect("batch"))
            .expect("write");
    }
    w.finish().expect("finish");
    path
}

fn duckdb(file: &Path, table: Table, cases: &[Case]) -> Vec<serde_json::Value> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup` (it creates the venv with duckdb)",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kfl_duckdb.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting python");
    let req = serde_json::json!({
        "file": file.to_string_lossy(),
        "table": table.name(),
        "cases": cases.iter().map(|c| c.sql.as_str()).collect::<Vec<_>>(),
    });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(req.to_string().as_bytes())
        .expect("writing cases");
    let out = child.wait_with_output().expect("duckdb");
    assert!(out.status.success(), "duckdb script failed");
    serde_json::from_slice(&out.stdout).expect("duckdb json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfl_agrees_with_duckdb_on_every_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = fixture(dir.path());
    let cases = cases();
    assert!(cases.len() >= 150, "only {} cases", cases.len());
    let expected = duckdb(&file, Table::Calls, &cases);
    let ctx = query::session();
    query::register(&ctx, Table::Calls, &file)
        .await
        .expect("register");
    let options = CompileOptions { now_ns: NOW_NS };
    let total = 3000;
    let mut failures = Vec::new();
    let mut trivial = Vec::new();
    for (case, want) in cases.iter().zip(&expected) {
        let want: BTreeSet<String> = match want.as_array() {
            Some(ids) => ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            None => {
                failures.push(format!(
                    "line {}: DuckDB refused `{}`: {want}",
                    case.line, case.sql
                ));
                continue;
            }
        };
        let got: BTreeSet<String> =
            match query::filtered(&ctx, Table::Calls, &case.kfl, &options).await {
                Ok((df, _)) => {
                    let batches = df.select_columns(&["id"]).expect("id").collect().await;
                    match batches {
                        Ok(batches) => ids(&batches),
                        Err(e) => {
                            failures.push(format!(
                                "line {}: `{}` failed at run time: {e}",
                                case.line, case.kfl
                            ));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    failures.push(format!("line {}: `{}` refused: {e}", case.line, case.kfl));
                    continue;
                }
            };
        if got != want {
            let only_remora: Vec<_> = got.difference(&want).take(3).collect();
            let only_duckdb: Vec<_> = want.difference(&got).take(3).collect();
            failures.push(format!(
                "line {}: `{}` → {} rows, DuckDB `{}` → {} rows; only Remora: {only_remora:?}, only DuckDB: {only_duckdb:?}",
                case.line,
                case.kfl,
                got.len(),
                case.sql,
                want.len()
            ));
        } else if got.is_empty() || got.len() == total {
            trivial.push(format!(
                "line {}: `{}` selects {} rows",
                case.line,
                case.kfl,
                got.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // A case that selects nothing or everything cannot tell a right answer from a wrong one;
    // a few are there on purpose (empty filter, impossible conditions), most must discriminate.
    assert!(
        trivial.len() <= 13,
        "too many cases select nothing or everything:\n{}",
        trivial.join("\n")
    );
    println!(
        "{} KFL cases agree with DuckDB ({} trivial)",
        cases.len(),
        trivial.len()
    );
}

/// The same over `conns`: every stored column and the flags, against DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfl_on_conns_agrees_with_duckdb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("conns.parquet");
    let rows = conns(&mut Rng::new(3), 2000, START_NS);
    let mut w = TableWriter::new(Table::Conns, &file);
    w.write(&conns_batch("node-1", &rows).expect("batch"))
        .expect("write");
    w.finish().expect("finish");
    let table: &[(&str, &str)] = &[
        ("resets > 0", "resets > 0"),
        (
            "tcp && rst_by == \"server\"",
            "coalesce(rst_by, '') = 'server'",
        ),
        ("rst_by == \"\"", "coalesce(rst_by, '') = ''"),
        (
            "handshake_us > 100000",
            "coalesce(handshake_us, 0) > 100000",
        ),
        ("handshake_us == 0", "coalesce(handshake_us, 0) = 0"),
        ("bytes_s2c > 10 * bytes_c2s", "bytes_s2c > 10 * bytes_c2s"),
        (
            "packets_c2s + packets_s2c < 100",
            "packets_c2s + packets_s2c < 100",
        ),
        (
            "retransmissions_c2s > 0 || retransmissions_s2c > 2",
            "retransmissions_c2s > 0 OR retransmissions_s2c > 2",
        ),
        ("fins == 2 && resets == 0", "fins = 2 AND resets = 0"),
        ("http", "l7 IN ('HTTP', 'HTTP/2')"),
        ("tlsx && dst.port == 443", "l7 = 'TLS' AND dst_port = 443"),
        ("l7 == \"\"", "l7 = ''"),
        ("dns || l7 == \"HTTP/2\"", "l7 = 'DNS' OR l7 = 'HTTP/2'"),
        (
            "src.ip == \"198.18.1.99\" && dst.port in [80, 8080]",
            "src_ip = '198.18.1.99' AND dst_port IN (80, 8080)",
        ),
        (
            "last_ts - first_ts > duration(\"30s\")",
            "epoch_ns(last_ts) - epoch_ns(first_ts) > 30000000000",
        ),
        (
            "timestamp >= timestamp(\"2026-11-24T10:00:01Z\")",
            "first_ts >= TIMESTAMPTZ '2026-11-24 10:00:01+00'",
        ),
        (
            "first_ts < now() - duration(\"1500ms\")",
            "first_ts < TIMESTAMPTZ '2026-11-24 10:00:00.5+00'",
        ),
        ("conn_id % 7 == 0 && conn", "conn_id % 7 = 0"),
        ("udp", "false"),
    ];
    let cases: Vec<Case> = table
        .iter()
        .enumerate()
        .map(|(i, (k, q))| Case {
            line: i + 1,
            kfl: (*k).to_owned(),
            sql: (*q).to_owned(),
        })
        .collect();
    let expected = duckdb(&file, Table::Conns, &cases);
    let ctx = query::session();
    query::register(&ctx, Table::Conns, &file)
        .await
        .expect("register");
    let options = CompileOptions { now_ns: NOW_NS };
    let mut failures = Vec::new();
    for (case, want) in cases.iter().zip(&expected) {
        let want: BTreeSet<String> = match want.as_array() {
            Some(ids) => ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            None => {
                failures.push(format!("`{}`: DuckDB refused: {want}", case.sql));
                continue;
            }
        };
        let got: BTreeSet<String> =
            match query::filtered(&ctx, Table::Conns, &case.kfl, &options).await {
                Ok((df, _)) => ids(&df
                    .select_columns(&["conn_id"])
                    .expect("conn_id")
                    .collect()
                    .await
                    .expect("runs")),
                Err(e) => {
                    failures.push(format!("`{}` refused: {e}", case.kfl));
                    continue;
                }
            };
        if got != want {
            failures.push(format!(
                "`{}` → {} rows, DuckDB `{}` → {}",
                case.kfl,
                got.len(),
                case.sql,
                want.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
