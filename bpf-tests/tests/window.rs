//! Snapshots hold exactly their window: with 10 s slices, a 3 s snapshot inside them reports
//! the calls that started in those 3 s, no more, including those on a keep-alive connection
//! that began before the window and ended after it.

use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx},
    require_root, require_tool,
};
use serde_json::{Value, json};

/// Requests every 100 ms for 6 s, request `i` for `/r{i}` (a 404, which is still a call): even
/// ones on one keep-alive connection, odd ones each on a new connection. Prints each request's
/// send time (unix ns).
const CLIENT: &str = r#"
import http.client, sys, time
host = sys.argv[1]
keep = http.client.HTTPConnection(host, 8080, timeout=5)
start = time.time()
for i in range(60):
    time.sleep(max(0.0, start + i * 0.1 - time.time()))
    t = time.time_ns()
    if i % 2 == 0:
        keep.request("GET", f"/r{i}")
        keep.getresponse().read()
    else:
        c = http.client.HTTPConnection(host, 8080, timeout=5)
        c.request("GET", f"/r{i}")
        c.getresponse().read()
        c.close()
    print(t, flush=True)
keep.close()
"#;

#[test]
fn a_snapshot_reports_exactly_the_calls_of_its_window() {
    require_root();
    for tool in ["nginx", "python3", "curl"] {
        require_tool(tool);
    }
    let pair = VethPair::new("win");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let tmp = tempfile::tempdir().expect("tempdir");
    let agent = AgentProc::start_up(
        &pair.a,
        &tmp.path().join("data"),
        18852,
        &["--interfaces", IF_A, "--slice-duration", "10s"],
    );
    let out = pair
        .a
        .command("python3")
        .args(["-c", CLIENT, ADDR_B])
        .output()
        .expect("python3 client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(sent.len(), 60);

    // A 3 s window whose edges fall halfway between requests.
    let start_ms = (sent[12] + 50_000_000) / 1_000_000;
    let end_ms = start_ms + 3000;
    let want = sent
        .iter()
        .filter(|&&t| t >= start_ms * 1_000_000 && t <= end_ms * 1_000_000 + 999_999)
        .count() as u64;
    assert!((29..=31).contains(&want), "{want} requests in the window");

    // Wait until the 10 s slices holding the requests are published.
    let last_ms = sent[59] / 1_000_000;
    let published = |v: &Value| v["nodes"][0]["newest_ts"].as_i64().unwrap_or(0) >= last_ms;
    agent.wait_for("/mcp/data-boundaries", published);

    let (status, v) = agent.api_post(
        "/mcp/snapshots",
        &json!({"name": "w", "start": start_ms, "end": end_ms}),
    );
    assert!(status < 300, "{v}");
    let snap = agent.wait_for("/mcp/snapshots/w", |v| v["status"] != "in_progress");
    assert_eq!(snap["status"], "completed", "{snap}");
    let (status, v) = agent.api_post("/mcp/dissections", &json!({"snapshot": "w", "name": "d"}));
    assert!(status < 300, "{v}");
    let job = agent.wait_for("/mcp/dissections/w/d", |v| {
        v["status"] == "completed" || v["status"] == "failed"
    });
    assert_eq!(job["status"], "completed", "{job}");

    let calls = agent.api_json("/mcp/calls?db=w/d&kfl=http&limit=100");
    assert_eq!(calls["total"].as_u64(), Some(want), "{}", calls["total"]);
    // Both kinds are there: the keep-alive connection began before the window.
    let mut seen: Vec<u64> = calls["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["path"].as_str()?.strip_prefix("/r")?.parse().ok())
        .collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (0..60u64)
        .filter(|&i| {
            let t = sent[i as usize];
            t >= start_ms * 1_000_000 && t <= end_ms * 1_000_000 + 999_999
        })
        .collect();
    assert_eq!(seen, expected, "{}", calls["calls"][0]);
    // The snapshot's whole 10 s slices reach past the 3 s window (they cover at least 10 s of
    // the 6 s of traffic around it): a dissection of them without the window finds more.
    let all = tmp.path().join("all");
    let out = std::process::Command::new(remora_bpf_tests::sibling_binary("remora"))
        .arg("dissect")
        .arg(tmp.path().join("data/snapshots/w"))
        .arg("--out")
        .arg(&all)
        .output()
        .expect("remora dissect");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let whole: u64 = text
        .split(" calls (")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        whole > want,
        "{whole} calls in the whole slices, {want} in the window: {text}"
    );
    agent.stop();
}
