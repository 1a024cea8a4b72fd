//! `bench-cluster` (run by `cargo xtask bench cluster`), two figures of issue 18:
//!
//! - `pull`: a snapshot of three nodes, each holding `--gib` GiB of packet slices, built by
//!   `remora serve` pulling every node's slices over the node API (three `remora-agent`s in
//!   their own network namespaces, a bridge between them), against `cp -r` of the same files
//!   on the same machine. Fresh slices for every round (random payloads, so nothing
//!   compresses); the typical (median) figure and the spread over `--runs` rounds.
//! - `history`: the analyzer's resident memory with the Kubernetes watchers following
//!   `--pods` pods (real-shaped objects from the fake API server), then the same number again
//!   after churn (every pod replaced by one with another name, half of them reusing an
//!   address), against the same analyzer without Kubernetes.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Parser;
use remora_analyzer::services::snapshots::capture_to_slices;
use remora_bpf_tests::{
    fake_kube::{self, FakeKube},
    netns::{Fabric, HUB_ADDR, NetNs, node_ip},
    proc::AgentProc,
};
use serde_json::json;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Cluster figures.
#[derive(Parser, Debug)]
#[command(name = "bench-cluster")]
struct Args {
    /// `pull`, `history` or `all`.
    #[arg(default_value = "all")]
    what: String,
    /// GiB of slices per node.
    #[arg(long, default_value_t = 1.0)]
    gib: f64,
    /// Rounds of each measurement.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Pods the history follows.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Scratch directory; emptied first.
    #[arg(long, default_value = "bench-out/cluster")]
    dir: PathBuf,
}

const NODES: usize = 3;
const AGENT_PORT: u16 = 18997;
const HUB_PORT: u16 = 18998;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remora_bpf_tests::require_root();
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    if matches!(args.what.as_str(), "pull" | "all") {
        pull(&args)?;
    }
    if matches!(args.what.as_str(), "history" | "all") {
        history(&args)?;
    }
    Ok(())
}

/// xorshift64*: payload bytes nobody can compress.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `bytes` of UDP packets with random payloads as recorder slices of `node` under `data`.
fn make_slices(
    data: &Path,
    node: &str,
    bytes: u64,
    seed: u64,
    start_ns: i64,
) -> anyhow::Result<u64> {
    let dir = data.join("capture").join(node).join("packets");
    std::fs::create_dir_all(&dir)?;
    let (reader, mut writer) = std::io::pipe()?;
    let producer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut rng = Rng(seed | 1);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut writer);
        // pcap, LINKTYPE_RAW (101): IP packets without a link header.
        out.write_all(&[
            0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 101, 0,
            0, 0,
        ])?;
        let mut written = 0u64;
        let mut ts = start_ns;
        let mut packet = vec![0u8; 28 + 1400];
        while written < bytes {
            let len = packet.len() as u16;
            packet[..20].copy_from_slice(&[
                0x45,
                0,
                (len >> 8) as u8,
                len as u8,
                0,
                0,
                0x40,
                0,
                64,
                17,
                0,
                0,
                198,
                18,
                70,
                1,
                198,
                18,
                70,
                2,
            ]);
            packet[20..28].copy_from_slice(&[
                0x9c,
                0x40,
                0x1f,
                0x90,
                ((len - 20) >> 8) as u8,
                (len - 20) as u8,
                0,
                0,
            ]);
            for chunk in packet[28..].chunks_mut(8) {
                let r = rng.next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            let (s, us) = (ts / 1_000_000_000, (ts % 1_000_000_000) / 1000);
            out.write_all(&(s as u32).to_le_bytes())?;
            out.write_all(&(us as u32).to_le_bytes())?;
            out.write_all(&u32::from(len).to_le_bytes())?;
            out.write_all(&u32::from(len).to_le_bytes())?;
            out.write_all(&packet)?;
            written += u64::from(len);
            ts += 20_000;
        }
        out.flush()
    });
    let imported = capture_to_slices(reader, &dir, node, 65_535)?;
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("packet generator panicked"))??;
    Ok(imported.packets)
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn pull(args: &Args) -> anyhow::Result<()> {
    let fabric = Fabric::new("bc", NODES);
    let hub_data = args.dir.join("hub");
    let agents_arg = (0..NODES)
        .map(|i| format!("http://{}:{AGENT_PORT}", node_ip(i)))
        .collect::<Vec<_>>()
        .join(",");
    let hub = AgentProc::start_serve_on(
        &fabric.hub,
        &hub_data,
        HUB_ADDR,
        HUB_PORT,
        &["--agents", &agents_arg, "--kubernetes", "off"],
    );
    let token = hub_data.join("token").to_string_lossy().into_owned();
    let bytes = (args.gib * f64::from(1u32 << 30)) as u64;
    let (mut pulls, mut copies, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.runs {
        // Fresh slices on every node for every round.
        let start_ns = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as i64)
            - 3_600_000_000_000;
        let mut agents = Vec::new();
        let mut total = 0;
        for (i, node) in fabric.nodes.iter().enumerate() {
            let data = args
                .dir
                .join(format!("round{round}"))
                .join(format!("node-{i}"));
            let name = format!("node-{i}");
            make_slices(
                &data,
                &name,
                bytes,
                (round * NODES + i) as u64 + 7,
                start_ns,
            )?;
            total += remora_bench::dir_bytes(&data.join("capture"));
            agents.push(agent(node, &data, &name, i, &token)?);
        }
        sizes.push(total as f64);
        let end_ms = start_ns / 1_000_000 + 3_600_000;
        let started = Instant::now();
        let name = format!("bench{round}");
        let (status, v) = hub.api_post(
            "/mcp/snapshots",
            &json!({"name": name, "start": start_ns / 1_000_000, "end": end_ms}),
        );
        if status >= 300 {
            bail!("snapshot refused: {v}");
        }
        let snap = hub.wait_for(&format!("/mcp/snapshots/{name}"), |v| {
            v["status"] != "in_progress"
        });
        let took = started.elapsed().as_secs_f64();
        if snap["status"] != "completed" || snap["bytes"].as_u64() != Some(total) {
            bail!("snapshot {name} incomplete ({total} bytes expected): {snap}");
        }
        pulls.push(took);
        // The same files with cp, into the same filesystem.
        let target = args.dir.join(format!("cp{round}"));
        let started = Instant::now();
        let mut cp = std::process::Command::new("cp");
        cp.arg("-r");
        for i in 0..NODES {
            cp.arg(
                args.dir
                    .join(format!("round{round}"))
                    .join(format!("node-{i}"))
                    .join("capture"),
            );
        }
        std::fs::create_dir_all(&target)?;
        let ok = cp.arg(&target).status()?.success();
        let synced = std::process::Command::new("sync").status()?.success();
        copies.push(started.elapsed().as_secs_f64());
        if !ok || !synced {
            bail!("cp failed");
        }
        eprintln!(
            "round {round}: {:.2} GiB; snapshot over the node API {took:.2} s; cp -r + sync {:.2} s",
            total as f64 / f64::from(1u32 << 30),
            copies[round]
        );
        for a in agents {
            a.stop();
        }
        hub.request(
            "DELETE",
            &format!("/mcp/snapshots/{name}"),
            None,
            Some(std::fs::read_to_string(&token)?.trim()),
        );
        let _ = std::fs::remove_dir_all(&target);
        let _ = std::fs::remove_dir_all(args.dir.join(format!("round{round}")));
    }
    let (p, pmin, pmax) = median_spread(pulls.clone());
    let (c, cmin, cmax) = median_spread(copies.clone());
    let gib = sizes[0] / f64::from(1u32 << 30);
    println!(
        "snapshot of {NODES} nodes × {:.2} GiB ({gib:.2} GiB) over the node API: median {p:.2} s (min {pmin:.2}, max {pmax:.2}), {:.0} MiB/s",
        args.gib,
        sizes[0] / p / 1048576.0
    );
    println!(
        "cp -r of the same files + sync: median {c:.2} s (min {cmin:.2}, max {cmax:.2}), {:.0} MiB/s",
        sizes[0] / c / 1048576.0
    );
    println!(
        "ratio snapshot / cp: {:.2} (median of rounds: {:?})",
        p / c,
        pulls
            .iter()
            .zip(&copies)
            .map(|(a, b)| format!("{:.2}", a / b))
            .collect::<Vec<_>>()
    );
    hub.stop();
    Ok(())
}

fn agent(
    node: &NetNs,
    data: &Path,
    name: &str,
    i: usize,
    token: &str,
) -> anyhow::Result<AgentProc> {
    Ok(AgentProc::start_agent_on(
        node,
        data,
        &node_ip(i),
        AGENT_PORT,
        &[
            "--node",
            name,
            "--interfaces",
            "lo",
            "--token-file",
            token,
            "--retention-bytes",
            "64GiB",
            "--ring-bytes",
            "1MiB",
        ],
    ))
}

fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn history(args: &Args) -> anyhow::Result<()> {
    let ns = NetNs::new("bch");
    let kube = FakeKube::start_in(&ns);
    let kubeconfig = args.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, kube.kubeconfig())?;
    let ip = |n: usize| format!("198.18.{}.{}", 100 + n / 250, n % 250 + 1);
    for n in 0..args.pods {
        kube.apply(
            "pods",
            fake_kube::pod(
                &format!("app-{n}-7d9f8b6c5d-x2x4q"),
                &format!("ns-{}", n % 50),
                &ip(n),
                &format!("node-{}", n % 20),
                &[
                    ("app", &format!("app-{}", n % 500)),
                    ("pod-template-hash", "7d9f8b6c5d"),
                ],
            ),
        );
    }
    for n in 0..args.pods / 10 {
        kube.apply(
            "services",
            fake_kube::service(
                &format!("svc-{n}"),
                &format!("ns-{}", n % 50),
                &format!("198.19.{}.{}", n / 250, n % 250 + 1),
                &[("app", "x")],
            ),
        );
    }
    for n in 0..20 {
        kube.apply(
            "nodes",
            fake_kube::node(&format!("node-{n}"), &format!("198.18.90.{}", n + 1)),
        );
    }
    let mut figures = Vec::new();
    for (label, kube_args) in [
        ("without Kubernetes", vec!["--kubernetes", "off"]),
        (
            "following the cluster",
            vec!["--kubeconfig", kubeconfig.to_str().unwrap_or("")],
        ),
    ] {
        let data = args.dir.join(format!("history-{}", figures.len()));
        let extra = kube_args.clone();
        let analyzer = AgentProc::start_serve_on(&ns, &data, "127.0.0.1", 18999, &extra);
        let pid = analyzer.pid().unwrap_or(0);
        if label == "following the cluster" {
            let listed = wait(Duration::from_secs(120), || {
                analyzer.api_json("/mcp/coverage")["workloads_source"]["watches"][0]["objects"]
                    .as_u64()
                    == Some(args.pods as u64)
            });
            if !listed {
                bail!("the analyzer never listed {} pods", args.pods);
            }
            std::thread::sleep(Duration::from_secs(3));
            let (rss, _) = rss_mib(pid);
            figures.push(format!(
                "{label}, {} pods listed: RSS {rss:.0} MiB",
                args.pods
            ));
            // Churn: every pod replaced; half of the new ones take an old address.
            let started = Instant::now();
            for n in 0..args.pods {
                kube.delete(
                    "pods",
                    &format!("ns-{}", n % 50),
                    &format!("app-{n}-7d9f8b6c5d-x2x4q"),
                );
                let address = if n % 2 == 0 { ip(n) } else { ip(n + args.pods) };
                kube.apply(
                    "pods",
                    fake_kube::pod(
                        &format!("app-{n}-5c4b3a2f1e-k9k8j"),
                        &format!("ns-{}", n % 50),
                        &address,
                        &format!("node-{}", n % 20),
                        &[("app", &format!("app-{}", n % 500))],
                    ),
                );
            }
            let followed = wait(Duration::from_secs(180), || {
                analyzer.api_json(&format!("/mcp/resolve/ips?ip={}", ip(0)))["ips"][0]["records"]
                    .as_array()
                    .map(Vec::len)
                    == Some(2)
                    && analyzer.api_json(&format!(
                        "/mcp/resolve/ips?ip={}",
                        ip(args.pods - 1 + args.pods)
                    ))["ips"][0]["records"]
                        .as_array()
                        .map(Vec::len)
                        == Some(1)
            });
            if !followed {
                bail!("the analyzer never caught up with the churn");
            }
            std::thread::sleep(Duration::from_secs(4));
            let (rss, hwm) = rss_mib(pid);
            let file = data.join("workloads/history.parquet");
            figures.push(format!(
                "{label}, after churn ({} intervals, caught up in {:.1} s): RSS {rss:.0} MiB, peak {hwm:.0} MiB; history file {:.1} MiB",
                args.pods * 2 + args.pods / 10 + 20,
                started.elapsed().as_secs_f64(),
                std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0
            ));
        } else {
            std::thread::sleep(Duration::from_secs(2));
            let (rss, _) = rss_mib(pid);
            figures.push(format!("{label}: RSS {rss:.0} MiB"));
        }
        analyzer.stop();
    }
    for f in figures {
        println!("history: {f}");
    }
    Ok(())
}

fn wait(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}
