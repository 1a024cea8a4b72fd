//! `remora dissect-job`: one delayed dissection in a process of its own, started by the
//! analyzer ([`crate::services::job_process`]), never by hand.
//!
//! The analyzer runs inside `remora up`, beside the capture. A dissection's memory depends on
//! what was captured, which an attacker may choose; in its own process, with the kernel's OOM
//! killer pointed at it first and a watchdog on its RSS, the worst a hostile snapshot can do is
//! fail its own job.
//!
//! Protocol on stdout, one line each: `progress <packets> <calls>` while it runs, then
//! `summary <json>` when the tables are complete. Errors go to stderr; the exit status says
//! whether it worked.

use std::{io::Write as _, path::PathBuf, time::Instant};

use anyhow::Context as _;

use crate::{
    pipeline,
    services::{
        job_process::WorkerSummary,
        workload_history::WorkloadHistory,
        workloads::{NoWorkloads, Resolve},
    },
};

/// Arguments of `remora dissect-job` (internal).
#[derive(clap::Args, Debug)]
pub struct JobWorkerArgs {
    /// A node's packet slices: `NAME=DIR` (repeatable).
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Where the tables go (the job's partial directory).
    #[arg(long)]
    out: PathBuf,
    /// Workloads for attribution (a workloads.parquet).
    #[arg(long)]
    workloads: Option<PathBuf>,
    /// Count a packet's copies on several interfaces once (recordings) or each (imports).
    #[arg(long, default_value = "once")]
    copies: String,
    /// Only calls starting in `START_NS:END_NS`.
    #[arg(long)]
    window: Option<String>,
    /// Threads to dissect on [default: every core]; the rows are the same with any number.
    #[arg(long)]
    threads: Option<usize>,
}

/// Jobs of this `remora` executable, each under `memory_limit` resident bytes, on `threads`
/// threads (`None`: every core).
pub fn this_worker(
    memory_limit: u64,
    threads: Option<usize>,
) -> anyhow::Result<crate::services::job_process::WorkerProcess> {
    // /proc/self/exe runs this very binary even after an upgrade replaced the file on disk.
    let exe = PathBuf::from("/proc/self/exe");
    anyhow::ensure!(
        exe.exists(),
        "/proc/self/exe is missing: dissection jobs need /proc mounted"
    );
    Ok(crate::services::job_process::WorkerProcess {
        exe,
        memory_limit,
        threads,
    })
}

/// Runs the dissection and reports on stdout.
pub fn run(args: &JobWorkerArgs) -> anyhow::Result<()> {
    die_with_parent();
    // The kernel's OOM killer takes this process before the recorder.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    let nodes = args
        .nodes
        .iter()
        .map(|n| {
            n.split_once('=')
                .map(|(name, dir)| (name.to_owned(), PathBuf::from(dir)))
                .with_context(|| format!("--node {n}: expected NAME=DIR"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let copies = match args.copies.as_str() {
        "once" => pipeline::Copies::Once,
        "each" => pipeline::Copies::Each,
        other => anyhow::bail!("--copies {other}: expected once or each"),
    };
    let window = args
        .window
        .as_deref()
        .map(|w| {
            w.split_once(':')
                .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
                .with_context(|| format!("--window {w}: expected START_NS:END_NS"))
        })
        .transpose()?;
    let frozen = args
        .workloads
        .as_deref()
        .map(WorkloadHistory::read_parquet)
        .transpose()?;
    let workloads: &dyn Resolve = match &frozen {
        Some(w) => w,
        None => &NoWorkloads,
    };
    let stdout = std::io::stdout();
    let last = std::cell::Cell::new(Instant::now());
    let how = pipeline::How {
        copies,
        window,
        threads: args.threads.unwrap_or_else(pipeline::default_threads),
    };
    super::allocator::for_dissection(how.threads);
    let summary =
        pipeline::dissect_nodes_with(&nodes, &args.out, workloads, how, &|packets, calls| {
            // A few lines a second are enough for a progress bar.
            if last.get().elapsed().as_millis() >= 100 {
                last.set(Instant::now());
                let _ = writeln!(stdout.lock(), "progress {packets} {calls}");
            }
            true
        })?;
    let report = WorkerSummary {
        frames: summary.frames,
        calls: summary
            .calls
            .iter()
            .map(|(p, n)| ((*p).to_owned(), *n))
            .collect(),
        conns: summary.conns,
    };
    let mut out = stdout.lock();
    writeln!(out, "summary {}", serde_json::to_string(&report)?)?;
    out.flush()?;
    drop(out);
    super::allocator::exit_now()
}

/// Ends this process when the analyzer that started it ends, even by kill -9: an orphaned
/// dissection would hold memory and a partial directory nobody owns.
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and has no memory arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    // The parent may have died before the call above: then this process was reparented.
    if std::env::var("REMORA_JOB_PARENT")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|parent| parent != std::os::unix::process::parent_id())
    {
        std::process::exit(1);
    }
}
