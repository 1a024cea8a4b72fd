//! `bench-jobs` (run by `cargo xtask bench jobs`): the analyzer's job path against
//! `remora dissect` on the same recorder slices, in the same run.
//!
//! The benchmark capture of `cargo xtask bench dissect` (1.7M packets of HTTP/1, HTTP/2 and
//! DNS) is turned into the recorder's packet slices with the agent's own decoder and slice
//! writer (what `remora snapshot import` does). Then, in three alternating rounds: (1)
//! `dissect_file` on the slice directory, as `remora dissect` runs it, on one thread and on
//! every core (both must write the same tables, byte for byte); (2) over HTTP against an
//! in-process analyzer: POST a snapshot of the whole window and time it to `completed`, POST a
//! dissection job (every core) and time it to `completed`. Every round is reported, with the
//! medians. The job must find the same calls; its overhead over the direct path on every core
//! should stay under 10%.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use remora_analyzer::{
    api,
    cli::client::Client,
    pipeline,
    services::{snapshots::capture_to_slices, workloads::NoWorkloads},
};
use serde_json::{Value, json};

// mimalloc, the allocator of the `remora` binary's server; both paths compared here run in
// this process, on it (the binary's own dissection processes run on jemalloc:
// `remora_analyzer::allocator`, measured by `bench dissect`).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Job path versus direct dissection.
#[derive(Parser, Debug)]
#[command(name = "bench-jobs")]
struct Args {
    /// The capture to turn into slices (made by `cargo xtask bench dissect`).
    #[arg(long, default_value = "bench-out/dissect.pcap")]
    pcap: PathBuf,
    /// Scratch directory (slices, outputs); emptied first.
    #[arg(long, default_value = "bench-out/jobs")]
    dir: PathBuf,
    /// Bytes kept per packet, as the recorder's `--snaplen`.
    #[arg(long, default_value_t = 4096)]
    snaplen: u32,
}

const NODE: &str = "bench";
const TOKEN: &str = "bench-token";

/// Writes the capture's frames as the recorder would have (the same path as `remora snapshot
/// import`): returns (packets, first ms, last ms).
fn write_slices(pcap: &Path, packets_dir: &Path, snaplen: u32) -> anyhow::Result<(u64, i64, i64)> {
    let file = std::fs::File::open(pcap).with_context(|| {
        format!(
            "opening {}; make it with `cargo xtask bench dissect` first",
            pcap.display()
        )
    })?;
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    let imported = capture_to_slices(input, packets_dir, NODE, snaplen)?;
    Ok((
        imported.packets,
        imported.first_ns / 1_000_000,
        imported.last_ns / 1_000_000 + 1,
    ))
}

/// Polls `path` until its `status` is none of `busy`; returns the last answer.
fn wait(client: &Client, path: &str, busy: &[&str]) -> anyhow::Result<Value> {
    loop {
        let v = client.call("GET", path, None)?;
        if !busy.iter().any(|b| v["status"] == *b) {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = std::fs::remove_dir_all(&args.dir);
    let data = args.dir.join("data");
    let packets = data.join("capture").join(NODE).join("packets");
    std::fs::create_dir_all(&packets)?;

    let t = Instant::now();
    let (n, start_ms, end_ms) = write_slices(&args.pcap, &packets, args.snaplen)?;
    let slice_bytes: u64 = std::fs::read_dir(&packets)?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "slices: {n} packets, {:.1} MiB, written in {:.1} s (snaplen {})",
        slice_bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64(),
        args.snaplen
    );

    let connection = |addr: std::net::SocketAddr| Client::new(&format!("http://{addr}"), TOKEN);
    let state = api::AnalyzerState::open(&data, TOKEN.into(), std::sync::Arc::new(NoWorkloads), 1)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    // Three rounds, alternating (the first run of each warms the page cache).
    let threads = pipeline::default_threads();
    let mut rounds: Vec<[f64; 4]> = Vec::new();
    let mut direct_calls = 0;
    for round in 0..3 {
        // (1) remora dissect on the slice directory, one thread, then every core.
        let mut direct_s = [0.0; 2];
        for (i, n) in [1, threads].into_iter().enumerate() {
            let out = args.dir.join(format!("direct-{round}-{n}"));
            let direct = tokio::task::block_in_place(|| {
                pipeline::dissect_file(&packets, &out, NODE, false, n)
            })?;
            direct_calls = direct.calls.values().sum::<u64>();
            direct_s[i] = direct.seconds;
            if round == 0 && i == 0 {
                println!("direct: {direct}");
            }
        }
        for table in ["calls.parquet", "conns.parquet"] {
            let one = std::fs::read(args.dir.join(format!("direct-{round}-1")).join(table))?;
            let all = std::fs::read(
                args.dir
                    .join(format!("direct-{round}-{threads}"))
                    .join(table),
            )?;
            if one != all {
                bail!("{table} differs between 1 and {threads} threads");
            }
        }
        // (2) The job path over HTTP.
        let client = connection(addr);
        let (snap_s, this_job_s, job) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let name = format!("b{round}");
                let t = Instant::now();
                client.call(
                    "POST",
                    "/mcp/snapshots",
                    Some(&json!({"name": name, "start": start_ms, "end": end_ms})),
                )?;
                let snap = wait(&client, &format!("/mcp/snapshots/{name}"), &["in_progress"])?;
                let snapshot_s = t.elapsed().as_secs_f64();
                if snap["status"] != "completed" {
                    bail!("snapshot ended {snap}");
                }
                let t = Instant::now();
                client.call(
                    "POST",
                    "/mcp/dissections",
                    Some(&json!({"snapshot": name, "name": "d"})),
                )?;
                let job = wait(
                    &client,
                    &format!("/mcp/dissections/{name}/d"),
                    &["pending", "running"],
                )?;
                Ok((snapshot_s, t.elapsed().as_secs_f64(), job))
            })
            .await??;
        if job["status"] != "completed" {
            bail!("dissection job ended {job}");
        }
        let job_calls = job["calls_found"].as_u64().unwrap_or(0);
        if job_calls != direct_calls {
            bail!("the job found {job_calls} calls, remora dissect {direct_calls}");
        }
        rounds.push([direct_s[0], direct_s[1], this_job_s, snap_s]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one_s, direct_s, job_s, snapshot_s) = (median(0), median(1), median(2), median(3));
    println!(
        "\n| round | remora dissect <slices>, 1 thread | {threads} threads | scaling | job ({threads} threads) |\n|---|---|---|---|---|"
    );
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "| {} | {:.2} s ({:.0} pkt/s) | {:.2} s ({:.0} pkt/s) | {:.2}× | {:.2} s |",
            i + 1,
            r[0],
            n as f64 / r[0],
            r[1],
            n as f64 / r[1],
            r[0] / r[1],
            r[2]
        );
    }
    // Older "recordings" for the 1 GiB snapshot timing: hard links of the real slices under
    // earlier 10 s windows (a snapshot links files and reads their footers; it never decodes).
    let real: Vec<PathBuf> = std::fs::read_dir(&packets)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    let mut linked = slice_bytes;
    let mut window = start_ms * 1_000_000;
    while linked < 1 << 30 {
        for file in &real {
            window -= 10_000_000_000;
            std::fs::hard_link(
                file,
                packets.join(format!("{window}-{}.parquet", window + 9_999_999_999)),
            )?;
            linked += std::fs::metadata(file)?.len();
        }
    }
    let big_start_ms = window / 1_000_000;

    let client = connection(addr);
    let big_s = tokio::task::spawn_blocking(move || -> anyhow::Result<f64> {
        let t = Instant::now();
        client.call(
            "POST",
            "/mcp/snapshots",
            Some(&json!({"name": "big", "start": big_start_ms, "end": end_ms})),
        )?;
        let snap = wait(&client, "/mcp/snapshots/big", &["in_progress"])?;
        if snap["status"] != "completed" {
            bail!("snapshot ended {snap}");
        }
        Ok(t.elapsed().as_secs_f64())
    })
    .await??;
    server.abort();
    let job_calls = direct_calls;
    let overhead = (job_s / direct_s - 1.0) * 100.0;
    println!(
        "\nmedians: 1 thread {one_s:.2} s, {threads} threads {direct_s:.2} s ({:.2}×)",
        one_s / direct_s
    );
    println!(
        "\n| path | seconds | packets/s | calls |\n|---|---|---|---|\n\
         | remora dissect <slices> ({threads} threads) | {:.2} | {:.0} | {direct_calls} |\n\
         | POST /mcp/dissections → completed | {job_s:.2} | {:.0} | {job_calls} |\n\
         \njob-path overhead {overhead:+.1}% (target: under 10%); \
         POST /mcp/snapshots → completed: {snapshot_s:.3} s for the {:.2} GiB window, \
         {big_s:.3} s for {:.2} GiB ({} slice files)",
        direct_s,
        n as f64 / direct_s,
        n as f64 / job_s,
        slice_bytes as f64 / (1u64 << 30) as f64,
        linked as f64 / (1u64 << 30) as f64,
        std::fs::read_dir(&packets)?.count(),
    );
    Ok(())
}
