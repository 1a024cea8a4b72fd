//! Snapshots: immutable copies of the recorded slices of a time window.
//!
//! `<data>/snapshots/<name>/` holds `capture/<node>/<kind>/<slice>.parquet` — hard links to the
//! recorder's slices (copies across filesystems), so retention deleting a slice never takes it
//! from a snapshot — and `manifest.json`. A snapshot is built in `.<name>.creating/` and renamed
//! into place when complete: a reader sees a whole snapshot or none. Names are checked before any
//! path is built from them.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

mod import;
pub mod remote;
pub use import::{Imported, capture_to_slices};

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name breaks the naming rule (HTTP 400).
    #[error(
        "invalid snapshot name `{0}`: use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
    )]
    InvalidName(String),
    /// The window cannot be understood (HTTP 400).
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    /// A snapshot of that name exists or is being made (HTTP 409).
    #[error("snapshot `{0}` already exists; pick another name or delete it first")]
    Exists(String),
    /// No snapshot of that name (HTTP 404).
    #[error("no snapshot `{0}`; list_snapshots / GET /mcp/snapshots shows the existing ones")]
    NotFound(String),
    /// Reading or writing the store failed (HTTP 500).
    #[error("snapshot store: {0}")]
    Io(String),
    /// The data directory's filesystem is nearly full (HTTP 507).
    #[error(
        "only {free_mb} MiB free on the filesystem of {path}, below the {min_mb} MiB kept free; \
         delete old snapshots or dissections (DELETE /mcp/snapshots/<name>), or free space on \
         that disk, then retry"
    )]
    NoSpace {
        /// The data directory.
        path: String,
        /// Free MiB.
        free_mb: u64,
        /// The reserve, MiB.
        min_mb: u64,
    },
}

pub(crate) fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("{context}: {e}"))
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStatus {
    /// Files are being linked.
    InProgress,
    /// Ready to dissect.
    Completed,
    /// Ready to dissect, but a node could not give all of its slices (`reason` and the node's
    /// `status` say which and why): its traffic in the window is missing, not absent.
    Partial,
    /// Creation failed (see `reason`).
    Failed,
}

/// One slice held by a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Node that recorded it.
    pub node: String,
    /// `packets`, `tls` or `sockets`.
    pub kind: String,
    /// File name.
    pub file: String,
    /// Bytes.
    pub bytes: u64,
    /// Rows (packets for `packets`).
    pub rows: u64,
    /// `crc32:<hex>:<bytes>` when it was linked (`SnapshotStore::verify`); absent in
    /// snapshots made before checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

impl SnapshotFile {
    /// Where the file sits inside its snapshot's directory.
    pub fn relative_path(&self) -> String {
        format!("capture/{}/{}/{}", self.node, self.kind, self.file)
    }
}

/// Per-node totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotNode {
    /// Node name.
    pub name: String,
    /// `complete`, `partial` (some slices could not be fetched) or `unreachable`.
    #[serde(default = "complete")]
    pub status: String,
    /// Why the node is not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent it was pulled from (absent: recorded here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Slice files.
    pub files: usize,
    /// Packets.
    pub packets: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

fn complete() -> String {
    "complete".into()
}

impl SnapshotStatus {
    /// Whether the snapshot's files can be read (completed, or partial with what it has).
    pub fn is_readable(self) -> bool {
        matches!(self, Self::Completed | Self::Partial)
    }
}

/// `manifest.json`: what a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Name.
    pub name: String,
    /// Status.
    pub status: SnapshotStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Window start, unix ms.
    pub start: i64,
    /// Window end, unix ms.
    pub end: i64,
    /// Nodes with their totals.
    pub nodes: Vec<SnapshotNode>,
    /// Every file.
    pub files: Vec<SnapshotFile>,
    /// Packets in the packet slices (whole slices: a slice overlapping the window is kept
    /// whole; its dissections report only the calls that start in the window).
    pub packets: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Packets the recorder dropped (a CPU's ring was full), as the linked slices carry them.
    pub drops: u64,
    /// When it was made, unix ms.
    pub created_at: i64,
    /// Workload records frozen into `workloads.parquet` (0: none known when it was made).
    #[serde(default)]
    pub workloads: usize,
    /// The capture file a `remora snapshot import` made it from (none: recorded). Its
    /// dissections count every packet of the file, also one that appears twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

/// A request to make a snapshot: `duration` back from now (or from `end`), or `start`..`end`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateRequest {
    /// Name.
    pub name: String,
    /// `5m`, `30s`, `1h`, ...
    #[serde(default)]
    pub duration: Option<String>,
    /// Start, unix ms.
    #[serde(default)]
    pub start: Option<i64>,
    /// End, unix ms (default: now).
    #[serde(default)]
    pub end: Option<i64>,
    /// Only these nodes (default: all).
    #[serde(default)]
    pub nodes: Option<Vec<String>>,
}

/// Checks a snapshot (or dissection) name: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.to_owned()))
    }
}

/// Resolves a request's window to unix ms `(start, end)`.
pub fn window(req: &CreateRequest, now_ms: i64) -> Result<(i64, i64), StoreError> {
    let end = req.end.unwrap_or(now_ms);
    let start = match (&req.duration, req.start) {
        (Some(d), None) => {
            let ns = remora_kfl::time::parse_duration(d).map_err(StoreError::InvalidWindow)?;
            if ns <= 0 {
                return Err(StoreError::InvalidWindow(format!(
                    "duration `{d}` must be positive"
                )));
            }
            end.saturating_sub(ns / 1_000_000)
        }
        (None, Some(s)) => s,
        (Some(_), Some(_)) => {
            return Err(StoreError::InvalidWindow(
                "give either `duration` or `start`, not both".into(),
            ));
        }
        (None, None) => {
            return Err(StoreError::InvalidWindow(
                "give `duration` (e.g. \"1h\") or `start` and `end` (unix ms)".into(),
            ));
        }
    };
    if start > end {
        return Err(StoreError::InvalidWindow(format!(
            "start {start} is after end {end}"
        )));
    }
    Ok((start, end))
}

/// The nodes with a recording under `<data>/capture`, sorted.
pub fn recorded_nodes(data: &Path) -> Vec<String> {
    let mut nodes: Vec<String> = fs::read_dir(data.join("capture"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}

/// The snapshots of one data directory.
pub struct SnapshotStore {
    data: PathBuf,
    creating: Mutex<HashSet<String>>,
    /// Where the workload records frozen into each new snapshot come from.
    workloads: Option<std::sync::Arc<dyn crate::services::workloads::WorkloadSource>>,
    /// Free bytes the filesystem keeps; below, new snapshots and dissections are refused.
    min_free: std::sync::atomic::AtomicU64,
    /// Other nodes' agents, whose slices a snapshot pulls over their node API.
    remote: std::sync::OnceLock<std::sync::Arc<remote::RemoteAgents>>,
    /// The node this process records, whose cgroup map it reads itself.
    local_node: std::sync::OnceLock<String>,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| io(tmp.display(), e))?;
    f.write_all(bytes).map_err(|e| io(tmp.display(), e))?;
    f.sync_all().map_err(|e| io(tmp.display(), e))?;
    fs::rename(&tmp, path).map_err(|e| io(path.display(), e))
}

/// A node's pod cgroups, next to its packets (`pipeline::sockets` reads them).
pub(crate) fn write_cgroups(
    tmp: &Path,
    node: &str,
    cgroups: &[remora_agent::cgroups::PodCgroup],
) -> Result<(), StoreError> {
    if cgroups.is_empty() {
        return Ok(());
    }
    let dir = tmp.join("capture").join(node);
    fs::create_dir_all(&dir).map_err(|e| io(dir.display(), e))?;
    let json = serde_json::to_vec(cgroups).map_err(|e| io("cgroups", e))?;
    write_atomic(&dir.join(crate::pipeline::sockets::CGROUPS_FILE), &json)
}

pub(crate) fn parquet_rows(path: &Path) -> u64 {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    fs::File::open(path)
        .ok()
        .and_then(|f| SerializedFileReader::new(f).ok())
        .map_or(0, |r| {
            u64::try_from(r.metadata().file_metadata().num_rows()).unwrap_or(0)
        })
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("data", &self.data)
            .field("workloads", &self.workloads.is_some())
            .finish_non_exhaustive()
    }
}

impl SnapshotStore {
    /// The store under `<data>/snapshots`; leftovers of an interrupted creation are removed.
    pub fn open(data: &Path) -> Result<Self, StoreError> {
        let dir = data.join("snapshots");
        fs::create_dir_all(&dir).map_err(|e| io(dir.display(), e))?;
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".creating") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(Self {
            data: data.to_owned(),
            creating: Mutex::new(HashSet::new()),
            workloads: None,
            min_free: std::sync::atomic::AtomicU64::new(64 << 20),
            remote: std::sync::OnceLock::new(),
            local_node: std::sync::OnceLock::new(),
        })
    }

    /// Refuses new snapshots and dissections while the data directory's filesystem has less
    /// than `bytes` free (`remora up` sets the recorder's reserve, `--min-free`).
    pub fn set_min_free(&self, bytes: u64) {
        self.min_free
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// `Err(NoSpace)` while the filesystem has less free than the reserve.
    pub fn check_space(&self) -> Result<(), StoreError> {
        let min = self.min_free.load(std::sync::atomic::Ordering::Relaxed);
        match remora_agent::store::free_bytes(&self.data) {
            Some(free) if free < min => Err(StoreError::NoSpace {
                path: self.data.display().to_string(),
                free_mb: free >> 20,
                min_mb: min >> 20,
            }),
            _ => Ok(()),
        }
    }

    /// Freezes the intervals of `workloads` that overlap a snapshot's window into every
    /// snapshot made from now on
    /// (`workloads.parquet`, see [`crate::services::workloads::SNAPSHOT_FILE`]).
    pub fn with_workloads(
        mut self,
        workloads: std::sync::Arc<dyn crate::services::workloads::WorkloadSource>,
    ) -> Self {
        self.workloads = Some(workloads);
        self
    }

    /// `node` is recorded by this process: snapshots keep its cgroup map (pod cgroups).
    pub fn set_local_node(&self, node: &str) {
        let _ = self.local_node.set(node.to_owned());
    }

    /// Pulls other nodes' slices from `agents` into every snapshot made from now on.
    pub fn set_remote_agents(&self, agents: std::sync::Arc<remote::RemoteAgents>) {
        let _ = self.remote.set(agents);
    }

    /// The other nodes' agents, when there are any.
    pub fn remote_agents(&self) -> Option<&std::sync::Arc<remote::RemoteAgents>> {
        self.remote.get()
    }

    /// The workload records frozen into `snapshot`, when it has any.
    pub fn snapshot_workloads(
        &self,
        snapshot: &str,
    ) -> Result<Option<crate::services::workload_history::WorkloadHistory>, StoreError> {
        let path = self
            .path(snapshot)?
            .join(crate::services::workloads::SNAPSHOT_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        crate::services::workload_history::WorkloadHistory::read_parquet(&path)
            .map(Some)
            .map_err(|e| io(path.display(), e))
    }

    fn dir(&self) -> PathBuf {
        self.data.join("snapshots")
    }

    /// The directory of a (validated) snapshot.
    pub fn path(&self, name: &str) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        Ok(self.dir().join(name))
    }

    /// Reserves `name` for a new snapshot: 409 when it exists or is being made.
    pub fn reserve(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        self.check_space()?;
        let mut creating = self.creating.lock().map_err(|e| io("lock", e))?;
        if path.exists() || creating.contains(name) {
            return Err(StoreError::Exists(name.to_owned()));
        }
        creating.insert(name.to_owned());
        Ok(())
    }

    fn release(&self, name: &str) {
        if let Ok(mut c) = self.creating.lock() {
            c.remove(name);
        }
    }

    /// Whether `name` is being made right now.
    pub fn is_creating(&self, name: &str) -> bool {
        self.creating.lock().is_ok_and(|c| c.contains(name))
    }

    /// Makes a snapshot of the window (the name must be reserved): links every slice of the
    /// chosen nodes that overlaps it, writes the manifest, publishes by rename.
    pub fn build(
        &self,
        req: &CreateRequest,
        start: i64,
        end: i64,
        now_ms: i64,
    ) -> Result<Manifest, StoreError> {
        let result = self.build_inner(req, start, end, now_ms);
        self.release(&req.name);
        result
    }

    fn build_inner(
        &self,
        req: &CreateRequest,
        start: i64,
        end: i64,
        now_ms: i64,
    ) -> Result<Manifest, StoreError> {
        let final_dir = self.path(&req.name)?;
        let tmp = self.dir().join(format!(".{}.creating", req.name));
        let _ = fs::remove_dir_all(&tmp);
        let result = self.link_window(req, start, end, now_ms, &tmp);
        match result {
            Ok(manifest) => {
                fs::rename(&tmp, &final_dir).map_err(|e| io(final_dir.display(), e))?;
                let _ = remora_agent::store::sync_dir(&self.dir());
                Ok(manifest)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                // The name shows `failed` with the reason (not a 404) until it is deleted.
                let failed = Manifest {
                    name: req.name.clone(),
                    status: SnapshotStatus::Failed,
                    reason: Some(format!("{e}; delete the snapshot and make it again")),
                    start,
                    end,
                    nodes: Vec::new(),
                    files: Vec::new(),
                    packets: 0,
                    bytes: 0,
                    drops: 0,
                    created_at: now_ms,
                    workloads: 0,
                    imported_from: None,
                };
                if let Ok(json) = serde_json::to_vec_pretty(&failed)
                    && fs::create_dir_all(&final_dir).is_ok()
                {
                    let _ = write_atomic(&final_dir.join("manifest.json"), &json);
                }
                Err(e)
            }
        }
    }

    fn link_window(
        &self,
        req: &CreateRequest,
        start: i64,
        end: i64,
        now_ms: i64,
        tmp: &Path,
    ) -> Result<Manifest, StoreError> {
        let (start_ns, end_ns) = (
            start.saturating_mul(1_000_000),
            end.saturating_mul(1_000_000).saturating_add(999_999),
        );
        let capture = self.data.join("capture");
        let mut nodes = recorded_nodes(&self.data);
        if let Some(wanted) = &req.nodes {
            if self.remote.get().is_none()
                && let Some(missing) = wanted.iter().find(|n| !nodes.contains(n))
            {
                return Err(StoreError::InvalidWindow(format!(
                    "no node `{missing}`; nodes with recordings: {}",
                    nodes.join(", ")
                )));
            }
            nodes.retain(|n| wanted.contains(n));
        }
        // Pin the window on every node first, so that retention cannot delete a slice between
        // the listing and its link; the pins go when this returns.
        let mut pins = Vec::new();
        for node in &nodes {
            pins.push(
                remora_agent::store::Pin::new(&capture.join(node), &req.name, start_ns, end_ns)
                    .map_err(|e| io(capture.join(node).display(), e))?,
            );
        }
        let mut files = Vec::new();
        let mut node_totals = Vec::new();
        let mut drops = remora_agent::drops::SliceDrops::default();
        for node in &nodes {
            let mut total = SnapshotNode {
                name: node.clone(),
                status: complete(),
                reason: None,
                source: None,
                files: 0,
                packets: 0,
                bytes: 0,
            };
            for slice in remora_agent::store::list_node(&capture.join(node)) {
                if slice.end_ns < start_ns || slice.start_ns > end_ns {
                    continue;
                }
                let dir = tmp.join("capture").join(node).join(&slice.kind);
                fs::create_dir_all(&dir).map_err(|e| io(dir.display(), e))?;
                let target = dir.join(&slice.file);
                if fs::hard_link(&slice.path, &target).is_err() {
                    // Another filesystem (or a slice retention just took): copy what is there.
                    match fs::copy(&slice.path, &target) {
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io(slice.path.display(), e)),
                    }
                }
                let rows = parquet_rows(&target);
                let checksum = crate::services::checksum::checksum(&target)
                    .map_err(|e| io(target.display(), e))?;
                if slice.kind == "packets" {
                    total.packets += rows;
                    if let Some(d) = remora_agent::drops::read_slice_drops(&target) {
                        drops.add(&d);
                    }
                }
                total.files += 1;
                total.bytes += slice.bytes;
                files.push(SnapshotFile {
                    node: node.clone(),
                    kind: slice.kind.clone(),
                    file: slice.file.clone(),
                    bytes: slice.bytes,
                    rows,
                    checksum: Some(checksum),
                });
            }
            node_totals.push(total);
        }
        if let Some(local) = self.local_node.get()
            && nodes.contains(local)
            && let Some(root) = remora_agent::cgroups::root()
        {
            write_cgroups(tmp, local, &remora_agent::cgroups::scan(&root))?;
        }
        if let Some(agents) = self.remote.get() {
            let mirror = self.data.join("remote");
            let pulls = agents.pull_all(start_ns, end_ns, &mirror, &nodes);
            for pull in pulls {
                if req.nodes.as_ref().is_some_and(|w| !w.contains(&pull.node)) {
                    continue;
                }
                node_totals.push(remote::link_pulled(&pull, tmp, &mut files, &mut drops)?);
            }
        }
        if let Some(wanted) = &req.nodes
            && let Some(missing) = wanted
                .iter()
                .find(|w| !node_totals.iter().any(|n| &n.name == *w))
        {
            return Err(StoreError::InvalidWindow(format!(
                "no node `{missing}`; nodes: {}",
                node_totals
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let missing: Vec<String> = node_totals
            .iter()
            .filter(|n| n.status != "complete")
            .map(|n| {
                format!(
                    "{} ({}): {}",
                    n.name,
                    n.status,
                    n.reason.as_deref().unwrap_or("")
                )
            })
            .collect();
        let manifest = Manifest {
            name: req.name.clone(),
            status: if missing.is_empty() {
                SnapshotStatus::Completed
            } else {
                SnapshotStatus::Partial
            },
            reason: (!missing.is_empty()).then(|| {
                format!("missing traffic of {}; make the snapshot again once the node is back (what was fetched is kept and not fetched again)", missing.join("; "))
            }),
            start,
            end,
            packets: node_totals.iter().map(|n| n.packets).sum(),
            bytes: node_totals.iter().map(|n| n.bytes).sum(),
            nodes: node_totals,
            files,
            drops: drops.packets,
            created_at: now_ms,
            workloads: 0,
            imported_from: None,
        };
        fs::create_dir_all(tmp).map_err(|e| io(tmp.display(), e))?;
        let records = self
            .workloads
            .as_ref()
            .map(|w| {
                w.records_between(
                    start.saturating_mul(1_000_000),
                    end.saturating_mul(1_000_000).saturating_add(999_999),
                )
            })
            .unwrap_or_default();
        let manifest = Manifest {
            workloads: records.len(),
            ..manifest
        };
        if !records.is_empty() {
            let path = tmp.join(crate::services::workloads::SNAPSHOT_FILE);
            crate::services::workload_history::write_records(&records, &path)
                .map_err(|e| io(path.display(), e))?;
        }
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io("manifest", e))?;
        write_atomic(&tmp.join("manifest.json"), &json)?;
        Ok(manifest)
    }

    /// A snapshot's manifest (an `in_progress` stand-in while it is being made).
    pub fn get(&self, name: &str) -> Result<Manifest, StoreError> {
        let path = self.path(name)?.join("manifest.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(path.display(), e)),
            Err(_) if self.is_creating(name) => Ok(Manifest {
                name: name.to_owned(),
                status: SnapshotStatus::InProgress,
                reason: None,
                start: 0,
                end: 0,
                nodes: Vec::new(),
                files: Vec::new(),
                packets: 0,
                bytes: 0,
                drops: 0,
                created_at: 0,
                workloads: 0,
                imported_from: None,
            }),
            Err(_) => Err(StoreError::NotFound(name.to_owned())),
        }
    }

    /// Checks a completed snapshot's files against the checksums its manifest recorded when it
    /// linked them: `Err` names the first file that is missing or differs.
    pub fn verify(&self, name: &str) -> Result<(), String> {
        let manifest = self.get(name).map_err(|e| e.to_string())?;
        let dir = self.path(name).map_err(|e| e.to_string())?;
        let expected: Vec<(String, String)> = manifest
            .files
            .iter()
            .filter_map(|f| Some((f.relative_path(), f.checksum.clone()?)))
            .collect();
        crate::services::checksum::verify(
            &dir,
            expected.iter().map(|(f, c)| (f.as_str(), c.as_str())),
        )
    }

    /// Every snapshot, oldest first.
    pub fn list(&self) -> Vec<Manifest> {
        let mut out: Vec<Manifest> = fs::read_dir(self.dir())
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        validate_name(&name).ok()?;
                        self.get(&name).ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
        out
    }

    /// Deletes a snapshot and its dissections.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path(name)?;
        if !path.join("manifest.json").exists() {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        // Rename first so that nobody sees half a snapshot while the files go.
        let doomed = self.dir().join(format!(".{name}.deleting"));
        fs::rename(&path, &doomed).map_err(|e| io(path.display(), e))?;
        fs::remove_dir_all(&doomed).map_err(|e| io(doomed.display(), e))?;
        let dissections = self.data.join("dissections").join(name);
        let _ = fs::remove_dir_all(dissections);
        Ok(())
    }

    /// The packet slice directories of a completed snapshot, one per node.
    pub fn packet_dirs(&self, name: &str) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let m = self.get(name)?;
        let base = self.path(name)?.join("capture");
        Ok(m.nodes
            .iter()
            .map(|n| (n.name.clone(), base.join(&n.name).join("packets")))
            .filter(|(_, p)| p.is_dir())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(data: &Path, node: &str, start_ns: i64, end_ns: i64) {
        let dir = data.join("capture").join(node).join("packets");
        fs::create_dir_all(&dir).unwrap_or_default();
        fs::write(dir.join(format!("{start_ns}-{end_ns}.parquet")), b"x").unwrap_or_default();
    }

    #[test]
    fn names_are_checked() {
        for ok in ["frontend-analysis", "a", "A.b_c-9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../etc", ".hidden", "a/b", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_failed_build_shows_failed_with_its_reason() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SnapshotStore::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let req = CreateRequest {
            name: "bad".into(),
            nodes: Some(vec!["no-such-node".into()]),
            ..Default::default()
        };
        store.reserve("bad").unwrap_or_else(|e| panic!("{e}"));
        assert!(store.build(&req, 1000, 2000, 3000).is_err());
        let m = store
            .get("bad")
            .unwrap_or_else(|e| panic!("failed, not missing: {e}"));
        assert_eq!(m.status, SnapshotStatus::Failed);
        assert!(
            m.reason
                .as_deref()
                .is_some_and(|r| r.contains("no-such-node")),
            "{:?}",
            m.reason
        );
        assert!(matches!(store.reserve("bad"), Err(StoreError::Exists(_))));
        store.delete("bad").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.get("bad"), Err(StoreError::NotFound(_))));
        store
            .reserve("bad")
            .unwrap_or_else(|e| panic!("the name is free again: {e}"));
    }

    #[test]
    fn windows() {
        let req = |d: Option<&str>, s, e| CreateRequest {
            name: "x".into(),
            duration: d.map(str::to_owned),
            start: s,
            end: e,
            nodes: None,
        };
        assert!(matches!(
            window(&req(Some("1h"), None, None), 10_000_000),
            Ok((6_400_000, 10_000_000))
        ));
        assert!(matches!(
            window(&req(None, Some(5), Some(9)), 100),
            Ok((5, 9))
        ));
        assert!(window(&req(None, None, None), 1).is_err());
        assert!(window(&req(Some("1h"), Some(1), None), 1).is_err());
        assert!(window(&req(None, Some(9), Some(5)), 1).is_err());
        assert!(window(&req(Some("soon"), None, None), 1).is_err());
    }

    #[test]
    fn snapshot_holds_overlapping_slices_and_survives_retention() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = tmp.path();
        slice(data, "n1", 1_000_000_000, 1_999_999_999);
        slice(data, "n1", 2_000_000_000, 2_999_999_999);
        slice(data, "n1", 9_000_000_000, 9_999_999_999);
        let store = SnapshotStore::open(data).unwrap_or_else(|e| panic!("{e}"));
        let req = CreateRequest {
            name: "s1".into(),
            start: Some(1500),
            end: Some(2500),
            ..CreateRequest::default()
        };
        store.reserve("s1").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.reserve("s1"), Err(StoreError::Exists(_))));
        assert_eq!(
            store.get("s1").map(|m| m.status).ok(),
            Some(SnapshotStatus::InProgress)
        );
        let m = store
            .build(&req, 1500, 2500, 7)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.nodes[0].files, 2);
        assert!(matches!(store.reserve("s1"), Err(StoreError::Exists(_))));
        // Retention deletes the recorder's copy: the snapshot keeps its link.
        fs::remove_dir_all(data.join("capture")).unwrap_or_default();
        let dirs = store.packet_dirs("s1").unwrap_or_default();
        assert_eq!(fs::read_dir(&dirs[0].1).map(|d| d.count()).unwrap_or(0), 2);
        assert_eq!(store.list().len(), 1);
        // The links are checked against the checksums taken when they were made.
        assert!(m.files.iter().all(|f| f.checksum.is_some()), "{m:?}");
        assert_eq!(store.verify("s1"), Ok(()));
        let linked = dirs[0].1.join("2000000000-2999999999.parquet");
        fs::write(&linked, b"y").unwrap_or_default();
        let err = store.verify("s1").unwrap_err();
        assert!(err.contains("2000000000-2999999999.parquet"), "{err}");
        fs::remove_file(&linked).unwrap_or_default();
        assert!(store.verify("s1").is_err(), "a missing file is found too");
        store.delete("s1").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.get("s1"), Err(StoreError::NotFound(_))));
        assert!(matches!(store.get("../x"), Err(StoreError::InvalidName(_))));
    }

    /// A snapshot keeps the workload records of when it was made; a snapshot made without a
    /// workloads source has none (and its jobs use the analyzer's current source).
    #[test]
    fn snapshot_freezes_the_workloads_it_was_made_with() {
        use crate::services::{
            workload_history::Owner,
            workloads::{FixedWorkloads, StaticWorkloads},
        };
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let data = tmp.path();
        slice(data, "n1", 1_000_000_000, 1_999_999_999);
        let mut live = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.1", "pod": "frontend-1", "namespace": "shop"}]"#,
        )
        .unwrap_or_default();
        // An address held only before the window is not frozen into the snapshot.
        let gone = std::net::IpAddr::from([198, 18, 0, 9]);
        live.begin(gone, 10, Owner::default());
        live.end(gone, 20, &Owner::default());
        let in_window = live.records_between(1_000_000_000, 2_000_999_999);
        assert_eq!(in_window.len(), 1);
        let live = FixedWorkloads {
            history: live,
            origin: "test".into(),
        };
        let store = SnapshotStore::open(data)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_workloads(std::sync::Arc::new(live));
        let req = |name: &str| CreateRequest {
            name: name.into(),
            start: Some(1000),
            end: Some(2000),
            ..CreateRequest::default()
        };
        store.reserve("with").unwrap_or_else(|e| panic!("{e}"));
        let m = store
            .build(&req("with"), 1000, 2000, 7)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.workloads, 1);
        let frozen = store
            .snapshot_workloads("with")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(frozen.records(), in_window);

        let bare = SnapshotStore::open(data).unwrap_or_else(|e| panic!("{e}"));
        bare.reserve("without").unwrap_or_else(|e| panic!("{e}"));
        let m = bare
            .build(&req("without"), 1000, 2000, 8)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.workloads, 0);
        assert!(bare.snapshot_workloads("without").ok().flatten().is_none());
    }
}
