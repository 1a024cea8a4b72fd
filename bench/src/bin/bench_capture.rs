//! `bench-capture` (run by `cargo xtask bench capture`): Remora's recorder against `tcpdump -w`
//! on the same veth pair, in the same run.
//!
//! (a) 64-byte UDP at increasing rates: offered vs captured packets, drops, recorder CPU per
//!     million packets, peak RSS, bytes on disk per packet.
//! (b) bulk TCP with iperf3: throughput with no recorder, then Remora and tcpdump keeping the
//!     same bytes of each packet: 128 (headers), 4110 (Remora's default) and everything.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use remora_bpf_tests::{
    metric_total,
    netns::{ADDR_B, IF_A, VethPair},
    pcap::read_pcap,
    proc::{AgentProc, Tcpdump, cpu_and_peak_rss},
    require_root, require_tool, sibling_binary, workspace_root,
};

/// Capture benchmark.
#[derive(Parser, Debug)]
#[command(name = "bench-capture")]
struct Args {
    /// Seconds of traffic per run (CPU time is accounted in scheduler ticks: at 50k pps a
    /// 3-second run totals ~40 ms, too little to compare to a few percent)
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// UDP rates to offer (packets per second; 0 = as fast as the sender can)
    #[arg(long, value_delimiter = ',', default_value = "50000,100000,200000,0")]
    rates: Vec<u64>,
    /// Skip the iperf3 part
    #[arg(long)]
    no_tcp: bool,
    /// Rounds of the iperf3 part (each runs every recorder once)
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Run only the recorders whose label contains this text (e.g. "remora", "64986")
    #[arg(long)]
    only: Option<String>,
}

impl Args {
    fn selects(&self, rec: &Recorder) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| rec.label().contains(only))
    }
}

#[derive(Debug, Default, Clone)]
struct Row {
    scenario: String,
    recorder: String,
    offered_pps: f64,
    sent: u64,
    captured: u64,
    drops: u64,
    gbps: Option<f64>,
    /// CPU from ready to exit.
    cpu_s: f64,
    /// CPU spent starting (loading programs, opening rings), a fixed cost.
    startup_cpu_s: f64,
    rss: u64,
    /// Rows the recorder wrote out of time order (it had to release before every CPU reported).
    late_rows: u64,
    disk_bytes: u64,
}

enum Recorder {
    None,
    Remora {
        snaplen: u32,
        /// Packets through the shared BPF ring buffer (`--packet-ring ringbuf`) rather than
        /// the per-CPU perf rings.
        ring_buffer: bool,
    },
    Tcpdump {
        snaplen: u32,
        extra: &'static [&'static str],
    },
}

/// Remora keeping `snaplen` bytes, through the ring buffer or the perf rings.
const fn remora(snaplen: u32, ring_buffer: bool) -> Recorder {
    Recorder::Remora {
        snaplen,
        ring_buffer,
    }
}

impl Recorder {
    fn label(&self) -> String {
        match self {
            Recorder::None => "none".into(),
            Recorder::Remora {
                snaplen,
                ring_buffer: false,
            } => format!("remora (snaplen {snaplen})"),
            Recorder::Remora {
                snaplen,
                ring_buffer: true,
            } => format!("remora (snaplen {snaplen}, ringbuf)"),
            Recorder::Tcpdump { snaplen, extra } => {
                format!("tcpdump -s {snaplen} {}", extra.join(" "))
                    .trim()
                    .to_owned()
            }
        }
    }
}

struct Running {
    agent: Option<AgentProc>,
    dump: Option<Tcpdump>,
    out: PathBuf,
    /// CPU seconds the recorder had used when it became ready.
    startup_cpu_s: f64,
}

fn start(pair: &VethPair, rec: &Recorder, out: &Path) -> Running {
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out).expect("bench dir");
    match rec {
        Recorder::None => Running {
            agent: None,
            dump: None,
            out: out.to_owned(),
            startup_cpu_s: 0.0,
        },
        Recorder::Remora {
            snaplen,
            ring_buffer,
        } => {
            let snap = snaplen.to_string();
            let transport = if *ring_buffer { "ringbuf" } else { "perf" };
            let agent = AgentProc::start(
                &pair.a,
                &out.join("data"),
                18899,
                &[
                    "--interfaces",
                    IF_A,
                    "--snaplen",
                    &snap,
                    "--retention-bytes",
                    "256GiB",
                    "--packet-ring",
                    transport,
                ],
            );
            let startup_cpu_s = agent.pid().map_or(0.0, |p| cpu_and_peak_rss(p).0);
            Running {
                agent: Some(agent),
                dump: None,
                out: out.to_owned(),
                startup_cpu_s,
            }
        }
        Recorder::Tcpdump { snaplen, extra } => {
            let dump = Tcpdump::start(&pair.a, IF_A, *snaplen, &out.join("out.pcap"), false, extra);
            let startup_cpu_s = dump.pid().map_or(0.0, |p| cpu_and_peak_rss(p).0);
            Running {
                agent: None,
                dump: Some(dump),
                out: out.to_owned(),
                startup_cpu_s,
            }
        }
    }
}

/// Stops the recorder and fills captured, drops, CPU, RSS and disk figures.
///
/// CPU is counted from the moment the recorder is ready (its start-up, which is a fixed cost
/// and not per packet, is reported apart) to its exit, so the final flush is included.
fn finish(run: Running, row: &mut Row) {
    std::thread::sleep(Duration::from_millis(1500));
    row.startup_cpu_s = run.startup_cpu_s;
    if let Some(agent) = run.agent {
        let metrics = String::from_utf8(agent.api("/metrics").1).unwrap_or_default();
        row.drops = metric_total(&metrics, "remora_dropped_packets_total");
        row.late_rows = metric_total(&metrics, "remora_late_rows_total");
        // Peak RSS from /proc while it runs: wait4's ru_maxrss also counts the forking parent's
        // memory at the fork, which is the benchmark's own, not the recorder's.
        row.rss = agent.pid().map_or(0, |p| cpu_and_peak_rss(p).1);
        let (log, usage) = agent.stop_measured();
        row.cpu_s = usage.cpu_s - run.startup_cpu_s;
        row.captured = log
            .lines()
            .find_map(|l| l.split("stopped; ").nth(1)?.split(' ').next()?.parse().ok())
            .unwrap_or(0);
        row.disk_bytes = remora_bench::dir_bytes(&run.out.join("data/capture"));
    }
    if let Some(dump) = run.dump {
        let pcap = dump.pcap.clone();
        row.rss = dump.pid().map_or(0, |p| cpu_and_peak_rss(p).1);
        let (stats, usage) = dump.stop_measured();
        row.cpu_s = usage.cpu_s - run.startup_cpu_s;
        row.drops = stats.dropped;
        row.captured = read_pcap(&pcap).len() as u64;
        row.disk_bytes = fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    }
    let _ = fs::remove_dir_all(&run.out);
}

fn udp_run(
    pair: &VethPair,
    rec: &Recorder,
    rate: u64,
    seconds: u64,
    out: &Path,
) -> anyhow::Result<Row> {
    let running = start(pair, rec, out);
    let count = if rate == 0 {
        250_000 * seconds
    } else {
        rate * seconds
    };
    let blast = sibling_binary("udp-blast");
    let report = pair.a.exec_ok(
        blast.to_str().context("path")?,
        &[
            "--dst",
            &format!("{ADDR_B}:9"),
            "--count",
            &count.to_string(),
            "--size",
            "22",
            "--rate",
            &rate.to_string(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(report.trim())?;
    let mut row = Row {
        scenario: if rate == 0 {
            "udp 64B max".into()
        } else {
            format!("udp 64B {}k pps", rate / 1000)
        },
        recorder: rec.label(),
        offered_pps: report["pps"].as_f64().unwrap_or(0.0),
        sent: report["sent"].as_u64().unwrap_or(0),
        ..Row::default()
    };
    finish(running, &mut row);
    Ok(row)
}

fn tcp_run(pair: &VethPair, rec: &Recorder, seconds: u64, out: &Path) -> anyhow::Result<Row> {
    let running = start(pair, rec, out);
    let json = pair.a.exec_ok(
        "iperf3",
        &["-c", ADDR_B, "-t", &seconds.to_string(), "-J", "-p", "5201"],
    );
    let v: serde_json::Value = serde_json::from_str(&json).context("iperf3 -J output")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let mut row = Row {
        scenario: "tcp bulk (iperf3)".into(),
        recorder: rec.label(),
        gbps: Some(bps / 1e9),
        ..Row::default()
    };
    finish(running, &mut row);
    Ok(row)
}

fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| scenario | recorder | offered pps | sent | captured | drops | throughput | CPU s / M pkt | start-up CPU s | peak RSS | bytes on disk / pkt |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let per_m = if r.captured > 0 {
            r.cpu_s / r.captured as f64 * 1e6
        } else {
            0.0
        };
        let per_pkt = if r.captured > 0 {
            r.disk_bytes as f64 / r.captured as f64
        } else {
            0.0
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.recorder,
            if r.offered_pps > 0.0 {
                format!("{:.0}", r.offered_pps)
            } else {
                "-".into()
            },
            if r.sent > 0 {
                r.sent.to_string()
            } else {
                "-".into()
            },
            if r.recorder == "none" {
                "-".into()
            } else {
                r.captured.to_string()
            },
            if r.recorder == "none" {
                "-".into()
            } else {
                r.drops.to_string()
            },
            r.gbps.map_or("-".into(), |g| format!("{g:.2} Gbps")),
            if r.recorder == "none" {
                "-".into()
            } else {
                format!("{per_m:.2}")
            },
            if r.recorder == "none" {
                "-".into()
            } else {
                format!("{:.2}", r.startup_cpu_s)
            },
            if r.rss > 0 {
                format!("{:.1} MiB", r.rss as f64 / 1048576.0)
            } else {
                "-".into()
            },
            if r.recorder == "none" {
                "-".into()
            } else {
                format!("{per_pkt:.1}")
            },
        );
    }
    t
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    require_root();
    for tool in ["tcpdump", "iperf3", "ip"] {
        require_tool(tool);
    }
    let out_root = workspace_root().join("bench-out");
    fs::create_dir_all(&out_root)?;
    let scratch = out_root.join("capture-scratch");
    let pair = VethPair::new("bench");
    let mut rows = Vec::new();

    let udp_recorders = [
        Recorder::None,
        remora(4096, false),
        remora(4096, true),
        Recorder::Tcpdump {
            snaplen: 262_144,
            extra: &[],
        },
    ];
    for &rate in &args.rates {
        for rec in udp_recorders.iter().filter(|r| args.selects(r)) {
            eprintln!("bench: udp rate {rate} with {}", rec.label());
            let row = udp_run(&pair, rec, rate, args.seconds, &scratch)?;
            eprintln!("  {row:?}");
            rows.push(row);
        }
    }
    if !args.no_tcp {
        let mut server = pair
            .b
            .command("iperf3")
            .args(["-s", "-B", ADDR_B, "-p", "5201"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        // Pairs that keep the same bytes: Remora's snaplen counts from the IP header,
        // tcpdump's from the Ethernet header (14 bytes more).
        let tcp_recorders = [
            Recorder::None,
            remora(114, false),
            Recorder::Tcpdump {
                snaplen: 128,
                extra: &[],
            },
            remora(4096, false),
            remora(4096, true),
            Recorder::Tcpdump {
                snaplen: 4110,
                extra: &[],
            },
            remora(64_986, false),
            Recorder::Tcpdump {
                snaplen: 262_144,
                extra: &["-B", "65536"],
            },
        ];
        // Rounds interleave the recorders, so that drift in the machine's speed is shared.
        for round in 1..=args.rounds {
            for rec in tcp_recorders.iter().filter(|r| args.selects(r)) {
                eprintln!("bench: round {round}: iperf3 with {}", rec.label());
                let row = tcp_run(&pair, rec, args.seconds, &scratch)?;
                eprintln!("  {row:?}");
                rows.push(row);
            }
        }
        let _ = server.kill();
        let _ = server.wait();
    }
    let text = table(&rows);
    println!("{text}");
    let path = out_root.join("capture.md");
    fs::write(&path, &text)?;
    eprintln!("bench: table written to {}", path.display());
    Ok(())
}
