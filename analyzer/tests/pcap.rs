//! PCAP export: the pcapng a snapshot exports reads back with tshark as exactly the recorded
//! packets (count, bytes, order across nodes), through the library and through `remora pcap`
//! against a served analyzer.

mod common;

use std::{path::Path, process::Command, sync::Arc};

use arrow::array::{Array as _, AsArray as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use remora_analyzer::{
    api,
    services::{pcap, snapshots::SnapshotStore, workloads::NoWorkloads},
};

const REMORA: &str = env!("CARGO_BIN_EXE_remora");

/// (packets, payload bytes) of the packet slices below `dir`.
fn recorded(dir: &Path) -> (usize, usize) {
    let (mut n, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let file = std::fs::File::open(entry.path()).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let payload = batch.column_by_name("payload").unwrap().as_binary::<i32>();
            for i in 0..payload.len() {
                n += 1;
                bytes += payload.value(i).len();
            }
        }
    }
    (n, bytes)
}

/// tshark's reading of a pcapng: (interface name, epoch time, captured length) per packet.
fn tshark(file: &Path) -> Vec<(String, f64, usize)> {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args([
            "-T",
            "fields",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.time_epoch",
            "-e",
            "frame.cap_len",
        ])
        .output()
        .unwrap_or_else(|e| panic!("tshark (`cargo xtask setup` installs it): {e}"));
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_export_reads_back_as_the_recorded_packets() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path()).unwrap();
    // The same time-ordered capture recorded by two nodes: the export interleaves them.
    let capture = fixtures.join("http-100-continue.pcap");
    store.import("a", &capture, "node-a").unwrap();
    store.import("b", &capture, "node-b").unwrap();
    let dirs: Vec<(String, std::path::PathBuf)> = ["a", "b"]
        .iter()
        .flat_map(|s| store.packet_dirs(s).unwrap())
        .collect();
    let file = tmp.path().join("both.pcapng");
    let mut out = std::fs::File::create(&file).unwrap();
    let written = pcap::export(&dirs, i64::MIN, i64::MAX, &Default::default(), &mut out).unwrap();
    drop(out);

    let read = tshark(&file);
    let (mut packets, mut bytes) = (0, 0);
    for (node, dir) in &dirs {
        let (n, b) = recorded(dir);
        assert_eq!(read.iter().filter(|r| &r.0 == node).count(), n, "{node}");
        packets += n;
        bytes += b;
    }
    assert_eq!(read.len(), packets);
    assert_eq!(written.packets as usize, packets);
    assert_eq!(read.iter().map(|r| r.2).sum::<usize>(), bytes);
    assert!(
        read.windows(2).all(|w| w[0].1 <= w[1].1),
        "merged in time order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remora_pcap_downloads_a_snapshot_from_the_analyzer() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = SnapshotStore::open(&data).unwrap();
    store
        .import("s", &fixtures.join("arkime_synthetic.pcap"), "node-a")
        .unwrap();
    let (packets, bytes) = recorded(&store.packet_dirs("s").unwrap()[0].1);
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "secret-token").unwrap();
    let state =
        api::AnalyzerState::open(&data, "secret-token".into(), Arc::new(NoWorkloads), 1).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });

    let run = |args: Vec<String>| {
        let (url, token) = (url.clone(), token_file.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(REMORA)
                .args(args)
                .arg("--url")
                .arg(url)
                .arg("--token-file")
                .arg(token)
                .output()
                .unwrap()
        })
    };
    let out_file = tmp.path().join("s.pcapng");
    let out = run(vec![
        "pcap".into(),
        "s".into(),
        "--out".into(),
        out_file.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = tshark(&out_file);
    assert_eq!(read.len(), packets);
    assert_eq!(read.iter().map(|r| r.2).sum::<usize>(), bytes);

    // A window keeps the packets in it, inclusive of its end millisecond.
    let t0 = read[0].1;
    let cut_ms = ((t0 + 1.0) * 1000.0).floor() as i64;
    let windowed = tmp.path().join("w.pcapng");
    let out = run(vec![
        "pcap".into(),
        "s".into(),
        "--out".into(),
        windowed.display().to_string(),
        "--end".into(),
        cut_ms.to_string(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = read
        .iter()
        .filter(|r| (r.1 * 1000.0).floor() as i64 <= cut_ms)
        .count();
    assert_eq!(tshark(&windowed).len(), want);

    // A capture filter, as tcpdump takes it.
    let filtered = tmp.path().join("f.pcapng");
    let out = run(vec![
        "pcap".into(),
        "s".into(),
        "--out".into(),
        filtered.display().to_string(),
        "--bpf-filter".into(),
        "ip6 and tcp".into(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = tshark_count(&out_file, r#"frame.protocols matches "^raw:ipv6:tcp""#);
    assert!(want > 0);
    assert_eq!(tshark(&filtered).len(), want);

    // Unknown snapshot and node: clear errors, and no file left behind.
    let missing = tmp.path().join("none.pcapng");
    let out = run(vec![
        "pcap".into(),
        "nope".into(),
        "--out".into(),
        missing.display().to_string(),
    ])
    .await
    .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("list_snapshots")
    );
    assert!(!missing.exists() && !missing.with_extension("pcapng.tmp").exists());
    let out = run(vec![
        "pcap".into(),
        "s".into(),
        "--out".into(),
        missing.display().to_string(),
        "--nodes".into(),
        "node-z".into(),
    ])
    .await
    .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("node-a"));
    server.abort();
}

/// tshark's `field` of each packet of `file` that `display_filter` keeps, one line each.
fn tshark_lines(file: &Path, display_filter: &str, field: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", display_filter, "-T", "fields", "-e", field])
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// tshark's count of the packets of `file` that `display_filter` keeps.
fn tshark_count(file: &Path, display_filter: &str) -> usize {
    tshark_lines(file, display_filter, "frame.number").len()
}

/// tshark's distinct values of `field` in the packets `display_filter` keeps, sorted.
fn tshark_fields(file: &Path, display_filter: &str, field: &str) -> Vec<String> {
    let values: std::collections::BTreeSet<String> = tshark_lines(file, display_filter, field)
        .into_iter()
        .collect();
    values.into_iter().collect()
}

/// Downloads `path` from the in-process analyzer into `file`; the status.
async fn download(routes: &axum::Router, path: &str, file: &Path) -> u16 {
    let (status, bytes) = api::call_in_process_raw(routes, "t", "GET", path, None).await;
    std::fs::write(file, &bytes).unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bpf_filter_and_kfl_keep_what_tshark_finds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let routes = common::imported(&data, &common::fixture("arkime_synthetic.pcap"), "s").await;
    let all = tmp.path().join("all.pcapng");
    assert_eq!(download(&routes, "/mcp/snapshots/s/pcap", &all).await, 200);
    let total = tshark_count(&all, "frame");
    assert!(total > 100, "{total}");

    // bpf_filter: libpcap's syntax, compared with tshark's display filter for the same thing.
    for (bpf, display) in [
        (
            "tcp port 80",
            "tcp.port == 80 && !ipv6.nxt == 41 && !(ip.proto == 4 || ip.proto == 47)",
        ),
        // libpcap looks at the outer headers only; tshark's fields match in tunnels too.
        ("udp and port 53", "count(udp) == 1 && udp.port == 53"),
        ("ip6", r#"frame.protocols matches "^raw:ipv6""#),
    ] {
        let file = tmp.path().join("bpf.pcapng");
        let path = format!("/mcp/snapshots/s/pcap?bpf_filter={}", urlencode(bpf));
        assert_eq!(download(&routes, &path, &file).await, 200, "{bpf}");
        let got = tshark_count(&file, "frame");
        let want = tshark_count(&all, display);
        assert_eq!(got, want, "bpf_filter `{bpf}` vs tshark `{display}`");
        assert!(got > 0 && got < total, "{bpf}: {got} of {total}");
    }

    // kfl: the packets of the matching calls' flows. Every HTTP call of this capture is on
    // port 80, and the connections carrying one are kept whole (port-80 connections without a
    // request, such as lone RSTs, are not); each DNS call is one exchange of its own.
    let check = common::get(
        &routes,
        "/mcp/snapshots/s/pcap?check=true&kfl=dst.port%20%3D%3D%2080",
    )
    .await;
    let http_calls = common::get(
        &routes,
        "/mcp/calls?db=s/d&kfl=dst.port%20%3D%3D%2080&limit=1",
    )
    .await;
    assert_eq!(check["kfl_calls"], http_calls["total"], "{check}");
    let http_streams = tshark_fields(&all, "http && tcp.port == 80", "tcp.stream");
    assert_eq!(
        check["kfl_flows"].as_u64(),
        Some(http_streams.len() as u64),
        "{check}"
    );
    let http_display = format!("tcp.stream in {{{}}}", http_streams.join(","));
    for (kfl, display) in [
        ("dst.port == 80", http_display.as_str()),
        (r#"transport == "udp""#, "udp.port == 53 && dns"),
    ] {
        let file = tmp.path().join("kfl.pcapng");
        let path = format!("/mcp/snapshots/s/pcap?kfl={}", urlencode(kfl));
        assert_eq!(download(&routes, &path, &file).await, 200, "{kfl}");
        let got = tshark_count(&file, "frame");
        let want = tshark_count(&all, display);
        assert_eq!(got, want, "kfl `{kfl}` vs tshark `{display}`");
        // Both together: the intersection.
        let both = format!("{path}&bpf_filter={}", urlencode("ip6"));
        assert_eq!(download(&routes, &both, &file).await, 200);
        let want = tshark_count(&all, &format!("({display}) && ipv6"));
        assert_eq!(tshark_count(&file, "frame"), want, "kfl `{kfl}` and ip6");
    }

    // Mistakes are JSON errors before any byte of pcapng.
    for (path, kind) in [
        (
            "/mcp/snapshots/s/pcap?bpf_filter=tcp%20port%20nope",
            "invalid_bpf_filter",
        ),
        ("/mcp/snapshots/s/pcap?kfl=dst.port%20%3D%3D", "invalid_sql"),
        (
            "/mcp/snapshots/s/pcap?kfl=dst.port%20%3D%3D%2080&dissection=zz",
            "not_found",
        ),
    ] {
        let (status, v) = api::call_in_process(&routes, "t", "GET", path, None).await;
        assert!(status >= 400, "{path}: {status} {v}");
        assert_eq!(v["error"]["kind"], kind, "{path}: {v}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
