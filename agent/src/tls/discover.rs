//! Which TLS libraries the processes of this node use, from `/proc/<pid>/maps`.
//!
//! Uprobes bind to a file's inode, so one attachment per distinct file (device, inode) covers
//! every process that maps it, now or later. A container's file is opened through
//! `/proc/<pid>/root`, which reaches its mount namespace. The maps path is the rest of the line
//! after five fields (paths may contain spaces; splitting on them let a pod steer probes onto
//! host files in other tools).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// A TLS library file some processes map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    /// The path as the processes see it (in their mount namespace).
    pub path: String,
    /// The path to open from the agent (`/proc/<pid>/root/<path>`).
    pub open_path: PathBuf,
    /// Which library: `openssl` (libssl).
    pub kind: &'static str,
    /// Processes mapping it when it was found.
    pub pids: Vec<u32>,
}

/// (device, inode) of a mapped file, as maps gives them.
pub type FileId = (String, u64);

/// The library kind of a mapped file's name, when it is one Remora hooks.
pub fn library_kind(path: &str) -> Option<&'static str> {
    let name = path.rsplit('/').next()?;
    name.starts_with("libssl.so").then_some("openssl")
}

/// One maps line's file: (device, inode, path), for file-backed mappings.
pub fn parse_maps_line(line: &str) -> Option<(String, u64, String)> {
    let mut rest = line;
    let mut fields = Vec::with_capacity(5);
    for _ in 0..5 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let path = rest.trim_start_matches(' ');
    if !path.starts_with('/') {
        return None;
    }
    let inode: u64 = fields.get(4)?.parse().ok()?;
    if inode == 0 {
        return None;
    }
    // A deleted file (upgraded in place) is still mapped, but cannot be opened by name.
    if path.ends_with(" (deleted)") {
        return None;
    }
    Some((fields.get(3)?.to_string(), inode, path.to_owned()))
}

/// What one scan of `/proc` found.
#[derive(Debug, Default)]
pub struct Found {
    /// The TLS libraries mapped, by file.
    pub libraries: BTreeMap<FileId, Library>,
    /// Each scanned process's executable: (pid, file id, paths).
    pub executables: Vec<(u32, FileId, Library)>,
}

/// The TLS libraries and the executables of the processes under `proc` (normally `/proc`)
/// that `wanted` accepts; `wanted` also learns every pid seen. Each process's maps are read
/// once for both.
pub fn scan(proc: &Path, wanted: &mut dyn FnMut(u32) -> bool) -> Found {
    let mut found = Found::default();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !wanted(pid) {
            continue;
        }
        let Ok(maps) = std::fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe")).ok();
        let exe = exe.as_deref().and_then(Path::to_str);
        let open_path = |path: &str| entry.path().join("root").join(path.trim_start_matches('/'));
        let mut exe_seen = false;
        for line in maps.lines() {
            let Some((dev, inode, path)) = parse_maps_line(line) else {
                continue;
            };
            if !exe_seen && exe == Some(path.as_str()) {
                exe_seen = true;
                found.executables.push((
                    pid,
                    (dev.clone(), inode),
                    Library {
                        open_path: open_path(&path),
                        path: path.clone(),
                        kind: "go",
                        pids: vec![pid],
                    },
                ));
            }
            let Some(kind) = library_kind(&path) else {
                continue;
            };
            let lib = found
                .libraries
                .entry((dev, inode))
                .or_insert_with(|| Library {
                    open_path: open_path(&path),
                    path: path.clone(),
                    kind,
                    pids: Vec::new(),
                });
            if lib.pids.last() != Some(&pid) {
                lib.pids.push(pid);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines_keep_paths_with_spaces_whole() {
        let line = "7f1c2a000000-7f1c2a0a0000 r--p 00000000 fe:01 1234567                    /usr/lib/x86_64-linux-gnu/libssl.so.3";
        assert_eq!(
            parse_maps_line(line),
            Some((
                "fe:01".into(),
                1_234_567,
                "/usr/lib/x86_64-linux-gnu/libssl.so.3".into()
            ))
        );
        let spaced = "7f00-7f01 r-xp 00000000 00:2a 99 /app/my libs/libssl.so.1.1";
        assert_eq!(
            parse_maps_line(spaced).map(|(_, _, p)| p),
            Some("/app/my libs/libssl.so.1.1".into())
        );
        assert_eq!(
            parse_maps_line("7f00-7f01 rw-p 00000000 00:00 0 [heap]"),
            None
        );
        assert_eq!(
            parse_maps_line("7f00-7f01 r-xp 00000000 fe:01 5 /usr/lib/libssl.so.3 (deleted)"),
            None
        );
        assert_eq!(
            library_kind("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
            Some("openssl")
        );
        assert_eq!(
            library_kind("/usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
            None
        );
    }

    #[test]
    fn this_process_is_found_when_it_maps_libssl() {
        // The test binary does not link libssl; a scan must at least not fail, and every
        // library it finds must name a process whose root opens it.
        let found = scan(Path::new("/proc"), &mut |_| true);
        let me = std::process::id();
        assert!(
            found.executables.iter().any(|(pid, ..)| *pid == me),
            "this process's executable is found"
        );
        for lib in found.libraries.values() {
            assert!(!lib.pids.is_empty());
            assert!(lib.open_path.starts_with("/proc/"));
        }
    }
}
