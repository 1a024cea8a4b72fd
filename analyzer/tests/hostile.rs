//! Hostile captures: dissection stays within bounded memory and keeps the calls around the
//! attack. Each capture is made here, byte by byte, and dissected by the `remora` binary while
//! its peak resident memory is watched.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{REMORA, duckdb};

/// A classic pcap (raw IP) being written: TCP segments with real sequence numbers.
struct Pcap {
    bytes: Vec<u8>,
    ts_us: u64,
}

impl Pcap {
    fn new() -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&65535u32.to_le_bytes());
        bytes.extend_from_slice(&101u32.to_le_bytes());
        Self {
            bytes,
            ts_us: 1_795_514_400_000_000,
        }
    }

    fn segment(
        &mut self,
        from: ([u8; 4], u16),
        to: ([u8; 4], u16),
        seq: u32,
        flags: u8,
        data: &[u8],
    ) {
        let total = 40 + data.len();
        self.ts_us += 100;
        self.bytes
            .extend_from_slice(&((self.ts_us / 1_000_000) as u32).to_le_bytes());
        self.bytes
            .extend_from_slice(&((self.ts_us % 1_000_000) as u32).to_le_bytes());
        self.bytes.extend_from_slice(&(total as u32).to_le_bytes());
        self.bytes.extend_from_slice(&(total as u32).to_le_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&from.0);
        ip[16..20].copy_from_slice(&to.0);
        self.bytes.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&from.1.to_be_bytes());
        tcp[2..4].copy_from_slice(&to.1.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        self.bytes.extend_from_slice(&tcp);
        self.bytes.extend_from_slice(data);
    }
}

/// One TCP connection: handshake, then each side's bytes in order, cut into segments.
fn connection(
    pcap: &mut Pcap,
    client: ([u8; 4], u16),
    server: ([u8; 4], u16),
    turns: &[(bool, Vec<u8>)],
) {
    let (mut cseq, mut sseq) = (1000u32, 5000u32);
    pcap.segment(client, server, cseq - 1, 0x02, &[]);
    pcap.segment(server, client, sseq - 1, 0x12, &[]);
    pcap.segment(client, server, cseq, 0x10, &[]);
    for (from_client, data) in turns {
        for chunk in data.chunks(60_000) {
            if *from_client {
                pcap.segment(client, server, cseq, 0x18, chunk);
                cseq = cseq.wrapping_add(chunk.len() as u32);
            } else {
                pcap.segment(server, client, sseq, 0x18, chunk);
                sseq = sseq.wrapping_add(chunk.len() as u32);
            }
        }
    }
    pcap.segment(client, server, cseq, 0x11, &[]);
    pcap.segment(server, client, sseq, 0x11, &[]);
}

/// An HPACK string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

fn integer(out: &mut Vec<u8>, first: u8, prefix: u8, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET of `path`: `:method GET`, `:scheme http` (indexed), `:path` and `:authority` literal.
fn get(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04];
    string(&mut b, path.as_bytes());
    b.push(0x01);
    string(&mut b, b"shop");
    b
}

const OK: [u8; 1] = [0x88]; // :status 200
const END: u8 = 0x1 | 0x4; // END_STREAM | END_HEADERS

fn client_start() -> Vec<u8> {
    let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    c.extend(frame(4, 0, 0, &[]));
    c
}

/// Runs `remora dissect` on `capture` into `out`; its peak resident memory, bytes.
fn dissect_watching_memory(capture: &Path, out: &Path) -> u64 {
    let mut child = Command::new(REMORA)
        .args(["dissect"])
        .arg(capture)
        .arg("--out")
        .arg(out)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("remora dissect");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        }) {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let out = child.wait_with_output().expect("remora dissect");
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    peak
}

/// HTTP/2 header amplification: a block that refers to one 4 KB table entry 250,000 times
/// (1 GB if every reference were kept), and a single 1 MiB HEADERS frame. Dissection stays
/// under 256 MiB, and the calls before, between and after come out.
#[test]
fn http2_header_amplification_is_bounded() {
    let (client, server) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let mut pcap = Pcap::new();

    // Connection 1: /before, the amplification block, /after.
    let mut bomb = get("/bomb");
    bomb.push(0x40); // literal with incremental indexing, new name
    string(&mut bomb, b"x-fill");
    string(&mut bomb, &[b'v'; 4000]);
    bomb.extend(std::iter::repeat_n(0x80 | 62, 250_000));
    assert!(
        bomb.len() < 256 << 10,
        "under the block bound: the decoded size is what is tested"
    );
    let mut requests = client_start();
    requests.extend(frame(1, END, 1, &get("/before")));
    requests.extend(frame(1, END, 3, &bomb));
    requests.extend(frame(1, END, 5, &get("/after")));
    let mut responses = frame(4, 0, 0, &[]);
    for stream in [1, 3, 5] {
        responses.extend(frame(1, END, stream, &OK));
    }
    connection(
        &mut pcap,
        (client, 40001),
        (server, 8080),
        &[(true, requests), (false, responses)],
    );

    // Connection 2: one 1 MiB HEADERS frame (the direction is given up), then connection 3.
    let mut huge = get("/huge");
    huge.extend(std::iter::repeat_n(0x80 | 2, 1 << 20));
    let mut requests = client_start();
    requests.extend(frame(1, END, 1, &huge));
    connection(
        &mut pcap,
        (client, 40002),
        (server, 8080),
        &[(true, requests), (false, frame(4, 0, 0, &[]))],
    );
    let mut requests = client_start();
    requests.extend(frame(1, END, 1, &get("/later")));
    let mut responses = frame(4, 0, 0, &[]);
    responses.extend(frame(1, END, 1, &OK));
    connection(
        &mut pcap,
        (client, 40003),
        (server, 8080),
        &[(true, requests), (false, responses)],
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let capture = tmp.path().join("amplification.pcap");
    std::fs::write(&capture, &pcap.bytes).expect("writing the capture");
    let out = tmp.path().join("d");
    let peak = dissect_watching_memory(&capture, &out);
    println!("peak RSS of remora dissect: {} MiB", peak >> 20);
    assert!(peak < 256 << 20, "dissection peaked at {} MiB", peak >> 20);
    let calls = duckdb(&format!(
        "SELECT path, status_code FROM '{}' WHERE protocol = 'HTTP/2' ORDER BY timestamp",
        out.join("calls.parquet").display()
    ));
    let paths: Vec<(String, i64)> = calls
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap_or_default().to_owned(),
                r[1].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("/before", 200),
            ("/bomb", 200),
            ("/after", 200),
            ("/later", 200)
        ]
        .map(|(p, s)| (p.to_owned(), s))
        .to_vec(),
        "{calls:?}"
    );
}

/// Hostile requests: path traversal in names, huge limits, deeply nested and oversized KFL,
/// pathological regexes, malformed bodies. Each gets a clear 4xx with a kind and a message,
/// and the analyzer answers the next ordinary request as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_clear_client_errors() {
    use remora_analyzer::api;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let routes = common::imported(&data, &common::fixture("http-301-get.pcap"), "s").await;
    let enc = remora_analyzer::cli::client::encode;
    let nested = format!("{}http{}", "(".repeat(5000), ")".repeat(5000));
    let long = format!("path == \"{}\"", "a".repeat(2 << 20));
    let cases: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        (
            "POST",
            "/mcp/snapshots".into(),
            Some(serde_json::json!({"name": "../../etc", "duration": "1m"})),
        ),
        (
            "POST",
            "/mcp/snapshots".into(),
            Some(serde_json::json!({"name": "a/b", "duration": "1m"})),
        ),
        (
            "POST",
            "/mcp/snapshots".into(),
            Some(serde_json::json!({"name": "x", "duration": "99999999999h"})),
        ),
        (
            "POST",
            "/mcp/snapshots".into(),
            Some(serde_json::json!("not an object")),
        ),
        (
            "GET",
            format!("/mcp/snapshots/{}", enc("../../etc/passwd")),
            None,
        ),
        ("GET", format!("/mcp/snapshots/{}/pcap", enc("..")), None),
        (
            "GET",
            format!("/mcp/calls?db={}", enc("../../../etc/s")),
            None,
        ),
        ("GET", format!("/mcp/calls?db={}", enc("s/../../d")), None),
        ("GET", "/mcp/calls?db=s/d&limit=100000000".into(), None),
        ("GET", "/mcp/calls?db=s/d&limit=-1".into(), None),
        (
            "GET",
            "/mcp/calls?db=s/d&cursor=999999999999999999999999".into(),
            None,
        ),
        (
            "GET",
            format!("/mcp/calls?db=s/d&kfl={}", enc(&nested)),
            None,
        ),
        ("GET", format!("/mcp/calls?db=s/d&kfl={}", enc(&long)), None),
        (
            "GET",
            format!("/mcp/calls?db=s/d&kfl={}", enc(r#"path matches "(a"#)),
            None,
        ),
        (
            "GET",
            format!(
                "/mcp/calls?db=s/d&kfl={}",
                enc(r#"path matches "(a{1000}){1000}""#)
            ),
            None,
        ),
        ("GET", "/mcp/insights?db=s/d&analysis=nope".into(), None),
        ("GET", "/mcp/flows?db=s/d&order=sideways".into(), None),
        ("GET", "/mcp/stats?db=s/d&group_by=nope".into(), None),
        (
            "POST",
            "/mcp/dissections".into(),
            Some(serde_json::json!({"snapshot": "../s", "name": "d"})),
        ),
        (
            "POST",
            "/sql".into(),
            Some(serde_json::json!({"db": "s/d", "query": "DROP TABLE calls"})),
        ),
        (
            "POST",
            "/sql".into(),
            Some(serde_json::json!({"db": "s/d", "query": 42})),
        ),
        (
            "GET",
            "/mcp/snapshots/s/pcap?bpf_filter=tcp%20port%2099999999".into(),
            None,
        ),
    ];
    for (method, path, body) in &cases {
        let (status, v) = api::call_in_process(&routes, "t", method, path, body.as_ref()).await;
        let shown: String = path.chars().take(120).collect();
        assert!(
            (400..500).contains(&status),
            "{method} {shown}: {status} {}",
            v.to_string().chars().take(300).collect::<String>()
        );
        let kind = v["error"]["kind"].as_str().unwrap_or_default();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            !kind.is_empty() && !message.is_empty(),
            "{method} {shown}: no clear error: {v}"
        );
    }
    // Malformed JSON bodies, as bytes.
    for (path, body) in [
        ("/mcp/snapshots", "{not json"),
        ("/sql", "[1,2"),
        ("/mcp/dissections", ""),
    ] {
        let status = raw_post(&routes, path, body).await;
        assert!(
            (400..500).contains(&status),
            "POST {path} {body:?}: {status}"
        );
    }
    // Nothing was created, and ordinary requests still answer.
    assert!(!data.join("etc").exists() && !tmp.path().join("etc").exists());
    let (status, v) =
        api::call_in_process(&routes, "t", "GET", "/mcp/calls?db=s/d&limit=5", None).await;
    assert_eq!((status, v["total"].as_u64()), (200, Some(1)), "{v}");
}

async fn raw_post(routes: &axum::Router, path: &str, body: &str) -> u16 {
    raw(routes, "POST", path, body).await.status().as_u16()
}

/// A request with the token and a JSON body as given, and the whole response.
async fn raw(
    routes: &axum::Router,
    method: &str,
    path: &str,
    body: &str,
) -> axum::response::Response {
    use tower::ServiceExt as _;
    let req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", "Bearer t")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    match routes.clone().oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// More queries than the analyzer runs and queues: the excess gets 429 with Retry-After at
/// once instead of waiting without bound, and queries run again when slots free up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_gets_429_with_retry_after() {
    use remora_analyzer::api;
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // Imported and dissected by a first analyzer; this test opens its own on the same data.
    let _first = common::imported(&data, &common::fixture("http-301-get.pcap"), "s").await;
    let state = api::AnalyzerState::open(
        &data,
        "t".into(),
        std::sync::Arc::new(remora_analyzer::services::workloads::NoWorkloads),
        1,
    )
    .expect("analyzer");
    let routes = api::router(state.clone());
    // Every slot busy, and no room to wait.
    let held = state
        .queries
        .acquire_many(api::QUERY_SLOTS as u32)
        .await
        .expect("slots");
    state
        .max_waiting
        .store(0, std::sync::atomic::Ordering::SeqCst);
    for path in [
        "/mcp/calls?db=s/d",
        "/mcp/flows?db=s/d",
        "/mcp/stats?db=s/d",
    ] {
        let response = raw(&routes, "GET", path, "").await;
        assert_eq!(response.status().as_u16(), 429, "{path}");
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{path}"
        );
    }
    drop(held);
    let (status, v) = api::call_in_process(&routes, "t", "GET", "/mcp/calls?db=s/d", None).await;
    assert_eq!(status, 200, "{v}");

    // Dissections: past the queue's size a start is refused, with Retry-After.
    state
        .jobs
        .max_queued
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let body = serde_json::json!({"snapshot": "s", "name": "more"}).to_string();
    let response = raw(&routes, "POST", "/mcp/dissections", &body).await;
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(!data.join("dissections/s/more").exists());
}
