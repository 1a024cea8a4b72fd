//! The capability-only DaemonSet variant (manifests/variants/capabilities) is real: the agent
//! started with exactly those capabilities in its bounding set (what a container without
//! `privileged` gets) loads its programs, attaches and records. Without CAP_BPF it fails with
//! a message that names what is missing.

use std::time::Duration;

use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx, wait_until},
    require_root, require_tool,
    slices::read_all,
};

/// manifests/variants/capabilities/agent-capabilities.yaml, as setpriv names them.
const CAPS: [&str; 6] = [
    "bpf",
    "perfmon",
    "net_admin",
    "sys_resource",
    "sys_ptrace",
    "dac_read_search",
];

/// setpriv's `--bounding-set` argument keeping only `keep`: a capability dropped from the
/// bounding set cannot be added back, so every other one is named.
fn keep_only(keep: &[&str]) -> String {
    let all = remora_bpf_tests::netns::run("setpriv", &["--list-caps"]);
    all.lines()
        .map(str::trim)
        .filter(|c| !c.is_empty() && !keep.contains(c))
        .map(|c| format!("-{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether this process may grant CAP_SYS_RESOURCE at all (some VMs and containers lack it).
fn have_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

#[test]
fn the_agent_records_with_only_the_documented_capabilities() {
    require_root();
    for tool in ["curl", "nginx", "setpriv"] {
        require_tool(tool);
    }
    let pair = VethPair::new("caps");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 80);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let bounding = keep_only(&CAPS);
    let wrapper = [
        "setpriv",
        "--bounding-set",
        bounding.as_str(),
        "--inh-caps",
        "-all",
        "--",
    ];
    let agent = AgentProc::start_agent_wrapped(
        &pair.a,
        &data,
        18871,
        &wrapper,
        // Small rings: this machine's own bounding set lacks CAP_SYS_RESOURCE, so the
        // agent cannot lift RLIMIT_MEMLOCK here; rings within kernel.perf_event_mlock_kb per
        // CPU need neither it nor CAP_IPC_LOCK (docs/deploy.md).
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "1s",
            "--ring-bytes",
            "128KiB",
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid().unwrap_or(0)))
        .unwrap_or_default();
    // setpriv execs the agent: the process is the agent itself, with the reduced set.
    let bounding_line = status
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap_or("");
    // bpf 39, perfmon 38, sys_resource 24, sys_ptrace 19, net_admin 12, dac_read_search 2.
    let expected = if have_sys_resource() {
        "CapBnd:\t000000c001081004"
    } else {
        "CapBnd:\t000000c000081004"
    };
    assert_eq!(bounding_line, expected, "{status}");
    for i in 0..3 {
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}/ack/{i}"),
            ],
        );
    }
    let dir = data.join("capture/test/packets");
    let recorded = wait_until(Duration::from_secs(10), || {
        read_all(&dir)
            .iter()
            .filter(|p| p.dst_port == Some(80))
            .count()
            >= 3
    });
    assert!(
        recorded,
        "nothing recorded with the capability set:\n{}",
        agent.log_text()
    );
    agent.stop();

    // Without CAP_BPF (and CAP_SYS_ADMIN, which could stand in for it) loading must fail,
    // and say why.
    let without = keep_only(&CAPS[1..]);
    let bin = remora_bpf_tests::sibling_binary("remora-agent");
    let out = pair
        .a
        .command("setpriv")
        .args(["--bounding-set", &without, "--inh-caps", "-all", "--"])
        .arg(&bin)
        .args(["--data-dir"])
        .arg(tmp.path().join("nobpf"))
        .args(["--interfaces", IF_A, "--listen", "off"])
        .output()
        .expect("running remora-agent without CAP_BPF");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the agent ran without CAP_BPF:\n{stderr}"
    );
    assert!(
        stderr.contains("CAP_BPF") || stderr.contains("privilege") || stderr.contains("permission"),
        "the failure does not say what is missing:\n{stderr}"
    );
}
