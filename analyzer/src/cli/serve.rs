//! `remora serve`: the analyzer alone (no recorder), for a cluster: its snapshots pull every
//! node's slices from the agents' node APIs (`--agents`, or the DaemonSet's pods found with
//! `--agent-selector`), it watches Kubernetes for workload names, and serves the HTTP API and
//! MCP.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use super::{
    Redaction,
    up::{KubernetesMode, workload_source},
};
use crate::{api, mcp, services::snapshots::remote::RemoteAgents};

/// Where the other nodes' agents are.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentsArgs {
    /// Node APIs of agents on other nodes, comma separated (`http://10.0.0.7:8897,...`); a
    /// snapshot pulls their slices of its window.
    #[arg(long, value_delimiter = ',', env = "REMORA_AGENTS")]
    pub agents: Vec<String>,
    /// Find the agents in the cluster: `NAMESPACE/LABEL_SELECTOR` of the DaemonSet's pods
    /// (e.g. `remora/app.kubernetes.io/name=remora-agent`), refreshed every 15 s.
    #[arg(long, env = "REMORA_AGENT_SELECTOR")]
    pub agent_selector: Option<String>,
    /// The agents' node API port (with `--agent-selector`).
    #[arg(long, default_value_t = 8897)]
    pub agent_port: u16,
}

impl AgentsArgs {
    /// Makes the analyzer's snapshots pull from these agents (and keeps discovering them).
    pub fn attach(&self, analyzer: &Arc<api::AnalyzerState>, kube: Option<kube::Client>) {
        if self.agents.is_empty() && self.agent_selector.is_none() {
            return;
        }
        let agents = Arc::new(RemoteAgents::new(
            self.agents.clone(),
            analyzer.token.clone(),
        ));
        analyzer.store.set_remote_agents(agents.clone());
        if !self.agents.is_empty() {
            tracing::info!("agents: {}", self.agents.join(", "));
        }
        let Some(selector) = self.agent_selector.clone() else {
            return;
        };
        let Some(client) = kube else {
            tracing::warn!(
                "--agent-selector {selector}: no Kubernetes API to list the agents with; give --agents URL,... instead"
            );
            return;
        };
        let port = self.agent_port;
        let fixed = self.agents.clone();
        tokio::spawn(async move {
            let (namespace, labels) = selector.split_once('/').unwrap_or(("remora", &selector));
            let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
                kube::Api::namespaced(client, namespace);
            let params = kube::api::ListParams::default().labels(labels);
            let mut last = Vec::new();
            loop {
                match pods.list(&params).await {
                    Ok(list) => {
                        let mut urls: Vec<String> = list
                            .items
                            .iter()
                            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                            .map(|ip| format!("http://{ip}:{port}"))
                            .chain(fixed.iter().cloned())
                            .collect();
                        urls.sort();
                        urls.dedup();
                        if urls != last {
                            tracing::info!(
                                agents = urls.len(),
                                "agents found: {}",
                                urls.join(", ")
                            );
                            agents.set_urls(urls.clone());
                            last = urls;
                        }
                    }
                    Err(e) => tracing::warn!(
                        "listing the agents ({namespace}/{labels}): {e}; grant list on pods in {namespace}"
                    ),
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        });
    }
}

/// `remora serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Data directory: snapshots, dissections, the workload history.
    #[arg(long, default_value = "./remora-data", env = "REMORA_DATA_DIR")]
    data_dir: PathBuf,
    /// API and MCP address.
    #[arg(long, default_value = "127.0.0.1:8898", env = "REMORA_LISTEN")]
    listen: std::net::SocketAddr,
    /// Bearer token file, shared with the agents [default: <data-dir>/token, made on first
    /// start].
    #[arg(long, env = "REMORA_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The agents.
    #[command(flatten)]
    agents: AgentsArgs,
    /// A static workloads file instead of the Kubernetes API (see `remora up --help`).
    #[arg(long)]
    workloads: Option<PathBuf>,
    /// Whether to watch a Kubernetes API server for workload names.
    #[arg(long, value_enum, env = "REMORA_KUBERNETES", default_value_t = KubernetesMode::Auto)]
    kubernetes: KubernetesMode,
    /// A kubeconfig to use instead of looking for one.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// What MCP results mask.
    #[command(flatten)]
    redaction: Redaction,
    /// Resident memory one dissection job may use, MiB.
    #[arg(long, env = "REMORA_JOB_MEMORY_MB", default_value_t = 2048)]
    job_memory_mb: u64,
    /// Memory all KFL queries may hold at once, MiB.
    #[arg(long, env = "REMORA_QUERY_MEMORY_MB", default_value_t = 2048)]
    query_memory_mb: usize,
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let redactor = args.redaction.redactor()?;
    remora_agent::store::prepare_dir(&args.data_dir)
        .with_context(|| format!("preparing {}", args.data_dir.display()))?;
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("token"));
    let token = remora_agent::auth::load_or_create_token(&token_file)
        .with_context(|| format!("reading {}", token_file.display()))?;
    let (workloads, kube) = workload_source(
        args.workloads.as_deref(),
        args.kubernetes,
        args.kubeconfig.clone(),
        &args.data_dir,
    )
    .await?;
    crate::services::query::set_memory_limit_mb(args.query_memory_mb);
    let analyzer = api::AnalyzerState::open(&args.data_dir, token, workloads, 1)
        .context("opening the analyzer's store")?;
    analyzer
        .jobs
        .run_in_processes(super::job_worker::this_worker(
            args.job_memory_mb.max(16) << 20,
        )?);
    args.agents.attach(&analyzer, kube);
    let api_routes = api::router(analyzer.clone());
    let mcp_routes = mcp::service(api_routes.clone(), analyzer.token.clone(), redactor);
    let routes = api::with_auth(api_routes.merge(mcp_routes), analyzer);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (is another analyzer running?)",
                args.listen
            )
        })?;
    eprintln!(
        "remora serve: API on http://{} (bearer token in {}); MCP at /mcp",
        args.listen,
        token_file.display()
    );
    axum::serve(listener, routes)
        .with_graceful_shutdown(remora_agent::shutdown_signal())
        .await
        .context("remora serve failed")?;
    eprintln!("remora serve: stopped");
    Ok(())
}
