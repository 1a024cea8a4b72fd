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
