//! Privileged fault tests of the recorder: killed processes, full rings, retention, full disks
//! and bad input. Each asserts that nothing already recorded is lost or corrupted.

mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{blast, blast_background, count_udp_to};
use remora_bpf_tests::{
    metric_total,
    netns::{ADDR_B, IF_A, NetNs, VethPair, run},
    proc::{AgentProc, wait_until},
    require_root, require_tool,
    slices::{read_all, read_slice, slice_files},
};

fn preflight() {
    require_root();
    for tool in ["ip", "tc", "bpftool"] {
        require_tool(tool);
    }
}

fn packets_dir(data: &Path) -> std::path::PathBuf {
    data.join("capture/test/packets")
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|e| {
            e.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        })
        .unwrap_or(0)
}

/// Number of remora TC filters attached through netlink on `iface` (ingress + egress).
fn netlink_filters(ns: &NetNs, iface: &str) -> usize {
    ["ingress", "egress"]
        .iter()
        .map(|dir| {
            ns.exec_ok("tc", &["filter", "show", "dev", iface, dir])
                .lines()
                .filter(|l| l.contains("remora_tc_"))
                .count()
        })
        .sum()
}

fn remora_programs_loaded() -> usize {
    run("bpftool", &["prog", "show"])
        .matches("remora_tc_")
        .count()
}

#[test]
fn kill_9_mid_slice_loses_no_finished_data_and_leaves_no_filter() {
    preflight();
    for mode in ["netlink", "auto"] {
        let pair = VethPair::new(if mode == "auto" { "k9t" } else { "k9n" });
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let dir = packets_dir(&data);
        // Slices of at most 1 MiB have row groups of at most 128 KiB, which reach the open
        // slice's temp file as they fill: at ~1.3 MB/s of traffic there is one mid-period
        // for most of each two-second period.
        let flags = [
            "--interfaces",
            IF_A,
            "--attach-mode",
            mode,
            "--slice-duration",
            "2s",
            "--slice-max-bytes",
            "1MiB",
        ];
        let agent = AgentProc::start(&pair.a, &data, 18811, &flags);
        // Traffic keeps flowing while the agent dies: killed after a few slices are published
        // and while the next one is being written.
        let mut traffic =
            blast_background(&pair.a, &format!("{ADDR_B}:9999"), 100_000, 100, 10_000);
        assert!(
            wait_until(Duration::from_secs(10), || slice_files(&dir).len() >= 2
                && temp_files(&dir) == 1),
            "expected published slices and one in progress"
        );
        let published_before: Vec<_> = slice_files(&dir);
        agent.kill9();
        let _ = traffic.wait();

        // Whatever is visible is complete and readable.
        for f in slice_files(&dir) {
            read_slice(&f);
        }
        let visible_rows = read_all(&dir).len();
        if mode == "netlink" {
            assert_eq!(
                netlink_filters(&pair.a, IF_A),
                2,
                "netlink filters survive SIGKILL: this is what the restart must sweep"
            );
        } else {
            assert!(
                wait_until(Duration::from_secs(5), || remora_programs_loaded() == 0),
                "TCX links and programs must go away with the killed process"
            );
        }

        // Restart: leftovers swept, recording resumes, earlier data intact.
        let agent = AgentProc::start(&pair.a, &data, 18811, &flags);
        assert_eq!(
            temp_files(&dir),
            0,
            "the unfinished slice of the killed run is removed"
        );
        if mode == "netlink" {
            assert_eq!(
                netlink_filters(&pair.a, IF_A),
                2,
                "one set of filters, not two"
            );
        }
        blast(&pair.a, &format!("{ADDR_B}:9998"), 250, 100, 1000);
        std::thread::sleep(Duration::from_millis(200));
        agent.stop();
        if mode == "netlink" {
            assert_eq!(
                netlink_filters(&pair.a, IF_A),
                0,
                "a clean stop removes its filters"
            );
        }
        assert!(wait_until(
            Duration::from_secs(5),
            || remora_programs_loaded() == 0
        ));
        let all = read_all(&dir);
        assert!(all.len() >= visible_rows);
        for f in &published_before {
            assert!(f.exists(), "published slice {} vanished", f.display());
        }
        assert_eq!(
            count_udp_to(&all, 9998),
            250,
            "recording resumed completely ({mode})"
        );
        assert!(count_udp_to(&all, 9999) > 0);
    }
}

#[test]
fn a_tiny_ring_under_load_counts_every_drop() {
    preflight();
    let pair = VethPair::new("drop");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = AgentProc::start(
        &pair.a,
        &data,
        18812,
        &[
            "--interfaces",
            IF_A,
            "--ring-bytes",
            "64KiB",
            "--snaplen",
            "1500",
        ],
    );
    blast(&pair.a, &format!("{ADDR_B}:9999"), 100_000, 1400, 0);
    std::thread::sleep(Duration::from_millis(300));
    let metrics = String::from_utf8(agent.api("/metrics").1).unwrap();
    let boundaries = agent.api_json("/v1/boundaries");
    let seen = metric_total(&metrics, "remora_packets_total");
    let dropped = metric_total(&metrics, "remora_dropped_packets_total");
    agent.stop();
    let rows = read_all(&packets_dir(&data)).len() as u64;
    assert!(
        dropped > 0,
        "a 64 KiB ring cannot hold a 100k-packet burst; no drop was counted"
    );
    assert_eq!(boundaries["drops"]["packets"].as_u64(), Some(dropped));
    assert_eq!(
        rows + dropped,
        seen,
        "every packet the hook saw is either in a slice or counted as dropped"
    );
    eprintln!("tiny ring: {seen} packets seen, {rows} recorded, {dropped} dropped and counted");
}

/// The drops of a tiny ring under load are carried by the slices: the same count in the kernel
/// counters (`/v1/boundaries`), in the slices' footers, in `/mcp/data-boundaries`, in a snapshot
/// of the window and in MCP's `get_snapshot` (official SDK).
#[test]
fn drops_travel_with_the_slices_into_snapshots_and_mcp() {
    preflight();
    let pair = VethPair::new("drps");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = AgentProc::start_up(
        &pair.a,
        &data,
        18853,
        &[
            "--interfaces",
            IF_A,
            "--ring-bytes",
            "64KiB",
            "--snaplen",
            "1500",
            "--slice-duration",
            "1s",
        ],
    );
    blast(&pair.a, &format!("{ADDR_B}:9999"), 100_000, 1400, 0);
    // A later slice must be sealed after the sampler saw every drop: a trickle for 2 s.
    blast(&pair.a, &format!("{ADDR_B}:9999"), 40, 100, 20);
    let mut last = serde_json::Value::Null;
    let settled = wait_until(Duration::from_secs(15), || {
        last = agent.api_json("/v1/boundaries");
        let kernel = last["drops"]["packets"].as_u64().unwrap_or(0);
        kernel > 0 && last["drops"]["in_slices"]["packets"].as_u64() == Some(kernel)
    });
    assert!(
        settled,
        "the slices never carried the kernel's drops: {}",
        last["drops"]
    );
    let dropped = last["drops"]["packets"].as_u64().unwrap_or(0);
    let per_cpu = &last["drops"]["per_cpu"];
    assert_eq!(
        &last["drops"]["in_slices"]["per_cpu"], per_cpu,
        "{}",
        last["drops"]
    );

    // The footers themselves.
    let mut in_footers = 0u64;
    for file in slice_files(&packets_dir(&data)) {
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap();
        use parquet::file::reader::FileReader as _;
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        let value = kv
            .unwrap_or_default()
            .into_iter()
            .find(|kv| kv.key == "remora.drops")
            .and_then(|kv| kv.value)
            .unwrap_or_else(|| panic!("{} has no remora.drops", file.display()));
        let drops: serde_json::Value = serde_json::from_str(&value).unwrap();
        in_footers += drops["packets"].as_u64().unwrap();
    }
    assert_eq!(in_footers, dropped);

    // The analyzer's view, a snapshot of the window, and MCP.
    let b = agent.api_json("/mcp/data-boundaries");
    assert_eq!(b["nodes"][0]["drops"].as_u64(), Some(dropped), "{b}");
    let (status, v) = agent.api_post(
        "/mcp/snapshots",
        &serde_json::json!({"name": "burst", "duration": "10m"}),
    );
    assert!(status < 300, "{v}");
    let snap = agent.wait_for("/mcp/snapshots/burst", |v| v["status"] != "in_progress");
    assert_eq!(snap["status"], "completed", "{snap}");
    assert_eq!(snap["drops"].as_u64(), Some(dropped), "{snap}");
    let python = remora_bpf_tests::workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run cargo xtask setup",
        python.display()
    );
    let token = std::fs::read_to_string(data.join("token")).unwrap();
    let mut child = pair
        .a
        .command(python.to_str().unwrap())
        .arg(remora_bpf_tests::workspace_root().join("bpf-tests/tests/mcp_calls.py"))
        .args(["http://127.0.0.1:18853/mcp", token.trim()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"[["get_snapshot", {"id": "burst"}]]"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        results[0]["result"]["drops"].as_u64(),
        Some(dropped),
        "{results}"
    );
    agent.stop();
    eprintln!(
        "{dropped} drops, per CPU {per_cpu}: the same in the kernel, the footers, the snapshot and MCP"
    );
}

#[test]
fn retention_holds_the_quota_and_keeps_the_newest() {
    preflight();
    let pair = VethPair::new("ret");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let quota: u64 = 3 << 20;
    let agent = AgentProc::start(
        &pair.a,
        &data,
        18813,
        &[
            "--interfaces",
            IF_A,
            "--snaplen",
            "1500",
            "--slice-duration",
            "1s",
            "--slice-max-bytes",
            "1MiB",
            "--retention-bytes",
            "3MiB",
        ],
    );
    // ~14 MB of incompressible payload over ~4 s.
    blast(&pair.a, &format!("{ADDR_B}:9999"), 10_000, 1400, 2500);
    std::thread::sleep(Duration::from_millis(300));
    let metrics = String::from_utf8(agent.api("/metrics").1).unwrap();
    agent.stop();
    let dir = packets_dir(&data);
    let total: u64 = slice_files(&dir)
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(total <= quota, "slices take {total} bytes, quota {quota}");
    let deleted = metric_total(&metrics, "remora_retention_deleted_slices_total");
    assert!(deleted > 0, "retention deleted nothing:\n{metrics}");
    // The newest data is what is kept: the last datagram sent is there.
    let rows = read_all(&dir);
    let last_seq = rows
        .iter()
        .filter(|p| p.ip_proto == 17 && p.dst_port == Some(9999))
        .filter_map(|p| p.payload.get(28..36))
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .max();
    assert_eq!(last_seq, Some(9_999));
    eprintln!("retention: {total} bytes kept of quota {quota}, {deleted} slices deleted");
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallDisk {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        );
        Self { path, _dir: dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).output();
    }
}

/// The path where no room can be made (`--min-free 0` turns making room off; with it on, the
/// oldest slices go first: `disk_full.rs`): the failed slice is reported, nothing half-written
/// stays, and recording resumes when space returns.
#[test]
fn a_full_disk_is_reported_and_recording_resumes_when_space_returns() {
    preflight();
    let pair = VethPair::new("full");
    let disk = SmallDisk::new("3m");
    let data = disk.path.join("data");
    let agent = AgentProc::start(
        &pair.a,
        &data,
        18814,
        &[
            "--interfaces",
            IF_A,
            "--snaplen",
            "1500",
            "--slice-duration",
            "1s",
            "--slice-max-bytes",
            "1MiB",
            "--retention-bytes",
            "64MiB",
            "--min-free",
            "0",
        ],
    );
    let dir = packets_dir(&data);
    blast(&pair.a, &format!("{ADDR_B}:9999"), 6_000, 1400, 3000);
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log_text()
            .contains("disk is full")),
        "the agent must say the disk is full:\n{}",
        agent.log_text()
    );
    let health = agent.api_json("/v1/health");
    assert!(
        health["last_write_error"]
            .as_str()
            .unwrap_or("")
            .contains("disk is full")
    );
    let survivors = slice_files(&dir);
    assert!(
        !survivors.is_empty(),
        "slices written before the disk filled must remain"
    );
    for f in &survivors {
        read_slice(f);
    }
    assert!(
        temp_files(&dir) <= 1,
        "failed slices must not leave temp files (one may be open)"
    );
    // Free space (an operator deleting old slices); new traffic is recorded again.
    for f in &survivors {
        std::fs::remove_file(f).unwrap();
    }
    blast(&pair.a, &format!("{ADDR_B}:9997"), 200, 100, 1000);
    std::thread::sleep(Duration::from_millis(300));
    let mut agent = agent;
    assert!(agent.is_running(), "a full disk must not stop the agent");
    agent.stop();
    assert_eq!(temp_files(&dir), 0, "no half-written file is left behind");
    assert_eq!(count_udp_to(&read_all(&dir), 9997), 200);
}

#[test]
fn bad_input_gets_one_clear_error() {
    preflight();
    require_tool("setpriv");
    let ns = NetNs::new("bad");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--interfaces", "nope0", "--data-dir", data_arg],
            "interface `nope0` does not exist",
        ),
        (&["--data-dir", "/proc/remora/cannot"], "is not usable"),
        (
            &["--snaplen", "10", "--data-dir", data_arg],
            "snaplen 10 is out of range",
        ),
        (
            &["--listen", "nonsense", "--data-dir", data_arg],
            "is not an address",
        ),
        (
            &["--ring-bytes", "12 furlongs", "--data-dir", data_arg],
            "unknown unit",
        ),
    ];
    for (args, expected) in cases {
        let (code, stderr) = AgentProc::run_to_failure(&ns, args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected `{expected}` in:\n{stderr}"
        );
    }
    // Without privileges: a clear message naming the capabilities.
    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    run(
        "chmod",
        &["777", open.to_str().unwrap(), tmp.path().to_str().unwrap()],
    );
    let bin = remora_bpf_tests::sibling_binary("remora-agent");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg(&bin)
        .args(["--listen", "off", "--data-dir", open.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("sudo"),
        "unprivileged run should name the capabilities:\n{stderr}"
    );
}
