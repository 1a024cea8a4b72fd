//! `bench-pcap` (run by `cargo xtask bench pcap`): a large PCAP export (10 GiB by default)
//! through `GET /mcp/snapshots/{name}/pcap`, measured for time and for the analyzer's memory
//! while it streams, against tcpdump reading and filtering the same file in the same run.
//!
//! The snapshot is synthetic: TCP flows of 1,400-byte segments with incompressible payloads,
//! written by the same path as `remora snapshot import` into the recorder's 64 MiB slices with
//! consecutive times, so the export really merges and decodes every slice. Each run downloads
//! the whole export to a file (what a user does) while a sampler reads this process's resident
//! memory every 50 ms; the figure that matters is the peak over the baseline before the export.
//! Then tcpdump reads the same file (`-r export -w /dev/null`) and applies the same capture
//! filter as Remora's `bpf_filter` export, so the numbers compare one tool with the other on
//! identical bytes. Several runs; the median and the range are reported.

use std::{
    io::{Read, Write as _},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use remora_analyzer::{
    api,
    cli::client::Client,
    services::{snapshots::capture_to_slices, workloads::NoWorkloads},
};
use remora_bench::synth::Rng;
use serde_json::json;

// The allocator of the `remora` binary that serves these exports.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Large PCAP export benchmark.
#[derive(Parser, Debug)]
#[command(name = "bench-pcap")]
struct Args {
    /// GiB of packets in the snapshot (and of pcapng out).
    #[arg(long, default_value_t = 10)]
    gib: u64,
    /// Scratch directory (slices, exports); slices are reused while they have the right size.
    #[arg(long, default_value = "bench-out/pcap")]
    dir: PathBuf,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const NODE: &str = "bench";
const TOKEN: &str = "bench-token";
const PAYLOAD: usize = 1400;
/// One flow in this many goes to port 5432: the filtered export's share.
const FLOWS: u32 = 200;
const FILTER: &str = "tcp port 5432";

/// A classic pcap (raw IP) of `packets` TCP segments, made as it is read.
struct SynthCapture {
    packets: u64,
    made: u64,
    rng: Rng,
    buf: Vec<u8>,
    at: usize,
    ts_ns: i64,
}

impl SynthCapture {
    fn new(packets: u64) -> Self {
        let mut buf = Vec::new();
        buf.extend_from_slice(&0xA1B2_3C4Du32.to_le_bytes()); // nanosecond pcap
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&[0; 8]);
        buf.extend_from_slice(&65535u32.to_le_bytes());
        buf.extend_from_slice(&101u32.to_le_bytes());
        Self {
            packets,
            made: 0,
            rng: Rng::new(7),
            buf,
            at: 0,
            ts_ns: 1_795_514_400_000_000_000,
        }
    }

    fn next_packet(&mut self) {
        self.buf.clear();
        self.at = 0;
        let flow = (self.made % u64::from(FLOWS)) as u32;
        let to_server = (self.made / u64::from(FLOWS)).is_multiple_of(2);
        let client = [198, 18, 1 + (flow / 250) as u8, (flow % 250) as u8 + 1];
        let server = [198, 19, 0, 1];
        let (cport, sport) = (
            40_000 + flow as u16,
            if flow == 0 {
                5432
            } else {
                443 + (flow % 3) as u16
            },
        );
        let (src, dst, s, d) = if to_server {
            (client, server, cport, sport)
        } else {
            (server, client, sport, cport)
        };
        let total = 40 + PAYLOAD;
        self.ts_ns += 10_000; // 100k packets/s: 10 GiB spans about 77 s
        let ts = self.ts_ns as u64;
        self.buf
            .extend_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
        self.buf.extend_from_slice(&(total as u32).to_le_bytes());
        self.buf.extend_from_slice(&(total as u32).to_le_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        self.buf.extend_from_slice(&ip);
        let mut tcp = [0u8; 20];
        tcp[0..2].copy_from_slice(&s.to_be_bytes());
        tcp[2..4].copy_from_slice(&d.to_be_bytes());
        let seq = (self.made / u64::from(FLOWS) / 2 * PAYLOAD as u64) as u32;
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x18; // PSH, ACK
        tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
        self.buf.extend_from_slice(&tcp);
        for _ in 0..PAYLOAD / 8 {
            self.buf
                .extend_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        self.made += 1;
    }
}

impl Read for SynthCapture {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.made == self.packets {
                return Ok(0);
            }
            self.next_packet();
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// This process's resident memory, bytes.
fn rss() -> u64 {
    remora_bpf_tests::proc::status_bytes("self", "VmRSS").unwrap_or(0)
}

/// CPU seconds of this process (user + system), or of its waited children.
fn cpu_seconds(who: libc::c_int) -> (f64, u64) {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(who, &mut usage) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    (
        t(usage.ru_utime) + t(usage.ru_stime),
        usage.ru_maxrss as u64 * 1024,
    )
}

/// Median and range of `values`.
fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// What one measured export did.
struct Run {
    seconds: f64,
    cpu: f64,
    bytes: u64,
    peak_rss_over_baseline: u64,
    peak_rss: u64,
}

/// Downloads `path` into `file` while sampling memory.
fn export(client: &Client, path: &str, file: &Path) -> anyhow::Result<Run> {
    let baseline = rss();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (cpu0, _) = cpu_seconds(libc::RUSAGE_SELF);
    let t = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?,
    );
    let bytes = client.download(path, &mut out)?;
    out.flush()?;
    let seconds = t.elapsed().as_secs_f64();
    let (cpu1, _) = cpu_seconds(libc::RUSAGE_SELF);
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    Ok(Run {
        seconds,
        cpu: cpu1 - cpu0,
        bytes,
        peak_rss_over_baseline: peak.load(Ordering::Relaxed).saturating_sub(baseline),
        peak_rss: peak.load(Ordering::Relaxed),
    })
}

/// Runs tcpdump; (wall seconds, CPU seconds, peak resident memory in bytes), the peak its own
/// (`run_measured` reads it as tcpdump exits).
fn tcpdump(args: &[&str]) -> anyhow::Result<(f64, f64, u64)> {
    // Its messages go to a file, read when it fails: a pipe nobody reads could fill.
    let mut errors = tempfile::tempfile().context("a temporary file for tcpdump's messages")?;
    let mut cmd = Command::new("tcpdump");
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(errors.try_clone()?);
    let (seconds, cpu, peak, status) = remora_bpf_tests::proc::run_measured(&mut cmd)
        .context("running tcpdump (`cargo xtask setup` installs it)")?;
    if !status.success() {
        use std::io::Seek as _;
        let mut err = String::new();
        errors.rewind()?;
        let _ = errors.read_to_string(&mut err);
        bail!("tcpdump {args:?}: {err}");
    }
    Ok((seconds, cpu, peak))
}

/// Packets in a capture, by tcpdump.
fn count(file: &Path) -> anyhow::Result<u64> {
    let out = Command::new("tcpdump")
        .args(["-nr"])
        .arg(file)
        .output()
        .context("running tcpdump")?;
    Ok(out.stdout.iter().filter(|b| **b == b'\n').count() as u64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let data = args.dir.join("data");
    let packets_dir = data.join("capture").join(NODE).join("packets");
    let frame = (16 + 40 + PAYLOAD) as u64;
    let packets = (args.gib << 30) / frame;
    let marker = args.dir.join("slices.made");
    let made = std::fs::read_to_string(&marker).ok();
    let (start_ms, end_ms) = match made.as_deref().and_then(|m| {
        let v: Vec<i64> = m
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        (v.len() == 3 && v[0] == packets as i64).then(|| (v[1], v[2]))
    }) {
        Some(window) => {
            println!("reusing the slices in {}", packets_dir.display());
            window
        }
        None => {
            let _ = std::fs::remove_dir_all(&args.dir);
            std::fs::create_dir_all(&packets_dir)?;
            println!(
                "writing {packets} packets ({} GiB) as slices into {} (once; reused later)",
                args.gib,
                packets_dir.display()
            );
            let t = Instant::now();
            let input = std::io::BufReader::with_capacity(1 << 20, SynthCapture::new(packets));
            let imported = capture_to_slices(input, &packets_dir, NODE, 65535)?;
            let window = (
                imported.first_ns / 1_000_000,
                imported.last_ns / 1_000_000 + 1,
            );
            println!(
                "  written in {:.0} s; run again for memory figures without the generator's",
                t.elapsed().as_secs_f64()
            );
            std::fs::write(&marker, format!("{packets} {} {}", window.0, window.1))?;
            window
        }
    };
    let slice_files = std::fs::read_dir(&packets_dir)?.count();
    let _ = std::fs::remove_dir_all(data.join("snapshots"));

    let state = api::AnalyzerState::open(&data, TOKEN.into(), Arc::new(NoWorkloads), 1)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    let client = Client::new(&format!("http://{addr}"), TOKEN);
    let file = args.dir.join("export.pcapng");
    let filtered = args.dir.join("filtered.pcapng");
    let theirs = args.dir.join("tcpdump-filtered.pcap");
    let runs = args.runs.max(1);
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        client.call(
            "POST",
            "/mcp/snapshots",
            Some(&json!({"name": "big", "start": start_ms, "end": end_ms})),
        )?;
        loop {
            let snap = client.call("GET", "/mcp/snapshots/big", None)?;
            if snap["status"] == "completed" {
                break;
            }
            if snap["status"] != "in_progress" {
                bail!("snapshot ended {snap}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (mut full, mut filt, mut td_read, mut td_filter) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let path = format!(
            "/mcp/snapshots/big/pcap?bpf_filter={}",
            FILTER.replace(' ', "%20")
        );
        let file_s = file.display().to_string();
        let theirs_s = theirs.display().to_string();
        for round in 0..runs {
            let run = export(&client, "/mcp/snapshots/big/pcap", &file)?;
            println!(
                "  run {round}: export {:.2} GiB in {:.1} s, peak RSS +{:.0} MiB",
                run.bytes as f64 / (1u64 << 30) as f64,
                run.seconds,
                run.peak_rss_over_baseline as f64 / 1048576.0
            );
            full.push(run);
            filt.push(export(&client, &path, &filtered)?);
            td_read.push(tcpdump(&["-r", &file_s, "-w", "/dev/null"])?);
            td_filter.push(tcpdump(&["-r", &file_s, "-w", &theirs_s, FILTER])?);
        }
        let (ours, tcpdumps) = (count(&filtered)?, count(&theirs)?);
        if ours != tcpdumps || ours == 0 {
            bail!("bpf_filter export has {ours} packets, tcpdump's {tcpdumps}");
        }
        let bytes = full[0].bytes as f64;
        let row = |name: &str, runs: &[(f64, f64)], rss: String| {
            let (wall, lo, hi) = summary(&runs.iter().map(|r| r.0).collect::<Vec<_>>());
            let (cpu, _, _) = summary(&runs.iter().map(|r| r.1).collect::<Vec<_>>());
            format!(
                "| {name} | {wall:.1} ({lo:.1}–{hi:.1}) | {cpu:.1} | {:.0} | {rss} |\n",
                bytes / wall / 1048576.0
            )
        };
        let ours_row = |name: &str, runs: &[Run]| {
            let pairs: Vec<(f64, f64)> = runs.iter().map(|r| (r.seconds, r.cpu)).collect();
            let mib = |f: &dyn Fn(&Run) -> u64| {
                summary(
                    &runs
                        .iter()
                        .map(|r| f(r) as f64 / 1048576.0)
                        .collect::<Vec<_>>(),
                )
            };
            let (peak, lo, hi) = mib(&|r| r.peak_rss);
            let (over, _, _) = mib(&|r| r.peak_rss_over_baseline);
            row(
                name,
                &pairs,
                format!(
                    "{peak:.0} ({lo:.0}–{hi:.0}) peak RSS of the analyzer, +{over:.0} over its idle"
                ),
            )
        };
        let mut table = format!(
            "\n{:.2} GiB export, {packets} packets, {slice_files} slice files, {runs} runs \
             (median, range):\n\n| path | wall s | CPU s | MiB/s of pcapng | memory MiB |\n\
             |---|---|---|---|---|\n",
            bytes / (1u64 << 30) as f64
        );
        table += &ours_row("GET …/pcap (whole snapshot)", &full);
        table += &ours_row(&format!("GET …/pcap?bpf_filter={FILTER}"), &filt);
        let tcpdump_row = |name: &str, runs: &[(f64, f64, u64)]| {
            let pairs: Vec<(f64, f64)> = runs.iter().map(|r| (r.0, r.1)).collect();
            let (rss, lo, hi) = summary(
                &runs
                    .iter()
                    .map(|r| r.2 as f64 / 1048576.0)
                    .collect::<Vec<_>>(),
            );
            row(name, &pairs, format!("{rss:.0} ({lo:.0}–{hi:.0}) peak RSS"))
        };
        table += &tcpdump_row("tcpdump -r export -w /dev/null", &td_read);
        table += &tcpdump_row(&format!("tcpdump -r export -w out '{FILTER}'"), &td_filter);
        table +=
            &format!("\nfiltered exports agree: {ours} packets from Remora and from tcpdump\n");
        Ok(table)
    })
    .await??;
    server.abort();
    println!("{report}");
    for f in ["export.pcapng", "filtered.pcapng", "tcpdump-filtered.pcap"] {
        let _ = std::fs::remove_file(args.dir.join(f));
    }
    Ok(())
}
