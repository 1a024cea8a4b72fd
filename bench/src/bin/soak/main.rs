//! `soak` (run by `cargo xtask soak --minutes N`): Remora under steady mixed traffic for N
//! minutes while snapshots, dissections and queries run in a loop, then kill -9 crash cycles.
//!
//! Traffic: curl sends numbered requests (`/ack/<n>`, HTTP/1.1 and HTTP/2 in turn) through a
//! veth pair to nginx; a request counts as acknowledged when curl got its 200. Every cycle cuts
//! a snapshot of a window that closed a few seconds earlier, dissects it, and checks with SQL
//! that every request acknowledged inside the window is a call in the dissection (lost
//! acknowledged data is the failure that matters), then runs KFL queries and deletes both.
//! A sampler reads the recorder's resident memory and open file descriptors every 5 s.
//!
//! Crash cycles (`--crash-cycles`): `remora up` is killed with SIGKILL at a random moment
//! while a snapshot, a dissection or a query runs, and restarted on the same data. After each
//! restart every visible slice must be readable Parquet, every completed dissection must
//! verify against its checksums, and no dissection may be left pending or running.
//!
//! The report: acknowledged and lost requests, drops, errors, RSS and FDs over time (CSV in
//! `bench-out/soak/`, and a plot in text), and the crash cycles' outcomes. Exit status 1 when
//! data was lost, memory grew, or a check failed.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

mod api;
mod crash;

use anyhow::{Context as _, bail};
use clap::Parser;
use remora_bpf_tests::{
    netns::{ADDR_B, VethPair},
    proc::Nginx,
};
use serde_json::{Value, json};

/// Soak and crash-cycle run.
#[derive(Parser, Debug)]
#[command(name = "soak")]
struct Args {
    /// Minutes of steady traffic with the snapshot/dissection/query loop.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// kill -9 cycles after the steady phase.
    #[arg(long, default_value_t = 100)]
    crash_cycles: u32,
    /// Seconds between snapshot cycles.
    #[arg(long, default_value_t = 30)]
    cycle_seconds: u64,
    /// Output directory (CSV of the samples, the report).
    #[arg(long, default_value = "bench-out/soak")]
    out: PathBuf,
}

use api::{Api, now_ms, start_up};

/// One acknowledged request: its number and when curl sent and finished its batch.
#[derive(Clone, Copy)]
struct Acked {
    id: u64,
    sent_ms: i64,
    done_ms: i64,
}

/// Runs curl on `urls` (one connection, reused) and returns the acknowledged numbers.
fn curl(ns: &str, h2: bool, url: &str) -> Option<(Vec<u64>, usize)> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "curl", "-sS", "-m", "10"]);
    if h2 {
        cmd.arg("--http2-prior-knowledge");
    }
    let out = cmd
        .args(["-w", "%{stderr}%{http_code} %{url_effective}\n", url])
        .stdout(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let mut ok = Vec::new();
    let mut tried = 0;
    for line in text.lines() {
        let Some((code, url)) = line.split_once(' ') else {
            continue;
        };
        let Some(id) = url.rsplit('/').next().and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        tried += 1;
        if code == "200" {
            ok.push(id);
        }
    }
    Some((ok, tried))
}

/// Sends numbered requests until `stop`: a batch of 20 over one HTTP/1.1 connection, then
/// two over HTTP/2 (one connection each: curl 7.88 cannot reuse a prior-knowledge h2c
/// connection), every 100 ms. Records the acknowledged ones.
fn traffic(
    ns: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    failed: Arc<AtomicU64>,
) {
    let mut next = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let batch = [
            (
                false,
                format!("http://{ADDR_B}:8080/ack/[{}-{}]", next, next + 19),
                20,
            ),
            (true, format!("http://{ADDR_B}:8081/ack/{}", next + 20), 1),
            (true, format!("http://{ADDR_B}:8081/ack/{}", next + 21), 1),
        ];
        next += 22;
        for (h2, url, n) in batch {
            let sent_ms = now_ms();
            let result = curl(&ns, h2, &url);
            let done_ms = now_ms();
            let (ok, _) = result.unwrap_or_default();
            failed.fetch_add(n - ok.len() as u64, Ordering::Relaxed);
            let mut list = acked.lock().unwrap_or_else(|e| e.into_inner());
            list.extend(ok.into_iter().map(|id| Acked {
                id,
                sent_ms,
                done_ms,
            }));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// VmRSS (bytes) and open descriptors of a process.
fn rss_and_fds(pid: u32) -> Option<(u64, usize)> {
    let rss = remora_bpf_tests::proc::status_bytes(pid, "VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

#[derive(Default)]
struct Totals {
    cycles: u64,
    acked_in_windows: u64,
    lost: u64,
    drops: u64,
    errors: Vec<String>,
}

/// One snapshot → dissection → check → queries → delete cycle over `[start, end]` ms.
fn cycle(
    api: &Api,
    n: u64,
    start: i64,
    end: i64,
    acked: &[Acked],
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let name = format!("soak{n}");
    api.ok(
        "POST",
        "/mcp/snapshots",
        Some(&json!({"name": name, "start": start, "end": end})),
    )?;
    let snap = api.wait(&format!("/mcp/snapshots/{name}"), |v| {
        v["status"] != "in_progress"
    })?;
    if snap["status"] != "completed" {
        bail!("snapshot {name}: {snap}");
    }
    let drops = snap["drops"].as_u64().unwrap_or(0);
    api.ok(
        "POST",
        "/mcp/dissections",
        Some(&json!({"snapshot": name, "name": "d"})),
    )?;
    let job = api.wait(&format!("/mcp/dissections/{name}/d"), |v| {
        !matches!(v["status"].as_str(), Some("pending" | "running"))
    })?;
    if job["status"] != "completed" {
        bail!("dissection {name}/d: {job}");
    }
    let db = format!("{name}/d");
    let rows = api.ok(
        "POST",
        "/sql",
        Some(&json!({"db": db, "query": "SELECT path FROM calls WHERE path LIKE '/ack/%'", "max_rows": 1_000_000})),
    )?;
    let seen: BTreeSet<u64> = rows["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["path"].as_str()?.strip_prefix("/ack/")?.parse().ok())
        .collect();
    // Requests whose whole batch ran inside the window, with a second to spare at each end.
    let expected: Vec<u64> = acked
        .iter()
        .filter(|a| a.sent_ms >= start + 1000 && a.done_ms <= end - 1000)
        .map(|a| a.id)
        .collect();
    let lost = expected.iter().filter(|id| !seen.contains(id)).count() as u64;
    totals.acked_in_windows += expected.len() as u64;
    totals.lost += lost;
    totals.drops += drops;
    if lost > 0 {
        totals.errors.push(format!(
            "cycle {n}: {lost} of {} acknowledged requests missing (drops in window: {drops})",
            expected.len()
        ));
    }
    // The queries a user runs.
    let kfl = remora_analyzer::cli::client::encode("http and request.path.startsWith(\"/ack/\")");
    api.ok(
        "GET",
        &format!("/mcp/calls?db={db}&kfl={kfl}&limit=100"),
        None,
    )?;
    api.ok(
        "GET",
        &format!("/mcp/stats?db={db}&kfl=http&group_by=path&limit=10"),
        None,
    )?;
    api.ok("GET", &format!("/mcp/flows/summary?db={db}"), None)?;
    api.ok("DELETE", &format!("/mcp/snapshots/{name}"), None)?;
    totals.cycles += 1;
    println!(
        "  cycle {n}: {} acknowledged in the window, {} found, {lost} lost, {drops} drops",
        expected.len(),
        seen.len()
    );
    Ok(())
}

/// A plot of `values` over time, in text: `rows` lines high.
fn plot(values: &[(f64, f64)], rows: usize, unit: &str) -> String {
    if values.is_empty() {
        return String::new();
    }
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &(_, v)| (l.min(v), h.max(v)));
    let (lo, hi) = (lo * 0.98, hi * 1.02 + 1e-9);
    let width = values.len().min(72);
    let per = values.len().div_ceil(width);
    let cols: Vec<f64> = values
        .chunks(per)
        .map(|c| c.iter().map(|v| v.1).sum::<f64>() / c.len() as f64)
        .collect();
    let mut out = String::new();
    for row in (0..rows).rev() {
        let level = lo + (hi - lo) * (row as f64 + 0.5) / rows as f64;
        out.push_str(&format!("{:>8.1} {unit} |", level));
        for &v in &cols {
            out.push(if v >= level { '#' } else { ' ' });
        }
        out.push('\n');
    }
    let minutes = values.last().map_or(0.0, |v| v.0) / 60.0;
    out.push_str(&format!(
        "{:>13}+{}\n{:>14}0 min{:>w$}{minutes:.0} min\n",
        "",
        "-".repeat(cols.len()),
        "",
        "",
        w = cols.len().saturating_sub(10)
    ));
    out
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "the soak loads eBPF programs and makes network namespaces: run it as root"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let pair = VethPair::new("soak");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let mut agent = start_up(&pair, &data);
    let api = Api {
        ns: pair.a.name.clone(),
        token: std::fs::read_to_string(data.join("token"))?
            .trim()
            .to_owned(),
    };
    let pid = agent.pid().context("remora up has no pid")?;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let sender = {
        let (ns, stop, acked, failed) = (
            pair.a.name.clone(),
            stop.clone(),
            acked.clone(),
            failed.clone(),
        );
        std::thread::spawn(move || traffic(ns, stop, acked, failed))
    };
    let samples: Arc<Mutex<Vec<(f64, u64, usize)>>> = Arc::default();
    let sampler = {
        let (stop, samples) = (stop.clone(), samples.clone());
        let began = Instant::now();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Some((rss, fds)) = rss_and_fds(pid) {
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push((
                        began.elapsed().as_secs_f64(),
                        rss,
                        fds,
                    ));
                }
                for _ in 0..50 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };

    println!(
        "soak: {} minutes of traffic with a snapshot cycle every {} s",
        args.minutes, args.cycle_seconds
    );
    let began = Instant::now();
    let mut totals = Totals::default();
    let mut n = 0u64;
    std::thread::sleep(Duration::from_secs(args.cycle_seconds.min(20)));
    while began.elapsed() < Duration::from_secs(args.minutes * 60) {
        let cycle_began = Instant::now();
        // A window that closed 4 s ago: its slices are published.
        let end = now_ms() - 4_000;
        let start = end - (args.cycle_seconds as i64 * 1000).min(20_000);
        let acked_now = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Err(e) = cycle(&api, n, start, end, &acked_now, &mut totals) {
            println!("  cycle {n}: error: {e:#}");
            totals.errors.push(format!("cycle {n}: {e:#}"));
        }
        if !agent.is_running() {
            totals
                .errors
                .push("remora up exited during the soak".into());
            break;
        }
        n += 1;
        let rest = Duration::from_secs(args.cycle_seconds).saturating_sub(cycle_began.elapsed());
        std::thread::sleep(rest);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = sender.join();
    let _ = sampler.join();
    let boundaries = api
        .ok("GET", "/mcp/data-boundaries", None)
        .unwrap_or(Value::Null);
    let metrics = api
        .call("GET", "/metrics", None)
        .map(|v| v.1)
        .unwrap_or(Value::Null);
    let _ = metrics;
    let total_acked = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    agent.stop();

    // Memory: the mean of the last fifth against the mean of the second fifth (the first is
    // warm-up: page cache of the first slices, DataFusion's first plans).
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut csv = String::from("seconds,rss_bytes,fds\n");
    for (t, rss, fds) in &samples {
        csv.push_str(&format!("{t:.1},{rss},{fds}\n"));
    }
    std::fs::write(args.out.join("samples.csv"), csv)?;
    let fifth = samples.len() / 5;
    let mean =
        |s: &[(f64, u64, usize)]| s.iter().map(|x| x.1 as f64).sum::<f64>() / s.len().max(1) as f64;
    let early = mean(&samples[fifth..(2 * fifth).max(fifth + 1).min(samples.len())]);
    let late = mean(&samples[samples.len() - fifth.max(1)..]);
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let fds: Vec<usize> = samples.iter().map(|s| s.2).collect();
    let growth = if early > 0.0 { late / early - 1.0 } else { 0.0 };
    let rss_mib: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.0, s.1 as f64 / 1048576.0))
        .collect();

    let mut report = String::new();
    report.push_str(&format!(
        "soak: {} min, {} cycles, {} requests acknowledged ({} failed at the client), {} acknowledged inside snapshot windows, {} lost, {} packets dropped in those windows, {} errors\n",
        args.minutes,
        totals.cycles,
        total_acked,
        failed.load(Ordering::Relaxed),
        totals.acked_in_windows,
        totals.lost,
        totals.drops,
        totals.errors.len()
    ));
    report.push_str(&format!(
        "remora up RSS: {:.0} MiB in the second fifth, {:.0} MiB in the last fifth ({:+.1}%), peak {:.0} MiB; open fds {}..{}\n",
        early / 1048576.0,
        late / 1048576.0,
        growth * 100.0,
        peak as f64 / 1048576.0,
        fds.iter().min().unwrap_or(&0),
        fds.iter().max().unwrap_or(&0)
    ));
    report.push_str(&format!("boundaries at the end: {boundaries}\n"));
    report.push_str("RSS of remora up over time:\n");
    report.push_str(&plot(&rss_mib, 10, "MiB"));
    for e in totals.errors.iter().take(20) {
        report.push_str(&format!("error: {e}\n"));
    }

    // Crash cycles on the same data.
    let crash = crash::crash_cycles(&pair, &data, args.crash_cycles)?;
    report.push_str(&crash.summary);
    print!("{report}");
    std::fs::write(args.out.join("report.txt"), &report)?;

    let mut failures = Vec::new();
    if totals.lost > 0 {
        failures.push(format!("{} acknowledged requests lost", totals.lost));
    }
    if !totals.errors.is_empty() {
        failures.push(format!("{} errors", totals.errors.len()));
    }
    // Warm-up (the first slices, DataFusion's first plans, the table cache filling) takes a
    // few minutes: memory is judged on runs of 10 minutes or more.
    if growth > 0.15 && args.minutes >= 10 {
        failures.push(format!(
            "RSS grew {:.0}% from the second to the last fifth",
            growth * 100.0
        ));
    } else if args.minutes < 10 {
        println!("(a run under 10 minutes is too short to judge memory growth)");
    }
    failures.extend(crash.failures);
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    println!(
        "soak passed; samples in {}",
        args.out.join("samples.csv").display()
    );
    Ok(())
}
