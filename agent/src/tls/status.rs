//! Which processes' TLS is read, and why not for the others (`GET /v1/tls`, the analyzer's
//! `/mcp/tls-status`): so that "not decrypted" is never mistaken for "no traffic".
//!
//! Every process with an Internet socket is classified from what it maps and what its
//! executable holds: a hooked libssl (decrypted), a libssl that could not be hooked, Java's
//! JVM, GnuTLS, NSS, a Go binary (crypto/tls compiled in), rustls, a statically linked
//! OpenSSL/BoringSSL, or no TLS library at all.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Mutex,
};

use super::{LibraryStatus, discover};

/// The TLS situation of one process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProcessTls {
    /// Process id (in the agent's view of /proc).
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Executable path, as the process sees it.
    pub exe: String,
    /// Internet sockets (TCP and UDP, v4 and v6) it holds.
    pub sockets: usize,
    /// Its TLS plaintext is recorded.
    pub decrypted: bool,
    /// `openssl`, `openssl-static`, `go`, `java`, `rustls`, `gnutls`, `nss` or `none`.
    pub stack: &'static str,
    /// The TLS library file, when one is mapped.
    pub library: Option<String>,
    /// Why it is not decrypted (`None` when it is).
    pub reason: Option<String>,
}

/// The libraries the embedded recorder hooks, for an analyzer in the same process
/// (`remora up`); `None` until the TLS probes are running.
static PUBLISHED: Mutex<Option<Vec<LibraryStatus>>> = Mutex::new(None);

/// Publishes the hooked libraries (the recorder does after each scan).
pub fn publish(libraries: Vec<LibraryStatus>) {
    *PUBLISHED.lock().unwrap_or_else(|p| p.into_inner()) = Some(libraries);
}

/// What [`publish`] last said, when this process records TLS.
pub fn published() -> Option<Vec<LibraryStatus>> {
    PUBLISHED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Executables already classified, across requests.
static EXES: Mutex<Option<ExeCache>> = Mutex::new(None);

/// The TLS report of this node: whether plaintext is recorded, the libraries found and how each
/// is hooked, and every process with an Internet socket (`GET /v1/tls`).
pub fn report(node: &str, libraries: Option<Vec<LibraryStatus>>) -> serde_json::Value {
    let mut exes = EXES.lock().unwrap_or_else(|p| p.into_inner());
    let exes = exes.get_or_insert_with(ExeCache::default);
    let procs = processes(Path::new("/proc"), libraries.as_deref(), exes);
    serde_json::json!({
        "node": node,
        "enabled": libraries.is_some(),
        "libraries": libraries.unwrap_or_default(),
        "processes": procs,
    })
}

/// Socket inodes of Internet sockets, read once per network namespace.
fn inet_inodes(proc: &Path, pids: &[u32]) -> HashSet<u64> {
    let mut namespaces = HashSet::new();
    let mut inodes = HashSet::new();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        let Ok(ns) = std::fs::read_link(dir.join("ns/net")) else {
            continue;
        };
        if !namespaces.insert(ns) {
            continue;
        }
        for table in ["tcp", "tcp6", "udp", "udp6"] {
            let Ok(text) = std::fs::read_to_string(dir.join("net").join(table)) else {
                continue;
            };
            for line in text.lines().skip(1) {
                if let Some(inode) = line.split_whitespace().nth(9).and_then(|i| i.parse().ok()) {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

/// Internet sockets among `pid`'s fds.
fn socket_count(proc: &Path, pid: u32, inet: &HashSet<u64>) -> usize {
    let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
        return 0;
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| inet.contains(inode))
        .count()
}

/// What an executable holds, by (device, inode): reading a large binary once is enough.
#[derive(Default)]
pub struct ExeCache {
    seen: HashMap<(u64, u64), Option<(&'static str, &'static str)>>,
}

impl ExeCache {
    /// The TLS stack compiled into the executable at `path`, with why it is not read.
    fn classify(&mut self, path: &Path) -> Option<(&'static str, &'static str)> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).ok()?;
        *self
            .seen
            .entry((meta.dev(), meta.ino()))
            .or_insert_with(|| classify_executable(path))
    }
}

/// The TLS stack compiled into an executable, from its bytes.
fn classify_executable(path: &Path) -> Option<(&'static str, &'static str)> {
    let bytes = std::fs::read(path).ok()?;
    let has = |needle: &[u8]| memchr::memmem::find(&bytes, needle).is_some();
    if has(b".go.buildinfo") || has(b"\xff Go buildinf:") {
        return Some((
            "go",
            "a Go binary not hooked (yet: new executables are read every second; or TLS \
             plaintext is off)",
        ));
    }
    if has(b"rustls") {
        return Some((
            "rustls",
            "rustls (Rust) is compiled into the binary: unsupported",
        ));
    }
    if has(b"SSL_write") && has(b"SSL_read") {
        return Some((
            "openssl-static",
            "OpenSSL or BoringSSL is linked statically: no library file to hook",
        ));
    }
    None
}

/// The TLS situation of every process under `proc` that holds an Internet socket;
/// `libraries` is what the recorder hooks (`None`: TLS plaintext is off on this node).
pub fn processes(
    proc: &Path,
    libraries: Option<&[LibraryStatus]>,
    exes: &mut ExeCache,
) -> Vec<ProcessTls> {
    let pids: Vec<u32> = std::fs::read_dir(proc)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let inet = inet_inodes(proc, &pids);
    let mut out = Vec::new();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        let sockets = socket_count(proc, pid, &inet);
        if sockets == 0 {
            continue;
        }
        let comm = std::fs::read_to_string(dir.join("comm"))
            .map(|c| c.trim_end().to_owned())
            .unwrap_or_default();
        let exe = std::fs::read_link(dir.join("exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let maps = std::fs::read_to_string(dir.join("maps")).unwrap_or_default();
        let mapped: Vec<String> = maps
            .lines()
            .filter_map(discover::parse_maps_line)
            .map(|(_, _, path)| path)
            .collect();
        let mapped_named = |prefix: &str| {
            mapped
                .iter()
                .find(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with(prefix)))
                .cloned()
        };
        let mut status = ProcessTls {
            pid,
            comm,
            exe,
            sockets,
            decrypted: false,
            stack: "none",
            library: None,
            reason: None,
        };
        if let Some(lib) = mapped_named("libssl.so") {
            status.stack = "openssl";
            let hooked = libraries.and_then(|l| l.iter().find(|s| s.path == lib));
            match (libraries, hooked) {
                (None, _) => {
                    status.reason = Some("TLS plaintext is off on this node's agent (--tls)".into())
                }
                (Some(_), Some(h)) if h.hooked => status.decrypted = true,
                (Some(_), Some(h)) => {
                    status.reason = Some(format!(
                        "its library could not be hooked: {}",
                        h.error.clone().unwrap_or_default()
                    ))
                }
                (Some(_), None) => {
                    status.reason = Some(
                        "its library was not found by the last scan (it is every second for new \
                         processes); ask again"
                            .into(),
                    )
                }
            }
            status.library = Some(lib);
        } else if let Some(lib) = mapped_named("libjvm.so") {
            status.stack = "java";
            status.library = Some(lib);
            status.reason = Some("Java's TLS (JSSE) runs inside the JVM: unsupported".into());
        } else if let Some(lib) = mapped_named("libgnutls.so") {
            status.stack = "gnutls";
            status.library = Some(lib);
            status.reason = Some("GnuTLS: unsupported".into());
        } else if let Some(lib) = mapped_named("libssl3.so").or_else(|| mapped_named("libnss3.so"))
        {
            status.stack = "nss";
            status.library = Some(lib);
            status.reason = Some("NSS: unsupported".into());
        } else if let Some(go) = libraries
            .into_iter()
            .flatten()
            .find(|l| l.kind == "go" && l.path == status.exe)
        {
            status.stack = "go";
            status.library = Some(go.path.clone());
            status.decrypted = go.hooked;
            status.reason = go
                .error
                .clone()
                .map(|e| format!("its Go binary could not be hooked: {e}"));
        } else if let Some((stack, reason)) = exes.classify(&dir.join("exe")) {
            status.stack = stack;
            status.reason = Some(reason.into());
        } else {
            status.reason = Some(
                "no TLS library found: it speaks no TLS, or uses a stack Remora does not recognise"
                    .into(),
            );
        }
        out.push(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_are_classified_by_what_they_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let go = write("go", b"\x7fELF....\xff Go buildinf:....");
        assert_eq!(classify_executable(&go).map(|c| c.0), Some("go"));
        let rust = write("rust", b"\x7fELF...rustls::client...");
        assert_eq!(classify_executable(&rust).map(|c| c.0), Some("rustls"));
        let envoy = write("envoy", b"\x7fELF...SSL_write...SSL_read...");
        assert_eq!(
            classify_executable(&envoy).map(|c| c.0),
            Some("openssl-static")
        );
        let plain = write("plain", b"\x7fELF...nothing here");
        assert_eq!(classify_executable(&plain), None);
    }

    #[test]
    fn this_process_is_listed_when_it_holds_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut exes = ExeCache::default();
        let all = processes(Path::new("/proc"), Some(&[]), &mut exes);
        let me = all
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test process holds a TCP socket");
        assert!(me.sockets >= 1);
        assert!(!me.decrypted);
        assert!(me.reason.is_some());
        drop(listener);
    }
}
