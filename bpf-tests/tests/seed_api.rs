//! The seed's flow over HTTP against traffic recorded here: `remora up` (recorder + analyzer) in
//! a namespace, a frontend calling a checkout service whose `/api/v1/checkout` always answers
//! 503, and the checkout service calling the frontend back. Then, through the API only:
//! data boundaries → snapshot → dissection → the seed's four KFL filters, whose counts must be
//! exactly what the traffic generator (curl) reported.

use std::{collections::BTreeMap, time::Duration};

use remora_bpf_tests::{
    netns::{ADDR_A, ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx},
    require_root, require_tool,
};
use serde_json::{Value, json};

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs curl in `ns` for each path (keep-alive, one process); returns status per request.
fn curl(ns: &remora_bpf_tests::netns::NetNs, base: &str, paths: &[&str]) -> Vec<(String, u16)> {
    curl_timed(ns, base, paths)
        .into_iter()
        .map(|(path, code, _)| (path, code))
        .collect()
}

/// [`curl`], with each request's time as curl saw it: from the request sent to the response's
/// first byte, µs.
fn curl_timed(
    ns: &remora_bpf_tests::netns::NetNs,
    base: &str,
    paths: &[&str],
) -> Vec<(String, u16, i64)> {
    let mut cmd = ns.command("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{time_pretransfer} %{time_starttransfer}\\n",
        "--max-time",
        "10",
    ]);
    for p in paths {
        cmd.arg(format!("{base}{p}"));
    }
    let out = cmd.output().expect("curl");
    let answers: Vec<(u16, i64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let code = fields.next()?.parse().ok()?;
            let sent: f64 = fields.next()?.parse().ok()?;
            let first_byte: f64 = fields.next()?.parse().ok()?;
            Some((code, ((first_byte - sent) * 1e6) as i64))
        })
        .collect();
    assert_eq!(
        answers.len(),
        paths.len(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    paths
        .iter()
        .zip(answers)
        .map(|(p, (code, us))| (p.to_string(), code, us))
        .collect()
}

/// With `REMORA_API_EXAMPLES=<file>`, the test writes the requests it made and the answers it
/// got as Markdown: docs/api.md's examples come from such a run.
fn example(title: &str, request: &str, response: &Value) {
    let Ok(path) = std::env::var("REMORA_API_EXAMPLES") else {
        return;
    };
    let mut shown = response.clone();
    for (key, keep) in [("calls", 2), ("groups", 3)] {
        if let Some(list) = shown.get_mut(key).and_then(Value::as_array_mut) {
            list.truncate(keep);
        }
    }
    let text = format!(
        "### {title}\n\n```\n{request}\n```\n\n```json\n{}\n```\n\n",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    use std::io::Write as _;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

/// A Python HTTP server on 198.18.0.2:9090 whose paths sleep a known time.
struct SlowServer(std::process::Child);

impl SlowServer {
    fn start(ns: &remora_bpf_tests::netns::NetNs) -> Self {
        let script = r#"
import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        delay, status = {"/api/v1/cart": (0.02, 200), "/api/v1/checkout": (0.06, 503)}.get(self.path, (0, 404))
        time.sleep(delay)
        body = b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("198.18.0.2", 9090), H).serve_forever()
"#;
        let child = ns
            .command("python3")
            .args(["-c", script])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3");
        let up = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            ns.command("nc")
                .args(["-z", ADDR_B, "9090"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        assert!(up, "the slow server did not start");
        Self(child)
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn seed_flow_over_http_counts_exactly_what_was_sent() {
    require_root();
    require_tool("nginx");
    require_tool("curl");
    let pair = VethPair::new("seed");
    let data = tempfile::tempdir().expect("tempdir");
    let workloads = data.path().join("workloads.json");
    std::fs::write(
        &workloads,
        json!([
            {"ip": ADDR_A, "pod": "frontend-7d9f8", "namespace": "shop", "service": "frontend"},
            {"ip": ADDR_B, "pod": "checkout-0", "namespace": "shop", "service": "checkout"},
        ])
        .to_string(),
    )
    .expect("workloads file");
    let data_dir = data.path().join("data");
    let agent = AgentProc::start_up(
        &pair.a,
        &data_dir,
        8898,
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "1s",
            "--workloads",
            workloads.to_str().unwrap_or_default(),
            "--redact-pattern",
            "\"items\": [0-9]+",
        ],
    );
    let _checkout = Nginx::start(&pair.b, ADDR_B, 8080);
    let _frontend = Nginx::start(&pair.a, ADDR_A, 8080);

    // The traffic, and its ground truth from curl itself.
    let mut outbound = Vec::new();
    for _ in 0..3 {
        outbound.extend(curl(
            &pair.a,
            &format!("http://{ADDR_B}:8080"),
            &[
                "/api/v1/cart",
                "/api/v1/checkout",
                "/",
                "/api/v1/cart",
                "/api/v1/checkout",
            ],
        ));
    }
    // HTTP/2 (prior knowledge) to the checkout service's nginx.
    // One curl per request: curl 7.88 breaks reusing a prior-knowledge connection.
    let h2_lines: Vec<String> = ["/", "/api/v1/checkout", "/api/v1/cart"]
        .iter()
        .map(|p| {
            let out = pair
                .a
                .command("curl")
                .args([
                    "-sS",
                    "--http2-prior-knowledge",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{http_version}",
                ])
                .arg(format!("http://{ADDR_B}:8081{p}"))
                .output()
                .expect("curl h2");
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .collect();
    assert_eq!(h2_lines, ["200 2", "503 2", "200 2"]);
    // A slow service with known latencies: cart 20 ms, checkout 60 ms (and 503).
    let _slow = SlowServer::start(&pair.b);
    let mut slow = Vec::new();
    // What curl measured, by path: the reference for Remora's latencies.
    let mut client_us: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for _ in 0..10 {
        for (path, code, us) in curl_timed(
            &pair.a,
            &format!("http://{ADDR_B}:9090"),
            &["/api/v1/cart", "/api/v1/cart", "/api/v1/checkout"],
        ) {
            client_us.entry(path.clone()).or_default().push(us);
            slow.push((path, code));
        }
    }
    let inbound = curl(
        &pair.b,
        &format!("http://{ADDR_A}:8080"),
        &["/", "/", "/api/v1/cart", "/api/v1/checkout"],
    );
    let count = |calls: &[(String, u16)], f: &dyn Fn(&str, u16) -> bool| {
        calls.iter().filter(|(p, s)| f(p, *s)).count() as u64
    };
    // One request carrying a secret, which MCP must never show.
    let secret = pair
        .a
        .command("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            "Authorization: Bearer s3cret",
        ])
        .arg(format!("http://{ADDR_B}:8080/api/v1/cart"))
        .status()
        .expect("curl");
    assert!(secret.success());
    outbound.push(("/api/v1/cart".to_owned(), 200));
    // Everything the frontend sent: HTTP/1 to nginx and to the slow service, HTTP/2 to nginx.
    outbound.extend(slow.iter().cloned());
    outbound.extend([
        ("/".to_owned(), 200),
        ("/api/v1/checkout".to_owned(), 503),
        ("/api/v1/cart".to_owned(), 200),
    ]);
    let all: Vec<(String, u16)> = outbound.iter().chain(&inbound).cloned().collect();
    let failed_503 = count(&all, &|_, s| s == 503);
    let checkout_503 = count(&all, &|p, s| p == "/api/v1/checkout" && s == 503);
    assert!(
        failed_503 >= 7,
        "nginx should answer 503 on /api/v1/checkout: {all:?}"
    );
    // Let the last slice close (1 s slices).
    std::thread::sleep(Duration::from_millis(2500));

    // 1. Data boundaries.
    let b = agent.api_json("/mcp/data-boundaries");
    example("Data boundaries", "GET /mcp/data-boundaries", &b);
    assert_eq!(b["nodes"][0]["name"], "test", "{b}");
    assert!(b["cluster"]["newest_ts"].as_i64().unwrap_or(0) > 0, "{b}");

    // 2–3. Snapshot of the last minute, polled to completion.
    let (status, created) = agent.api_post(
        "/mcp/snapshots",
        &json!({"name": "frontend-analysis", "duration": "1m"}),
    );
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["status"], "in_progress");
    example(
        "Create a snapshot (202)",
        "POST /mcp/snapshots\n{\"name\": \"frontend-analysis\", \"duration\": \"1m\"}",
        &created,
    );
    let (status, again) = agent.api_post(
        "/mcp/snapshots",
        &json!({"name": "frontend-analysis", "duration": "1m"}),
    );
    assert_eq!(status, 409, "same name twice: {again}");
    example(
        "The same name again (409)",
        "POST /mcp/snapshots {same body}",
        &again,
    );
    let snap = agent.wait_for("/mcp/snapshots/frontend-analysis", |v| {
        v["status"] == "completed"
    });
    assert!(snap["packets"].as_u64().unwrap_or(0) > 0, "{snap}");
    // The two workload records are frozen into the snapshot; the job attributes with them.
    assert_eq!(snap["workloads"], 2, "{snap}");
    example(
        "Snapshot status",
        "GET /mcp/snapshots/frontend-analysis",
        &snap,
    );

    // 4–5. Dissection, polled to completion.
    let (status, started) = agent.api_post(
        "/delayed_dissection.DelayedDissection/Start",
        &json!({"snapshot_name": "frontend-analysis", "dissection_name": "analysis-1"}),
    );
    assert_eq!(status, 202, "{started}");
    let done = agent.wait_for(
        "/delayed_dissection.DelayedDissection/GetStatus?snapshot_name=frontend-analysis&dissection_name=analysis-1",
        |v| v["status"] != "pending" && v["status"] != "running",
    );
    assert_eq!(done["status"], "completed", "{done}");
    example(
        "Dissection status",
        "GET /delayed_dissection.DelayedDissection/GetStatus?snapshot_name=frontend-analysis&dissection_name=analysis-1",
        &done,
    );
    assert_eq!(done["progress"], 100.0);
    let http_calls = done["calls_by_protocol"]["HTTP"].as_u64().unwrap_or(0);
    assert_eq!(http_calls, all.len() as u64 - 3, "{done}");
    assert_eq!(
        done["calls_by_protocol"]["HTTP/2"].as_u64(),
        Some(3),
        "{done}"
    );

    // 6–9. The seed's filters, verbatim.
    let db = "frontend-analysis/analysis-1";
    let calls = |kfl: &str| -> Value {
        agent.api_json(&format!(
            "/mcp/calls?db={}&kfl={}&limit=1000&format=full",
            encode(db),
            encode(kfl)
        ))
    };
    let cases: BTreeMap<&'static str, u64> = BTreeMap::from([
        (r#"src.pod contains "frontend""#, outbound.len() as u64),
        (r#"dst.svc=="frontend""#, inbound.len() as u64),
        ("response.status==503", failed_503),
        (
            r#"request.path=="/api/v1/checkout" and response.status==503"#,
            checkout_503,
        ),
    ]);
    for (kfl, want) in &cases {
        let v = calls(kfl);
        example(
            &format!("Calls where `{kfl}`"),
            &format!("GET /mcp/calls?db={db}&kfl={kfl}&limit=1000&format=full"),
            &v,
        );
        assert_eq!(v["total"].as_u64(), Some(*want), "`{kfl}`: {v}");
        assert_eq!(
            v["calls"].as_array().map(Vec::len),
            Some(*want as usize),
            "`{kfl}`"
        );
        assert_eq!(v["truncated"], false);
    }
    let failing = calls(r#"request.path=="/api/v1/checkout" and response.status==503"#);
    for c in failing["calls"].as_array().cloned().unwrap_or_default() {
        assert_eq!(c["path"], "/api/v1/checkout", "{c}");
        assert_eq!(c["status_code"], 503, "{c}");
        assert!(c["elapsed_time"].as_i64().unwrap_or(0) > 0, "{c}");
        assert!(
            c["request.headers"]["user-agent"]
                .as_str()
                .unwrap_or("")
                .starts_with("curl/"),
            "{c}"
        );
    }

    // The analysis in one call: totals, error rate, status classes, per path.
    let stats = agent.api_json(&format!(
        "/mcp/stats?db={}&kfl=http&group_by=path",
        encode(db)
    ));
    example(
        "Statistics per path",
        &format!("GET /mcp/stats?db={db}&kfl=http&group_by=path"),
        &stats,
    );
    assert_eq!(stats["count"].as_u64(), Some(all.len() as u64), "{stats}");
    assert_eq!(stats["errors"].as_u64(), Some(failed_503), "{stats}");
    assert_eq!(stats["status"]["5xx"].as_u64(), Some(failed_503), "{stats}");
    assert!(
        stats["latency_us"]["p50"].as_i64().unwrap_or(0) > 0,
        "{stats}"
    );
    let groups = stats["groups"].as_array().cloned().unwrap_or_default();
    let checkout = groups
        .iter()
        .find(|g| g["key"] == "/api/v1/checkout")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        checkout["count"].as_u64(),
        Some(count(&all, &|p, _| p == "/api/v1/checkout")),
        "{stats}"
    );
    assert_eq!(checkout["error_rate"], 1.0, "{stats}");
    // Known latencies come back as curl measured them, within a few ms (the capture point and
    // curl's clock are not the same place): the server sleeps a known time, but on a busy
    // machine a response may come later than that, and then both see it.
    let slow_stats = agent.api_json(&format!(
        "/mcp/stats?db={}&kfl={}&group_by=path",
        encode(db),
        encode("dst.port == 9090")
    ));
    for (path, ms) in [("/api/v1/cart", 20), ("/api/v1/checkout", 60)] {
        let g = slow_stats["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["key"] == path))
            .cloned()
            .unwrap_or_default();
        let mut seen = client_us.get(path).cloned().unwrap_or_default();
        seen.sort_unstable();
        assert!(!seen.is_empty(), "curl timed no request to {path}");
        let (median, slowest) = (seen[seen.len() / 2], seen[seen.len() - 1]);
        let p50 = g["latency_us"]["p50"].as_i64().unwrap_or(0);
        let p99 = g["latency_us"]["p99"].as_i64().unwrap_or(0);
        assert!(
            p50 >= ms * 1000 && (p50 - median).abs() < 5_000,
            "{path} p50 = {p50} µs, sleep {ms} ms, curl's median {median} µs: {slow_stats}"
        );
        assert!(
            p99 >= ms * 1000 && p99 < slowest + 5_000,
            "{path} p99 = {p99} µs, sleep {ms} ms, curl's slowest {slowest} µs: {slow_stats}"
        );
    }
    let h2 = agent.api_json(&format!(
        "/mcp/calls?db={}&kfl={}",
        encode(db),
        encode("http2 && response.status == 503")
    ));
    assert_eq!(h2["total"], 1, "{h2}");
    let minutes = agent.api_json(&format!("/mcp/stats?db={}&group_by=minute", encode(db)));
    let per_minute: u64 = minutes["groups"].as_array().map_or(0, |g| {
        g.iter().map(|m| m["count"].as_u64().unwrap_or(0)).sum()
    });
    assert_eq!(
        per_minute,
        minutes["count"].as_u64().unwrap_or(u64::MAX),
        "{minutes}"
    );

    // The same from a shell: `remora calls` and `remora stats` against the running analyzer.
    let remora = remora_bpf_tests::sibling_binary("remora");
    let token = data_dir.join("token");
    let shell = |args: &[&str]| -> String {
        let out = pair
            .a
            .command(remora.to_str().unwrap_or_default())
            .args(args)
            .args(["--url", "http://127.0.0.1:8898", "--token-file"])
            .arg(&token)
            .output()
            .expect("remora client");
        assert!(
            out.status.success(),
            "remora {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = shell(&[
        "calls",
        "--db",
        db,
        "--kfl",
        "response.status==503",
        "--limit",
        "1000",
    ]);
    assert!(
        text.contains(&format!("{failed_503} of {failed_503} calls")),
        "{text}"
    );
    assert!(
        text.contains("checkout-0") && text.contains("/api/v1/checkout"),
        "{text}"
    );
    let text = shell(&["stats", "--db", db, "--group-by", "path"]);
    assert!(
        text.contains(&format!("{} calls, {failed_503} errors", all.len())),
        "{text}"
    );
    let text = shell(&["snapshot", "list"]);
    assert!(
        text.contains("frontend-analysis") && text.contains("completed"),
        "{text}"
    );

    // One call in full, by id.
    let id = failing["calls"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let one = agent.api_json(&format!("/mcp/calls/{id}?db={}", encode(db)));
    example(
        "One call in full",
        &format!("GET /mcp/calls/{id}?db={db}"),
        &one,
    );
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["response_body"], "payment timeout\n", "{one}");

    // Paging: 2 per page walks every 503 once.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = agent.api_json(&format!(
            "/mcp/calls?db={}&kfl={}&limit=2{cursor}",
            encode(db),
            encode("response.status==503")
        ));
        for c in page["calls"].as_array().cloned().unwrap_or_default() {
            seen.push(c["id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(n) => cursor = format!("&cursor={n}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len() as u64, failed_503);

    // Errors: broken KFL is a 400 with a caret; unknown db a 404; no token a 401; same over /api.
    let (status, body) = agent.api(&format!(
        "/mcp/calls?db={}&kfl={}",
        encode(db),
        encode("dst.servce.name == 1")
    ));
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 400, "{body}");
    example(
        "A KFL mistake (400)",
        &format!("GET /mcp/calls?db={db}&kfl=dst.servce.name == 1"),
        &body,
    );
    assert_eq!(body["error"]["kind"], "unknown_field");
    assert_eq!(body["error"]["suggestions"][0], "dst.service.name");
    let (status, _) = agent.api(&format!("/mcp/calls?db={}", encode("nope/none")));
    assert_eq!(status, 404);
    let (status, _) = agent.api_with_token("/mcp/snapshots", None);
    assert_eq!(status, 401);
    let (status, _) = agent.api("/api/mcp/snapshots/frontend-analysis");
    assert_eq!(status, 200);
    let openapi = agent.api_json("/openapi.json");
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(
        openapi["paths"]["/mcp/calls"]["get"]["parameters"]
            .as_array()
            .is_some_and(|p| p.len() >= 9)
    );
    let endpoints = agent.api_json("/mcp/endpoints");
    assert!(
        endpoints["endpoints"]
            .as_array()
            .is_some_and(|e| e.len() >= 15)
    );
    let explained = agent.api_json(&format!(
        "/mcp/calls?db={}&kfl={}&explain=true&limit=1",
        encode(db),
        encode("response.status==503")
    ));
    example(
        "Explain",
        &format!("GET /mcp/calls?db={db}&kfl=response.status==503&explain=true&limit=1"),
        &explained,
    );
    assert_eq!(
        explained["explain"],
        "SELECT * FROM calls WHERE (status_code = 503)"
    );

    // 10. The same flow through MCP, driven by the official Python SDK over Streamable HTTP.
    let python = remora_bpf_tests::workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run cargo xtask setup",
        python.display()
    );
    let script = remora_bpf_tests::workspace_root().join("bpf-tests/tests/mcp_seed.py");
    let expect = json!({
        "filters": cases,
        "calls": all.len(),
        "errors": failed_503,
    });
    let token = std::fs::read_to_string(data_dir.join("token")).unwrap_or_default();
    let out = pair
        .a
        .command(python.to_str().unwrap_or_default())
        .arg(&script)
        .args([
            "http://127.0.0.1:8898/mcp",
            token.trim(),
            &expect.to_string(),
            "mcp-http",
        ])
        .output()
        .expect("python mcp client");
    assert!(
        out.status.success(),
        "MCP seed flow failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "MCP seed flow (Streamable HTTP): {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // And over stdio: the SDK starts `remora mcp --url ... --token-file ...` itself.
    let out = pair
        .a
        .command(python.to_str().unwrap_or_default())
        .arg(&script)
        .arg(format!("stdio:{}", remora.display()))
        .arg(data_dir.join("token"))
        .args([&expect.to_string(), "mcp-stdio"])
        .output()
        .expect("python mcp client");
    assert!(
        out.status.success(),
        "MCP seed flow over stdio failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "MCP seed flow (stdio): {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The MCP endpoint wants the token too, and refuses a malformed JSON-RPC message.
    let (status, _) = agent.request("POST", "/mcp", Some("{}"), None);
    assert_eq!(status, 401);
    let token = std::fs::read_to_string(data_dir.join("token")).unwrap_or_default();
    let (status, body) = agent.request("POST", "/mcp", Some("{not json"), Some(token.trim()));
    assert!(
        (400..500).contains(&status),
        "malformed MCP request: {status} {}",
        String::from_utf8_lossy(&body)
    );

    // Secrets at rest: whatever the umask the processes were started with (this test's, 022
    // normally), everything holding captured payload is private: slices, tables, snapshots,
    // the token, and an export written into a directory that others may read.
    let exports = data.path().join("exports");
    std::fs::create_dir_all(&exports).expect("exports dir");
    let export = exports.join("frontend.pcapng");
    shell(&[
        "pcap",
        "frontend-analysis",
        "--out",
        export.to_str().unwrap_or_default(),
    ]);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| {
        std::fs::symlink_metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(mode(&export), 0o600, "{}", export.display());
    let mut stack = vec![data_dir.clone()];
    let (mut files, mut dirs) = (0, 0);
    while let Some(dir) = stack.pop() {
        assert_eq!(mode(&dir), 0o700, "directory {}", dir.display());
        dirs += 1;
        for entry in std::fs::read_dir(&dir).expect("listing").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "file {}", path.display());
                files += 1;
            }
        }
    }
    assert!(
        files > 10 && dirs > 5,
        "{files} files in {dirs} directories"
    );
}
