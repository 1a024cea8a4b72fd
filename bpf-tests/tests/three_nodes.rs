//! A cluster of three nodes: one network namespace and one `remora-agent` per node, pods as
//! network namespaces behind their node (veth, routed), a fabric namespace with a bridge
//! between the nodes, and one analyzer (`remora serve`) on the fabric pulling every node's
//! slices over the node API. The fake Kubernetes API server names the pods, and the analyzer
//! finds the agents there (the DaemonSet's pods, by namespace and label).
//!
//! A call from frontend (node-a) to checkout (node-c) is recorded on both nodes and must be
//! dissected once, attributed to both pods, the service and both nodes; so must a call to the
//! checkout Service's ClusterIP, which node-a translates (nftables DNAT, as kube-proxy does) and
//! so records before and after translation; a snapshot spans the
//! three nodes; an agent that is down (or killed mid-transfer) makes the next snapshot
//! `partial`, naming its node, and the snapshot made again resumes.

use std::time::Duration;

use remora_bpf_tests::{
    fake_kube::{self, FakeKube},
    netns::{Fabric, HUB_ADDR as HUB, NetNs, node_ip},
    proc::{AgentProc, Nginx},
    require_root, require_tool,
};
use serde_json::json;

const FRONTEND: &str = "198.18.61.2";
const CHECKOUT: &str = "198.18.63.2";
/// The checkout Service: node-a rewrites `CLUSTER_IP:8080` to `CHECKOUT:80`.
const CLUSTER_IP: &str = "198.19.0.10";
const HUB_PORT: u16 = 18898;
const AGENT_PORT: u16 = 18897;

/// The fabric, the nodes and the pods, deleted on drop (namespaces take their links along).
struct Cluster {
    fabric: Fabric,
    frontend: NetNs,
    checkout: NetNs,
}

impl Cluster {
    fn new() -> Self {
        let fabric = Fabric::new("n", 3);
        let frontend = fabric.pod("pfe", 0, "198.18.61");
        let checkout = fabric.pod("pco", 2, "198.18.63");
        fabric.route(0, "198.18.63", 2);
        fabric.route(2, "198.18.61", 0);
        // kube-proxy's part on node-a: the Service's ClusterIP to its one endpoint.
        let nft = |rule: &str| fabric.nodes[0].exec_ok("nft", &[rule]);
        nft("add table ip nat");
        nft("add chain ip nat prerouting { type nat hook prerouting priority -100; }");
        nft(&format!(
            "add rule ip nat prerouting ip daddr {CLUSTER_IP} tcp dport 8080 dnat to {CHECKOUT}:80"
        ));
        Self {
            fabric,
            frontend,
            checkout,
        }
    }
}

#[test]
fn one_analyzer_spans_three_nodes_and_a_cross_node_call_is_one_row() {
    require_root();
    for tool in ["curl", "nginx", "nft"] {
        require_tool(tool);
    }
    let cluster = Cluster::new();
    let _nginx = Nginx::start(&cluster.checkout, CHECKOUT, 80);
    let kube = FakeKube::start_in(&cluster.fabric.hub);
    kube.apply("namespaces", fake_kube::namespace("shop"));
    for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
        kube.apply("nodes", fake_kube::node(name, &node_ip(i)));
    }
    kube.apply(
        "pods",
        fake_kube::pod(
            "frontend-1",
            "shop",
            FRONTEND,
            "node-a",
            &[("app", "frontend")],
        ),
    );
    kube.apply(
        "pods",
        fake_kube::pod(
            "checkout-1",
            "shop",
            CHECKOUT,
            "node-c",
            &[("app", "checkout")],
        ),
    );
    kube.apply(
        "services",
        fake_kube::service("checkout", "shop", CLUSTER_IP, &[("app", "checkout")]),
    );
    kube.apply(
        "endpointslices",
        fake_kube::endpoint_slice("checkout", "shop", &[(CHECKOUT, "checkout-1")]),
    );
    // The DaemonSet's pods, which the analyzer finds the agents by (host network: node IPs).
    for (i, name) in ["node-a", "node-b", "node-c"].iter().enumerate() {
        let mut agent = fake_kube::host_network_pod(
            &format!("remora-agent-{name}"),
            "remora",
            &format!("0000000{i}-0000-4000-8000-000000000000"),
            &node_ip(i),
            name,
        );
        agent["metadata"]["labels"] = json!({"app.kubernetes.io/name": "remora-agent"});
        kube.apply("pods", agent);
    }
    // A pod with the label in another namespace is not an agent.
    let mut stray = fake_kube::pod("remora-agent-copy", "default", "198.18.62.9", "node-b", &[]);
    stray["metadata"]["labels"] = json!({"app.kubernetes.io/name": "remora-agent"});
    kube.apply("pods", stray);

    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig()).expect("kubeconfig");
    let hub_data = tmp.path().join("hub");
    let port_arg = AGENT_PORT.to_string();
    let hub = AgentProc::start_serve_on(
        &cluster.fabric.hub,
        &hub_data,
        HUB,
        HUB_PORT,
        &[
            "--agent-selector",
            "remora/app.kubernetes.io/name=remora-agent",
            "--agent-port",
            &port_arg,
            "--kubeconfig",
            kubeconfig.to_str().unwrap_or(""),
        ],
    );
    // The agents share the analyzer's token (in a cluster: the remora-token Secret).
    let token_file = hub_data.join("token");
    let token_arg = token_file.to_string_lossy().into_owned();
    let start_agent = |i: usize, name: &str| {
        let data = tmp.path().join(name);
        AgentProc::start_agent_on(
            &cluster.fabric.nodes[i],
            &data,
            &node_ip(i),
            AGENT_PORT,
            &[
                "--node",
                name,
                "--slice-duration",
                "1s",
                "--token-file",
                &token_arg,
            ],
        )
    };
    let mut agents: Vec<Option<AgentProc>> = ["node-a", "node-b", "node-c"]
        .iter()
        .enumerate()
        .map(|(i, name)| Some(start_agent(i, name)))
        .collect();
    hub.wait_for("/mcp/coverage", |c| {
        c["workloads_source"]["watches"][0]["state"] == "synced"
            && c["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["recording"] == true))
    });

    let start_ms = now_ms() - 1000;
    for i in 0..5 {
        cluster.frontend.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                &format!("http://{CHECKOUT}/ack/order-{i}"),
            ],
        );
    }
    for i in 0..3 {
        cluster.frontend.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                &format!("http://{CLUSTER_IP}:8080/ack/via-service-{i}"),
            ],
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    let boundaries = hub.api_json("/mcp/data-boundaries");
    let names: Vec<&str> = boundaries["nodes"]
        .as_array()
        .map(|n| n.iter().filter_map(|n| n["name"].as_str()).collect())
        .unwrap_or_default();
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            names.contains(&node),
            "{node} missing from data-boundaries: {boundaries}"
        );
    }

    let snap = hub.snapshot("x", start_ms, now_ms());
    assert_eq!(snap["status"], "completed", "{snap}");
    let nodes = snap["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3, "{snap}");
    for n in &nodes {
        assert_eq!(n["status"], "complete", "{n}");
    }
    let packets_on = |name: &str| {
        nodes
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["packets"].as_u64())
            .unwrap_or(0)
    };
    assert!(
        packets_on("node-a") > 0 && packets_on("node-c") > 0,
        "both ends recorded the call: {snap}"
    );

    let rows = hub.dissected_http_calls("x");
    assert_eq!(
        rows.len(),
        8,
        "each call once, though two nodes (and, through the Service, both sides of the NAT) \
         recorded it: {rows:?}"
    );
    for call in &rows {
        let field = |name: &str| call[name].as_str().unwrap_or("").to_owned();
        assert_eq!(
            (
                field("src.pod.name"),
                field("src.node.name"),
                field("dst.pod.name"),
                field("dst.service.name"),
                field("dst.node.name")
            ),
            (
                "frontend-1".into(),
                "node-a".into(),
                "checkout-1".into(),
                "checkout".into(),
                "node-c".into()
            ),
            "{call}"
        );
        assert!(
            ["node-a", "node-c"].contains(&field("node").as_str()),
            "{call}"
        );
        // Each side's process, from the socket events (through the NAT too: the client's
        // socket had the ClusterIP as its peer).
        assert_eq!(
            (field("src.process"), field("dst.process")),
            ("curl".into(), "nginx".into()),
            "{call}"
        );
        // Through the Service or not, the row names the pod that answered, at its address.
        assert_eq!(
            (field("dst.ip"), &call["dst.port"]),
            (CHECKOUT.into(), &json!(80)),
            "{call}"
        );
    }
    let via_service = rows
        .iter()
        .filter(|c| {
            c["path"]
                .as_str()
                .is_some_and(|p| p.contains("via-service"))
        })
        .count();
    assert_eq!(via_service, 3, "{rows:?}");
    let stats = hub.api_json("/mcp/stats?db=x/d&kfl=http&group_by=dst.node.name");
    assert_eq!(stats["count"], 8, "{stats}");
    assert_eq!(stats["groups"][0]["key"], "node-c", "{stats}");

    // node-b's agent goes down: the next snapshot is partial and says so.
    if let Some(b) = agents[1].take() {
        b.kill9();
    }
    let partial = hub.snapshot("y", start_ms, now_ms());
    assert_eq!(partial["status"], "partial", "{partial}");
    let reason = partial["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("node-b") && reason.contains("unreachable"),
        "{reason}"
    );
    let b = partial["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-b").cloned());
    assert_eq!(
        b.map(|b| b["status"].clone()),
        Some(json!("unreachable")),
        "{partial}"
    );
    // A partial snapshot still dissects what it has.
    hub.dissected_http_calls("y");
    let coverage = hub.api_json("/mcp/coverage");
    let b = coverage["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-b").cloned());
    assert_eq!(
        b.map(|b| b["recording"].clone()),
        Some(json!(false)),
        "{coverage}"
    );
    // node-b is back: the snapshot made again is whole.
    agents[1] = Some(start_agent(1, "node-b"));
    let whole = hub.snapshot("z", start_ms, now_ms());
    assert_eq!(whole["status"], "completed", "{whole}");
    assert_eq!(whole["nodes"].as_array().map(Vec::len), Some(3), "{whole}");
    for agent in agents.into_iter().flatten() {
        agent.stop();
    }
    hub.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

mod common;

/// An agent killed while its slices are being pulled makes the snapshot `partial` with the
/// node named; the slices that had arrived are kept, and the snapshot made again once the
/// agent is back reuses them (same inode: not fetched twice) and is whole.
#[test]
fn an_agent_killed_mid_transfer_gives_partial_and_the_next_snapshot_resumes() {
    use std::os::unix::fs::MetadataExt as _;
    require_root();
    let fabric = Fabric::new("m", 2);
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub_data = tmp.path().join("hub");
    let agents_arg = format!(
        "http://{}:{AGENT_PORT},http://{}:{AGENT_PORT}",
        node_ip(0),
        node_ip(1)
    );
    let hub = AgentProc::start_serve_on(
        &fabric.hub,
        &hub_data,
        HUB,
        HUB_PORT,
        &["--agents", &agents_arg, "--kubernetes", "off"],
    );
    let token_arg = hub_data.join("token").to_string_lossy().into_owned();
    let start = |i: usize| {
        AgentProc::start_agent_on(
            &fabric.nodes[i],
            &tmp.path().join(format!("node-{i}")),
            &node_ip(i),
            AGENT_PORT,
            &[
                "--node",
                &format!("node-{i}"),
                "--interfaces",
                "eth0",
                "--slice-duration",
                "1s",
                "--slice-max-bytes",
                "8MiB",
                "--compression",
                "none",
                "--token-file",
                &token_arg,
            ],
        )
    };
    let big = start(0);
    let _small = start(1);
    let start_ms = now_ms() - 1000;
    // ~200 MB recorded on node-0 in 8 MiB slices.
    common::blast(
        &fabric.nodes[0],
        &format!("{HUB}:9"),
        150_000,
        1400,
        150_000,
    );
    std::thread::sleep(Duration::from_millis(2500));
    let end_ms = now_ms();
    let mirror = hub_data.join("remote/node-0/packets");
    let (status, v) = hub.api_post(
        "/mcp/snapshots",
        &json!({"name": "y", "start": start_ms, "end": end_ms}),
    );
    assert!(status < 300, "{v}");
    // Kill node-0's agent as soon as its first slice has arrived.
    let arrived = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while arrived(&mirror) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    big.kill9();
    let partial = hub.wait_for("/mcp/snapshots/y", |v| v["status"] != "in_progress");
    assert_eq!(partial["status"], "partial", "{partial}");
    let node0 = partial["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-0").cloned());
    let node0 = node0.unwrap_or_default();
    assert_eq!(node0["status"], "partial", "{partial}");
    assert!(
        partial["reason"].as_str().unwrap_or("").contains("node-0"),
        "{partial}"
    );
    let kept: Vec<(String, u64)> = std::fs::read_dir(&mirror)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.ino()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !kept.is_empty(),
        "the slices that arrived are kept for the next try"
    );

    // node-0 is back: the same window again is whole, and what had arrived was not fetched
    // again (the snapshot links the very same files).
    let big = start(0);
    let whole = hub.snapshot("z", start_ms, end_ms);
    assert_eq!(whole["status"], "completed", "{whole}");
    let files0 = whole["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == "node-0").cloned());
    assert!(
        files0.unwrap_or_default()["files"].as_u64() > Some(kept.len() as u64),
        "{whole}"
    );
    for (name, ino) in &kept {
        let linked = hub_data
            .join("snapshots/z/capture/node-0/packets")
            .join(name);
        assert_eq!(
            std::fs::metadata(&linked).map(|m| m.ino()).ok(),
            Some(*ino),
            "{name} was fetched again"
        );
    }
    assert_eq!(arrived(&mirror), 0, "a complete node's mirror is emptied");
    big.stop();
    hub.stop();
}
