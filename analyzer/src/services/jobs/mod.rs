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

mod status;

pub use status::{JobState, JobStatus, write_completed_status};
use status::{now_ms, write_status};

use crate::{
    pipeline::{self, PipelineError},
    services::{
        job_process::{self, WorkerError, WorkerInput, WorkerProcess},
        snapshots::{SnapshotStore, StoreError, validate_name},
        workload_history::WorkloadHistory,
        workloads::{Resolve, WorkloadSource},
    },
};

pub use crate::services::checksum::checksum;

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
    /// The dissection is pending or running (409).
    #[error("dissection `{0}` is still running; stop it (POST .../stop), then delete it")]
    Running(String),
    /// Too many dissections are pending or running (429).
    #[error("{0} dissections are queued or running; retry when one has finished")]
    Busy(usize),
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
    #[error(transparent)]
    Worker(#[from] crate::services::job_process::WorkerError),
    #[error("handing the workloads to the dissection process: {0}")]
    Workloads(anyhow::Error),
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
    workloads: Arc<dyn WorkloadSource>,
    store: Arc<SnapshotStore>,
    workers: Arc<tokio::sync::Semaphore>,
    jobs: Mutex<BTreeMap<(String, String), Arc<Job>>>,
    /// Dissections that may be pending or running at once; past that a start is refused with
    /// 429 and Retry-After rather than queued without bound.
    pub max_queued: std::sync::atomic::AtomicUsize,
    /// Set: jobs run in worker processes under a memory limit; unset: in this process.
    process: std::sync::OnceLock<WorkerProcess>,
}

impl Jobs {
    /// Jobs under `<data>/dissections`, at most `workers` running at once. Partial output of
    /// jobs a previous run did not finish is removed and recorded as failed.
    pub fn open(
        data: &Path,
        store: Arc<SnapshotStore>,
        workloads: Arc<dyn WorkloadSource>,
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
                        let mut status = JobStatus::new(
                            &snap.file_name().to_string_lossy(),
                            job,
                            JobState::Failed,
                        );
                        status.error = Some(
                            "the analyzer stopped before this dissection finished (queued or running); delete it and start it again"
                                .into(),
                        );
                        status.finished_at = now_ms();
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
            max_queued: std::sync::atomic::AtomicUsize::new(16),
            process: std::sync::OnceLock::new(),
        })
    }

    /// Runs every later job in a `remora dissect-job` process of `worker.exe`, killed when its
    /// resident memory passes `worker.memory_limit` (see [`job_process`]). Without it, jobs run
    /// in this process (tests, and embedders without the `remora` binary).
    pub fn run_in_processes(&self, worker: WorkerProcess) {
        let _ = self.process.set(worker);
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
        if !manifest.status.is_readable() {
            return Err(JobError::NotReady(snapshot.to_owned()));
        }
        self.store.check_space()?;
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
            let unfinished = jobs
                .values()
                .filter(|j| !j.snapshot().status.finished())
                .count();
            if unfinished >= self.max_queued.load(Ordering::SeqCst) {
                return Err(JobError::Busy(unfinished));
            }
            let job = Arc::new(Job {
                status: Mutex::new(JobStatus {
                    packets_total: manifest.packets,
                    started_at: now_ms(),
                    ..JobStatus::new(snapshot, name, JobState::Pending)
                }),
                packets: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                cancel: AtomicBool::new(false),
            });
            jobs.insert(key, job.clone());
            job
        };
        let status = job.snapshot();
        // Queued work is on disk from the start: if the analyzer stops before the job ends,
        // the next start finds the partial directory and marks the job failed with the reason.
        let partial = dir
            .parent()
            .map(|p| p.join(format!(".{name}.partial")))
            .unwrap_or_default();
        if fs::create_dir_all(&partial).is_ok() {
            let _ = write_status(&partial, &status);
        }
        let this = self.clone();
        let (snapshot, name) = (snapshot.to_owned(), name.to_owned());
        let (job_snapshot, job_name) = (snapshot.clone(), name.clone());
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
                let cancelled = matches!(
                    e,
                    RunError::Pipeline(PipelineError::Cancelled)
                        | RunError::Worker(WorkerError::Cancelled)
                );
                job.set(|s| {
                    s.status = if cancelled {
                        JobState::Cancelled
                    } else {
                        JobState::Failed
                    };
                    s.error = (!cancelled).then(|| e.to_string());
                    s.finished_at = now_ms();
                });
                // The outcome outlives a restart: a status without tables, until deleted.
                if let Ok(dir) = this.db_dir(&job_snapshot, &job_name) {
                    if let Some(parent) = dir.parent() {
                        let _ = fs::remove_dir_all(parent.join(format!(".{job_name}.partial")));
                    }
                    if !dir.exists() && fs::create_dir_all(&dir).is_ok() {
                        let _ = write_status(&dir, &job.snapshot());
                    }
                }
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
        // An imported capture file is read as it is; recordings count a packet's copies once,
        // and report only the calls of the snapshot's window (its slices run past it).
        let manifest = self.store.get(snapshot)?;
        let (copies, window) = match manifest.imported_from {
            Some(_) => (pipeline::Copies::Each, None),
            None => (
                pipeline::Copies::Once,
                Some((
                    manifest.start.saturating_mul(1_000_000),
                    manifest
                        .end
                        .saturating_mul(1_000_000)
                        .saturating_add(999_999),
                )),
            ),
        };
        let result = match self.process.get() {
            _ if nodes.is_empty() => {
                // An empty window: empty tables, still a valid db.
                pipeline::empty_tables(&partial)
                    .map(|_| None)
                    .map_err(RunError::from)
            }
            Some(worker) => self
                .run_in_process(worker, snapshot, &nodes, &partial, copies, window, job)
                .map(Some),
            None => {
                // Attribution as the snapshot froze it; older snapshots without records use
                // what the analyzer knows now.
                let frozen = match self.store.snapshot_workloads(snapshot)? {
                    Some(w) => w,
                    None => WorkloadHistory::from_records(
                        self.workloads.records_between(i64::MIN, i64::MAX),
                    ),
                };
                let workloads: &dyn Resolve = &frozen;
                let how = pipeline::How {
                    copies,
                    window,
                    threads: pipeline::default_threads(),
                };
                pipeline::dissect_nodes_with(&nodes, &partial, workloads, how, &|packets, calls| {
                    job.packets.store(packets, Ordering::Relaxed);
                    job.calls.store(calls, Ordering::Relaxed);
                    !job.cancel.load(Ordering::Relaxed)
                })
                .map(|s| {
                    Some(job_process::WorkerSummary {
                        frames: s.frames,
                        calls: s.calls.iter().map(|(p, n)| ((*p).to_owned(), *n)).collect(),
                        conns: s.conns,
                    })
                })
                .map_err(RunError::from)
            }
        };
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        let mut checksums = BTreeMap::new();
        for table in ["calls.parquet", "conns.parquet"] {
            let path = partial.join(table);
            if path.exists() {
                checksums.insert(table.to_owned(), checksum(&path)?);
            }
        }
        let complete = |s: &mut JobStatus| {
            s.status = JobState::Completed;
            s.progress = 100.0;
            s.finished_at = now_ms();
            if let Some(sum) = &summary {
                s.packets_processed = sum.frames;
                s.calls_found = sum.calls.values().sum();
                s.calls_by_protocol = sum.calls.clone();
                s.conns = sum.conns;
            }
            s.checksums = checksums.clone();
        };
        // `completed` is said only once the tables are where another analyzer (or a restart)
        // finds them: a caller that saw it and opened the db at once used to find nothing.
        let mut done = job.snapshot();
        complete(&mut done);
        write_status(&partial, &done)?;
        fs::rename(&partial, &final_dir)?;
        job.set(|s| *s = done);
        let _ = remora_agent::store::sync_dir(&parent);
        Ok(())
    }

    /// Runs one job in a `remora dissect-job` process (see [`job_process`]).
    #[allow(clippy::too_many_arguments)]
    fn run_in_process(
        &self,
        worker: &WorkerProcess,
        snapshot: &str,
        nodes: &[(String, PathBuf)],
        partial: &Path,
        copies: pipeline::Copies,
        window: Option<(i64, i64)>,
        job: &Job,
    ) -> Result<job_process::WorkerSummary, RunError> {
        // The snapshot's frozen workloads, or what the analyzer knows now, as a file the
        // worker reads; a temporary one is removed before the db is published.
        let frozen = self
            .store
            .path(snapshot)?
            .join(crate::services::workloads::SNAPSHOT_FILE);
        let handed = partial.join(".workloads.parquet");
        let workloads_file = if frozen.is_file() {
            Some(frozen)
        } else {
            let records = self.workloads.records_between(i64::MIN, i64::MAX);
            if records.is_empty() {
                None
            } else {
                crate::services::workload_history::write_records(&records, &handed)
                    .map_err(RunError::Workloads)?;
                Some(handed.clone())
            }
        };
        let result = job_process::run(
            worker,
            &WorkerInput {
                nodes,
                out: partial,
                workloads: workloads_file.as_deref(),
                copies_once: matches!(copies, pipeline::Copies::Once),
                window,
            },
            &|packets, calls| {
                job.packets.store(packets, Ordering::Relaxed);
                job.calls.store(calls, Ordering::Relaxed);
            },
            &|| job.cancel.load(Ordering::Relaxed),
        );
        let _ = fs::remove_file(&handed);
        Ok(result?)
    }

    /// Checks a completed dissection's tables against the checksums in its status: `Err` names
    /// the first file that is missing or differs.
    pub fn verify(&self, snapshot: &str, name: &str) -> Result<(), String> {
        let dir = self.db_dir(snapshot, name).map_err(|e| e.to_string())?;
        let status = self.status(snapshot, name).map_err(|e| e.to_string())?;
        crate::services::checksum::verify(
            &dir,
            status
                .checksums
                .iter()
                .map(|(f, c)| (f.as_str(), c.as_str())),
        )
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

    /// Deletes a finished dissection: its tables and its status. A pending or running one must
    /// be stopped first (409).
    pub fn delete(&self, snapshot: &str, name: &str) -> Result<(), JobError> {
        let dir = self.db_dir(snapshot, name)?;
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let key = (snapshot.to_owned(), name.to_owned());
        if let Some(job) = jobs.get(&key)
            && !job.snapshot().status.finished()
        {
            return Err(JobError::Running(format!("{snapshot}/{name}")));
        }
        if !dir.exists() && !jobs.contains_key(&key) {
            return Err(JobError::NotFound(format!("{snapshot}/{name}")));
        }
        // Renamed aside first, so a reader never sees half a directory.
        let parent = dir.parent().map(Path::to_owned).unwrap_or_default();
        let trash = parent.join(format!(".{name}.deleting"));
        let _ = fs::remove_dir_all(&trash);
        if dir.exists() {
            fs::rename(&dir, &trash).map_err(|e| {
                JobError::Store(StoreError::Io(format!("deleting {snapshot}/{name}: {e}")))
            })?;
            let _ = remora_agent::store::sync_dir(&parent);
            let _ = fs::remove_dir_all(&trash);
        }
        jobs.remove(&key);
        Ok(())
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
