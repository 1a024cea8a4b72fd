//! TLS plaintext: `remora up` with the OpenSSL uprobes records HTTPS between network
//! namespaces (nginx with TLS; curl over HTTP/1.1 and HTTP/2, Python's ssl module), every
//! client started after the agent. The recorded plaintext must be the exact bytes sent, on the
//! connection's 4-tuple; the dissected calls must be the requests the clients made, each once
//! (though both ends' processes are hooked), read from plaintext (`capture_source` `ebpf_tls`)
//! and carrying the connection's hellos instead of a separate TLS call.

use std::{collections::BTreeMap, path::Path, process::Stdio, time::Duration};

use arrow::array::{Array as _, AsArray as _};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use remora_bpf_tests::{
    netns::{ADDR_A, ADDR_B, VethPair},
    proc::{AgentProc, Nginx, self_signed},
    require_root, require_tool,
};
use serde_json::json;

const API_PORT: u16 = 18894;
const NGINX_PORT: u16 = 18080;
const TLS_PORT: u16 = NGINX_PORT + 2;

/// A Python client: one HTTPS request with exactly these bytes; prints its local port.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s = ctx.wrap_socket(raw, server_hostname="remora.test")
s.sendall(sys.argv[3].encode().decode("unicode_escape").encode("latin-1"))
reply = b""
while True:
    data = s.recv(65536)
    if not data:
        break
    reply += data
print(s.getsockname()[1], reply.split(b"\r\n")[0].decode())
"#;

/// One recorded chunk: (comm, direction, data, own port, peer port).
type Recorded = (String, u8, Vec<u8>, Option<u16>, Option<u16>);

/// Every chunk in the `tls` slices under `dir`, in file order.
fn chunks(dir: &Path) -> Vec<Recorded> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let comm = b.column_by_name("comm").unwrap().as_string::<i32>().clone();
            let dir = b
                .column_by_name("direction")
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt8Type>()
                .clone();
            let data = b.column_by_name("data").unwrap().as_binary::<i32>().clone();
            let port = |name: &str| {
                b.column_by_name(name)
                    .unwrap()
                    .as_primitive::<arrow::datatypes::UInt16Type>()
                    .clone()
            };
            let (sport, dport) = (port("src_port"), port("dst_port"));
            for i in 0..b.num_rows() {
                let opt = |a: &arrow::array::UInt16Array| (!a.is_null(i)).then(|| a.value(i));
                out.push((
                    comm.value(i).to_owned(),
                    dir.value(i),
                    data.value(i).to_vec(),
                    opt(&sport),
                    opt(&dport),
                ));
            }
        }
    }
    out
}

#[test]
fn https_calls_are_dissected_from_plaintext_once_with_their_hellos() {
    require_root();
    for tool in ["curl", "nginx", "openssl", "python3"] {
        require_tool(tool);
    }
    let pair = VethPair::new("tl");
    let _nginx = Nginx::start_with_tls(&pair.b, ADDR_B, NGINX_PORT);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let up = AgentProc::start_up(
        &pair.a,
        &data,
        API_PORT,
        &[
            "--slice-duration",
            "1s",
            "--tls",
            "on",
            "--socket-events",
            "on",
        ],
    );
    let start_ms = now_ms() - 1000;
    let resolve = format!("remora.test:{TLS_PORT}:{ADDR_B}");
    for i in 0..3 {
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-k",
                "--http1.1",
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
            ]
            .into_iter()
            .chain([format!("https://remora.test:{TLS_PORT}/ack/tls-{i}").as_str()])
            .collect::<Vec<_>>(),
        );
    }
    pair.a.exec_ok(
        "curl",
        &[
            "-sS",
            "-k",
            "--http2",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            &format!("https://remora.test:{TLS_PORT}/ack/over-h2"),
        ],
    );
    let request = "GET /ack/python HTTP/1.1\r\nHost: remora.test\r\nX-Request-Id: py-1\r\nConnection: close\r\n\r\n";
    let escaped = request.replace("\r\n", "\\r\\n");
    let out = pair.a.exec_ok(
        "python3",
        &["-c", PYTHON_CLIENT, ADDR_B, &TLS_PORT.to_string(), &escaped],
    );
    let mut words = out.split_whitespace();
    let python_port: u16 = words
        .next()
        .and_then(|p| p.parse().ok())
        .expect("local port");
    assert!(out.contains("200"), "python's request: {out}");
    std::thread::sleep(Duration::from_millis(2500));

    // The plaintext as recorded: Python's write is exactly its request, on its connection.
    let recorded = chunks(&data.join("capture/test/tls"));
    let python_writes: Vec<_> = recorded
        .iter()
        .filter(|(comm, dir, ..)| comm == "python3" && *dir == 1)
        .collect();
    assert_eq!(
        python_writes.len(),
        1,
        "one SSL_write_ex: {python_writes:?}"
    );
    let (_, _, bytes, sport, dport) = python_writes[0];
    assert_eq!(bytes.as_slice(), request.as_bytes());
    assert_eq!(
        (*sport, *dport),
        (Some(python_port), Some(TLS_PORT)),
        "the 4-tuple"
    );
    // nginx's side was hooked too: it read the same request.
    assert!(
        recorded.iter().any(|(comm, dir, data, ..)| comm == "nginx"
            && *dir == 0
            && data == request.as_bytes()),
        "nginx's SSL_read of the request"
    );

    let snap = up.snapshot("t", start_ms, now_ms());
    assert_eq!(snap["status"], "completed", "{snap}");
    let calls = up.dissected_http_calls("t");
    let by_path: BTreeMap<String, &serde_json::Value> = calls
        .iter()
        .map(|c| (c["path"].as_str().unwrap_or("").to_owned(), c))
        .collect();
    let expected = [
        "/ack/over-h2",
        "/ack/python",
        "/ack/tls-0",
        "/ack/tls-1",
        "/ack/tls-2",
    ];
    assert_eq!(
        by_path.keys().map(String::as_str).collect::<Vec<_>>(),
        expected,
        "each request once: {calls:?}"
    );
    assert_eq!(calls.len(), expected.len(), "{calls:?}");
    for (path, call) in &by_path {
        assert_eq!(call["capture_source"], "ebpf_tls", "{call}");
        assert_eq!(call["status_code"], 200, "{call}");
        assert_eq!(
            (&call["src.ip"], &call["dst.ip"]),
            (&json!(ADDR_A), &json!(ADDR_B)),
            "{call}"
        );
        assert_eq!(call["dst.port"], json!(TLS_PORT), "{call}");
        assert_eq!(call["dst.process"], "nginx", "{call}");
        let expected_protocol = if path.as_str() == "/ack/over-h2" {
            "HTTP/2"
        } else {
            "HTTP"
        };
        assert_eq!(call["protocol"], expected_protocol, "{call}");
        assert!(call["tcp_handshake_us"].as_i64().unwrap_or(0) > 0, "{call}");
    }
    let python = by_path["/ack/python"];
    assert_eq!(python["src.port"], json!(python_port), "{python}");
    assert_eq!(python["src.process"], "python3", "{python}");
    assert_eq!(python["tlsx_sni"], "remora.test", "the hellos: {python}");
    assert_eq!(by_path["/ack/tls-0"]["src.process"], "curl");
    // The handshakes are no calls of their own: every connection's plaintext was read.
    let handshakes = up.api_json("/mcp/calls?db=t/d&kfl=tlsx&limit=100");
    assert_eq!(
        handshakes["calls"].as_array().map(Vec::len),
        Some(0),
        "{handshakes}"
    );

    // What is not decrypted is said, with why: wget (GnuTLS) connected to a TLS server that
    // never answers, while nginx's TLS is read.
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    self_signed(&cert, &key, "silent.test");
    let mut silent = pair
        .b
        .command("openssl")
        .args(["s_server", "-quiet", "-accept", "18099", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s_server");
    std::thread::sleep(Duration::from_millis(500));
    let mut wget = pair
        .a
        .command("wget")
        .args([
            "-q",
            "-O",
            "/dev/null",
            "--no-check-certificate",
            "--tries=1",
        ])
        .args(["--timeout=30", &format!("https://{ADDR_B}:18099/")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wget");
    std::thread::sleep(Duration::from_millis(1500));
    let status = up.api_json("/mcp/tls-status");
    let _ = wget.kill();
    let _ = wget.wait();
    let _ = silent.kill();
    let _ = silent.wait();
    let processes: Vec<&serde_json::Value> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| n["processes"].as_array().into_iter().flatten())
        .collect();
    let wget_status = processes
        .iter()
        .find(|p| p["comm"] == "wget")
        .unwrap_or_else(|| panic!("wget is listed: {status}"));
    assert_eq!(wget_status["decrypted"], false, "{wget_status}");
    assert_eq!(wget_status["stack"], "gnutls", "{wget_status}");
    assert!(
        wget_status["reason"]
            .as_str()
            .is_some_and(|r| r.contains("GnuTLS")),
        "{wget_status}"
    );
    assert!(
        processes
            .iter()
            .any(|p| p["comm"] == "nginx" && p["decrypted"] == true),
        "nginx's TLS is read: {status}"
    );
    assert!(
        status["summary"]["not_decrypted_by_stack"]["gnutls"].as_u64() >= Some(1),
        "{status}"
    );
    up.stop();
}

/// Go's crypto/tls (linked into the binary, no libssl): a Go client built here with Debian's
/// Go makes two HTTP/1.1 requests on one connection and one over HTTP/2; the agent hooks the
/// binary when it starts (entry and every RET, no uretprobes) and the calls are dissected from
/// its plaintext like OpenSSL's.
#[test]
fn go_https_calls_are_dissected_from_plaintext() {
    require_root();
    for tool in ["go", "nginx", "openssl"] {
        require_tool(tool);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let client = tmp.path().join("go_tls_client");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go_tls_client/main.go");
    let built = std::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&client)
        .arg(&source)
        .env("GOCACHE", tmp.path().join("gocache"))
        .env("GOPATH", tmp.path().join("gopath"))
        .env("GO111MODULE", "off")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("go runs (Debian package golang-go)");
    assert!(
        built.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let pair = VethPair::new("tg");
    let _nginx = Nginx::start_with_tls(&pair.b, ADDR_B, NGINX_PORT);
    let data = tmp.path().join("data");
    let up = AgentProc::start_up(
        &pair.a,
        &data,
        API_PORT,
        &[
            "--slice-duration",
            "1s",
            "--tls",
            "on",
            "--socket-events",
            "on",
        ],
    );
    let start_ms = now_ms() - 1000;
    let out = pair.a.exec_ok(
        client.to_str().unwrap_or_default(),
        &[&format!("https://{ADDR_B}:{TLS_PORT}")],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["HTTP/1.1 200", "HTTP/1.1 200", "HTTP/2.0 200"],
        "the Go client's own log"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let snap = up.snapshot("g", start_ms, now_ms());
    assert_eq!(snap["status"], "completed", "{snap}");
    let calls = up.dissected_http_calls("g");
    let mut seen: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap_or("").to_owned(),
                c["protocol"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("/ack/go-0".to_owned(), "HTTP".to_owned()),
            ("/ack/go-1".to_owned(), "HTTP".to_owned()),
            ("/ack/go-2".to_owned(), "HTTP/2".to_owned()),
        ],
        "{calls:?}"
    );
    for call in &calls {
        assert_eq!(call["capture_source"], "ebpf_tls", "{call}");
        assert_eq!(call["status_code"], 200, "{call}");
        assert_eq!(call["src.process"], "go_tls_client", "{call}");
        assert_eq!(
            (&call["src.ip"], &call["dst.ip"]),
            (&json!(ADDR_A), &json!(ADDR_B)),
            "{call}"
        );
        assert_eq!(call["dst.port"], json!(TLS_PORT), "{call}");
    }
    // The two HTTP/1.1 calls share their connection, as the client kept it alive.
    let h1: Vec<_> = calls.iter().filter(|c| c["protocol"] == "HTTP").collect();
    assert_eq!(h1[0]["src.port"], h1[1]["src.port"], "{h1:?}");
    up.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
