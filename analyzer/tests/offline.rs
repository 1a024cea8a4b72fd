//! `remora calls|stats --db DIR` on a directory `remora dissect` wrote: no server, the API's
//! answers, and the directory left as it was.

use std::{collections::BTreeSet, path::Path, process::Command};

use arrow::{array::AsArray as _, compute::cast, datatypes::DataType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const REMORA: &str = env!("CARGO_BIN_EXE_remora");

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(REMORA)
        .args(args)
        // No analyzer runs at this address: offline answers must not need one.
        .env("REMORA_URL", "http://127.0.0.1:9")
        .output()
        .unwrap_or_else(|e| panic!("running remora: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The protocol of every row of `calls.parquet`, read with the parquet crate.
fn protocols(dir: &Path) -> Vec<String> {
    let file = std::fs::File::open(dir.join("calls.parquet")).unwrap();
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let batch = batch.unwrap();
        let p = cast(batch.column_by_name("protocol").unwrap(), &DataType::Utf8).unwrap();
        out.extend(
            p.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("").to_owned()),
        );
    }
    out
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn calls_and_stats_answer_from_a_dissected_directory() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/pcap/arkime_synthetic.pcap");
    assert!(
        fixture.is_file(),
        "shared fixtures missing at {}",
        fixture.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    let dir_s = dir.to_str().unwrap();
    let (ok, _, err) = run(&["dissect", fixture.to_str().unwrap(), "--out", dir_s]);
    assert!(ok, "{err}");
    let before = listing(&dir);
    let protocols = protocols(&dir);
    assert!(protocols.len() > 1, "the fixture should give several calls");

    let (ok, out, err) = run(&["calls", "--db", dir_s, "--limit", "1000", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], serde_json::json!(protocols.len()));

    let dns = protocols.iter().filter(|p| *p == "DNS").count();
    let (ok, out, err) = run(&["calls", "--db", dir_s, "--kfl", "dns", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], serde_json::json!(dns));

    let http = protocols
        .iter()
        .filter(|p| ["HTTP", "HTTP/2", "gRPC"].contains(&p.as_str()))
        .count();
    let (ok, out, err) = run(&["stats", "--db", dir_s, "--kfl", "http", "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"], serde_json::json!(http));

    // The table output, and a KFL mistake explained with a caret.
    let (ok, out, _) = run(&["calls", "--db", dir_s]);
    assert!(
        ok && out.contains(&format!("of {} calls", protocols.len())),
        "{out}"
    );
    let (ok, _, err) = run(&["calls", "--db", dir_s, "--kfl", "dst.servce.name == \"x\""]);
    assert!(
        !ok && err.contains("dst.service.name") && err.contains('^'),
        "{err}"
    );

    assert_eq!(
        listing(&dir),
        before,
        "offline queries write nothing into the directory"
    );
}
