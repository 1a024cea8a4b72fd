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
    /// Rounds, each running both tools (this VM's speed drifts by ±30% over minutes)
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One measured run: (wall s, CPU s, peak RSS bytes).
fn measured(what: &str, mut cmd: Command) -> anyhow::Result<(f64, f64, u64)> {
    let (wall, cpu, rss, status) = run_measured(&mut cmd)?;
    anyhow::ensure!(status.success(), "{what} failed");
    eprintln!("bench: {what}: {wall:.2} s wall, {cpu:.2} s CPU");
    Ok((wall, cpu, rss))
}

/// The median of `values` (not empty) by `key`.
fn median_by<T: Copy>(values: &mut [T], key: impl Fn(&T) -> f64) -> T {
    values.sort_by(|a, b| key(a).total_cmp(&key(b)));
    values[values.len() / 2]
}

/// `program` pinned to CPU 0, so that "one core each" holds whatever the tool does.
fn on_one_core(program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(program);
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
    let pcap = match &args.pcap {
        Some(p) => p.clone(),
        None => {
            let pcap = out_root.join("dissect.pcap");
            let captured = make_capture(&pcap, args.seconds)?;
            eprintln!("bench: captured {captured} packets into {}", pcap.display());
            pcap
        }
    };
    let size = fs::metadata(&pcap)?.len();

    let remora = sibling_binary("remora");
    let out_dir = out_root.join("dissect-out");
    let _ = fs::remove_dir_all(&out_dir);
    // This VM's speed drifts by ±30% over minutes: the tools take turns, round by round, and
    // the table shows each one's median round and the median of the per-round ratios.
    let tshark_out = out_root.join("tshark-fields.txt");
    let rounds = args.rounds.max(1);
    let (mut remora_runs, mut tshark_runs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("bench: round {round} of {rounds}");
        let mut cmd = on_one_core(&remora);
        cmd.args(["dissect"])
            .arg(&pcap)
            .arg("--out")
            .arg(&out_dir)
            .stdout(fs::File::create(out_root.join("remora-summary.txt"))?);
        remora_runs.push(measured("remora dissect", cmd)?);
        let mut cmd = on_one_core(Path::new("tshark"));
        cmd.args([
            "-n",
            "-o",
            "tcp.reassemble_out_of_order:TRUE",
            "-o",
            "http.desegment_body:FALSE",
        ])
        .args(["-d", "tcp.port==8081,http2", "-r"])
        .arg(&pcap)
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
        .stdout(fs::File::create(&tshark_out)?)
        .stderr(Stdio::null());
        tshark_runs.push(measured("tshark", cmd)?);
    }
    let mut ratios: Vec<f64> = remora_runs
        .iter()
        .zip(&tshark_runs)
        .map(|(r, t)| t.0 / r.0)
        .collect();
    let ratio = median_by(&mut ratios, |r| *r);
    let (r_wall, r_cpu, r_rss) = median_by(&mut remora_runs, |r| r.0);
    let (t_wall, t_cpu, t_rss) = median_by(&mut tshark_runs, |r| r.0);
    let summary = fs::read_to_string(out_root.join("remora-summary.txt"))?;
    let frames: f64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let r_calls: f64 = summary
        .split(" calls ")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);

    let t_rows = fs::read_to_string(&tshark_out)?.lines().count() as f64;

    let mut t = String::new();
    let _ = writeln!(
        t,
        "capture: {frames:.0} packets, {:.0} MB",
        size as f64 / 1e6
    );
    let _ = writeln!(
        t,
        "| tool | wall s | packets/s | transactions | transactions/s | CPU s | peak RSS |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        t,
        "| remora dissect | {r_wall:.2} | {:.0} | {r_calls:.0} calls | {:.0} | {r_cpu:.2} | {:.0} MiB |",
        frames / r_wall,
        r_calls / r_wall,
        r_rss as f64 / 1048576.0
    );
    let _ = writeln!(
        t,
        "| tshark -Y (http, http2, dns) -T fields | {t_wall:.2} | {:.0} | {t_rows:.0} messages | {:.0} | {t_cpu:.2} | {:.0} MiB |",
        frames / t_wall,
        t_rows / t_wall,
        t_rss as f64 / 1048576.0
    );
    let _ = writeln!(
        t,
        "\nremora's throughput is {ratio:.1}× tshark's (packets/s, same capture, both pinned to \
         one core; median of {} rounds, each running both tools)",
        rounds
    );
    let _ = writeln!(t, "\nremora summary: {}", summary.trim());
    println!("{t}");
    fs::write(out_root.join("dissect.md"), &t)?;
    Ok(())
}
