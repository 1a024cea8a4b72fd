//! Socket events: `remora up` with the socket tracepoints attached records curl → nginx across
//! a veth pair; the snapshot's `sockets` slices hold one connect and one SYN_SENT →
//! ESTABLISHED per connection curl made, and the dissected calls and connections name curl
//! (with the pid each curl process had) and nginx on their sides.

use std::{collections::BTreeSet, time::Duration};

use remora_bpf_tests::{
    netns::{ADDR_B, VethPair},
    proc::{AgentProc, Nginx},
    require_root, require_tool,
};
use serde_json::json;

const PORT: u16 = 18893;
const CONNECTIONS: usize = 3;

#[test]
fn calls_and_connections_name_the_processes_of_both_ends() {
    require_root();
    for tool in ["curl", "nginx"] {
        require_tool(tool);
    }
    let pair = VethPair::new("sk");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 80);
    let tmp = tempfile::tempdir().expect("tempdir");
    let up = AgentProc::start_up(
        &pair.a,
        &tmp.path().join("data"),
        PORT,
        &["--slice-duration", "1s", "--socket-events", "on"],
    );
    let start_ms = now_ms() - 1000;
    let mut curl_pids = BTreeSet::new();
    for i in 0..CONNECTIONS {
        let child = pair
            .a
            .command("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "5"])
            .arg(format!("http://{ADDR_B}/proc/{i}"))
            .spawn()
            .expect("curl runs");
        curl_pids.insert(child.id());
        let out = child.wait_with_output().expect("curl ends");
        assert!(out.status.success(), "curl {i}: {out:?}");
    }
    std::thread::sleep(Duration::from_millis(2500));
    let snap = up.snapshot("s", start_ms, now_ms());
    assert_eq!(snap["status"], "completed", "{snap}");

    // The events themselves, through SQL over the snapshot.
    let sql = |query: &str| {
        let (status, body) = up.api_post("/sql", &json!({"snapshot": "s", "query": query}));
        assert_eq!(status, 200, "{query}: {body}");
        body["rows"].as_array().cloned().unwrap_or_default()
    };
    let connects = sql(&format!(
        "SELECT pid FROM sockets WHERE event = 'connect' AND comm = 'curl' \
         AND dst_ip = '{ADDR_B}' AND dst_port = 80 ORDER BY pid"
    ));
    let connect_pids: BTreeSet<u32> = connects
        .iter()
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(
        connect_pids, curl_pids,
        "one connect per curl: {connects:?}"
    );
    let established = sql(&format!(
        // One handshake per connection (socket ids may repeat: a freed socket's memory is reused).
        "SELECT count(*) AS n FROM sockets WHERE event = 'state_change' \
         AND old_state = 'SYN_SENT' AND new_state = 'ESTABLISHED' AND dst_ip = '{ADDR_B}' \
         AND dst_port = 80"
    ));
    assert_eq!(established[0]["n"], json!(CONNECTIONS), "{established:?}");

    let calls = up.dissected_http_calls("s");
    assert_eq!(calls.len(), CONNECTIONS, "{calls:?}");
    let mut call_pids = BTreeSet::new();
    for call in &calls {
        assert_eq!(call["src.process"], "curl", "{call}");
        assert_eq!(call["dst.process"], "nginx", "{call}");
        assert!(call["dst.pid"].as_u64().unwrap_or(0) > 0, "{call}");
        call_pids.insert(call["src.pid"].as_u64().unwrap_or(0) as u32);
    }
    assert_eq!(
        call_pids, curl_pids,
        "each call names the curl that made it"
    );
    let (status, conns) = up.api_post(
        "/sql",
        &json!({"db": "s/d", "query": "SELECT src_process, dst_process FROM conns WHERE dst_port = 80"}),
    );
    assert_eq!(status, 200, "{conns}");
    let rows = conns["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), CONNECTIONS, "{conns}");
    for r in rows {
        assert_eq!(
            (&r["src_process"], &r["dst_process"]),
            (&json!("curl"), &json!("nginx")),
            "{r}"
        );
    }
    up.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
