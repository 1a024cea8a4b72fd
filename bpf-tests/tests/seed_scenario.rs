//! The seed's story end to end, with ground truth: `remora up` records a veth pair while
//! `seed_scenario.py` plays frontend → checkout → payment → a slow gateway behind a 5 s
//! timeout (503s), a cart client retrying 3× within 100 ms, a client opening a connection per
//! database query, a pool that resets the connections it cannot hold, and 12 % of requests
//! without a correlation id. Every number the analyses report — through the HTTP API, through
//! MCP (the official Python SDK) and through SQL — is checked against the generators' own log.

use std::{
    collections::BTreeMap,
    process::{Child, Stdio},
    time::Duration,
};

use remora_bpf_tests::{
    netns::{IF_A, IF_B, VethPair},
    proc::AgentProc,
    require_root, require_tool, workspace_root,
};
use serde_json::{Value, json};

/// A background process, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn wait_for(agent: &AgentProc, path: &str) -> Value {
    for _ in 0..300 {
        let v = agent.api_json(path);
        if v["status"] == "completed" {
            return v;
        }
        assert!(v["status"] != "failed", "{path}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{path} never completed");
}

/// The rows of one part of an analysis, keyed by `key` (a column or two joined by ` | `); a
/// missing key reads as null, and the assertion on it prints the whole part.
fn by(rows: &Value, keys: &[&str]) -> Rows {
    let map = rows
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {rows}"))
        .iter()
        .map(|r| {
            let k: Vec<String> = keys
                .iter()
                .map(|k| {
                    r[*k]
                        .as_str()
                        .map_or_else(|| r[*k].to_string(), str::to_owned)
                })
                .collect();
            (k.join(" | "), r.clone())
        })
        .collect();
    Rows(map, rows.clone())
}

/// Rows by key, with the part they came from for messages.
struct Rows(BTreeMap<String, Value>, Value);

impl std::ops::Index<&str> for Rows {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("no row `{key}` in {}", self.1))
    }
}

impl Rows {
    fn len(&self) -> usize {
        self.0.len()
    }
}

const PODS: [(&str, &str); 10] = [
    ("198.18.0.1", "frontend-0"),
    ("198.18.0.2", "checkout-0"),
    ("198.18.0.3", "payment-0"),
    ("198.18.0.4", "payment-gateway"),
    ("198.18.0.5", "cart-client-0"),
    ("198.18.0.6", "cart-0"),
    ("198.18.0.7", "db-client-0"),
    ("198.18.0.8", "postgres-0"),
    ("198.18.0.9", "redis-0"),
    ("198.18.0.10", "pool-client-0"),
];

#[test]
fn the_seed_story_is_told_exactly() {
    require_root();
    require_tool("python3");
    let pair = VethPair::new("scn");
    for (ip, _) in &PODS[2..] {
        let (ns, iface) = match *ip {
            "198.18.0.3" | "198.18.0.5" | "198.18.0.7" | "198.18.0.10" => (&pair.a, IF_A),
            _ => (&pair.b, IF_B),
        };
        ns.exec_ok("ip", &["addr", "add", &format!("{ip}/24"), "dev", iface]);
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let workloads = tmp.path().join("workloads.json");
    let records: Vec<Value> = PODS
        .iter()
        .map(|(ip, pod)| json!({"ip": ip, "pod": pod, "namespace": "shop", "service": pod.trim_end_matches("-0")}))
        .collect();
    std::fs::write(&workloads, Value::Array(records).to_string()).expect("workloads file");
    let data_dir = tmp.path().join("data");
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
        ],
    );

    // The story, and its log.
    let script = workspace_root().join("bpf-tests/tests/seed_scenario.py");
    let log = tmp.path().join("truth.jsonl");
    let start = |ns: &remora_bpf_tests::netns::NetNs, role: &str| {
        ns.command("python3")
            .arg(&script)
            .args([role, log.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3")
    };
    let _b = Bg(start(&pair.b, "servers-b"));
    let _a = Bg(start(&pair.a, "servers-a"));
    let clients = start(&pair.a, "clients")
        .wait_with_output()
        .expect("the clients ran");
    assert!(
        clients.status.success(),
        "the scenario's clients failed: {}",
        String::from_utf8_lossy(&clients.stderr)
    );
    let truth: Vec<Value> = std::fs::read_to_string(&log)
        .expect("the scenario's log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a log line"))
        .collect();
    let count = |kind: &str, f: &dyn Fn(&Value) -> bool| {
        truth.iter().filter(|t| t["kind"] == kind && f(t)).count() as u64
    };
    let orders = count("frontend", &|_| true);
    let orders_503 = count("frontend", &|t| t["status"] == 503);
    let timeouts = count("gateway_timeout", &|_| true);
    let without_id = count("frontend", &|t| t["request_id"] == "");
    let cart_requests = count("cart_request", &|_| true);
    let cart_items = count("cart_request", &|t| t["attempt"] == 0);
    let db_connections = count("db_connection", &|_| true);
    let pool_resets = count("reset", &|_| true);
    assert_eq!((orders, orders_503, timeouts), (25, 5, 5), "{truth:?}");
    assert_eq!(
        (without_id, cart_requests, db_connections, pool_resets),
        (3, 30, 40, 4)
    );
    // Let the last slice close (1 s slices).
    std::thread::sleep(Duration::from_millis(2500));

    let (status, v) = agent.api_post(
        "/mcp/snapshots",
        &json!({"name": "story", "duration": "2m"}),
    );
    assert_eq!(status, 202, "{v}");
    wait_for(&agent, "/mcp/snapshots/story");
    let (status, v) = agent.api_post(
        "/mcp/dissections",
        &json!({"snapshot": "story", "name": "d"}),
    );
    assert_eq!(status, 202, "{v}");
    wait_for(&agent, "/mcp/dissections/story/d");
    let insight = |analysis: &str, extra: &str| {
        agent.api_json(&format!(
            "/mcp/insights?db=story/d&analysis={analysis}&limit=200{extra}"
        ))
    };

    // Retry storms: the cart client's 10 requests, each sent 3 times.
    let retries = insight("retries", "");
    let edges = by(&retries["by_edge"], &["src", "dst"]);
    assert_eq!(edges.len(), 1, "{retries}");
    let e = &edges["cart-client-0 | cart-0"];
    assert_eq!(
        (
            &e["storms"],
            &e["requests"],
            &e["retries"],
            &e["max_repeats"]
        ),
        (
            &json!(cart_items),
            &json!(cart_requests),
            &json!(cart_requests - cart_items),
            &json!(3)
        ),
        "{retries}"
    );
    let spacing = e["mean_spacing_ms"].as_f64().unwrap_or(0.0);
    assert!(
        (40.0..100.0).contains(&spacing),
        "spacing {spacing} ms: {retries}"
    );

    // Churn: a new connection per query to the database, whatever it speaks.
    let churn = insight("churn", "");
    let db = &by(&churn["by_destination"], &["dst"])["postgres-0:5432"];
    assert_eq!(db["connections"], json!(db_connections), "{churn}");
    let per_minute: u64 = churn["per_minute"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == "postgres-0:5432")
        .map(|r| r["new"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_minute, db_connections);

    // Resets: the pool's, sent by the server; the gateway's late answers to payment, which had
    // stopped waiting, reset by the client.
    let resets = insight("resets", "");
    let r = by(&resets["by_destination"], &["dst"]);
    assert_eq!(
        (
            &r["redis-0:6379"]["resets"],
            &r["redis-0:6379"]["by_server"]
        ),
        (&json!(pool_resets), &json!(pool_resets)),
        "{resets}"
    );
    assert_eq!(
        r["payment-gateway:8082"]["by_client"],
        json!(timeouts),
        "{resets}"
    );
    assert!(
        resets["resets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["time"].is_string()),
        "{resets}"
    );

    // Correlation ids: 3 of 25 orders without, on every hop of the chain; the cart client
    // sends none.
    let corr = insight("correlation", "");
    let services = by(&corr["by_service"], &["service"]);
    for hop in ["checkout-0", "payment-0", "payment-gateway"] {
        let s = &services[hop];
        assert_eq!(
            (
                &s["requests"],
                &s["without_id"],
                &s["share_without"],
                &s["x-request-id"]
            ),
            (
                &json!(orders),
                &json!(without_id),
                &json!(0.12),
                &json!(orders - without_id)
            ),
            "{hop}: {corr}"
        );
    }
    assert_eq!(services["cart-0"]["share_without"], json!(1.0));

    // Nesting: checkout waits on payment, payment on the gateway, for every order.
    let nesting = insight("nesting", "");
    let deps = by(&nesting["dependencies"], &["service", "dependency"]);
    for (pair_key, share_floor) in [
        ("checkout-0 | payment-0", 0.5),
        ("payment-0 | payment-gateway", 0.5),
    ] {
        let d = &deps[pair_key];
        assert_eq!(d["calls"], json!(orders), "{pair_key}: {nesting}");
        let share = d["share_of_latency"].as_f64().unwrap_or(0.0);
        assert!(
            share > share_floor && share <= 1.0,
            "{pair_key} share {share}: {nesting}"
        );
    }

    // 503s: each paired with the call behind it; payment's with the gateway call it gave up on.
    let e503 = insight("errors_503", "");
    let d = by(&e503["by_downstream"], &["service", "downstream"]);
    assert_eq!(
        d["checkout-0 | payment-0"]["errors_503"],
        json!(orders_503),
        "{e503}"
    );
    let g = &d["payment-0 | payment-gateway"];
    assert_eq!(
        (&g["errors_503"], &g["downstream_exceeded"]),
        (&json!(timeouts), &json!(timeouts)),
        "{e503}"
    );
    let waited = g["median_downstream_us"].as_f64().unwrap_or(0.0);
    assert!(
        (4.9e6..5.5e6).contains(&waited),
        "waited {waited} µs for the gateway: {e503}"
    );

    // Dependencies: the service map with rates and errors.
    let map = insight("dependencies", "");
    let edges = by(&map["edges"], &["src", "dst"]);
    for (edge, calls, errors) in [
        ("frontend-0 | checkout-0", orders, orders_503),
        ("checkout-0 | payment-0", orders, timeouts),
        ("payment-0 | payment-gateway", orders, 0),
        ("cart-client-0 | cart-0", cart_requests, 0),
    ] {
        assert_eq!(
            (&edges[edge]["count"], &edges[edge]["errors"]),
            (&json!(calls), &json!(errors)),
            "{edge}: {map}"
        );
    }

    // Journeys: each order with an id is three calls in order.
    let journeys = insight("journey", "");
    let list = journeys["journeys"].as_array().unwrap();
    assert_eq!(list.len() as u64, orders - without_id, "{journeys}");
    for j in list {
        let steps = j["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3, "{j}");
        assert!(
            steps[0]
                .as_str()
                .unwrap()
                .starts_with("frontend-0 → checkout-0 POST"),
            "{j}"
        );
        assert!(
            steps[2]
                .as_str()
                .unwrap()
                .starts_with("payment-0 → payment-gateway POST"),
            "{j}"
        );
    }

    // Timeline: every call, once, second by second.
    let timeline = insight("timeline", "&resolution=second");
    let total: u64 = timeline["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    let all = agent.api_json("/mcp/stats?db=story/d&kfl=http");
    assert_eq!(json!(total), all["count"], "{timeline}");
    assert_eq!(all["count"], json!(3 * orders + cart_requests));

    // Flows: the same resets and connections, through the flows tools.
    let flows = agent.api_json(&format!(
        "/mcp/flows/summary?db=story/d&group_by=dst&kfl={}",
        encode("dst.port == 5432")
    ));
    assert_eq!(flows["connections"], json!(db_connections), "{flows}");
    let rst = agent.api_json(&format!(
        "/mcp/flows?db=story/d&limit=100&kfl={}",
        encode("close == \"rst\" and rst_by == \"server\"")
    ));
    assert_eq!(rst["total"], json!(pool_resets), "{rst}");

    // SQL agrees.
    let (status, sql) = agent.api_post(
        "/sql",
        &json!({"db": "story/d", "query": "SELECT count(*) AS n FROM kfl('http and status_code == 503')"}),
    );
    assert_eq!(status, 200, "{sql}");
    assert_eq!(sql["rows"][0]["n"], json!(orders_503 + timeouts));

    // MCP: the same analyses through the official SDK, equal to the API's answers.
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run cargo xtask setup",
        python.display()
    );
    let token = std::fs::read_to_string(data_dir.join("token")).unwrap_or_default();
    let big = 1_000_000;
    let calls = json!([
        ["analyze_calls", {"db": "story/d", "analysis": "retries", "limit": 200, "max_result_bytes": big}],
        ["analyze_calls", {"db": "story/d", "analysis": "errors_503", "limit": 200, "max_result_bytes": big}],
        ["analyze_calls", {"db": "story/d", "analysis": "correlation", "limit": 200, "max_result_bytes": big}],
        ["get_l4_flow_summary", {"db": "story/d", "kfl": "dst.port == 5432", "group_by": "dst", "max_result_bytes": big}],
        ["run_sql", {"db": "story/d", "query": "SELECT count(*) AS n FROM kfl('http and status_code == 503')"}],
        ["export_snapshot_pcap", {"snapshot_id": "story", "kfl": "http and status_code == 503", "bpf_filter": "tcp"}],
        ["export_snapshot_pcap", {"snapshot_id": "story", "bpf_filter": "tcp port"}],
    ]);
    let mut child = pair
        .a
        .command(python.to_str().unwrap_or_default())
        .arg(workspace_root().join("bpf-tests/tests/mcp_calls.py"))
        .args(["http://127.0.0.1:8898/mcp", token.trim()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python mcp client");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(calls.to_string().as_bytes())
        .expect("writing the calls");
    let out = child.wait_with_output().expect("mcp client");
    assert!(
        out.status.success(),
        "MCP client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("MCP results");
    let api = [&retries, &e503, &corr, &flows, &sql];
    for (i, (r, want)) in results.iter().zip(api).enumerate() {
        assert_eq!(r["is_error"], false, "MCP call {i}: {r}");
        if i == 4 {
            assert_eq!(r["result"]["rows"], want["rows"], "run_sql");
        } else {
            assert_eq!(&r["result"], want, "MCP call {i} differs from the API");
        }
    }
    // The 503s' packets as a PCAP: the filters are checked and the calls counted up front.
    let pcap = &results[5];
    assert_eq!(pcap["is_error"], false, "{pcap}");
    assert_eq!(
        pcap["result"]["kfl_calls"],
        json!(orders_503 + timeouts),
        "{pcap}"
    );
    assert!(
        pcap["result"]["cli"]
            .as_str()
            .is_some_and(|c| c.contains("--kfl 'http and status_code == 503'")),
        "{pcap}"
    );
    let bad = &results[6];
    assert_eq!(bad["is_error"], true, "{bad}");
    assert_eq!(
        bad["result"]["error"]["kind"], "invalid_bpf_filter",
        "{bad}"
    );
}
