//! Self-traffic: Remora leaves out its own API connections exactly (its listening address and
//! port), not every connection on that port. Another server on the same port, at another
//! address in another namespace, is recorded; requests to Remora's API over the same veth are
//! not.

use std::time::Duration;

use remora_bpf_tests::{
    metric_total,
    netns::{ADDR_A, ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx, wait_until},
    require_root, require_tool,
    slices::read_all,
};

const PORT: u16 = 18856;

#[test]
fn own_api_traffic_is_left_out_and_another_server_on_its_port_is_recorded() {
    own_traffic_left_out(ADDR_A, PORT, "self");
}

/// The DaemonSet's case: the API listens on every address (`0.0.0.0`). Its exact endpoints
/// are then each address of its namespace with its port, so a server on the same port in
/// another namespace is still recorded.
#[test]
fn an_api_on_every_address_still_leaves_out_only_its_own_traffic() {
    own_traffic_left_out("0.0.0.0", PORT + 1, "selw");
}

fn own_traffic_left_out(listen: &str, port: u16, tag: &str) {
    require_root();
    for tool in ["curl", "nginx"] {
        require_tool(tool);
    }
    let pair = VethPair::new(tag);
    // An unrelated server on Remora's port, in the other namespace.
    let _nginx = Nginx::start(&pair.b, ADDR_B, port);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let agent = AgentProc::start_up_on(
        &pair.a,
        &data,
        listen,
        port,
        &["--interfaces", IF_A, "--slice-duration", "1s"],
    );
    let token = std::fs::read_to_string(data.join("token")).expect("token");
    for i in 0..3 {
        // Someone else's service on the same port: recorded.
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}:{port}/?other={i}"),
            ],
        );
        // Remora's own API, from the other side of the veth: left out.
        pair.b.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "-H",
                &format!("Authorization: Bearer {}", token.trim()),
                &format!("http://{ADDR_A}:{port}/mcp/snapshots"),
            ],
        );
    }
    let packets_dir = data.join("capture/test/packets");
    let other = |p: &remora_bpf_tests::slices::Packet| {
        (p.src_ip == ADDR_B && p.src_port == Some(port))
            || (p.dst_ip == ADDR_B && p.dst_port == Some(port))
    };
    let recorded = wait_until(Duration::from_secs(10), || {
        read_all(&packets_dir).iter().filter(|p| other(p)).count() >= 3 * 6
    });
    let all = read_all(&packets_dir);
    let others = all.iter().filter(|p| other(p)).count();
    assert!(
        recorded,
        "the other server's traffic was not recorded: {others} packets"
    );
    let own = all
        .iter()
        .filter(|p| {
            (p.src_ip == ADDR_A && p.src_port == Some(port))
                || (p.dst_ip == ADDR_A && p.dst_port == Some(port))
        })
        .count();
    assert_eq!(own, 0, "Remora's own API packets were recorded");
    let metrics = String::from_utf8_lossy(&agent.api("/metrics").1).into_owned();
    let excluded = metric_total(&metrics, "remora_excluded_packets_total");
    assert!(
        excluded >= 3 * 6,
        "only {excluded} packets counted as excluded:\n{metrics}"
    );
    agent.stop();
    eprintln!("{others} packets of the other server recorded, {excluded} of Remora's API left out");
}
