//! What `remora up` and `remora serve` share: the analyzer's options (workload names, other
//! nodes' agents, MCP redaction, memory limits) and opening the analyzer with them.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;

use super::Redaction;
use crate::{
    api, mcp,
    services::{
        kubernetes,
        snapshots::remote::RemoteAgents,
        workloads::{NoWorkloads, StaticWorkloads, WorkloadSource},
    },
};

/// The analyzer's options.
#[derive(clap::Args, Debug)]
pub struct AnalyzerArgs {
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
    agents: AgentsArgs,
    /// What MCP results mask.
    #[command(flatten)]
    redaction: Redaction,
    /// Resident memory one dissection job may use, MiB; past it the job's process is
    /// stopped and the job fails with the reason (recording is never affected).
    #[arg(long, env = "REMORA_JOB_MEMORY_MB", default_value_t = 2048)]
    job_memory_mb: u64,
    /// Threads one dissection job runs on [default: every core the process may use, which a
    /// container's CPU limit bounds]; fewer leaves cores to the node's workloads. The rows are
    /// the same with any number.
    #[arg(long, env = "REMORA_JOB_THREADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    job_threads: Option<u16>,
    /// Memory all KFL queries (calls, stats, flows, insights) may hold at once, MiB; a query
    /// that needs more fails with 503 and Retry-After.
    #[arg(long, env = "REMORA_QUERY_MEMORY_MB", default_value_t = 2048)]
    query_memory_mb: usize,
}

impl AnalyzerArgs {
    /// Opens the analyzer of `data` with `token`: workload names (file, Kubernetes or none,
    /// logged once), dissection jobs in worker processes, the agents; returns it and its
    /// routes (API and MCP, the MCP routes behind the token).
    pub async fn open(
        &self,
        data: &std::path::Path,
        token: String,
    ) -> anyhow::Result<(Arc<api::AnalyzerState>, axum::Router)> {
        let redactor = self.redaction.redactor()?;
        let (workloads, kube) = workload_source(
            self.workloads.as_deref(),
            self.kubernetes,
            self.kubeconfig.clone(),
            data,
        )
        .await?;
        // Before the analyzer opens: its SQL budget and the KFL pool take their size from it.
        crate::services::query::set_memory_limit_mb(self.query_memory_mb);
        let analyzer = api::AnalyzerState::open(data, token, workloads, 1)
            .context("opening the analyzer's store")?;
        analyzer
            .jobs
            .run_in_processes(super::job_worker::this_worker(
                self.job_memory_mb.max(16) << 20,
                self.job_threads.map(usize::from),
            )?);
        self.agents.attach(&analyzer, kube);
        let api_routes = api::router(analyzer.clone());
        let mcp_routes = mcp::service(api_routes.clone(), analyzer.token.clone(), redactor);
        let routes = api_routes.merge(api::with_auth(mcp_routes, analyzer.clone()));
        Ok((analyzer, routes))
    }
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
    fn attach(&self, analyzer: &Arc<api::AnalyzerState>, kube: Option<kube::Client>) {
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
