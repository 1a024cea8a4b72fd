//! The on-disk slice store of one node: naming, listing, boundaries, temp-file sweeping and
//! retention.
//!
//! A finished slice is `<data>/capture/<node>/<kind>/<start_ns>-<end_ns>.parquet` (UTC ns of its
//! first and last row). A slice being written is a hidden `.*.tmp` file next to it and becomes
//! visible only by an atomic rename after fsync, so a reader never sees a partial file.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;

use crate::error::{AgentError, Result};

/// Kinds of slices a node can hold.
pub const KINDS: [&str; 3] = ["packets", "tls", "sockets"];

/// One finished slice file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SliceFile {
    /// `packets`, `tls` or `sockets`.
    pub kind: String,
    /// File name, e.g. `1764000000000000000-1764000009999999999.parquet`.
    pub file: String,
    /// Time of the first row, UTC ns.
    pub start_ns: i64,
    /// Time of the last row, UTC ns.
    pub end_ns: i64,
    /// Size on disk.
    pub bytes: u64,
    /// Full path.
    #[serde(skip)]
    pub path: PathBuf,
}

/// Parses `<start>-<end>[-<n>].parquet`.
pub fn parse_slice_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    let start = parts.next()?.parse().ok()?;
    let end = parts.next()?.parse().ok()?;
    match parts.next() {
        None => {}
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) && parts.next().is_none() => {}
        Some(_) => return None,
    }
    (start <= end).then_some((start, end))
}

/// A free name for a slice spanning `start..=end` in `dir`.
pub fn slice_path(dir: &Path, start_ns: i64, end_ns: i64) -> PathBuf {
    let path = dir.join(format!("{start_ns}-{end_ns}.parquet"));
    if !path.exists() {
        return path;
    }
    (1..)
        .map(|n| dir.join(format!("{start_ns}-{end_ns}-{n}.parquet")))
        .find(|p| !p.exists())
        .unwrap_or(path)
}

/// Lists the finished slices of one kind directory, oldest first.
pub fn list_kind(dir: &Path, kind: &str) -> Vec<SliceFile> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<SliceFile> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let (start_ns, end_ns) = parse_slice_name(&file)?;
            let bytes = entry.metadata().ok()?.len();
            Some(SliceFile {
                kind: kind.to_owned(),
                path: entry.path(),
                file,
                start_ns,
                end_ns,
                bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| (a.start_ns, &a.file).cmp(&(b.start_ns, &b.file)));
    out
}

/// Lists every finished slice of a node directory (`<data>/capture/<node>`), oldest first.
pub fn list_node(node_dir: &Path) -> Vec<SliceFile> {
    let mut all: Vec<SliceFile> = KINDS
        .iter()
        .flat_map(|kind| list_kind(&node_dir.join(kind), kind))
        .collect();
    all.sort_by(|a, b| (a.start_ns, &a.file).cmp(&(b.start_ns, &b.file)));
    all
}

/// The window a node's slices cover, as snapshots may trust it: its packet slices'. The other
/// kinds are written only when there are events and sealed on their own, so their newest end
/// says nothing about what is published: a node whose first packet slice is not out yet has
/// recorded nothing a snapshot can rely on. `(oldest start, newest end)`, ns.
pub fn recorded_span(slices: &[SliceFile]) -> Option<(i64, i64)> {
    let packets = || slices.iter().filter(|s| s.kind == "packets");
    Some((
        packets().map(|s| s.start_ns).min()?,
        packets().map(|s| s.end_ns).max()?,
    ))
}

/// Deletes temporary files a killed writer left behind; returns how many.
pub fn sweep_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.ends_with(".tmp")
        })
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// A window of a node's slices held against retention while a snapshot links them: a file
/// `<node>/.pins/<holder>` ("start_ns end_ns"), removed when the guard is dropped. A pin older
/// than [`PIN_TTL`] (its holder died) no longer holds.
#[derive(Debug)]
pub struct Pin {
    path: PathBuf,
}

/// How long a pin holds at most.
pub const PIN_TTL: Duration = Duration::from_secs(600);

impl Pin {
    /// Pins `start_ns..=end_ns` of the node in `node_dir` for `holder` (a snapshot's name).
    pub fn new(node_dir: &Path, holder: &str, start_ns: i64, end_ns: i64) -> std::io::Result<Self> {
        let dir = node_dir.join(".pins");
        fs::create_dir_all(&dir)?;
        let path = dir.join(holder);
        fs::write(&path, format!("{start_ns} {end_ns}"))?;
        Ok(Self { path })
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether a snapshot is linking a window `slice` overlaps: it goes in a later round.
fn pinned(pins: &[(i64, i64)], slice: &SliceFile) -> bool {
    pins.iter()
        .any(|&(start, end)| slice.end_ns >= start && slice.start_ns <= end)
}

/// A node's slices, oldest first by the time of the last row, so that a long slice is not
/// deleted before a shorter, older one.
fn oldest_first(node_dir: &Path) -> Vec<SliceFile> {
    let mut slices = list_node(node_dir);
    slices.sort_by_key(|s| s.end_ns);
    slices
}

/// The windows pinned now in `node_dir`; stale pins are removed.
fn active_pins(node_dir: &Path) -> Vec<(i64, i64)> {
    let Ok(entries) = fs::read_dir(node_dir.join(".pins")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > PIN_TTL);
        if stale {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let window = fs::read_to_string(entry.path()).ok().and_then(|t| {
            let mut parts = t.split_whitespace().map(|p| p.parse::<i64>().ok());
            Some((parts.next()??, parts.next()??))
        });
        // An unreadable pin holds everything: better late deletion than a hole in a snapshot.
        out.push(window.unwrap_or((i64::MIN, i64::MAX)));
    }
    out
}

/// Deletes the oldest slices of a node until they take at most `quota_bytes`, and every slice
/// whose last row is older than `max_age` before `now_ns`. Returns the deleted slices.
pub fn enforce_retention(
    node_dir: &Path,
    quota_bytes: u64,
    max_age: Option<Duration>,
    now_ns: i64,
) -> Vec<SliceFile> {
    let by_end = oldest_first(node_dir);
    let mut total: u64 = by_end.iter().map(|s| s.bytes).sum();
    let cutoff = max_age.map(|age| now_ns - age.as_nanos() as i64);
    let mut deleted = Vec::new();
    let pins = active_pins(node_dir);
    for slice in by_end {
        let too_old = cutoff.is_some_and(|c| slice.end_ns < c);
        if total <= quota_bytes && !too_old {
            continue;
        }
        if pinned(&pins, &slice) {
            continue;
        }
        if fs::remove_file(&slice.path).is_ok() {
            total -= slice.bytes;
            deleted.push(slice);
        }
    }
    deleted
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct it is given from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Deletes the oldest unpinned slices of a node while the filesystem has less than
/// `min_free` bytes free (as `free()` reads it), so that a disk filled by anything keeps the
/// newest recording rather than none. The newest slice is never deleted this way.
pub fn make_room(node_dir: &Path, min_free: u64, free: impl Fn() -> Option<u64>) -> Vec<SliceFile> {
    let mut deleted = Vec::new();
    if free().is_none_or(|f| f >= min_free) {
        return deleted;
    }
    let mut by_end = oldest_first(node_dir);
    by_end.pop();
    let pins = active_pins(node_dir);
    for slice in by_end {
        if free().is_none_or(|f| f >= min_free) {
            break;
        }
        if pinned(&pins, &slice) {
            continue;
        }
        if fs::remove_file(&slice.path).is_ok() {
            deleted.push(slice);
        }
    }
    deleted
}

/// Creates `dir` (and parents) with mode 0700 and checks that a file can be written in it.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let data_dir_error = |source| AgentError::DataDir {
        path: dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(data_dir_error)?;
    // An existing data directory may have been made with a looser mode: everything below it
    // holds captured payload, so only its owner may enter it. Another user's directory cannot
    // be changed: what Remora writes into it is still private (the umask), so say so and go on.
    let mode = fs::metadata(dir)
        .map_err(data_dir_error)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0
        && let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
    {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{mode:o}"),
            "the data directory is open to other users and cannot be made private ({e}); \
             chmod 700 it"
        );
    }
    let probe = dir.join(".write-probe.tmp");
    fs::write(&probe, b"probe").map_err(data_dir_error)?;
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o600)).map_err(data_dir_error)?;
    fs::remove_file(&probe).map_err(data_dir_error)?;
    Ok(())
}

/// Makes every file and directory this process creates private (files 0600, directories
/// 0700), whatever umask it was started with: slices, calls, snapshots and exports hold
/// captured payload, passwords and tokens included.
pub fn private_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// fsyncs a directory so that a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_slice_name("10-20.parquet"), Some((10, 20)));
        assert_eq!(parse_slice_name("10-20-3.parquet"), Some((10, 20)));
        assert_eq!(parse_slice_name("20-10.parquet"), None);
        assert_eq!(parse_slice_name(".abc.parquet.tmp"), None);
        assert_eq!(parse_slice_name("10-20-x.parquet"), None);
        let tmp = tempfile::tempdir().unwrap();
        let p = slice_path(tmp.path(), 1, 2);
        fs::write(&p, b"x").unwrap();
        assert_eq!(
            slice_path(tmp.path(), 1, 2).file_name().unwrap(),
            "1-2-1.parquet"
        );
    }

    #[test]
    fn pinned_slices_outlive_retention_until_unpinned() {
        let tmp = tempfile::tempdir().unwrap();
        let packets = tmp.path().join("packets");
        fs::create_dir_all(&packets).unwrap();
        for i in 0..4i64 {
            fs::write(
                packets.join(format!("{}-{}.parquet", i * 10, i * 10 + 9)),
                [0u8; 100],
            )
            .unwrap();
        }
        let pin = Pin::new(tmp.path(), "snap", 12, 25).unwrap();
        let deleted = enforce_retention(tmp.path(), 0, None, 0);
        let names: Vec<_> = deleted.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["0-9.parquet", "30-39.parquet"]);
        assert_eq!(list_node(tmp.path()).len(), 2, "the pinned window stays");
        drop(pin);
        assert_eq!(enforce_retention(tmp.path(), 0, None, 0).len(), 2);
        assert!(list_node(tmp.path()).is_empty());
    }

    #[test]
    fn retention_deletes_oldest_until_under_quota_and_by_age() {
        let tmp = tempfile::tempdir().unwrap();
        let packets = tmp.path().join("packets");
        let sockets = tmp.path().join("sockets");
        fs::create_dir_all(&packets).unwrap();
        fs::create_dir_all(&sockets).unwrap();
        for i in 0..5i64 {
            fs::write(
                packets.join(format!("{}-{}.parquet", i * 10, i * 10 + 9)),
                [0u8; 100],
            )
            .unwrap();
        }
        fs::write(sockets.join("5-15.parquet"), [0u8; 100]).unwrap();
        fs::write(packets.join(".x.parquet.tmp"), [0u8; 100]).unwrap();
        assert_eq!(list_node(tmp.path()).len(), 6);
        let deleted = enforce_retention(tmp.path(), 350, None, 0);
        let names: Vec<_> = deleted.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["0-9.parquet", "5-15.parquet", "10-19.parquet"]);
        let left: u64 = list_node(tmp.path()).iter().map(|s| s.bytes).sum();
        assert!(left <= 350);
        let deleted = enforce_retention(tmp.path(), 1 << 20, Some(Duration::from_nanos(10)), 45);
        assert_eq!(deleted.len(), 1, "{deleted:?}");
        assert_eq!(deleted[0].file, "20-29.parquet");
        assert_eq!(sweep_temp_files(&packets), 1);
    }

    #[test]
    fn a_full_disk_costs_the_oldest_slices_never_the_newest() {
        let tmp = tempfile::tempdir().unwrap();
        let packets = tmp.path().join("packets");
        fs::create_dir_all(&packets).unwrap();
        for i in 0..5i64 {
            fs::write(
                packets.join(format!("{}-{}.parquet", i * 10, i * 10 + 9)),
                [0u8; 100],
            )
            .unwrap();
        }
        let _pin = Pin::new(tmp.path(), "snap", 10, 19).unwrap();
        // Free space as the deletions make it: 50 bytes plus what was deleted.
        let free = || {
            let left: u64 = list_node(tmp.path()).iter().map(|s| s.bytes).sum();
            Some(50 + (500 - left))
        };
        assert!(make_room(tmp.path(), 40, free).is_empty(), "enough room");
        let deleted = make_room(tmp.path(), 260, free);
        let names: Vec<_> = deleted.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(names, ["0-9.parquet", "20-29.parquet", "30-39.parquet"]);
        let left: Vec<_> = list_node(tmp.path()).into_iter().map(|s| s.file).collect();
        assert_eq!(
            left.len(),
            2,
            "the pinned slice and the newest stay: {left:?}"
        );
        assert!(make_room(tmp.path(), u64::MAX, free).is_empty());
        assert!(free_bytes(tmp.path()).is_some_and(|f| f > 0));
    }

    #[test]
    fn unwritable_dir_is_a_clear_error() {
        let err = prepare_dir(Path::new("/proc/remora-cannot-exist/x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--data-dir"), "{err}");
    }
}
