//! The `remora` binary's allocator per command (`remora_analyzer::allocator`): `remora dissect`
//! runs on jemalloc with the options the binary sets, `REMORA_ALLOCATOR` overrides the choice,
//! and the rows are the same on either allocator.

use std::path::Path;
use std::process::Command;

mod common;

/// Dissects the shared fixture with `REMORA_ALLOCATOR` set to `forced` (or unset); returns the
/// debug log and what the summary says was found.
fn dissect(forced: Option<&str>, out: &Path) -> (String, String) {
    let fixture = common::fixture("arkime_synthetic.pcap");
    let mut cmd = Command::new(common::REMORA);
    cmd.args([
        "--log",
        "remora_analyzer=debug",
        "dissect",
        "--threads",
        "2",
        "--out",
    ])
    .arg(out)
    .arg(&fixture)
    .env_remove("REMORA_LOG")
    .env_remove("_RJEM_MALLOC_CONF");
    match forced {
        Some(value) => cmd.env("REMORA_ALLOCATOR", value),
        None => cmd.env_remove("REMORA_ALLOCATOR"),
    };
    let result = cmd
        .output()
        .unwrap_or_else(|e| panic!("running remora: {e}"));
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&result.stdout).into_owned();
    assert!(result.status.success(), "remora dissect failed:\n{stderr}");
    // What was found, without the timing ("918 frames in 0.03 s (..): 64 calls ...").
    let first = stdout.lines().next().unwrap_or_default();
    let summary = first
        .split_once("): ")
        .map_or(first, |(_, found)| found)
        .to_owned();
    (stderr, summary)
}

/// The "allocator set up" log line, without terminal colour codes.
fn setup_line(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("allocator set up"))
        .unwrap_or_else(|| panic!("no \"allocator set up\" line in:\n{log}"));
    let mut plain = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('\u{1b}') {
        plain.push_str(&rest[..start]);
        rest = rest[start..]
            .find('m')
            .map_or("", |end| &rest[start + end + 1..]);
    }
    plain.push_str(rest);
    plain
}

#[test]
fn dissect_runs_on_jemalloc_with_its_options_and_the_override_switches_it() {
    let tmp = tempfile::tempdir().unwrap();

    let (log, on_jemalloc) = dissect(None, &tmp.path().join("default"));
    let line = setup_line(&log);
    for expected in [
        "jemalloc",
        "dirty_decay_ms=1000",
        "muzzy_decay_ms=0",
        "background_thread=true",
        "narenas=1",
    ] {
        assert!(line.contains(expected), "{expected} missing from: {line}");
    }

    let (log, on_mimalloc) = dissect(Some("mimalloc"), &tmp.path().join("mimalloc"));
    let line = setup_line(&log);
    assert!(
        line.contains("mimalloc") && line.contains("purge_delay_ms=100"),
        "not mimalloc with the two-thread purge delay: {line}"
    );
    assert_eq!(
        on_jemalloc, on_mimalloc,
        "the summaries differ by allocator"
    );
    for table in ["calls.parquet", "conns.parquet"] {
        let a = std::fs::read(tmp.path().join("default").join(table)).unwrap();
        let b = std::fs::read(tmp.path().join("mimalloc").join(table)).unwrap();
        assert!(a == b, "{table} differs by allocator");
    }

    let (log, _) = dissect(Some("glibc"), &tmp.path().join("unknown"));
    assert!(
        log.contains("REMORA_ALLOCATOR=glibc is neither mimalloc nor jemalloc; ignored"),
        "no warning for an unknown allocator:\n{log}"
    );
    assert!(
        setup_line(&log).contains("jemalloc"),
        "the unknown value was not ignored"
    );
}
