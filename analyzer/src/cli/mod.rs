//! `remora`'s command line: the clap tree and one small function per subcommand.
//!
//! - `remora up` ([`up`]): record this machine and serve the API and MCP,
//! - `remora dissect` ([`dissect`]): a capture file or slices directory into tables, offline,
//! - `remora snapshot|dissection|calls|stats` ([`snapshot`], [`dissection`], [`calls`]): the
//!   API from a shell, through the one HTTP [`client`],
//! - `remora pcap` ([`pcap`]): a snapshot's packets as a pcapng file,
//! - `remora mcp` ([`mcp`]): MCP over stdio.
//!
//! `remora calls|stats --db DIR` on a directory `remora dissect` wrote needs no server
//! ([`offline`]).

mod allocator;
pub mod analyzer;
pub mod calls;
pub mod client;
pub mod dissect;
pub mod dissection;
pub mod flows;
pub mod insights;
pub mod job_worker;
pub mod mcp;
pub mod offline;
pub mod pcap;
pub mod serve;
pub mod snapshot;
pub mod sql;
pub mod up;

use clap::{Parser, Subcommand};

use client::Connection;

/// Remora: an eBPF network recorder an AI assistant can question.
#[derive(Parser, Debug)]
#[command(name = "remora", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter, e.g. info or remora_agent=debug
    #[arg(long, global = true, default_value = "info", env = "REMORA_LOG")]
    pub log: String,
}

/// `remora`'s subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Snapshots on a running analyzer: create, list, get, delete.
    Snapshot {
        /// What to do with snapshots.
        #[command(subcommand)]
        action: snapshot::SnapshotCmd,
        /// The analyzer.
        #[command(flatten)]
        conn: Connection,
    },
    /// Delayed dissections of snapshots: start, status, stop.
    Dissection {
        /// What to do with dissections.
        #[command(subcommand)]
        action: dissection::DissectionCmd,
        /// The analyzer.
        #[command(flatten)]
        conn: Connection,
    },
    /// API calls of a dissection, filtered with KFL (table output).
    Calls(calls::CallsArgs),
    /// Count, error rate and latency percentiles of a dissection's calls, optionally per group.
    Stats(calls::StatsArgs),
    /// TCP connections of a dissection (any protocol) with retransmissions, out-of-order and
    /// lost segments, zero windows, duplicate ACKs, round trips and how they closed; or their
    /// sums per edge, pod, service, node or minute.
    Flows(flows::FlowsArgs),
    /// One of the seed's analyses: retries, churn, resets, correlation, nesting, errors_503,
    /// dependencies, journey, timeline, compare.
    Insights(insights::InsightsArgs),
    /// MCP over stdio for AI assistants: tools calling a running analyzer (`--url`), or a
    /// data directory opened here (`--data-dir`).
    Mcp(mcp::McpArgs),
    /// Dissect a pcap or pcapng file into calls.parquet and conns.parquet.
    Dissect(dissect::DissectArgs),
    /// Export a snapshot's packets as a pcapng file (from a running analyzer).
    Pcap(pcap::PcapArgs),
    /// Read-only SQL over a dissection and its snapshot (calls, conns, packets, sockets, tls, workloads,
    /// kfl('<filter>')), or over a directory `remora dissect` wrote.
    Sql(sql::SqlArgs),
    /// Record this machine and serve the API on 127.0.0.1:8898 (data in ./remora-data).
    Up(Box<up::UpArgs>),
    /// The analyzer alone, for a cluster: snapshots pull every node's slices from the agents
    /// (`--agents` or `--agent-selector`), workload names from Kubernetes; API and MCP.
    Serve(serve::ServeArgs),
    /// Internal: one delayed dissection in its own process, started by the analyzer.
    #[command(hide = true)]
    DissectJob(job_worker::JobWorkerArgs),
}

/// What MCP results mask.
#[derive(clap::Args, Debug, Clone)]
pub struct Redaction {
    /// Let secrets (authorization, cookie, set-cookie, x-api-key, proxy-authorization header
    /// values and --redact-pattern matches) reach MCP clients unmasked.
    #[arg(long)]
    no_redact: bool,
    /// Another header whose value MCP results mask (repeatable).
    #[arg(long = "redact-header")]
    headers: Vec<String>,
    /// A regex (RE2 syntax) whose matches are masked in every text MCP returns (repeatable).
    #[arg(long = "redact-pattern")]
    patterns: Vec<String>,
}

impl Redaction {
    /// The redactor these flags ask for; `None` with `--no-redact`.
    pub fn redactor(&self) -> anyhow::Result<Option<crate::mcp::Redactor>> {
        if self.no_redact {
            return Ok(None);
        }
        crate::mcp::Redactor::new(&self.headers, &self.patterns)
            .map(Some)
            .map_err(anyhow::Error::msg)
    }
}

/// Runs one subcommand.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        // The shell subcommands use a blocking HTTP client: off the async runtime's workers.
        Command::Snapshot { action, conn } => blocking(move || snapshot::run(action, &conn)).await,
        Command::Dissection { action, conn } => {
            blocking(move || dissection::run(action, &conn)).await
        }
        Command::Calls(args) => blocking(move || calls::calls(&args)).await,
        Command::Stats(args) => blocking(move || calls::stats(&args)).await,
        Command::Flows(args) => blocking(move || flows::run(&args)).await,
        Command::Insights(args) => blocking(move || insights::run(&args)).await,
        Command::Mcp(args) => mcp::run(args).await,
        Command::Dissect(args) => dissect::run(&args),
        Command::Pcap(args) => blocking(move || pcap::run(&args)).await,
        Command::Sql(args) => blocking(move || sql::run(&args)).await,
        Command::Up(args) => up::run(*args).await,
        Command::Serve(args) => serve::run(args).await,
        Command::DissectJob(args) => blocking(move || job_worker::run(&args)).await,
    }
}

async fn blocking(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(f).await?
}
