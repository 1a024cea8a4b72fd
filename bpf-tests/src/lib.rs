//! Helpers for Remora's privileged end-to-end tests and capture benchmarks.
//!
//! Everything a test creates (network namespaces, veth pairs, processes, temp dirs) is owned by
//! a guard that removes it on drop, also when the test fails. Addresses come from the
//! benchmarking range 198.18.0.0/15 and never leave the namespaces.

pub mod netns;
pub mod pcap;
pub mod proc;
pub mod slices;

use std::path::PathBuf;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of a binary built in the same profile as the running test or benchmark
/// (`target/<profile>/<name>`).
pub fn sibling_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// Fails with a clear message unless the process runs as root (the tests load eBPF programs and
/// create network namespaces).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the BPF end-to-end tests need root (eBPF, TC and network namespaces): run `sudo -E cargo xtask test`"
    );
}

/// Fails with a clear message when a command the tests use is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed; run `cargo xtask setup` (it installs the test tools)"
    );
}

/// Sum over all label sets of one metric in Prometheus text (e.g. a per-CPU counter).
pub fn metric_total(metrics: &str, name: &str) -> u64 {
    let prefix = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
