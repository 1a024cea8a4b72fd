//! `bench-tls` (run by `cargo xtask bench tls`), the cost figures of issue 19:
//!
//! - `latency`: the time one `SSL_write_ex`/`SSL_read_ex` takes with the agent's uprobes
//!   attached, against the same loop with no probes (the agent not running), in the same run:
//!   Python's ssl module drives a client and a server over memory BIOs (no sockets, no network:
//!   only the TLS calls and the probes), `--calls` round trips of 1 KiB each way per round, the
//!   two modes alternating over `--runs` rounds. Added latency per call = (with − without) / 4
//!   (each round trip is two writes and two reads). Two more figures split it: the time the
//!   agent's BPF programs run per call (the kernel's `bpf_stats`, read with bpftool), and the
//!   trap a uprobe costs on this machine whatever runs in it (a tracefs uprobe with no program,
//!   on the two functions, in a third mode).
//! - `cpu`: the agent's CPU while wrk (OpenSSL) drives nginx over TLS between two network
//!   namespaces as fast as it can, with TLS plaintext recorded and without (packets only),
//!   normalised to 10,000 requests per second; and wrk's rate both ways (what the probes cost
//!   the traffic).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use remora_bpf_tests::{
    netns::{ADDR_B, NetNs, VethPair},
    proc::{AgentProc, Nginx, self_signed},
};

/// TLS cost figures.
#[derive(Parser, Debug)]
#[command(name = "bench-tls")]
struct Args {
    /// `latency`, `cpu` or `all`.
    #[arg(default_value = "all")]
    what: String,
    /// Rounds of each measurement (each mode once per round).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Round trips per latency round.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,
    /// Seconds of load per CPU round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Scratch directory; emptied first.
    #[arg(long, default_value = "bench-out/tls")]
    dir: PathBuf,
}

const PORT: u16 = 18960;
const NGINX_PORT: u16 = 18970;

/// Two SSLObjects over memory BIOs; prints ns per round trip after a warm-up. It waits first, so
/// that the agent's scan (every second) has hooked the libssl this process maps.
const LOOP: &str = r#"
import ssl, sys, time
cert, key, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
time.sleep(2.5)
sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); sctx.load_cert_chain(cert, key)
cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); cctx.check_hostname = False; cctx.verify_mode = ssl.CERT_NONE
c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
c = cctx.wrap_bio(c_in, c_out); s = sctx.wrap_bio(s_in, s_out, server_side=True)
def pump():
    s_in.write(c_out.read()); c_in.write(s_out.read())
for _ in range(10):
    for o in (c, s):
        try: o.do_handshake()
        except ssl.SSLWantReadError: pass
    pump()
msg = b"x" * 1024
def trip():
    c.write(msg); s_in.write(c_out.read()); s.read(2048)
    s.write(msg); c_in.write(s_out.read()); c.read(2048)
for _ in range(2000): trip()
t = time.perf_counter_ns()
for _ in range(calls): trip()
print((time.perf_counter_ns() - t) / calls)
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remora_bpf_tests::require_root();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    if matches!(args.what.as_str(), "latency" | "all") {
        latency(&args, &dir)?;
    }
    if matches!(args.what.as_str(), "cpu" | "all") {
        cpu(&args, &dir)?;
    }
    Ok(())
}

fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    self_signed(&cert, &key, "bench.test");
    (cert, key)
}

fn agent(ns: &NetNs, dir: &Path, tls: bool) -> AgentProc {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    AgentProc::start(
        ns,
        &data,
        PORT,
        &[
            "--tls",
            if tls { "on" } else { "off" },
            "--socket-events",
            if tls { "on" } else { "off" },
            "--slice-duration",
            "2s",
        ],
    )
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let (lo, hi) = (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    format!("{lo:.2}–{hi:.2}")
}

fn latency(args: &Args, dir: &Path) -> anyhow::Result<()> {
    let (cert, key) = certificate(dir);
    let ns = NetNs::new("btl");
    let run_loop = || -> anyhow::Result<f64> {
        let out = ns
            .command("python3")
            .args(["-c", LOOP])
            .arg(&cert)
            .arg(&key)
            .arg(args.calls.to_string())
            .output()
            .context("python3")?;
        if !out.status.success() {
            bail!("the loop failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    let (mut off, mut on, mut added) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bpf_us, mut trap_us) = (Vec::new(), Vec::new());
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    println!(
        "latency: {} round trips (1 KiB each way: 2 SSL_write_ex + 2 SSL_read_ex) per round",
        args.calls
    );
    for round in 0..args.runs {
        // Alternate which mode goes first, so drift does not favour one.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut this = [0.0; 2];
        for probes in order {
            let agent = probes.then(|| agent(&ns, dir, true));
            let ns_per_trip = run_loop()?;
            if probes && let Some(per_call) = bpf_us_per_call() {
                bpf_us.push(per_call);
            }
            if let Some(a) = agent {
                a.stop();
            }
            this[usize::from(probes)] = ns_per_trip;
        }
        // The trap alone: an entry uprobe with no program on both functions (one trap a call).
        let bare = bare_uprobes()?;
        let trap = (run_loop()? - this[0]) / 4.0 / 1000.0;
        drop(bare);
        trap_us.push(trap);
        let per_call_us = (this[1] - this[0]) / 4.0 / 1000.0;
        println!(
            "  round {}: without probes {:.0} ns/trip, with {:.0} ns/trip: +{per_call_us:.2} µs per call",
            round + 1,
            this[0],
            this[1]
        );
        off.push(this[0]);
        on.push(this[1]);
        added.push(per_call_us);
    }
    println!(
        "latency: added per SSL call median {:.2} µs (spread {} µs over {} rounds); a trip \
         {:.0} ns without probes, {:.0} ns with",
        median(&mut added.clone()),
        spread(&added),
        args.runs,
        median(&mut off),
        median(&mut on)
    );
    if !bpf_us.is_empty() {
        println!(
            "latency: of which the agent's BPF programs (entry + return) {:.2} µs per call \
             (spread {})",
            median(&mut bpf_us.clone()),
            spread(&bpf_us)
        );
    }
    println!(
        "latency: one uprobe trap with no program on this machine {:.2} µs (spread {}); each \
         SSL call takes two (entry and return)",
        median(&mut trap_us.clone()),
        spread(&trap_us)
    );
    Ok(())
}

/// µs the agent's TLS programs ran per SSL call, from `bpftool prog show` (bpf_stats on).
fn bpf_us_per_call() -> Option<f64> {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .ok()?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let (mut entry, mut ret) = ((0.0, 0.0), (0.0, 0.0));
    for p in progs.as_array()? {
        let name = p["name"].as_str().unwrap_or("");
        let (t, n) = (
            p["run_time_ns"].as_f64().unwrap_or(0.0),
            p["run_cnt"].as_f64().unwrap_or(0.0),
        );
        match name {
            "remora_ssl_write_ex"
            | "remora_ssl_read_ex"
            | "remora_ssl_write"
            | "remora_ssl_read" => entry = (entry.0 + t, entry.1 + n),
            "remora_ssl_ret" => ret = (ret.0 + t, ret.1 + n),
            _ => {}
        }
    }
    (entry.1 > 0.0 && ret.1 > 0.0).then(|| (entry.0 / entry.1 + ret.0 / ret.1) / 1000.0)
}

/// Entry uprobes with no program on SSL_write_ex and SSL_read_ex (tracefs), removed on drop.
struct BareUprobes;

const TRACEFS: &str = "/sys/kernel/tracing";

fn bare_uprobes() -> anyhow::Result<BareUprobes> {
    let lib = "/usr/lib/x86_64-linux-gnu/libssl.so.3";
    let syms = std::process::Command::new("readelf")
        .args(["-Ws", "--dyn-syms", lib])
        .output()
        .context("readelf")?;
    let text = String::from_utf8_lossy(&syms.stdout);
    for (event, symbol) in [("rbench_w", "SSL_write_ex"), ("rbench_r", "SSL_read_ex")] {
        let offset = text
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 8 && f[7].split('@').next() == Some(symbol)).then(|| f[1].to_owned())
            })
            .with_context(|| format!("{symbol} in {lib}"))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(format!("{TRACEFS}/uprobe_events"))?
            .write_all(format!("p:uprobes/{event} {lib}:0x{offset}\n").as_bytes())?;
        std::fs::write(format!("{TRACEFS}/events/uprobes/{event}/enable"), "1")?;
    }
    Ok(BareUprobes)
}

impl Drop for BareUprobes {
    fn drop(&mut self) {
        for event in ["rbench_w", "rbench_r"] {
            let _ = std::fs::write(format!("{TRACEFS}/events/uprobes/{event}/enable"), "0");
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .open(format!("{TRACEFS}/uprobe_events"))
            {
                let _ = f.write_all(format!("-:uprobes/{event}\n").as_bytes());
            }
        }
        let _ = std::fs::write(format!("{TRACEFS}/trace"), "");
    }
}

/// User + system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn cpu(args: &Args, dir: &Path) -> anyhow::Result<()> {
    if which("wrk").is_none() {
        bail!("wrk is missing: apt-get install wrk (cargo xtask setup installs it)");
    }
    let pair = VethPair::new("btc");
    let _nginx = Nginx::start_with_tls(&pair.b, ADDR_B, NGINX_PORT);
    let url = format!("https://{ADDR_B}:{}/ack/bench", NGINX_PORT + 2);
    println!(
        "cpu: wrk -t1 -c32 for {} s per round against nginx over TLS (HTTP/1.1, keep-alive), \
         agent recording packets {{with, without}} TLS plaintext",
        args.seconds
    );
    let mut per_10k = [Vec::new(), Vec::new()];
    let mut rates = [Vec::new(), Vec::new()];
    for round in 0..args.runs {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for tls in order {
            let agent = agent(&pair.a, dir, tls);
            // The agent's scan hooks the processes' libssl within a second.
            std::thread::sleep(Duration::from_millis(1500));
            let pid = agent.pid().context("agent pid")?;
            let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
            let out = pair
                .a
                .command("wrk")
                .args(["-t1", "-c32", &format!("-d{}s", args.seconds), &url])
                .output()
                .context("wrk")?;
            let (cpu1, wall) = (cpu_seconds(pid), t0.elapsed().as_secs_f64());
            agent.stop();
            let text = String::from_utf8_lossy(&out.stdout);
            let rate: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))
                .and_then(|r| r.trim().parse().ok())
                .with_context(|| format!("wrk's output: {text}"))?;
            let core = (cpu1 - cpu0) / wall;
            let at_10k = core * 10_000.0 / rate;
            println!(
                "  round {} {}: {rate:.0} req/s, agent {:.1}% of a core, {:.1}% per 10k req/s",
                round + 1,
                if tls {
                    "with TLS plaintext"
                } else {
                    "packets only     "
                },
                core * 100.0,
                at_10k * 100.0
            );
            per_10k[usize::from(tls)].push(at_10k * 100.0);
            rates[usize::from(tls)].push(rate);
        }
    }
    for (i, label) in ["packets only", "with TLS plaintext"].iter().enumerate() {
        println!(
            "cpu {label}: agent {:.1}% of a core per 10k TLS req/s (spread {}), wrk {:.0} req/s (spread {})",
            median(&mut per_10k[i].clone()),
            spread(&per_10k[i]),
            median(&mut rates[i].clone()),
            spread(&rates[i])
        );
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
    })
}
