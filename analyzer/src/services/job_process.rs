//! Dissection jobs in processes of their own (`remora dissect-job`), under a memory limit.
//!
//! `remora up` records and analyses in one process. A dissection's memory follows what was
//! captured; however well the engine bounds it, a bug or a hostile capture must cost one job,
//! never the recorder. So each job runs in a child process that the kernel's OOM killer takes
//! first (`oom_score_adj` 1000), that dies with its parent, and whose resident memory a watchdog
//! reads every 50 ms: over the limit, the child is killed and the job fails with the reason.
//! Its memory goes back to the system when it exits, so the recorder's stays flat.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// What a worker reports when its tables are complete.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerSummary {
    /// Frames read.
    pub frames: u64,
    /// Calls per protocol.
    pub calls: BTreeMap<String, u64>,
    /// TCP connections.
    pub conns: u64,
}

/// How jobs run in processes: the `remora` executable and the memory limit of one job.
#[derive(Debug, Clone)]
pub struct WorkerProcess {
    /// The `remora` binary (`dissect-job` is its internal subcommand).
    pub exe: PathBuf,
    /// Resident bytes one job may use.
    pub memory_limit: u64,
    /// Threads one job dissects on (`None`: every core the worker may use).
    pub threads: Option<usize>,
}

/// Threads one dissection job may use: `REMORA_JOB_THREADS`, default every core.
pub fn threads() -> Option<usize> {
    std::env::var("REMORA_JOB_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// Resident bytes one dissection job may use: `REMORA_JOB_MEMORY_MB`, default 2048.
pub fn memory_limit() -> u64 {
    std::env::var("REMORA_JOB_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .unwrap_or(2048)
        << 20
}

/// One job's input, as the worker's arguments.
pub struct WorkerInput<'a> {
    /// `(node, packets dir)`.
    pub nodes: &'a [(String, PathBuf)],
    /// The partial output directory.
    pub out: &'a Path,
    /// A workloads.parquet for attribution.
    pub workloads: Option<&'a Path>,
    /// Whether a packet's copies count once.
    pub copies_once: bool,
    /// Only calls starting in this window (ns).
    pub window: Option<(i64, i64)>,
}

/// Why a worker did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Cancelled by the caller.
    #[error("dissection cancelled")]
    Cancelled,
    /// Killed by the watchdog.
    #[error(
        "the dissection needed more than {limit_mb} MiB, the memory limit of one dissection job \
         (REMORA_JOB_MEMORY_MB), and was stopped; recording was not affected. Dissect a shorter \
         window, or raise the limit if this node has memory to spare"
    )]
    Memory {
        /// The limit, MiB.
        limit_mb: u64,
    },
    /// Killed by a signal from elsewhere (the kernel's OOM killer, an operator).
    #[error(
        "the dissection process was killed by signal {signal}; recording was not affected. If \
         the kernel's OOM killer did it (dmesg says), lower REMORA_JOB_MEMORY_MB or dissect a \
         shorter window{detail}"
    )]
    Killed {
        /// The signal.
        signal: i32,
        /// What the worker said last, if anything.
        detail: String,
    },
    /// The worker stopped with an error.
    #[error("{0}")]
    Failed(String),
    /// It could not be started or watched.
    #[error("running the dissection process {exe}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs one job in a worker process and waits for it: `progress(packets, calls)` is called as
/// it reports; when `cancelled()` says so, the worker is killed.
pub fn run(
    worker: &WorkerProcess,
    input: &WorkerInput<'_>,
    progress: &(dyn Fn(u64, u64) + Sync),
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<WorkerSummary, WorkerError> {
    let mut cmd = Command::new(&worker.exe);
    cmd.arg("dissect-job").arg("--out").arg(input.out);
    for (node, dir) in input.nodes {
        let mut arg = std::ffi::OsString::from(format!("{node}="));
        arg.push(dir);
        cmd.arg("--node").arg(arg);
    }
    if let Some(w) = input.workloads {
        cmd.arg("--workloads").arg(w);
    }
    cmd.arg("--copies")
        .arg(if input.copies_once { "once" } else { "each" });
    if let Some((start, end)) = input.window {
        cmd.arg("--window").arg(format!("{start}:{end}"));
    }
    if let Some(threads) = worker.threads {
        cmd.arg("--threads").arg(threads.to_string());
    }
    // A group of its own, so a kill reaches anything it started and no pipe outlives it.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.env("REMORA_JOB_PARENT", std::process::id().to_string())
        .env("REMORA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| WorkerError::Spawn {
        exe: worker.exe.clone(),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let summary: Arc<Mutex<Option<String>>> = Arc::default();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let outcome = std::thread::scope(|scope| {
        let summary_out = summary.clone();
        scope.spawn(move || {
            let Some(out) = stdout else { return };
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("progress ") {
                    let mut nums = rest.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
                    let (packets, calls) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
                    progress(packets, calls);
                } else if let Some(json) = line.strip_prefix("summary ") {
                    *summary_out.lock().unwrap_or_else(|e| e.into_inner()) = Some(json.to_owned());
                }
            }
        });
        let errors = scope.spawn(move || tail(stderr));
        let watched = watch(&mut child, worker.memory_limit, cancelled);
        let said = errors.join().unwrap_or_default();
        (watched, said)
    });
    let (watched, said) = outcome;
    let status = match watched {
        Watched::Exited(status) => status,
        Watched::OverMemory => {
            return Err(WorkerError::Memory {
                limit_mb: worker.memory_limit >> 20,
            });
        }
        Watched::Cancelled => return Err(WorkerError::Cancelled),
        Watched::Lost(e) => return Err(spawn_error(e)),
    };
    use std::os::unix::process::ExitStatusExt as _;
    if let Some(signal) = status.signal() {
        return Err(WorkerError::Killed {
            signal,
            detail: if said.is_empty() {
                String::new()
            } else {
                format!(" (it said: {said})")
            },
        });
    }
    if !status.success() {
        return Err(WorkerError::Failed(if said.is_empty() {
            format!("the dissection process exited with {status}")
        } else {
            said
        }));
    }
    let json = summary
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| WorkerError::Failed("the dissection process reported no summary".into()))?;
    serde_json::from_str(&json)
        .map_err(|e| WorkerError::Failed(format!("the dissection process's summary: {e}")))
}

enum Watched {
    Exited(std::process::ExitStatus),
    OverMemory,
    Cancelled,
    Lost(std::io::Error),
}

/// Waits for `child`, killing it when its resident memory passes `limit` or `cancelled` says so.
fn watch(child: &mut Child, limit: u64, cancelled: &dyn Fn() -> bool) -> Watched {
    let status_file = format!("/proc/{}/status", child.id());
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // Anything it left behind would hold its pipes open.
                kill_group(child);
                return Watched::Exited(status);
            }
            Ok(None) => {}
            Err(e) => return Watched::Lost(e),
        }
        let verdict = if cancelled() {
            Some(Watched::Cancelled)
        } else if resident_bytes(&status_file).is_some_and(|rss| rss > limit) {
            Some(Watched::OverMemory)
        } else {
            None
        };
        if let Some(verdict) = verdict {
            kill_group(child);
            let _ = child.kill();
            let _ = child.wait();
            return verdict;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGKILL to the process group `child` leads (it was started in a group of its own).
fn kill_group(child: &Child) {
    // SAFETY: kill(2) with the negated pid of a group this process created; ESRCH when empty.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}

/// `VmRSS` of a `/proc/<pid>/status` file, in bytes.
fn resident_bytes(status_file: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_file).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// The last lines a worker wrote to stderr (at most 2 KiB), for the job's error.
fn tail(stderr: Option<std::process::ChildStderr>) -> String {
    let Some(mut err) = stderr else {
        return String::new();
    };
    let mut all = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = err.read(&mut buf) {
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if all.len() > 64 << 10 {
            all.drain(..all.len() - (2 << 10));
        }
    }
    let text = String::from_utf8_lossy(&all);
    let text = text.trim();
    let start = text.len().saturating_sub(2 << 10);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    // anyhow prints "Error: ..." for the failure; that line is the reason.
    text[start..]
        .trim()
        .trim_start_matches("Error: ")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in worker: a shell script (the real `remora dissect-job` is exercised by
    /// bpf-tests/tests/job_isolation.rs).
    fn script(dir: &Path, body: &str) -> WorkerProcess {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = dir.join("worker.sh");
        std::fs::write(&exe, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o700)).unwrap();
        WorkerProcess {
            exe,
            memory_limit: 64 << 20,
            threads: None,
        }
    }

    fn run_script(body: &str) -> (Result<WorkerSummary, WorkerError>, Vec<(u64, u64)>) {
        run_script_on(body, None)
    }

    fn run_script_on(
        body: &str,
        threads: Option<usize>,
    ) -> (Result<WorkerSummary, WorkerError>, Vec<(u64, u64)>) {
        let dir = tempfile::tempdir().unwrap();
        let worker = WorkerProcess {
            threads,
            ..script(dir.path(), body)
        };
        let seen = Mutex::new(Vec::new());
        let nodes = [("n".to_owned(), dir.path().to_owned())];
        let result = run(
            &worker,
            &WorkerInput {
                nodes: &nodes,
                out: dir.path(),
                workloads: None,
                copies_once: true,
                window: Some((1, 2)),
            },
            &|p, c| seen.lock().unwrap().push((p, c)),
            &|| false,
        );
        (result, seen.into_inner().unwrap())
    }

    #[test]
    fn progress_and_summary_come_back() {
        let (result, seen) = run_script(
            r#"echo "progress 10 2"; echo "progress 20 4"; echo 'summary {"frames":20,"calls":{"HTTP":4},"conns":3}'"#,
        );
        let summary = result.unwrap();
        assert_eq!(summary.frames, 20);
        assert_eq!(summary.calls.get("HTTP"), Some(&4));
        assert_eq!(seen, [(10, 2), (20, 4)]);
    }

    #[test]
    fn the_arguments_name_the_input() {
        let (result, _) = run_script(
            r#"[ "$1 $2" = "dissect-job --out" ] && [ "$4" = "--node" ] && [ "$7" = "once" ] && [ "$9" = "1:2" ] || exit 3
echo 'summary {"frames":0,"calls":{},"conns":0}'"#,
        );
        result.unwrap();
    }

    #[test]
    fn the_job_threads_are_passed_on() {
        let (result, _) = run_script_on(
            r#"[ "${10} ${11}" = "--threads 3" ] || exit 3
echo 'summary {"frames":0,"calls":{},"conns":0}'"#,
            Some(3),
        );
        result.unwrap();
        let (result, _) = run_script(
            r#"[ -z "${10}" ] || exit 3
echo 'summary {"frames":0,"calls":{},"conns":0}'"#,
        );
        result.unwrap();
    }

    #[test]
    fn a_worker_over_its_memory_limit_is_stopped_with_the_reason() {
        // tail keeps the current line, and /dev/zero has no line end: memory grows until
        // something stops it.
        let (result, _) = run_script("exec tail /dev/zero");
        let e = result.unwrap_err();
        assert!(matches!(e, WorkerError::Memory { limit_mb: 64 }), "{e}");
        assert!(e.to_string().contains("REMORA_JOB_MEMORY_MB"), "{e}");
    }

    #[test]
    fn a_killed_worker_fails_its_job_with_the_signal() {
        let (result, _) = run_script("echo 'about to die' >&2; kill -9 $$");
        let e = result.unwrap_err();
        assert!(matches!(e, WorkerError::Killed { signal: 9, .. }), "{e}");
        assert!(e.to_string().contains("about to die"), "{e}");
    }

    #[test]
    fn a_failing_worker_reports_what_it_said() {
        let (result, _) = run_script("echo 'Error: slices unreadable: disk on fire' >&2; exit 1");
        let e = result.unwrap_err().to_string();
        assert_eq!(e, "slices unreadable: disk on fire");
        let (result, _) = run_script("exit 0");
        assert!(
            result.unwrap_err().to_string().contains("no summary"),
            "a silent success is not a result"
        );
    }

    #[test]
    fn a_cancelled_worker_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let worker = script(dir.path(), "sleep 30");
        let started = std::time::Instant::now();
        let result = run(
            &worker,
            &WorkerInput {
                nodes: &[],
                out: dir.path(),
                workloads: None,
                copies_once: false,
                window: None,
            },
            &|_, _| {},
            &|| started.elapsed() > Duration::from_millis(200),
        );
        assert!(matches!(result, Err(WorkerError::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
