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
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, NetNs, VethPair},
    proc::{AgentProc, Nginx, Tcpdump},
    require_root, require_tool, sibling_binary,
};

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
        "{} missing: cargo build -p remora-analyzer",
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

/// Sum of both retransmission columns over every connection in a conns.parquet.
fn retransmissions(path: &Path) -> u64 {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut total = 0;
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
    {
        let b = batch.unwrap();
        for name in ["retransmissions_c2s", "retransmissions_s2c"] {
            let column = b.column_by_name(name).unwrap();
            total += column
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .iter()
                .flatten()
                .sum::<u64>();
        }
    }
    total
}

/// A router namespace between client and server, recorded on both of its interfaces: every
/// forwarded packet is recorded twice (ingress on one side, egress on the other, one TTL
/// less). Dissection of the slices must count each packet once: exactly the requests made, no
/// phantom retransmissions, and the copies counted.
#[test]
fn packets_recorded_on_two_interfaces_count_once() {
    require_root();
    for tool in ["curl", "nginx", "ip"] {
        require_tool(tool);
    }
    // client (198.18.1.1) — r0 [router] r1 — server (198.18.2.1)
    let client = NetNs::new("cpc");
    let router = NetNs::new("cpr");
    let server = NetNs::new("cps");
    for (ns, ours, theirs, peer, ours_addr, theirs_addr) in [
        (
            &client,
            "c0",
            "r0",
            &router,
            "198.18.1.1/24",
            "198.18.1.254/24",
        ),
        (
            &server,
            "s0",
            "r1",
            &router,
            "198.18.2.1/24",
            "198.18.2.254/24",
        ),
    ] {
        ns.exec_ok(
            "ip",
            &[
                "link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", &peer.name,
            ],
        );
        ns.exec_ok("ip", &["addr", "add", ours_addr, "dev", ours]);
        peer.exec_ok("ip", &["addr", "add", theirs_addr, "dev", theirs]);
        ns.exec_ok("ip", &["link", "set", ours, "up"]);
        peer.exec_ok("ip", &["link", "set", theirs, "up"]);
    }
    client.exec_ok("ip", &["route", "add", "default", "via", "198.18.1.254"]);
    server.exec_ok("ip", &["route", "add", "default", "via", "198.18.2.254"]);
    router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);

    let _nginx = Nginx::start(&server, "198.18.2.1", 8080);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = AgentProc::start(&router, &data, 18822, &["--interfaces", "r0,r1"]);
    let mut expected = Vec::new();
    for i in 0..6 {
        client.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://198.18.2.1:8080/?n={i}"),
            ],
        );
        expected.push(("GET".to_owned(), "/".to_owned(), 200u16));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = agent.stop();

    let out = tmp.path().join("out");
    let summary = dissect(&data.join("capture/test/packets"), &out);
    eprintln!("router: {summary}");
    let got: Vec<(String, String, u16)> = calls(&out.join("calls.parquet"))
        .into_iter()
        .map(|(m, p, s, _)| (m, p, s))
        .collect();
    assert_eq!(got, expected, "calls through the router\n{summary}\n{log}");
    assert_eq!(
        retransmissions(&out.join("conns.parquet")),
        0,
        "copies counted as retransmissions\n{summary}"
    );
    let copies: u64 = summary
        .lines()
        .flat_map(|line| line.split(", "))
        .find_map(|part| part.trim().strip_suffix(" copies of packets seen twice"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    // 6 connections x (3 handshake + ≥ 2 data + ≥ 3 close) packets, each recorded twice.
    assert!(
        copies >= 6 * 8,
        "only {copies} copies recognised\n{summary}"
    );
}
