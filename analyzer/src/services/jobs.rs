//! Delayed dissection jobs: a snapshot's packets through the engine into
//! `<data>/dissections/<snapshot>/<name>/{calls,conns}.parquet`, on a bounded worker pool.
//!
//! A job writes into `.<name>.partial/` and renames it into place only when both tables and
//! `status.json` are complete, so a db is readable exactly when it is whole. A restart marks
//! jobs it finds unfinished as failed (and removes their partial output): nothing is silently
//! half done.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{
    pipeline::{self, PipelineError},
    services::{
        snapshots::{SnapshotStatus, SnapshotStore, StoreError, validate_name},
        workloads::Resolve,
    },
};

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
    fn finished(self) -> bool {
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
}

/// Why a job request was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Snapshot problems (invalid name 400, unknown 404, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dissection exists or runs (409).
    #[error("dissection `{0}` already exists; pick another name")]
    Exists(String),
    /// The snapshot is not ready (409).
    #[error("snapshot `{0}` is not completed yet; poll get_snapshot until it is")]
    NotReady(String),
    /// No such dissection (404).
    #[error("no dissection `{0}`; list_snapshot_dissections shows the existing ones")]
    NotFound(String),
}

/// Why a started job ended without its tables.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("publishing the dissection: {0}")]
    Io(#[from] std::io::Error),
    #[error("dissection worker panicked: {0}")]
    Panicked(String),
}

struct Job {
    status: Mutex<JobStatus>,
    packets: AtomicU64,
    calls: AtomicU64,
    cancel: AtomicBool,
}

impl Job {
    fn snapshot(&self) -> JobStatus {
        let mut s = self
            .status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        if !s.status.finished() {
            s.packets_processed = self.packets.load(Ordering::Relaxed);
            s.calls_found = self.calls.load(Ordering::Relaxed);
            s.progress = if s.packets_total == 0 {
                0.0
            } else {
                (s.packets_processed as f64 * 100.0 / s.packets_total as f64).min(99.9)
            };
        }
        s
    }

    fn set(&self, f: impl FnOnce(&mut JobStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(e) => f(&mut e.into_inner()),
        }
    }
}

/// The dissection jobs of one data directory.
pub struct Jobs {
    data: PathBuf,
    workloads: Arc<dyn Resolve + Send + Sync>,
    store: Arc<SnapshotStore>,
    workers: Arc<tokio::sync::Semaphore>,
    jobs: Mutex<BTreeMap<(String, String), Arc<Job>>>,
}

fn now_ms() -> i64 {
    remora_kfl::time::now_ns() / 1_000_000
}

fn write_status(dir: &Path, status: &JobStatus) -> std::io::Result<()> {
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
    let status = JobStatus {
        snapshot_name: snapshot.to_owned(),
        dissection_name: name.to_owned(),
        db: format!("{snapshot}/{name}"),
        status: JobState::Completed,
        progress: 100.0,
        packets_processed: 0,
        packets_total: 0,
        calls_found: 0,
        calls_by_protocol: BTreeMap::new(),
        conns: 0,
        error: None,
        started_at: 0,
        finished_at: 0,
    };
    write_status(dir, &status)
}

impl Jobs {
    /// Jobs under `<data>/dissections`, at most `workers` running at once. Partial output of
    /// jobs a previous run did not finish is removed and recorded as failed.
    pub fn open(
        data: &Path,
        store: Arc<SnapshotStore>,
        workloads: Arc<dyn Resolve + Send + Sync>,
        workers: usize,
    ) -> std::io::Result<Self> {
        let root = data.join("dissections");
        fs::create_dir_all(&root)?;
        for snap in fs::read_dir(&root)?.flatten() {
            for entry in fs::read_dir(snap.path())?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(job) = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".partial"))
                {
                    let _ = fs::remove_dir_all(entry.path());
                    let failed_dir = snap.path().join(job);
                    if !failed_dir.exists() && fs::create_dir_all(&failed_dir).is_ok() {
                        let status = JobStatus {
                            snapshot_name: snap.file_name().to_string_lossy().into_owned(),
                            dissection_name: job.to_owned(),
                            db: format!("{}/{job}", snap.file_name().to_string_lossy()),
                            status: JobState::Failed,
                            progress: 0.0,
                            packets_processed: 0,
                            packets_total: 0,
                            calls_found: 0,
                            calls_by_protocol: BTreeMap::new(),
                            conns: 0,
                            error: Some(
                                "the analyzer stopped during this dissection; start it again under a new name"
                                    .into(),
                            ),
                            started_at: 0,
                            finished_at: now_ms(),
                        };
                        let _ = write_status(&failed_dir, &status);
                    }
                }
            }
        }
        Ok(Self {
            data: data.to_owned(),
            workloads,
            store,
            workers: Arc::new(tokio::sync::Semaphore::new(workers.max(1))),
            jobs: Mutex::new(BTreeMap::new()),
        })
    }

    /// The directory of a (validated) db.
    pub fn db_dir(&self, snapshot: &str, name: &str) -> Result<PathBuf, JobError> {
        validate_name(snapshot)?;
        validate_name(name)?;
        Ok(self.data.join("dissections").join(snapshot).join(name))
    }

    /// Starts dissecting `snapshot` as `name`; returns the pending status.
    pub fn start(self: &Arc<Self>, snapshot: &str, name: &str) -> Result<JobStatus, JobError> {
        let dir = self.db_dir(snapshot, name)?;
        let manifest = self.store.get(snapshot)?;
        if manifest.status != SnapshotStatus::Completed {
            return Err(JobError::NotReady(snapshot.to_owned()));
        }
        let key = (snapshot.to_owned(), name.to_owned());
        let job = {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            if dir.exists()
                || jobs
                    .get(&key)
                    .is_some_and(|j| !j.snapshot().status.finished())
            {
                return Err(JobError::Exists(format!("{snapshot}/{name}")));
            }
            let job = Arc::new(Job {
                status: Mutex::new(JobStatus {
                    snapshot_name: snapshot.to_owned(),
                    dissection_name: name.to_owned(),
                    db: format!("{snapshot}/{name}"),
                    status: JobState::Pending,
                    progress: 0.0,
                    packets_processed: 0,
                    packets_total: manifest.packets,
                    calls_found: 0,
                    calls_by_protocol: BTreeMap::new(),
                    conns: 0,
                    error: None,
                    started_at: now_ms(),
                    finished_at: 0,
                }),
                packets: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                cancel: AtomicBool::new(false),
            });
            jobs.insert(key, job.clone());
            job
        };
        let status = job.snapshot();
        let this = self.clone();
        let (snapshot, name) = (snapshot.to_owned(), name.to_owned());
        tokio::spawn(async move {
            let Ok(_permit) = this.workers.clone().acquire_owned().await else {
                return;
            };
            job.set(|s| s.status = JobState::Running);
            let worker = this.clone();
            let j = job.clone();
            let result = tokio::task::spawn_blocking(move || worker.run(&snapshot, &name, &j))
                .await
                .map_err(|e| RunError::Panicked(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = result {
                let cancelled = matches!(e, RunError::Pipeline(PipelineError::Cancelled));
                job.set(|s| {
                    s.status = if cancelled {
                        JobState::Cancelled
                    } else {
                        JobState::Failed
                    };
                    s.error = (!cancelled).then(|| e.to_string());
                    s.finished_at = now_ms();
                });
            }
        });
        Ok(status)
    }

    fn run(&self, snapshot: &str, name: &str, job: &Job) -> Result<(), RunError> {
        let final_dir = self.db_dir(snapshot, name)?;
        let parent = final_dir
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| self.data.join("dissections"));
        let partial = parent.join(format!(".{name}.partial"));
        fs::create_dir_all(&partial)?;
        let nodes = self.store.packet_dirs(snapshot)?;
        // Attribution as the snapshot froze it; older snapshots without records use what the
        // analyzer knows now.
        let frozen = self.store.snapshot_workloads(snapshot)?;
        let workloads: &dyn Resolve = match &frozen {
            Some(w) => w,
            None => &*self.workloads,
        };
        // An imported capture file is read as it is; recordings count a packet's copies once.
        let copies = match self.store.get(snapshot)?.imported_from {
            Some(_) => pipeline::Copies::Each,
            None => pipeline::Copies::Once,
        };
        let result = if nodes.is_empty() {
            // An empty window: empty tables, still a valid db.
            pipeline::empty_tables(&partial).map(|_| None)
        } else {
            pipeline::dissect_nodes_with(&nodes, &partial, workloads, copies, &|packets, calls| {
                job.packets.store(packets, Ordering::Relaxed);
                job.calls.store(calls, Ordering::Relaxed);
                !job.cancel.load(Ordering::Relaxed)
            })
            .map(Some)
        };
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&partial);
                return Err(e.into());
            }
        };
        job.set(|s| {
            s.status = JobState::Completed;
            s.progress = 100.0;
            s.finished_at = now_ms();
            if let Some(sum) = &summary {
                s.packets_processed = sum.frames;
                s.calls_found = sum.calls.values().sum();
                s.calls_by_protocol = sum
                    .calls
                    .iter()
                    .map(|(p, n)| ((*p).to_owned(), *n))
                    .collect();
                s.conns = sum.conns;
            }
        });
        write_status(&partial, &job.snapshot())?;
        fs::rename(&partial, &final_dir)?;
        let _ = remora_agent::store::sync_dir(&parent);
        Ok(())
    }

    /// Asks a running job to stop.
    pub fn stop(&self, snapshot: &str, name: &str) -> Result<JobStatus, JobError> {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let job = jobs
            .get(&(snapshot.to_owned(), name.to_owned()))
            .ok_or_else(|| JobError::NotFound(format!("{snapshot}/{name}")))?;
        job.cancel.store(true, Ordering::Relaxed);
        Ok(job.snapshot())
    }

    /// One job's status: live when it runs in this process, else from `status.json`.
    pub fn status(&self, snapshot: &str, name: &str) -> Result<JobStatus, JobError> {
        let dir = self.db_dir(snapshot, name)?;
        if let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(snapshot.to_owned(), name.to_owned()))
        {
            let s = job.snapshot();
            if !s.status.finished() || !dir.exists() {
                return Ok(s);
            }
        }
        let bytes = fs::read(dir.join("status.json"))
            .map_err(|_| JobError::NotFound(format!("{snapshot}/{name}")))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            JobError::Store(StoreError::Io(format!("status of {snapshot}/{name}: {e}")))
        })
    }

    /// Every job, of one snapshot or of all.
    pub fn list(&self, snapshot: Option<&str>) -> Result<Vec<JobStatus>, JobError> {
        let root = self.data.join("dissections");
        let mut keys: Vec<(String, String)> = Vec::new();
        let snaps: Vec<String> = match snapshot {
            Some(s) => {
                validate_name(s)?;
                vec![s.to_owned()]
            }
            None => fs::read_dir(&root)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        };
        for s in snaps {
            if let Ok(d) = fs::read_dir(root.join(&s)) {
                for e in d.flatten() {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if validate_name(&n).is_ok() {
                        keys.push((s.clone(), n));
                    }
                }
            }
        }
        for (s, n) in self.jobs.lock().unwrap_or_else(|e| e.into_inner()).keys() {
            if snapshot.is_none_or(|want| want == s) {
                keys.push((s.clone(), n.clone()));
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys
            .iter()
            .filter_map(|(s, n)| self.status(s, n).ok())
            .collect())
    }

    /// The calls and conns files of a completed db.
    pub fn db(&self, db: &str) -> Result<PathBuf, JobError> {
        let (snapshot, name) = db.split_once('/').ok_or_else(|| {
            JobError::NotFound(format!("{db} (a db is `<snapshot>/<dissection>`)"))
        })?;
        let status = self.status(snapshot, name)?;
        if status.status != JobState::Completed {
            return Err(JobError::NotReady(format!(
                "{db} (dissection is {:?})",
                status.status
            )));
        }
        self.db_dir(snapshot, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_marks_unfinished_jobs_failed_and_hides_their_output() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let partial = tmp.path().join("dissections/snap/.d1.partial");
        fs::create_dir_all(&partial).unwrap_or_default();
        fs::write(partial.join("calls.parquet"), b"half").unwrap_or_default();
        let store = Arc::new(SnapshotStore::open(tmp.path()).unwrap_or_else(|e| panic!("{e}")));
        let jobs = Jobs::open(
            tmp.path(),
            store,
            Arc::new(crate::services::workloads::NoWorkloads),
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!partial.exists());
        let status = jobs.status("snap", "d1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status.status, JobState::Failed);
        assert!(status.error.unwrap_or_default().contains("start it again"));
        assert!(matches!(jobs.db("snap/d1"), Err(JobError::NotReady(_))));
        assert!(
            !tmp.path()
                .join("dissections/snap/d1/calls.parquet")
                .exists()
        );
        assert!(matches!(
            jobs.db("snap/../x"),
            Err(JobError::Store(StoreError::InvalidName(_)))
        ));
    }
}
