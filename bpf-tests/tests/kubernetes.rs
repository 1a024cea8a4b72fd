//! Kubernetes for real, against the fake API server (`remora_bpf_tests::fake_kube`) and the
//! real kube-rs client inside `remora up`: list and watch with resourceVersion, bookmarks, a
//! 410 Gone that forces a relist, a forbidden resource, pods that come and go and an IP reused
//! by a later pod, attributed by time in a dissection, through the API; the history kept
//! across a restart with the cluster unreachable.

use std::time::Duration;

use remora_bpf_tests::{
    fake_kube::{self, FakeKube},
    netns::{ADDR_A, ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx, wait_until},
    require_root, require_tool,
};
use serde_json::{Value, json};

const PORT: u16 = 18870;
const CLUSTER_IP: &str = "198.19.0.10";

fn curl(pair: &VethPair, path: &str) {
    pair.a.exec_ok(
        "curl",
        &[
            "-sS",
            "-o",
            "/dev/null",
            &format!("http://{ADDR_B}:80{path}"),
        ],
    );
}

fn records(agent: &AgentProc, query: &str) -> Vec<Value> {
    let v = agent.api_json(&format!("/mcp/resolve/ips?{query}"));
    v["ips"][0]["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn watch<'a>(coverage: &'a Value, resource: &str) -> &'a Value {
    coverage["workloads_source"]["watches"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["resource"] == resource))
        .unwrap_or(&Value::Null)
}

#[test]
fn watchers_name_every_call_by_time_through_relists_ip_reuse_and_restarts() {
    require_root();
    for tool in ["curl", "nginx"] {
        require_tool(tool);
    }
    let pair = VethPair::new("k8s");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 80);
    let kube = FakeKube::start_in(&pair.a);
    kube.apply("namespaces", fake_kube::namespace("shop"));
    kube.apply("nodes", fake_kube::node("node-a", "198.18.9.1"));
    kube.apply("nodes", fake_kube::node("node-c", "198.18.9.3"));
    kube.apply(
        "pods",
        fake_kube::pod(
            "frontend-1",
            "shop",
            ADDR_A,
            "node-a",
            &[("app", "frontend")],
        ),
    );
    kube.apply(
        "pods",
        fake_kube::pod(
            "checkout-1",
            "shop",
            ADDR_B,
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
        fake_kube::endpoint_slice("checkout", "shop", &[(ADDR_B, "checkout-1")]),
    );
    // RBAC without namespaces: that watch fails with a clear message, the others work.
    kube.forbid("namespaces");

    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig()).expect("kubeconfig");
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    let args = [
        "--interfaces",
        IF_A,
        "--slice-duration",
        "1s",
        "--node",
        "node-a",
        "--kubeconfig",
        &kubeconfig_arg,
    ];
    let start_ms = now_ms();
    let agent = AgentProc::start_up(&pair.a, &data, PORT, &args);
    assert!(
        agent
            .log_text()
            .contains("workloads: watching Kubernetes (kubeconfig"),
        "the source is logged once at start:\n{}",
        agent.log_text()
    );
    let coverage = agent.wait_for("/mcp/coverage", |c| {
        ["pods", "services", "endpointslices", "nodes"]
            .iter()
            .all(|r| watch(c, r)["state"] == "synced")
            && watch(c, "namespaces")["state"] == "failing"
    });
    let why = watch(&coverage, "namespaces")["last_error"]
        .as_str()
        .unwrap_or("");
    assert!(
        why.contains("RBAC forbids") && why.contains("manifests/rbac.yaml"),
        "{why}"
    );
    assert_eq!(watch(&coverage, "pods")["objects"], 2, "{coverage}");
    // Only node-a is recorded here: checkout-1 (node-c) is listed as not recorded.
    assert_eq!(coverage["pods"]["recorded"], 1, "{coverage}");
    assert_eq!(
        coverage["pods"]["not_recorded_list"][0]["name"], "checkout-1",
        "{coverage}"
    );
    assert_eq!(
        coverage["cluster_nodes_without_recording"],
        json!(["node-c"]),
        "{coverage}"
    );

    let held = records(&agent, &format!("ip={ADDR_B}"));
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(
        (
            &held[0]["pod"],
            &held[0]["service"],
            &held[0]["node"],
            &held[0]["to"]
        ),
        (
            &json!("checkout-1"),
            &json!("checkout"),
            &json!("node-c"),
            &Value::Null
        )
    );
    let cluster_ip = records(&agent, &format!("ip={CLUSTER_IP}"));
    assert_eq!(
        (&cluster_ip[0]["kind"], &cluster_ip[0]["name"]),
        (&json!("service"), &json!("checkout"))
    );

    for i in 0..3 {
        curl(&pair, &format!("/ack/checkout-{i}"));
    }
    // checkout-1 goes away; while the watch is expired (410 Gone), payment-1 gets its address:
    // only the relist can tell the analyzer.
    std::thread::sleep(Duration::from_millis(1100));
    kube.delete("pods", "shop", "checkout-1");
    kube.apply(
        "endpointslices",
        fake_kube::endpoint_slice("checkout", "shop", &[]),
    );
    assert!(
        wait_until(Duration::from_secs(20), || records(
            &agent,
            &format!("ip={ADDR_B}")
        )[0]["to"]
            .is_i64()),
        "checkout-1's end never reached the history"
    );
    kube.expire();
    std::thread::sleep(Duration::from_millis(1100));
    kube.apply(
        "pods",
        fake_kube::pod("payment-1", "shop", ADDR_B, "node-c", &[("app", "payment")]),
    );
    // What the history held, printed each time it changes: shown if the wait fails.
    let seen = std::cell::RefCell::new(Vec::new());
    let relisted = agent.wait_for("/mcp/coverage", |c| {
        let held = records(&agent, &format!("ip={ADDR_B}"));
        if *seen.borrow() != held {
            eprintln!("{ADDR_B} held by: {held:?}");
            seen.replace(held.clone());
        }
        if held.len() > 2 {
            panic!("{ADDR_B} has more than its two owners: {held:?}\ncoverage: {c}");
        }
        watch(c, "pods")["relists"].as_u64() >= Some(1) && held.len() == 2
    });
    assert!(
        watch(&relisted, "pods")["relists"].as_u64() >= Some(1),
        "{relisted}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..3 {
        curl(&pair, &format!("/ack/payment-{i}"));
    }
    // Bookmarks: a watch resumed from a version the server sent only as a bookmark.
    let bookmarks = kube.bookmarks();
    let resumed = kube.requests().iter().any(|r| {
        r.contains("watch=true")
            && bookmarks.iter().any(|b| {
                r.contains(&format!("resourceVersion={b}&"))
                    || r.ends_with(&format!("resourceVersion={b}"))
            })
    });
    assert!(
        resumed,
        "no watch resumed from a bookmark; bookmarks {bookmarks:?}, requests {:?}",
        kube.requests()
    );

    std::thread::sleep(Duration::from_millis(2500));
    let end_ms = now_ms();
    let snap = agent.snapshot("k", start_ms, end_ms);
    assert_eq!(snap["status"], "completed", "{snap}");
    assert!(
        snap["workloads"].as_u64() >= Some(5),
        "the history of the window is frozen: {snap}"
    );
    let calls = agent.dissected_http_calls("k");
    assert_eq!(calls.len(), 6, "{calls:?}");
    for call in &calls {
        let path = call["path"].as_str().unwrap_or("");
        let field = |name: &str| call[name].as_str().unwrap_or("").to_owned();
        let (pod, service) = if path.contains("checkout-") {
            ("checkout-1", "checkout")
        } else {
            ("payment-1", "")
        };
        assert_eq!(field("src.pod.name"), "frontend-1", "{call}");
        assert_eq!(field("src.service.name"), "", "{call}");
        assert_eq!(field("dst.pod.name"), pod, "{call}");
        assert_eq!(field("dst.service.name"), service, "{call}");
        assert_eq!(field("dst.pod.namespace"), "shop", "{call}");
        assert_eq!(field("dst.node.name"), "node-c", "{call}");
        assert_eq!(field("src.node.name"), "node-a", "{call}");
    }
    // The KFL fields agree with the compact rows.
    let by_node = agent.api_json("/mcp/calls?db=k/d&limit=100&kfl=dst.node.name%20%3D%3D%20%22node-c%22%20and%20src.node.name%20%3D%3D%20%22node-a%22");
    assert_eq!(by_node["total"], 6, "{by_node}");
    // The snapshot's frozen history answers list_ips the same way after the live one moves on.
    let frozen = records(&agent, &format!("ip={ADDR_B}&snapshot_id=k"));
    let names: Vec<&str> = frozen.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["checkout-1", "payment-1"], "{frozen:?}");
    let by_label = agent.api_json("/mcp/resolve/workloads?labels=app%3Dcheckout&type=pod");
    assert_eq!(by_label["workloads"][0]["name"], "checkout-1", "{by_label}");
    assert_eq!(by_label["total"], 1, "{by_label}");
    let at_first = agent.api_json(&format!(
        "/mcp/resolve/ips?ip={ADDR_B}&timestamp={}",
        start_ms + 500
    ));
    assert_eq!(
        at_first["ips"][0]["records"][0]["name"], "checkout-1",
        "{at_first}"
    );
    agent.stop();

    // A restart with the cluster gone: the history comes back from disk, recording goes on,
    // and the watches say why they fail.
    drop(kube);
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: gone\n  context:\n    cluster: gone\n    user: u\ncurrent-context: gone\nusers:\n- name: u\n  user:\n    token: x\n",
    )
    .expect("kubeconfig");
    let agent = AgentProc::start_up(&pair.a, &data, PORT, &args);
    let restored = records(&agent, &format!("ip={ADDR_B}"));
    let names: Vec<&str> = restored.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        ["checkout-1", "payment-1"],
        "history restored: {restored:?}"
    );
    let failing = agent.wait_for("/mcp/coverage", |c| watch(c, "pods")["state"] == "failing");
    let why = watch(&failing, "pods")["last_error"].as_str().unwrap_or("");
    assert!(why.contains("recording is not affected"), "{why}");
    assert!(failing["nodes"][0]["name"] == "node-a", "{failing}");
    agent.stop();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A cgroup v2 directory shaped like the kubelet's (systemd driver), under a mount of the
/// cgroup v2 hierarchy of its own (`ip netns exec` remounts /sys, and /proc/1/root may be
/// closed to us), removed and unmounted on drop.
struct PodCgroup {
    mount: std::path::PathBuf,
    dirs: Vec<std::path::PathBuf>,
    procs: String,
}

impl PodCgroup {
    fn new(uid: &str, container: &str) -> Self {
        let mount = std::env::temp_dir().join(format!("rmr-cg2-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&mount);
        remora_bpf_tests::netns::run(
            "mount",
            &["-t", "cgroup2", "none", mount.to_str().unwrap_or("")],
        );
        let mut dir = mount.clone();
        let mut dirs = Vec::new();
        for part in [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
            format!("cri-containerd-{container}.scope"),
        ] {
            dir.push(part);
            let _ = std::fs::create_dir(&dir);
            dirs.push(dir.clone());
        }
        let procs = format!("{}/cgroup.procs", dir.display());
        Self { mount, dirs, procs }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .output();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

#[test]
fn a_host_network_pod_is_named_by_the_cgroup_of_its_sockets() {
    require_root();
    for tool in ["curl", "nginx", "mount"] {
        require_tool(tool);
    }
    const UID: &str = "5f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
    const CONTAINER: &str = "9d8c7b6a5f4e3d2c1b0a9d8c7b6a5f4e3d2c1b0a9d8c7b6a5f4e3d2c1b0a9d8c";
    let pair = VethPair::new("k8h");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 80);
    let kube = FakeKube::start_in(&pair.a);
    kube.apply("namespaces", fake_kube::namespace("kube-system"));
    kube.apply("nodes", fake_kube::node("node-a", ADDR_A));
    kube.apply(
        "pods",
        fake_kube::pod(
            "checkout-1",
            "shop",
            ADDR_B,
            "node-c",
            &[("app", "checkout")],
        ),
    );
    kube.apply(
        "pods",
        fake_kube::host_network_pod("metrics-agent-x1", "kube-system", UID, ADDR_A, "node-a"),
    );
    let cgroup = PodCgroup::new(UID, CONTAINER);
    // Where `remora up` reads the node's cgroup tree (a DaemonSet pod reads the host's through
    // /proc/1/root). The tests of this binary run one at a time.
    // SAFETY: no other thread reads the environment while it is set.
    unsafe { std::env::set_var("REMORA_CGROUP_ROOT", &cgroup.mount) };

    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig()).expect("kubeconfig");
    let kubeconfig_arg = kubeconfig.to_string_lossy().into_owned();
    let start_ms = now_ms();
    let agent = AgentProc::start_up(
        &pair.a,
        &data,
        PORT + 2,
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "1s",
            "--node",
            "node-a",
            "--kubeconfig",
            &kubeconfig_arg,
        ],
    );
    agent.wait_for("/mcp/coverage", |c| watch(c, "pods")["state"] == "synced");
    let held = records(&agent, &format!("ip={ADDR_A}"));
    assert!(
        held.iter().any(|r| r["kind"] == "node")
            && held.iter().any(|r| r["name"] == "metrics-agent-x1"),
        "the node keeps its address; the host-network pod is listed too: {held:?}"
    );
    for i in 0..3 {
        // The host-network pod's process: its socket is in the pod's cgroup.
        let script = format!(
            "echo $$ > {} && exec curl -sS -o /dev/null http://{ADDR_B}/ack/hostpod-{i}",
            cgroup.procs
        );
        pair.a.exec_ok("sh", &["-c", &script]);
        // Another process of the node, outside any pod.
        curl(&pair, &format!("/ack/node-{i}"));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let snap = agent.snapshot("h", start_ms, now_ms());
    assert_eq!(snap["status"], "completed", "{snap}");
    let calls = agent.dissected_http_calls("h");
    assert_eq!(calls.len(), 6, "{calls:?}");
    for call in &calls {
        let field = |name: &str| call[name].as_str().unwrap_or("").to_owned();
        let from_pod = field("path").contains("hostpod-");
        let expected = if from_pod {
            ("metrics-agent-x1", "kube-system")
        } else {
            ("", "")
        };
        assert_eq!(
            (
                field("src.pod.name").as_str(),
                field("src.pod.namespace").as_str()
            ),
            expected,
            "{call}"
        );
        assert_eq!(field("src.node.name"), "node-a", "{call}");
        assert_eq!(field("dst.pod.name"), "checkout-1", "{call}");
    }
    agent.stop();
    drop(cgroup);
}
