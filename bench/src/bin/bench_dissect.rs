//! `bench-dissect` (run by `cargo xtask bench dissect`): `remora dissect` against tshark on the
//! same capture, in the same run.
//!
//! The capture is made here: wrk (HTTP/1.1 keep-alive and one request per connection) and h2load
//! (cleartext HTTP/2) against nginx, dnsperf against dnsmasq, in network namespaces, recorded by
//! tcpdump. Both tools then read it on one core: packets/s, calls/s, CPU, peak RSS.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, VethPair},
    proc::{Nginx, Tcpdump, run_measured},
    require_root, require_tool, sibling_binary, workspace_root,
};

/// Dissection benchmark.
#[derive(Parser, Debug)]
#[command(name = "bench-dissect")]
struct Args {
    /// Seconds of each traffic kind
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Reuse an existing capture instead of making one
    #[arg(long)]
    pcap: Option<std::path::PathBuf>,
    /// Rounds, each on a freshly made capture and running every tool on it (this VM's speed
    /// drifts by ±30% over minutes)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Runs of `remora dissect` per round on each core count, taking turns; a round reports
    /// their median and spread (a one-second run varies by ±5–10% here, so one run is not the
    /// typical figure)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Then dissect the last capture looped to this many GiB and compare the peak RSS with the
    /// rounds' (memory must follow live connections, not the capture)
    #[arg(long)]
    loop_gib: Option<u64>,
    /// Runs of the looped capture: the bound is judged on the median of their peaks (177–187
    /// MiB over three runs of the same 10 GiB file), as the rounds' figures are medians
    #[arg(long, default_value_t = 3)]
    loop_runs: usize,
}

/// Writes `src` (a little-endian pcap) again and again into `dst` until it holds `target`
/// bytes, each copy shifted in time past the last (and past the idle timeout, so that its
/// connections are new ones). Returns the packets written.
///
/// The capture is streamed, record by record, never held whole. (Read whole, it once made
/// every later `remora dissect` look as large as the capture, when children were measured by
/// `wait4`'s `ru_maxrss`, which carries the spawning process's peak across `exec`;
/// `run_measured` now reads each child's own peak.)
fn loop_capture(src: &Path, dst: &Path, target: u64) -> anyhow::Result<u64> {
    use std::io::{BufReader, Read as _, Write as _};
    let open = || -> anyhow::Result<BufReader<fs::File>> {
        let file = fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        Ok(BufReader::with_capacity(1 << 20, file))
    };
    // Reads the next whole record into `record` (its 16-byte header, then its bytes); false at
    // the end or at a record cut short, an error when reading fails.
    let next = |reader: &mut BufReader<fs::File>, record: &mut Vec<u8>| -> anyhow::Result<bool> {
        let whole = |read: std::io::Result<()>| match read {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", src.display()))),
        };
        record.resize(16, 0);
        if !whole(reader.read_exact(&mut record[..16]))? {
            return Ok(false);
        }
        let caplen = u32::from_le_bytes([record[8], record[9], record[10], record[11]]) as usize;
        record.resize(16 + caplen, 0);
        whole(reader.read_exact(&mut record[16..]))
    };
    // The header, then the capture's span in its own time unit.
    let mut header = [0u8; 24];
    let mut reader = open()?;
    reader
        .read_exact(&mut header)
        .with_context(|| format!("{} is not a pcap", src.display()))?;
    let per_second: u64 = match u32::from_le_bytes([header[0], header[1], header[2], header[3]]) {
        0xa1b2_c3d4 => 1_000_000,
        0xa1b2_3c4d => 1_000_000_000,
        _ => anyhow::bail!("{}: only little-endian pcap can be looped", src.display()),
    };
    let ts = |record: &[u8]| -> u64 {
        let sec = u64::from(u32::from_le_bytes([
            record[0], record[1], record[2], record[3],
        ]));
        let frac = u64::from(u32::from_le_bytes([
            record[4], record[5], record[6], record[7],
        ]));
        sec * per_second + frac
    };
    let mut record = Vec::with_capacity(1 << 16);
    let (mut first, mut last) = (None, 0);
    while next(&mut reader, &mut record)? {
        first.get_or_insert(ts(&record));
        last = ts(&record);
    }
    let Some(first) = first else {
        anyhow::bail!("{} holds no packets", src.display());
    };
    let shift_each = last - first + 300 * per_second;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(dst)?);
    out.write_all(&header)?;
    let (mut written, mut packets, mut copy) = (24u64, 0u64, 0u64);
    while written < target {
        let shift = copy * shift_each;
        let mut reader = open()?;
        reader.read_exact(&mut header)?;
        while next(&mut reader, &mut record)? {
            let t = ts(&record) + shift;
            record[0..4].copy_from_slice(&((t / per_second) as u32).to_le_bytes());
            record[4..8].copy_from_slice(&((t % per_second) as u32).to_le_bytes());
            out.write_all(&record)?;
            written += record.len() as u64;
            packets += 1;
        }
        copy += 1;
    }
    out.flush()?;
    Ok(packets)
}

/// The machine's CPU time so far, in clock ticks: (stolen by the hypervisor, all).
fn cpu_ticks() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: steal is the eighth.
    let steal = fields.get(7).copied().unwrap_or(0);
    (steal, fields.iter().take(8).sum())
}

/// One measured run of `cmd`.
fn measured(what: &str, mut cmd: Command) -> anyhow::Result<Run> {
    let before = cpu_ticks();
    let (wall, cpu, rss, status) = run_measured(&mut cmd)?;
    let after = cpu_ticks();
    anyhow::ensure!(status.success(), "{what} failed");
    let steal = (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64;
    eprintln!(
        "bench: {what}: {wall:.2} s wall, {cpu:.2} s CPU, {:.0}% of the machine stolen by the host",
        steal * 100.0
    );
    Ok(Run {
        wall,
        cpu,
        rss,
        steal,
    })
}

/// The median run by wall time, carrying the highest peak RSS of all of them (`runs` not
/// empty).
fn typical(runs: &mut [Run]) -> Run {
    let rss = runs.iter().map(|r| r.rss).max().unwrap_or(0);
    Run {
        rss,
        ..median_by(runs, |r| r.wall)
    }
}

/// `rates` (sorted) as "median (lowest–highest)", or the one rate.
fn spread(rates: &[f64]) -> String {
    match rates {
        [] => String::new(),
        [one] => format!("{one:.0}"),
        _ => format!(
            "{:.0} ({:.0}–{:.0})",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1]
        ),
    }
}

/// The median of `values` (not empty) by `key`.
fn median_by<T: Copy>(values: &mut [T], key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    values[values.len() / 2]
}

/// `program` pinned to CPU 0, so that "one core each" holds whatever the tool does.
fn on_one_core(program: &Path) -> Command {
    on_cpu(program, 0)
}

/// `program` pinned to CPU `cpu`.
fn on_cpu(program: &Path, cpu: usize) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string()]).arg(program);
    cmd
}

fn make_capture(pcap: &Path, seconds: u64) -> anyhow::Result<u64> {
    let pair = VethPair::new("bdis");
    let _nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let mut dns = pair
        .b
        .command("dnsmasq")
        .args([
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
        ])
        .args([
            "--listen-address=198.18.0.2",
            "--local=/test/",
            "--address=/app.test/198.18.0.50",
        ])
        .args([
            "--pid-file=",
            "--user=root",
            "--cache-size=0",
            "--dns-forward-max=10000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let dump = Tcpdump::start(&pair.a, IF_A, 262_144, pcap, false, &["-B", "131072"]);
    let secs = seconds.to_string();
    let base = format!("http://{ADDR_B}:8080/");
    eprintln!("bench: HTTP/1.1 keep-alive (wrk, {seconds} s)");
    pair.a
        .exec_ok("wrk", &["-t1", "-c8", &format!("-d{secs}s"), &base]);
    eprintln!("bench: HTTP/1.1 one request per connection (wrk, {seconds} s)");
    pair.a.exec_ok(
        "wrk",
        &[
            "-t1",
            "-c8",
            &format!("-d{secs}s"),
            "-H",
            "Connection: close",
            &base,
        ],
    );
    eprintln!("bench: HTTP/2 (h2load)");
    pair.a.exec_ok(
        "h2load",
        &["-D", &secs, "-c8", "-m8", &format!("http://{ADDR_B}:8081/")],
    );
    eprintln!("bench: DNS (dnsperf, {seconds} s)");
    let queries = pcap.with_extension("queries");
    fs::write(
        &queries,
        "app.test A\nwww.app.test A\nnope.test A\napp.test AAAA\n",
    )?;
    pair.a.exec_ok(
        "dnsperf",
        &[
            "-s",
            ADDR_B,
            "-d",
            queries.to_str().context("path")?,
            "-l",
            &secs,
            "-Q",
            "20000",
            "-q",
            "200",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let stats = dump.stop();
    let _ = dns.kill();
    let _ = dns.wait();
    Ok(stats.captured)
}

/// One round's figures for one run of a tool.
#[derive(Clone, Copy, Debug)]
struct Run {
    wall: f64,
    cpu: f64,
    rss: u64,
    /// Share of the machine's CPU time the hypervisor took during the run: a VM whose host is
    /// busy runs slower, and its two-core runs slowest.
    steal: f64,
}

/// What one round measured.
struct Round {
    packets: f64,
    bytes: u64,
    composition: String,
    tshark: Run,
    /// The median run (by wall time), with the highest peak RSS of all runs.
    one_core: Run,
    all_cores: Run,
    /// Packets per second of every run, slowest first.
    one_core_rates: Vec<f64>,
    all_cores_rates: Vec<f64>,
    /// The median peak RSS of the runs on all cores: what the looped capture is held to.
    all_cores_median_rss: u64,
    /// Two one-core runs side by side, median over the runs: their rates added up, against
    /// the one-core median's (`side_by_side`); 0 with fewer than two cores.
    side_by_side: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.tshark.wall / self.one_core.wall
    }
    fn scaling(&self) -> f64 {
        self.one_core.wall / self.all_cores.wall
    }
}

/// `remora dissect` of `pcap` into `out` on `threads` threads (pinned to one core for one).
fn remora_run(
    remora: &Path,
    pcap: &Path,
    out: &Path,
    threads: usize,
    summary: &Path,
) -> anyhow::Result<Run> {
    let _ = fs::remove_dir_all(out);
    let mut cmd = if threads == 1 {
        on_one_core(remora)
    } else {
        Command::new(remora)
    };
    cmd.args(["dissect", "--threads", &threads.to_string()])
        .arg(pcap)
        .arg("--out")
        .arg(out)
        .stdout(fs::File::create(summary)?);
    measured(&format!("remora dissect --threads {threads}"), cmd)
}

/// Two one-thread `remora dissect`s of `pcap` at once, pinned to CPUs 0 and 1: their wall
/// times. What the machine gives two independent one-core jobs is the ceiling for any split of
/// one job over two cores; on this VM two busy CPUs were measured at anything from as fast as
/// one alone to a third slower (the host decides where its virtual CPUs run), which is why the
/// bench reports it beside the scaling it judges.
fn side_by_side(remora: &Path, pcap: &Path, out: &Path) -> anyhow::Result<[f64; 2]> {
    let runs: Vec<_> = [0, 1]
        .map(|cpu| {
            let out = out.join(format!("cpu{cpu}"));
            let _ = fs::remove_dir_all(&out);
            let mut cmd = on_cpu(remora, cpu);
            cmd.args(["dissect", "--threads", "1"])
                .arg(pcap)
                .arg("--out")
                .arg(&out)
                .stdout(Stdio::null());
            std::thread::spawn(move || -> anyhow::Result<f64> {
                let started = std::time::Instant::now();
                let status = cmd.status().context("starting remora dissect")?;
                anyhow::ensure!(status.success(), "remora dissect on CPU {cpu} failed");
                Ok(started.elapsed().as_secs_f64())
            })
        })
        .into_iter()
        .collect();
    let mut walls = [0.0; 2];
    for (wall, run) in walls.iter_mut().zip(runs) {
        *wall = run
            .join()
            .map_err(|_| anyhow::anyhow!("a side-by-side run panicked"))??;
    }
    let _ = fs::remove_dir_all(out);
    eprintln!(
        "bench: two one-thread runs side by side: {:.2} s and {:.2} s wall",
        walls[0], walls[1]
    );
    Ok(walls)
}

fn tshark_run(pcap: &Path, fields: &Path) -> anyhow::Result<Run> {
    let mut cmd = on_one_core(Path::new("tshark"));
    cmd.args([
        "-n",
        "-o",
        "tcp.reassemble_out_of_order:TRUE",
        "-o",
        "http.desegment_body:FALSE",
    ])
    .args(["-d", "tcp.port==8081,http2", "-r"])
    .arg(pcap)
    .args([
        "-Y",
        "http.request || http.response || http2.type == 1 || dns",
    ])
    .args([
        "-T",
        "fields",
        "-e",
        "frame.number",
        "-e",
        "http.request.method",
        "-e",
        "http.response.code",
    ])
    .args([
        "-e",
        "http2.headers.method",
        "-e",
        "http2.headers.status",
        "-e",
        "dns.qry.name",
    ])
    .stdout(fs::File::create(fields)?)
    .stderr(Stdio::null());
    measured("tshark", cmd)
}

/// The rows of a table file, for comparing two dissections row for row.
fn table_rows(path: &Path) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    Ok(vec![arrow::compute::concat_batches(
        &first.schema(),
        &batches,
    )?])
}

/// Fails unless both dissections wrote the same rows in the same order.
fn same_rows(a: &Path, b: &Path) -> anyhow::Result<()> {
    for table in ["calls.parquet", "conns.parquet"] {
        let (x, y) = (table_rows(&a.join(table))?, table_rows(&b.join(table))?);
        anyhow::ensure!(
            x == y,
            "{table} differs between one thread ({}) and all cores ({}): the dissection must \
             give the same rows whatever the number of threads",
            a.display(),
            b.display()
        );
    }
    Ok(())
}

/// The figures of `remora dissect`'s summary line: packets, calls per protocol, connections.
fn composition(summary: &str) -> (f64, String) {
    let first = summary.lines().next().unwrap_or("");
    let packets = first
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let calls = first.split_once("): ").map_or(first, |(_, rest)| rest);
    (packets, calls.to_owned())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require_root();
    for tool in [
        "tcpdump", "tshark", "wrk", "h2load", "dnsperf", "dnsmasq", "nginx", "taskset",
    ] {
        require_tool(tool);
    }
    let out_root = workspace_root().join("bench-out");
    fs::create_dir_all(&out_root)?;
    let remora = sibling_binary("remora");
    let one_dir = out_root.join("dissect-out-1");
    let all_dir = out_root.join("dissect-out-all");
    let tshark_out = out_root.join("tshark-fields.txt");
    let summary_path = out_root.join("remora-summary.txt");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Each round dissects a capture made afresh (unless one is given): the figures then
    // spread over inputs as well as over runs. The tools take turns on the same capture, as
    // this VM's speed drifts by ±30% over minutes.
    let rounds = args.rounds.max(1);
    let mut results = Vec::new();
    for round in 1..=rounds {
        eprintln!("bench: round {round} of {rounds}");
        let pcap = match &args.pcap {
            Some(p) => p.clone(),
            None => {
                let pcap = out_root.join("dissect.pcap");
                let captured = make_capture(&pcap, args.seconds)?;
                eprintln!("bench: captured {captured} packets into {}", pcap.display());
                pcap
            }
        };
        let bytes = fs::metadata(&pcap)?.len();
        let tshark = tshark_run(&pcap, &tshark_out)?;
        let (mut ones, mut alls, mut summary) = (Vec::new(), Vec::new(), None);
        let mut pairs = Vec::new();
        for _ in 0..args.runs.max(1) {
            ones.push(remora_run(&remora, &pcap, &one_dir, 1, &summary_path)?);
            if summary.is_none() {
                summary = Some(fs::read_to_string(&summary_path)?);
            }
            alls.push(remora_run(
                &remora,
                &pcap,
                &all_dir,
                threads,
                &summary_path,
            )?);
            if threads >= 2 {
                pairs.push(side_by_side(
                    &remora,
                    &pcap,
                    &out_root.join("side-by-side"),
                )?);
            }
        }
        let summary = summary.unwrap_or_default();
        // Read here: the children's peaks are their own (`run_measured`), whatever this
        // process holds.
        same_rows(&one_dir, &all_dir)?;
        let (packets, composition) = composition(&summary);
        let rates = |runs: &[Run]| {
            let mut rates: Vec<f64> = runs.iter().map(|r| packets / r.wall).collect();
            rates.sort_by(f64::total_cmp);
            rates
        };
        // Against the typical one-core run, the one the round's ratio and scaling use.
        let one_core = typical(&mut ones);
        let mut together: Vec<f64> = pairs
            .iter()
            .map(|[a, b]| one_core.wall / a + one_core.wall / b)
            .collect();
        let side_by_side = if together.is_empty() {
            0.0
        } else {
            median_by(&mut together, |x| *x)
        };
        let r = Round {
            side_by_side,
            packets,
            bytes,
            composition,
            tshark,
            one_core,
            all_cores_median_rss: median_by(&mut alls, |r| r.rss as f64).rss,
            all_cores: typical(&mut alls),
            one_core_rates: rates(&ones),
            all_cores_rates: rates(&alls),
        };
        eprintln!(
            "bench: round {round}: {:.1}× tshark on one core, {:.2}× on {threads} cores (two \
             one-core runs side by side: {:.2}×)",
            r.ratio(),
            r.scaling(),
            r.side_by_side
        );
        results.push(r);
    }

    let mut t = String::new();
    let _ = writeln!(
        t,
        "| round | capture | remora 1 core pkt/s, median of {runs} (range) | peak RSS | remora {threads} cores pkt/s, median of {runs} (range) | CPU s | peak RSS | tshark pkt/s | × tshark (1 core) | scaling ({threads} cores) | two 1-core runs side by side | stolen (tshark / 1 / {threads}) |",
        runs = args.runs.max(1)
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mib = |b: u64| b as f64 / 1048576.0;
    for (i, r) in results.iter().enumerate() {
        let _ = writeln!(
            t,
            "| {} | {:.0} packets, {:.0} MB | {} | {:.0} MiB | {} | {:.2} | {:.0} MiB | {:.0} | {:.1}× | {:.2}× | {:.2}× | {:.0}% / {:.0}% / {:.0}% |",
            i + 1,
            r.packets,
            r.bytes as f64 / 1e6,
            spread(&r.one_core_rates),
            mib(r.one_core.rss),
            spread(&r.all_cores_rates),
            r.all_cores.cpu,
            mib(r.all_cores.rss),
            r.packets / r.tshark.wall,
            r.ratio(),
            r.scaling(),
            r.side_by_side,
            r.tshark.steal * 100.0,
            r.one_core.steal * 100.0,
            r.all_cores.steal * 100.0,
        );
    }
    let _ = writeln!(t, "\ncomposition of each capture (remora's reading):");
    for (i, r) in results.iter().enumerate() {
        let _ = writeln!(t, "- round {}: {}", i + 1, r.composition);
    }
    let mut ratios: Vec<f64> = results.iter().map(Round::ratio).collect();
    let mut scalings: Vec<f64> = results.iter().map(Round::scaling).collect();
    let ratio = median_by(&mut ratios, |r| *r);
    let scaling = median_by(&mut scalings, |r| *r);
    let mut failures_big = None;
    let _ = writeln!(
        t,
        "\nmedian: {ratio:.1}× tshark's packets/s on one core (both pinned to core 0); \
         {scaling:.2}× the one-core rate on {threads} cores; rows identical in every round"
    );
    if let Some(gib) = args.loop_gib {
        let pcap = args
            .pcap
            .clone()
            .unwrap_or_else(|| out_root.join("dissect.pcap"));
        let big = out_root.join("dissect-looped.pcap");
        eprintln!("bench: looping the capture to {gib} GiB");
        let packets = loop_capture(&pcap, &big, gib << 30)?;
        let small_rss = results
            .iter()
            .map(|r| r.all_cores_median_rss)
            .max()
            .unwrap_or(0);
        let loop_runs = args.loop_runs.max(1);
        let runs: anyhow::Result<Vec<Run>> = (1..=loop_runs)
            .map(|run| {
                eprintln!("bench: looped capture, run {run} of {loop_runs}");
                remora_run(&remora, &big, &all_dir, threads, &summary_path)
            })
            .collect();
        let _ = fs::remove_file(&big);
        let mut runs = runs?;
        let mut peaks: Vec<u64> = runs.iter().map(|r| r.rss).collect();
        let peak = median_by(&mut peaks, |p| *p as f64);
        let peaks_mib: Vec<f64> = peaks.iter().map(|&p| mib(p)).collect();
        let run = median_by(&mut runs, |r| r.wall);
        let _ = writeln!(
            t,
            "
looped to {gib} GiB ({packets} packets, {loop_runs} runs): {:.0} packets/s on {threads} cores \
             (median), peak RSS {} MiB (median and range) against the rounds' {:.0} MiB (the \
             largest round's median on {threads} cores)",
            packets as f64 / run.wall,
            spread(&peaks_mib),
            mib(small_rss),
        );
        // Memory follows the live connections: the same traffic, however long, within a
        // quarter more than one copy of it, typical run against typical run.
        if peak > small_rss + small_rss / 4 {
            failures_big = Some(format!(
                "the {gib} GiB capture peaked at {:.0} MiB (median of {}), above the rounds' {:.0} MiB",
                mib(peak),
                loop_runs,
                mib(small_rss)
            ));
        }
    }
    println!("{t}");
    fs::write(out_root.join("dissect.md"), &t)?;

    // The targets (docs/dissection.md): every round, not only the median.
    let slow: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.ratio() < TARGET_RATIO)
        .map(|(i, r)| format!("round {} at {:.1}×", i + 1, r.ratio()))
        .collect();
    let fat: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.one_core.rss > TARGET_RSS)
        .map(|(i, r)| format!("round {} at {:.0} MiB", i + 1, mib(r.one_core.rss)))
        .collect();
    let flat: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| threads >= 2 && r.scaling() < TARGET_SCALING)
        .map(|(i, r)| {
            format!(
                "round {} at {:.2}× (two one-core runs side by side: {:.2}×)",
                i + 1,
                r.scaling(),
                r.side_by_side
            )
        })
        .collect();
    let mut failures: Vec<String> = failures_big.into_iter().collect();
    if !slow.is_empty() {
        failures.push(format!(
            "below {TARGET_RATIO}× tshark on one core: {}",
            slow.join(", ")
        ));
    }
    if !fat.is_empty() {
        failures.push(format!(
            "peak RSS above {} MiB: {}",
            TARGET_RSS >> 20,
            fat.join(", ")
        ));
    }
    if !flat.is_empty() {
        failures.push(format!(
            "below {TARGET_SCALING}× the one-core rate on {threads} cores: {}",
            flat.join(", ")
        ));
    }
    anyhow::ensure!(
        failures.is_empty(),
        "dissection below its targets: {}",
        failures.join("; ")
    );
    Ok(())
}

/// Targets of `bench dissect` (issue 20): one core against tshark, memory, and all cores.
const TARGET_RATIO: f64 = 25.0;
const TARGET_RSS: u64 = 200 << 20;
const TARGET_SCALING: f64 = 1.8;
