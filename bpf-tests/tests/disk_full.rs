//! A full disk, on a small filesystem the test mounts (tmpfs, 48 MiB): the recorder keeps the
//! newest data by deleting the oldest slices, the analyzer refuses new snapshots with 507 and a
//! clear reason while space is short, nothing crashes, and recording resumes when space returns.
//! And `remora dissect` into a filesystem too small for its tables fails with the reason and
//! leaves no file behind, on one thread and on two.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use remora_bpf_tests::{
    metric_total,
    netns::{ADDR_B, IF_A, VethPair},
    proc::{AgentProc, Nginx, wait_until},
    require_root, require_tool, sibling_binary, workspace_root,
};
use serde_json::json;

const PORT: u16 = 18863;
const FS_MB: u64 = 48;

/// A tmpfs mounted for the test, unmounted on drop (also when the test fails).
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path) -> Self {
        Self::mount_kib(dir, FS_MB * 1024)
    }

    fn mount_kib(dir: &Path, kib: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a {kib} KiB tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_owned(),
        }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// `(start_ns, end_ns, bytes)` of the published packet slices.
fn slices(data: &Path) -> Vec<(i64, i64, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(data.join("capture/test/packets"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".parquet")?;
            let mut parts = stem.split('-');
            let start = parts.next()?.parse().ok()?;
            let end = parts.next()?.parse().ok()?;
            Some((start, end, e.metadata().ok()?.len()))
        })
        .collect();
    out.sort();
    out
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

/// About 10 MB of HTTP through the recorded interface.
fn ten_megabytes(pair: &VethPair) {
    let url = format!("http://{ADDR_B}:8080/big.bin?n=[1-50]");
    let out = pair
        .a
        .command("curl")
        .args(["-sS", &url])
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// POST with the token; the raw status and body (the error body is the point here).
fn post(agent: &AgentProc, path: &str, body: serde_json::Value) -> (u16, Vec<u8>) {
    let token = std::fs::read_to_string(agent.data_dir.join("token")).unwrap_or_default();
    agent.request("POST", path, Some(&body.to_string()), Some(token.trim()))
}

#[test]
fn a_full_disk_keeps_the_newest_data_refuses_snapshots_and_recovers() {
    require_root();
    for tool in ["curl", "nginx", "mount", "fallocate", "df"] {
        require_tool(tool);
    }
    let pair = VethPair::new("dfull");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let tmp = tempfile::tempdir().expect("tempdir");
    let fs = SmallFs::mount(&tmp.path().join("small"));
    let data = fs.dir.join("data");
    let mut agent = AgentProc::start_up(
        &pair.a,
        &data,
        PORT,
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "1s",
            "--slice-max-bytes",
            "2MiB",
            "--retention-bytes",
            "1GiB",
            "--compression",
            "none",
            "--snaplen",
            "64000",
        ],
    );

    // 1. Three times the filesystem's size of traffic: the oldest slices go, the newest stay.
    let started = now_ns();
    for _ in 0..15 {
        ten_megabytes(&pair);
    }
    std::thread::sleep(Duration::from_millis(2500));
    assert!(agent.is_running(), "remora up died:\n{}", agent.log_text());
    let kept = slices(&data);
    let kept_bytes: u64 = kept.iter().map(|s| s.2).sum();
    println!(
        "after 150 MB into {FS_MB} MiB: {} slices, {} MiB kept, {} MiB free",
        kept.len(),
        kept_bytes >> 20,
        free_bytes(&fs.dir) >> 20
    );
    assert!(kept.len() >= 3, "slices are kept: {kept:?}");
    assert!(kept_bytes < FS_MB << 20);
    assert!(
        kept[0].0 > started,
        "the oldest slices were deleted to make room"
    );
    let metrics = String::from_utf8_lossy(&agent.api("/metrics").1).into_owned();
    assert!(
        metric_total(&metrics, "remora_retention_deleted_slices_total") > 0,
        "{metrics}"
    );
    assert_eq!(
        metric_total(&metrics, "remora_slice_write_errors_total"),
        0,
        "making room in time loses nothing: {metrics}"
    );
    // The newest traffic is there: the last slice ends within the last few seconds.
    let newest = kept.last().map_or(0, |s| s.1);
    assert!(
        now_ns() - newest < 5_000_000_000,
        "newest slice ends {newest}"
    );

    // 2. Something else fills the disk: the recorder deletes its oldest slices to make room
    // until only the newest is left, then snapshots are refused with 507 and the reason.
    let mut fillers = Vec::new();
    for round in 0..12 {
        let filler = fs.dir.join(format!("filler{round}"));
        let fill = free_bytes(&fs.dir).saturating_sub(512 << 10);
        if fill > 0 {
            let out = Command::new("fallocate")
                .args(["-l", &fill.to_string()])
                .arg(&filler)
                .output()
                .expect("fallocate");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            fillers.push(filler);
        }
        ten_megabytes(&pair);
        std::thread::sleep(Duration::from_millis(1500));
        if slices(&data).len() <= 1 && free_bytes(&fs.dir) < 4 << 20 {
            break;
        }
    }
    println!(
        "filled: {} slices left, {} KiB free",
        slices(&data).len(),
        free_bytes(&fs.dir) >> 10
    );
    let (code, body) = post(
        &agent,
        "/mcp/snapshots",
        json!({"name": "full", "duration": "1m"}),
    );
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(code, 507, "{body}");
    assert!(
        body.contains("insufficient_storage") && body.contains("free"),
        "{body}"
    );
    assert!(agent.is_running(), "remora up died:\n{}", agent.log_text());
    let (code, body) = agent.api("/v1/boundaries");
    assert_eq!(code, 200, "the API answers while the disk is full");
    let boundaries: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    println!("boundaries while full: {}", boundaries["lost"]);
    assert!(
        boundaries["lost"]["slices"].as_u64().unwrap_or(0) > 0
            && boundaries["lost"]["rows"].as_u64().unwrap_or(0) > 0
            && boundaries["lost"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("No space")),
        "what a full disk cost is reported: {boundaries}"
    );

    // 3. Space returns: recording resumes and snapshots work again.
    for filler in &fillers {
        std::fs::remove_file(filler).expect("removing a filler");
    }
    let freed_at = now_ns();
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = wait_until(Duration::from_secs(20), || {
        ten_megabytes(&pair);
        slices(&data).iter().any(|s| s.0 > freed_at) || Instant::now() > deadline
    });
    assert!(
        resumed && slices(&data).iter().any(|s| s.0 > freed_at),
        "recording resumed after space returned:\n{}",
        agent.log_text()
    );
    let (code, body) = post(
        &agent,
        "/mcp/snapshots",
        json!({"name": "after", "duration": "1m"}),
    );
    assert!(code < 300, "{}", String::from_utf8_lossy(&body));
    let snap = agent.wait_for("/mcp/snapshots/after", |v| v["status"] != "in_progress");
    assert_eq!(snap["status"], "completed", "{snap}");
    let log = agent.stop();
    assert!(
        log.contains("nearly full"),
        "the recorder said why it deleted slices:\n{log}"
    );
}

#[test]
fn dissecting_onto_a_full_disk_fails_with_the_reason_and_leaves_nothing() {
    require_root();
    let capture = workspace_root().join("../shared/fixtures/pcap/arkime_synthetic.pcap");
    let base = tempfile::tempdir().expect("tempdir");
    // The fixture's calls table is ~23 KiB and its conns table ~16 KiB: 16 KiB holds neither.
    let fs = SmallFs::mount_kib(&base.path().join("small"), 16);
    for threads in ["1", "2"] {
        let out = fs.dir.join(format!("out-{threads}"));
        let run = Command::new(sibling_binary("remora"))
            .args(["dissect", "--threads", threads])
            .arg(&capture)
            .arg("--out")
            .arg(&out)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("running remora dissect");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(
            !run.status.success(),
            "{threads} thread(s): succeeded: {stderr}"
        );
        assert!(
            stderr.contains("No space left on device") && stderr.contains(".parquet"),
            "{threads} thread(s): the error names neither the file nor the reason: {stderr}"
        );
        let left: Vec<_> = std::fs::read_dir(&out)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{threads} thread(s) left {left:?} behind");
    }
}
