//! Remora's task runner: `cargo xtask setup | up | test | bench | fuzz | soak | docs`.
//!
//! Orchestration only: it installs what a fresh machine lacks, builds, and runs the real
//! programs and test suites. Every step prints what it does; every failure says what to do.

mod setup;
mod sh;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::sh::{cargo, root_dir, step};

/// Remora's task runner.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent; a second run takes seconds).
    Setup,
    /// Build and run Remora on this machine: record every interface, serve the API on
    /// 127.0.0.1:8898 (extra arguments go to `remora up`).
    Up {
        /// Arguments for `remora up`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the whole suite: formatting, clippy, unit tests and the privileged BPF tests.
    Test {
        /// Only run tests whose name contains this.
        filter: Option<String>,
    },
    /// Fuzz the dissectors with cargo fuzz (nightly): every target, or the named ones.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Targets (engine, http1, http2, dns_tls, capture, kfl); all when empty.
        targets: Vec<String>,
    },
    /// Soak: steady traffic with snapshots, dissections and queries in a loop for N minutes,
    /// then kill -9 crash cycles; reports lost data, drops, RSS and FDs over time.
    Soak {
        /// Minutes of steady traffic.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        /// kill -9 cycles after the steady phase.
        #[arg(long, default_value_t = 100)]
        crash_cycles: u32,
    },
    /// Regenerate generated docs (docs/kfl.md from the KFL field catalog).
    Docs,
    /// Benchmarks against the tools a user would otherwise use (release build).
    Bench {
        /// Which benchmark: `capture`, `dissect`, `query`, `jobs` or `pcap`.
        which: String,
        /// Arguments for the benchmark binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::Up { args } => up(&args),
        Task::Test { filter } => test(filter.as_deref()),
        Task::Bench { which, args } => bench(&which, &args),
        Task::Fuzz { seconds, targets } => fuzz(seconds, &targets),
        Task::Soak {
            minutes,
            crash_cycles,
        } => {
            setup::run()?;
            sh::require_root("the soak loads eBPF programs and makes network namespaces")?;
            // Stability over time, not speed: the dev build, like the suite (no 20-minute
            // release build before a soak).
            step("building remora and the soak (dev profile)");
            cargo(&[
                "build",
                "-p",
                "remora-analyzer",
                "-p",
                "remora-bench",
                "--bin",
                "remora",
                "--bin",
                "soak",
            ])?;
            let path = root_dir().join("target/debug/soak");
            let status = Command::new(&path)
                .args(["--minutes", &minutes.to_string()])
                .args(["--crash-cycles", &crash_cycles.to_string()])
                .current_dir(root_dir())
                .status()
                .with_context(|| format!("running {}", path.display()))?;
            if !status.success() {
                bail!("the soak failed ({status}); the report is in bench-out/soak/report.txt");
            }
            Ok(())
        }
        Task::Docs => {
            step("writing docs/kfl.md from the KFL catalog");
            cargo(&[
                "run",
                "-q",
                "-p",
                "remora-kfl",
                "--bin",
                "kfl-docs",
                "--",
                "docs/kfl.md",
            ])
        }
    }
}

fn up(args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    sh::require_root("cargo xtask up records with eBPF")?;
    step("building remora (dev profile)");
    cargo(&["build", "-p", "remora-analyzer", "--bin", "remora"])?;
    let bin = root_dir().join("target/debug/remora");
    step(&format!("starting {} up", bin.display()));
    let status = Command::new(&bin)
        .arg("up")
        .args(args)
        .current_dir(root_dir())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("remora up exited with {status}");
    }
    Ok(())
}

fn test(filter: Option<&str>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    setup::run()?;
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])
        .context("formatting differs: run `cargo fmt --all`")?;
    step("cargo clippy --all-targets -D warnings");
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"])?;
    step("cargo +nightly clippy on the eBPF programs (bpfel-unknown-none)");
    sh::run(
        sh::tool_command("cargo")
            .args([
                "+nightly",
                "clippy",
                "-p",
                "remora-agent-ebpf",
                "--target",
                "bpfel-unknown-none",
            ])
            .args(["-Z", "build-std=core", "--target-dir", "target/ebpf-clippy"])
            .args(["--", "-D", "warnings"]),
    )?;
    step("building the agent and the test tools");
    cargo(&[
        "build",
        "-p",
        "remora-agent",
        "-p",
        "remora-bpf-tests",
        "-p",
        "remora-analyzer",
        "--bins",
    ])?;
    let mut unit = vec!["test", "--workspace", "--exclude", "remora-bpf-tests"];
    let mut bpf = vec!["test", "-p", "remora-bpf-tests"];
    bpf.extend(["--", "--test-threads=1"]);
    if let Some(f) = filter {
        unit.extend(["--", f]);
        bpf.push(f);
    }
    let mut tally = sh::Tally::default();
    step("unit tests");
    let result = sh::cargo_test(&unit, &mut tally).and_then(|()| {
        sh::require_root(
            "the BPF end-to-end tests load eBPF programs and create network namespaces",
        )?;
        step("privileged BPF end-to-end tests (bpf-tests, one at a time)");
        sh::cargo_test(&bpf, &mut tally)
    });
    step(&format!(
        "finished in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    // The closing line CI reads: the totals over every test binary.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    result
}

/// Builds the release binaries of `packages` and the benchmarks (`remora-bench`), and runs the
/// benchmark `bin`.
fn run_bench(packages: &[&str], bin: &str, args: &[String]) -> anyhow::Result<()> {
    step("building release binaries (first time: several minutes)");
    let mut build = vec!["build", "--release", "-p", "remora-bench"];
    for p in packages {
        build.extend(["-p", p]);
    }
    build.push("--bins");
    cargo(&build)?;
    run_release_bin(bin, args)
}

/// Runs `target/release/<bin>` from the workspace root.
fn run_release_bin(bin: &str, args: &[String]) -> anyhow::Result<()> {
    let path = root_dir().join("target/release").join(bin);
    let status = Command::new(&path)
        .args(args)
        .current_dir(root_dir())
        .status()
        .with_context(|| format!("running {}", path.display()))?;
    if !status.success() {
        bail!("{bin} failed ({status})");
    }
    Ok(())
}

/// The fuzz targets in fuzz/fuzz_targets.
const FUZZ_TARGETS: [&str; 7] = [
    "engine", "http1", "http2", "dns_tls", "capture", "kfl", "recorder",
];

fn fuzz(seconds: u64, targets: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    if sh::output(Command::new("cargo").args(["fuzz", "--version"])).is_none() {
        step("installing cargo-fuzz");
        sh::run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let chosen: Vec<&str> = if targets.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in chosen {
        if target == "kfl" {
            seed_kfl_corpus()?;
        }
        step(&format!("fuzzing {target} for {seconds} s"));
        // HTTP/2 inputs up to 1 MiB: big enough for header blocks at their bounds and for
        // amplification by repeated table references; memory must stay far below the limit.
        // Without -len_control=0, libFuzzer grows lengths slowly: 30 minutes reached 7 KB.
        let sizes: &[&str] = if target == "http2" {
            &["-max_len=1048576", "-len_control=0", "-rss_limit_mb=1024"]
        } else {
            &["-rss_limit_mb=2048"]
        };
        sh::run(
            sh::tool_command("cargo")
                .current_dir(root_dir().join("fuzz"))
                .args(["+nightly", "fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .args(sizes)
                .arg("-print_final_stats=1"),
        )
        .with_context(|| {
            format!("fuzz target {target} failed: the crash input is in fuzz/artifacts/{target}/")
        })?;
    }
    Ok(())
}

/// Starts the KFL fuzzer from the filters of the KFL test cases (the corpus is not checked in).
fn seed_kfl_corpus() -> anyhow::Result<()> {
    let cases = root_dir().join("bench/tests/kfl_cases.txt");
    let text =
        std::fs::read_to_string(&cases).with_context(|| format!("reading {}", cases.display()))?;
    let dir = root_dir().join("fuzz/corpus/kfl");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (i, line) in text
        .lines()
        .filter_map(|l| l.strip_prefix("kfl:"))
        .enumerate()
    {
        std::fs::write(dir.join(format!("case-{i:03}")), line.trim())
            .with_context(|| format!("writing seeds into {}", dir.display()))?;
    }
    Ok(())
}

fn bench(which: &str, args: &[String]) -> anyhow::Result<()> {
    setup::run()?;
    match which {
        "capture" => {
            sh::require_root("the capture benchmark loads eBPF programs")?;
            // The recorder itself, and udp-blast to send traffic.
            run_bench(&["remora-agent", "remora-bpf-tests"], "bench-capture", args)
        }
        "dissect" => {
            sh::require_root("the dissection benchmark generates traffic in network namespaces")?;
            run_bench(&["remora-analyzer"], "bench-dissect", args)
        }
        "query" => run_bench(&[], "bench-query", args),
        "jobs" => {
            if !root_dir().join("bench-out/dissect.pcap").is_file() {
                bail!(
                    "bench-out/dissect.pcap is missing: run `cargo xtask bench dissect` first \
                     (it records the capture this benchmark replays as slices)"
                );
            }
            run_bench(&[], "bench-jobs", args)
        }
        "pcap" => run_bench(&[], "bench-pcap", args),
        "cluster" => {
            sh::require_root("the cluster benchmark runs agents in network namespaces")?;
            run_bench(&["remora-agent", "remora-analyzer"], "bench-cluster", args)
        }
        "tls" => {
            sh::require_root("the TLS benchmark attaches uprobes")?;
            run_bench(&["remora-agent"], "bench-tls", args)
        }
        other => {
            bail!(
                "unknown benchmark `{other}`; available: capture, dissect, query, jobs, pcap, cluster, tls"
            )
        }
    }
}
