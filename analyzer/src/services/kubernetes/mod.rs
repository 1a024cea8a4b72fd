//! The cluster as the analyzer sees it: kube-rs watchers on Pods, Services, EndpointSlices,
//! Nodes and Namespaces keep the time-versioned IP → workload history
//! ([`WorkloadHistory`]) that snapshots freeze and dissection attributes with.
//!
//! - [`detect`] finds the API server the way `kubectl` and the client libraries do, in the
//!   order the analyzer's two homes need: the pod's service account in a cluster, else
//!   `KUBECONFIG` / `~/.kube/config`, else none.
//! - [`Watched::start`] runs one watcher per resource. A watcher that fails (a cluster that
//!   cannot be reached, RBAC that forbids the watch, a 410 Gone) retries with backoff and says
//!   so in [`Watched::describe`]; recording never waits for it.
//! - After every burst of events, `reconcile` compares the cluster with the history and
//!   begins or ends intervals. The history is written to `<data>/workloads/history.parquet`
//!   (atomically, at most every few seconds) and read back on the next start.

mod reconcile;
mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

pub use reconcile::{Claim, apply, apply_host_pods, desired, host_network_pods};

use crate::services::{
    workload_history::{WorkloadHistory, WorkloadRecord},
    workloads::{SourceStatus, WatchStatus, WorkloadSource},
};

/// How long intervals are kept after they ended: older history describes no data still kept.
pub const HISTORY_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the API server was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST` and the token file).
    InCluster,
    /// A kubeconfig file (`KUBECONFIG`, else `~/.kube/config`).
    Kubeconfig(PathBuf),
    /// Nothing to talk to.
    Nothing,
}

/// The in-cluster service account token.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Finds the API server: the in-cluster service account when running in a pod, else the
/// first of `KUBECONFIG`'s files that exists, else `~/.kube/config`, else nothing.
pub fn detect() -> Found {
    detect_with(
        |k| std::env::var_os(k),
        |p| p.is_file(),
        Path::new(SERVICE_ACCOUNT_TOKEN),
    )
}

fn detect_with(
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
    exists: impl Fn(&Path) -> bool,
    token: &Path,
) -> Found {
    if env("KUBERNETES_SERVICE_HOST").is_some() && exists(token) {
        return Found::InCluster;
    }
    if let Some(list) = env("KUBECONFIG")
        && let Some(path) = std::env::split_paths(&list).find(|p| exists(p))
    {
        return Found::Kubeconfig(path);
    }
    if let Some(home) = env("HOME") {
        let path = PathBuf::from(home).join(".kube").join("config");
        if exists(&path) {
            return Found::Kubeconfig(path);
        }
    }
    Found::Nothing
}

/// A client for what [`detect`] found.
pub async fn client(found: &Found) -> anyhow::Result<(kube::Client, String)> {
    let (config, how) = match found {
        Found::InCluster => (
            kube::Config::incluster().map_err(|e| {
                anyhow::anyhow!(
                    "in-cluster service account: {e}; is the pod's service account token mounted?"
                )
            })?,
            "in-cluster service account".to_owned(),
        ),
        Found::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            (config, format!("kubeconfig {}", path.display()))
        }
        Found::Nothing => anyhow::bail!("no Kubernetes API server to talk to"),
    };
    let url = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("Kubernetes client for {url}: {e}"))?;
    Ok((client, format!("{how}, API server {url}")))
}

/// The watched cluster's history and the state of each watch.
pub struct Watched {
    history: RwLock<WorkloadHistory>,
    detail: String,
    watches: Mutex<Vec<WatchStatus>>,
    file: PathBuf,
}

/// The resources watched, in the order `describe` lists them.
pub const RESOURCES: [&str; 5] = ["pods", "services", "endpointslices", "nodes", "namespaces"];

impl Watched {
    /// Restores the history of `<data>/workloads/history.parquet` (if any) and starts the
    /// watchers on `client`. `detail` says where the API server was found.
    pub fn start(client: kube::Client, data: &Path, detail: String) -> Arc<Self> {
        let file = data.join("workloads").join("history.parquet");
        let history = if file.is_file() {
            match WorkloadHistory::read_parquet(&file) {
                Ok(h) => {
                    tracing::info!(
                        intervals = h.len(),
                        "workload history restored from {}",
                        file.display()
                    );
                    h
                }
                Err(e) => {
                    tracing::warn!(
                        "workload history {} unreadable ({e:#}); starting a new one",
                        file.display()
                    );
                    WorkloadHistory::default()
                }
            }
        } else {
            WorkloadHistory::default()
        };
        let watched = Arc::new(Self {
            history: RwLock::new(history),
            detail,
            watches: Mutex::new(
                RESOURCES
                    .iter()
                    .map(|r| WatchStatus {
                        resource: (*r).to_owned(),
                        state: "starting".into(),
                        ..WatchStatus::default()
                    })
                    .collect(),
            ),
            file,
        });
        watch::spawn(client, watched.clone());
        watched
    }

    fn with_watch(&self, resource: &str, f: impl FnOnce(&mut WatchStatus)) {
        let mut all = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = all.iter_mut().find(|w| w.resource == resource) {
            f(w);
        }
    }

    /// Runs `f` on the history.
    pub fn read<T>(&self, f: impl FnOnce(&WorkloadHistory) -> T) -> T {
        f(&self.history.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn write<T>(&self, f: impl FnOnce(&mut WorkloadHistory) -> T) -> T {
        f(&mut self.history.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes the history to its file (atomically).
    pub fn persist(&self) -> anyhow::Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let records = self.read(|h| h.records());
        crate::services::workload_history::write_records(&records, &self.file)
    }

    /// Whether every watch has listed its objects once.
    pub fn synced(&self) -> bool {
        let all = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().all(|w| w.synced_since.is_some())
    }
}

impl WorkloadSource for Watched {
    fn records_between(&self, from_ns: i64, to_ns: i64) -> Vec<WorkloadRecord> {
        self.read(|h| h.records_between(from_ns, to_ns))
    }

    fn describe(&self) -> SourceStatus {
        SourceStatus {
            kind: "kubernetes".into(),
            detail: self.detail.clone(),
            watches: self
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn in_cluster_then_kubeconfig_then_home_then_nothing() {
        let token = Path::new("/sa/token");
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let files =
            |have: &'static [&'static str]| move |p: &Path| have.iter().any(|h| Path::new(h) == p);
        let all = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBECONFIG", "/a:/b"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(
            detect_with(all, files(&["/sa/token", "/b"]), token),
            Found::InCluster
        );
        assert_eq!(
            detect_with(all, files(&["/b", "/home/u/.kube/config"]), token),
            Found::Kubeconfig("/b".into()),
            "no token: not in a pod; the first KUBECONFIG file that exists"
        );
        assert_eq!(
            detect_with(all, files(&["/home/u/.kube/config"]), token),
            Found::Kubeconfig("/home/u/.kube/config".into())
        );
        assert_eq!(detect_with(all, files(&[]), token), Found::Nothing);
    }
}
