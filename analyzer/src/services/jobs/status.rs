//! A job's status: what the API returns and `status.json` keeps, written atomically.

use std::{collections::BTreeMap, fs, path::Path};

use serde::{Deserialize, Serialize};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Pending,
    /// Dissecting.
    Running,
    /// Done: the db is readable.
    Completed,
    /// Stopped by an error (see `error`).
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl JobState {
    pub(super) fn finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// A job's status, as the API returns it and `status.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Snapshot.
    pub snapshot_name: String,
    /// Dissection.
    pub dissection_name: String,
    /// `<snapshot>/<dissection>`, what `/mcp/calls?db=` takes.
    pub db: String,
    /// State.
    pub status: JobState,
    /// 0–100.
    pub progress: f64,
    /// Packets read so far.
    pub packets_processed: u64,
    /// Packets in the snapshot.
    pub packets_total: u64,
    /// Calls found so far.
    pub calls_found: u64,
    /// Calls per protocol, when completed.
    #[serde(default)]
    pub calls_by_protocol: BTreeMap<String, u64>,
    /// TCP connections, when completed.
    #[serde(default)]
    pub conns: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Start, unix ms.
    pub started_at: i64,
    /// End, unix ms (0 while running).
    pub finished_at: i64,
    /// The tables' checksums when completed: file name → `crc32:<hex>:<bytes>`, so that a
    /// torn or altered file is found (`Jobs::verify`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

impl JobStatus {
    /// A status of `<snapshot>/<name>` in `state`, nothing counted yet.
    pub fn new(snapshot: &str, name: &str, state: JobState) -> Self {
        Self {
            snapshot_name: snapshot.to_owned(),
            dissection_name: name.to_owned(),
            db: format!("{snapshot}/{name}"),
            status: state,
            progress: 0.0,
            packets_processed: 0,
            packets_total: 0,
            calls_found: 0,
            calls_by_protocol: BTreeMap::new(),
            conns: 0,
            error: None,
            started_at: 0,
            finished_at: 0,
            checksums: BTreeMap::new(),
        }
    }
}

pub(super) fn now_ms() -> i64 {
    remora_kfl::time::now_ns() / 1_000_000
}

/// Writes `status.json` atomically (temp, fsync, rename).
pub(super) fn write_status(dir: &Path, status: &JobStatus) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join("status.json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(tmp, dir.join("status.json"))
}

/// Marks `dir`, which holds a dissection's tables made elsewhere (`remora dissect`, a test), as
/// the completed dissection `<snapshot>/<name>`: its `status.json`, written atomically.
pub fn write_completed_status(dir: &Path, snapshot: &str, name: &str) -> std::io::Result<()> {
    let mut status = JobStatus::new(snapshot, name, JobState::Completed);
    status.progress = 100.0;
    write_status(dir, &status)
}
