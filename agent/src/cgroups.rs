//! Which pod a cgroup belongs to, on this node: the cgroup v2 tree names each pod (by UID) and
//! each container (by runtime id), and a packet sent by a local socket carries its cgroup id
//! (`bpf_skb_cgroup_id`, the `cgroup_id` column of `packets`). With this map the analyzer
//! attributes host-network pods, whose address is the node's, to the pod itself.
//!
//! The cgroup id is the inode number of the cgroup's directory. Both cgroup drivers are read:
//!
//! - systemd: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID with _>.slice/
//!   cri-containerd-<id>.scope` (also `crio-`, `docker-`, `libpod-`);
//! - cgroupfs: `kubepods/burstable/pod<UID>/<id>`.
//!
//! The tree is read where the host's is: `REMORA_CGROUP_ROOT`, else the first cgroup2 mount of
//! `/proc/1/root/sys/fs/cgroup`, `/proc/1/root/sys/fs/cgroup/unified`, `/sys/fs/cgroup`,
//! `/sys/fs/cgroup/unified` (with hostPID, `/proc/1/root` is the host's root).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::Serialize;

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: i64 = 0x6367_7270;
/// Directories read at most (a node runs at most a few hundred pods, a few cgroups each).
const MAX_CGROUPS: usize = 200_000;
/// Depth read at most below the root.
const MAX_DEPTH: usize = 10;

/// One pod cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PodCgroup {
    /// The cgroup id (`bpf_skb_cgroup_id`, the directory's inode).
    pub id: u64,
    /// The pod's `metadata.uid`.
    pub pod_uid: String,
    /// The container's runtime id, when the cgroup is a container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a plain struct; the path is a valid C string.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut fs) };
    rc == 0 && fs.f_type as i64 == CGROUP2_MAGIC
}

/// Where the host's cgroup v2 tree is, if anywhere.
pub fn root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("REMORA_CGROUP_ROOT") {
        return Some(PathBuf::from(dir));
    }
    [
        "/proc/1/root/sys/fs/cgroup",
        "/proc/1/root/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| is_cgroup2(p))
}

/// The pod UID and container id a cgroup path (relative to the root) names.
pub fn parse(relative: &str) -> (Option<String>, Option<String>) {
    let mut uid = None;
    let mut container = None;
    for segment in relative.split('/') {
        let stem = segment
            .strip_suffix(".slice")
            .or_else(|| segment.strip_suffix(".scope"))
            .unwrap_or(segment);
        if let Some(at) = stem.rfind("pod") {
            let candidate = &stem[at + 3..];
            let normalized = candidate.replace('_', "-");
            if is_uid(&normalized) && (at == 0 || stem[..at].ends_with('-')) {
                uid = Some(normalized);
                continue;
            }
        }
        let id = [
            "cri-containerd-",
            "crio-",
            "docker-",
            "libpod-",
            "containerd-",
        ]
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(stem);
        if uid.is_some() && id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            container = Some(id.to_owned());
        }
    }
    (uid, container)
}

fn is_uid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every pod cgroup below `root`.
pub fn scan(root: &Path) -> Vec<PodCgroup> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_owned(), 0usize)];
    let mut seen = 0usize;
    while let Some((dir, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_CGROUPS {
            tracing::warn!(
                "more than {MAX_CGROUPS} cgroups below {}; the rest are not read",
                root.display()
            );
            break;
        }
        if let Ok(relative) = dir.strip_prefix(root)
            && let (Some(pod_uid), container_id) = parse(&relative.to_string_lossy())
            && let Ok(meta) = std::fs::metadata(&dir)
        {
            out.push(PodCgroup {
                id: meta.ino(),
                pod_uid,
                container_id,
            });
        }
        if depth >= MAX_DEPTH {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    out.sort_by_key(|c| c.id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1a2b3c4d-0000-4000-8000-0123456789ab";
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn both_cgroup_drivers() {
        let systemd = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse(&systemd), (Some(UID.into()), Some(CID.into())));
        let cgroupfs = format!("kubepods/besteffort/pod{UID}/{CID}");
        assert_eq!(parse(&cgroupfs), (Some(UID.into()), Some(CID.into())));
        let pod_only = format!("kubepods.slice/kubepods-pod{}.slice", UID.replace('-', "_"));
        assert_eq!(parse(&pod_only), (Some(UID.into()), None));
        assert_eq!(parse("system.slice/podman.service"), (None, None));
        assert_eq!(
            parse("user.slice/user-0.slice/session-1.scope"),
            (None, None)
        );
        assert_eq!(
            parse(&format!("system.slice/docker-{CID}.scope")),
            (None, None),
            "no pod"
        );
    }

    #[test]
    fn scan_reads_inodes_of_pod_cgroups() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pod = dir.path().join(format!("kubepods/burstable/pod{UID}"));
        let container = pod.join(CID);
        std::fs::create_dir_all(&container).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("system.slice/sshd.service"))
            .unwrap_or_else(|e| panic!("{e}"));
        let found = scan(dir.path());
        assert_eq!(found.len(), 2, "{found:?}");
        let ino = std::fs::metadata(&container).map(|m| m.ino()).unwrap_or(0);
        assert!(
            found
                .iter()
                .any(|c| c.id == ino && c.container_id.as_deref() == Some(CID))
        );
    }
}
