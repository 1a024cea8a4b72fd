//! Helpers for Remora's privileged end-to-end tests and capture benchmarks.
//!
//! Everything a test creates (network namespaces, veth pairs, processes, temp dirs) is owned by
//! a guard that removes it on drop, also when the test fails. Addresses come from the
//! benchmarking range 198.18.0.0/15 and never leave the namespaces.

pub mod fake_kube;
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

/// `remora snapshot import FILE NAME --data-dir DATA` (into a running analyzer's data
/// directory too: it reads snapshots from disk); panics with remora's stderr when it fails.
pub fn import_capture(data: &std::path::Path, file: &std::path::Path, name: &str) {
    let out = std::process::Command::new(sibling_binary("remora"))
        .args(["snapshot", "import"])
        .arg(file)
        .arg(name)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("running remora snapshot import");
    assert!(
        out.status.success(),
        "remora snapshot import {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every visible (not hidden) `.parquet` file under `dir` whose footer does not parse: after
/// a crash, none may be readable-looking yet broken.
pub fn unreadable_parquet(dir: &std::path::Path) -> Vec<String> {
    let mut bad = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                let ok = std::fs::File::open(&path)
                    .ok()
                    .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
                    .is_some();
                if !ok {
                    bad.push(path.display().to_string());
                }
            }
        }
    }
    bad
}

/// Where most end-to-end tests start: root and the tools checked, a veth pair, nginx on side B
/// (`ADDR_B:8080`, h2c on 8081) and a temp dir with `data` inside it for the recorder.
/// Dropped in order: nginx, then the namespaces, then the files.
pub struct WebScene {
    _nginx: proc::Nginx,
    /// The veth pair (`a` records, `b` serves).
    pub pair: netns::VethPair,
    /// Scratch space; removed last.
    pub tmp: tempfile::TempDir,
    /// `<tmp>/data`, the recorder's data directory.
    pub data: PathBuf,
}

impl WebScene {
    /// Builds the scene; `tag` names the namespaces (a few letters, unique per test).
    pub fn new(tag: &str) -> Self {
        require_root();
        for tool in ["curl", "nginx"] {
            require_tool(tool);
        }
        let pair = netns::VethPair::new(tag);
        let nginx = proc::Nginx::start(&pair.b, netns::ADDR_B, 8080);
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        Self {
            _nginx: nginx,
            pair,
            tmp,
            data,
        }
    }
}
