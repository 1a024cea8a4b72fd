//! Recorded traffic through dissection: the agent records real HTTP traffic (curl → nginx, with
//! keep-alive, a 200 KB body cut by the snaplen, a HEAD, a 404) in a namespace; `remora dissect`
//! turns the slices into calls, which must be exactly the requests the generator made. The
//! tcpdump capture of the same traffic, dissected the same way, must give the same calls.

mod common;

use std::{path::Path, process::Command, time::Duration};

use arrow::{
    array::{Array as _, AsArray as _},
    datatypes::{Int64Type, UInt16Type},
};
use bpf_tests::{
    net::{ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx, Tcpdump},
    require_root, require_tool, sibling_binary,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// (method, path, status, elapsed µs) of every call in a calls.parquet, sorted.
fn calls(path: &Path) -> Vec<(String, String, u16, i64)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let b = batch.unwrap();
        // Low-cardinality text columns are dictionary-typed in the file: read them as text.
        let text = |name: &str| {
            let column = b.column_by_name(name).unwrap();
            arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        let method = text("method");
        let p = text("path");
        let status = b
            .column_by_name("status_code")
            .unwrap()
            .as_primitive::<UInt16Type>()
            .clone();
        let elapsed = b
            .column_by_name("elapsed_time")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let protocol = text("protocol");
        for i in 0..b.num_rows() {
            if protocol.value(i) == "HTTP" {
                let e = if elapsed.is_valid(i) {
                    elapsed.value(i)
                } else {
                    -1
                };
                out.push((
                    method.value(i).to_owned(),
                    p.value(i).to_owned(),
                    status.value(i),
                    e,
                ));
            }
        }
    }
    out.sort();
    out
}

fn dissect(input: &Path, out: &Path) -> String {
    let bin = sibling_binary("remora");
    assert!(
        bin.is_file(),
        "{} missing: cargo build -p analyzer",
        bin.display()
    );
    let o = Command::new(bin)
        .arg("dissect")
        .arg(input)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "remora dissect failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn recorded_http_traffic_dissects_to_exactly_the_requests_made() {
    require_root();
    for tool in ["curl", "nginx", "tcpdump"] {
        require_tool(tool);
    }
    let pair = VethPair::new("dis");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = AgentProc::start(&pair.a, &data, 18821, &["--interfaces", IF_A]);
    let pcap = tmp.path().join("same.pcap");
    let dump = Tcpdump::start(&pair.a, IF_A, 4096 + 14, &pcap, true, &[]);

    // Ground truth: what the generator asks for and what nginx answers.
    let base = format!("http://{ADDR_B}:8080");
    let mut expected: Vec<(String, String, u16)> = Vec::new();
    // One connection, three requests (keep-alive), one of them a 200 KB body.
    pair.a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            &format!("{base}/"),
            &format!("{base}/big.bin"),
            &format!("{base}/missing"),
        ],
    );
    expected.extend(
        [
            ("GET", "/", 200),
            ("GET", "/big.bin", 200),
            ("GET", "/missing", 404),
        ]
        .map(|(m, p, s)| (m.into(), p.into(), s)),
    );
    pair.a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-I",
            &format!("{base}/index.html"),
        ],
    );
    expected.push(("HEAD".into(), "/index.html".into(), 200));
    pair.a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "-d",
            "x=1",
            &format!("{base}/index.html"),
        ],
    );
    expected.push(("POST".into(), "/index.html".into(), 405));
    for i in 0..5 {
        pair.a.exec_ok(
            "curl",
            &["-sS", "-o", "/dev/null", &format!("{base}/?n={i}")],
        );
        expected.push(("GET".into(), "/".into(), 200));
    }
    expected.sort();
    std::thread::sleep(Duration::from_millis(300));
    dump.stop();
    agent.stop();

    let from_slices = tmp.path().join("from-slices");
    let summary = dissect(&data.join("capture/test/packets"), &from_slices);
    eprintln!("slices: {summary}");
    let got = calls(&from_slices.join("calls.parquet"));
    let simple: Vec<(String, String, u16)> = got
        .iter()
        .map(|(m, p, s, _)| (m.clone(), p.clone(), *s))
        .collect();
    assert_eq!(
        simple, expected,
        "calls from the recorded slices differ from the requests made"
    );
    assert!(
        got.iter().all(|c| c.3 > 0),
        "every call is paired and has a latency: {got:?}"
    );

    let from_pcap = tmp.path().join("from-pcap");
    dissect(&pcap, &from_pcap);
    let via_pcap: Vec<(String, String, u16)> = calls(&from_pcap.join("calls.parquet"))
        .into_iter()
        .map(|(m, p, s, _)| (m, p, s))
        .collect();
    assert_eq!(
        via_pcap, expected,
        "tcpdump's capture of the same traffic dissects differently"
    );
}
