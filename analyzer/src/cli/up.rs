//! `remora up`: everything on one machine: the recorder of every interface and the analyzer
//! (snapshots, dissections, KFL queries, MCP), both served on the embedded default address.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use remora_agent::{AgentConfig, Started, flags::RecordArgs};

use super::Redaction;
use crate::{
    api, mcp,
    services::{
        kubernetes,
        workloads::{NoWorkloads, StaticWorkloads, WorkloadSource},
    },
};

/// `remora up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// The recorder's flags.
    #[command(flatten)]
    record: RecordArgs,
    /// Which pod/service/namespace/node each address is (JSON array of {ip, pod, namespace,
    /// service, node}); without Kubernetes this is how `src.pod`/`dst.svc` filters get names.
    /// Takes precedence over the Kubernetes API.
    #[arg(long)]
    workloads: Option<PathBuf>,
    /// Whether to watch a Kubernetes API server for workload names: `auto` uses the pod's
    /// service account in a cluster, else `KUBECONFIG` or `~/.kube/config` when present.
    #[arg(long, value_enum, env = "REMORA_KUBERNETES", default_value_t = KubernetesMode::Auto)]
    kubernetes: KubernetesMode,
    /// A kubeconfig to use instead of looking for one (in-cluster, `KUBECONFIG`,
    /// `~/.kube/config`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Other nodes' agents whose slices snapshots pull.
    #[command(flatten)]
    agents: super::serve::AgentsArgs,
    /// What MCP results mask.
    #[command(flatten)]
    redaction: Redaction,
    /// Resident memory one dissection job may use, MiB; past it the job's process is
    /// stopped and the job fails with the reason (recording is never affected).
    #[arg(long, env = "REMORA_JOB_MEMORY_MB", default_value_t = 2048)]
    job_memory_mb: u64,
    /// Memory all KFL queries (calls, stats, flows, insights) may hold at once, MiB; a query
    /// that needs more fails with 503 and Retry-After.
    #[arg(long, env = "REMORA_QUERY_MEMORY_MB", default_value_t = 2048)]
    query_memory_mb: usize,
}

/// `--kubernetes`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubernetesMode {
    /// Watch the cluster when one is found.
    Auto,
    /// Never talk to a Kubernetes API server.
    Off,
}

/// Where workload names come from, logged once: `--workloads FILE`, else the Kubernetes API
/// (in-cluster, else kubeconfig), else nothing. A cluster that cannot be reached does not stop
/// recording: its watchers retry and `/mcp/coverage` says what fails.
pub async fn workload_source(
    file: Option<&std::path::Path>,
    mode: KubernetesMode,
    kubeconfig: Option<PathBuf>,
    data: &std::path::Path,
) -> anyhow::Result<(Arc<dyn WorkloadSource>, Option<kube::Client>)> {
    if let Some(path) = file {
        let fixed = StaticWorkloads::load(path)?;
        tracing::info!(
            addresses = fixed.history.addresses(),
            "workloads: from {} (--workloads); Kubernetes is not watched",
            path.display()
        );
        return Ok((Arc::new(fixed), None));
    }
    if mode == KubernetesMode::Off {
        tracing::info!("workloads: none (--kubernetes off); addresses are not named");
        return Ok((Arc::new(NoWorkloads), None));
    }
    let found = match kubeconfig {
        Some(path) => kubernetes::Found::Kubeconfig(path),
        None => kubernetes::detect(),
    };
    if found == kubernetes::Found::Nothing {
        tracing::info!(
            "workloads: no Kubernetes (no in-cluster service account, KUBECONFIG or ~/.kube/config) and no --workloads FILE; addresses are not named"
        );
        return Ok((Arc::new(NoWorkloads), None));
    }
    match kubernetes::client(&found).await {
        Ok((client, detail)) => {
            tracing::info!("workloads: watching Kubernetes ({detail})");
            let watched = kubernetes::Watched::start(client.clone(), data, detail);
            Ok((watched, Some(client)))
        }
        Err(e) => {
            tracing::warn!(
                "workloads: Kubernetes configuration unusable ({e:#}); recording without names. Fix the kubeconfig, or pass --kubernetes off or --workloads FILE"
            );
            Ok((Arc::new(NoWorkloads), None))
        }
    }
}

/// Records and serves until Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let redactor = args.redaction.redactor()?;
    let listen_given = std::env::args().any(|a| a == "--listen" || a.starts_with("--listen="));
    let config = args
        .record
        .to_config()
        .map_err(anyhow::Error::msg)
        .context("invalid flags")?;
    let config = embedded(config, listen_given);
    remora_agent::store::prepare_dir(&config.data_dir)
        .with_context(|| format!("preparing {}", config.data_dir.display()))?;
    let token = remora_agent::auth::load_or_create_token(&config.token_file)
        .with_context(|| format!("reading {}", config.token_file.display()))?;
    let (workloads, kube) = workload_source(
        args.workloads.as_deref(),
        args.kubernetes,
        args.kubeconfig.clone(),
        &config.data_dir,
    )
    .await?;
    // Before the analyzer opens: its SQL budget and the KFL pool take their size from it.
    crate::services::query::set_memory_limit_mb(args.query_memory_mb);
    let analyzer = api::AnalyzerState::open(&config.data_dir, token, workloads, 1)
        .context("opening the analyzer's store")?;
    analyzer.store.set_min_free(config.min_free_bytes);
    let _ = analyzer.local_node.set(config.node.clone());
    analyzer.store.set_local_node(&config.node);
    args.agents.attach(&analyzer, kube);
    analyzer
        .jobs
        .run_in_processes(super::job_worker::this_worker(
            args.job_memory_mb.max(16) << 20,
        )?);
    let api_routes = api::router(analyzer.clone());
    let mcp_routes = mcp::service(api_routes.clone(), analyzer.token.clone(), redactor);
    let routes = api_routes.merge(api::with_auth(mcp_routes, analyzer));
    let summary =
        remora_agent::run_with_routes(config, routes, remora_agent::shutdown_signal(), |started| {
            eprintln!("{}", banner(started))
        })
        .await
        .context("remora up failed")?;
    eprintln!(
        "remora up: stopped; {} rows in {} slices, {} packets dropped",
        summary.rows_written, summary.slices_written, summary.dropped_packets
    );
    Ok(())
}

/// The embedded default API address.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8898);

/// Applies the embedded defaults to a recorder configuration: API on [`DEFAULT_ADDR`] unless the
/// caller chose another address.
pub fn embedded(mut config: AgentConfig, listen_given: bool) -> AgentConfig {
    if !listen_given {
        config.listen = Some(DEFAULT_ADDR);
    }
    config
}

/// What `remora up` prints once it records: where the data goes and a first request to try.
pub fn banner(started: &Started) -> String {
    let mut text = format!(
        "remora up: recording {} into {}\n",
        started.interfaces.join(", "),
        started.packets_dir.display()
    );
    if let Some(api) = started.api {
        let token = started.token_file.display();
        text.push_str(&format!(
            "remora up: API on http://{api} (bearer token in {token})\n\
             try:  curl -s -H \"Authorization: Bearer $(cat {token})\" http://{api}/mcp/data-boundaries\n\
             remora up: MCP for AI assistants at http://{api}/mcp (same token); for stdio clients \
             run `remora mcp --print-config`\n"
        ));
    }
    text.push_str("remora up: stop with Ctrl-C (the open slice is published first)");
    text
}
