//! One kube-rs watcher per resource, feeding reflector stores, and the loop that reconciles
//! the history with them after every burst of events.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::{HISTORY_KEEP, Watched, reconcile};

/// Events that arrive within this of each other are reconciled together.
const BURST: Duration = Duration::from_millis(50);
/// The history file is written at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(2);

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    now_ns() / 1_000_000
}

/// Starts the watchers and the reconcile loop on the current runtime.
pub(super) fn spawn(client: Client, watched: Arc<Watched>) {
    let dirty = Arc::new(Notify::new());
    let pods = watch::<Pod>(Api::all(client.clone()), "pods", trim_pod, &watched, &dirty);
    let services = watch::<Service>(
        Api::all(client.clone()),
        "services",
        |s| trim_meta(&mut s.metadata),
        &watched,
        &dirty,
    );
    let slices = watch::<EndpointSlice>(
        Api::all(client.clone()),
        "endpointslices",
        |s| trim_meta(&mut s.metadata),
        &watched,
        &dirty,
    );
    let nodes = watch::<Node>(
        Api::all(client.clone()),
        "nodes",
        trim_node,
        &watched,
        &dirty,
    );
    let namespaces = watch::<Namespace>(
        Api::all(client),
        "namespaces",
        |n| trim_meta(&mut n.metadata),
        &watched,
        &dirty,
    );
    tokio::spawn(async move {
        let mut last_persist = Instant::now();
        let mut unsaved = false;
        let mut tick = tokio::time::interval(PERSIST_EVERY);
        loop {
            tokio::select! {
                _ = dirty.notified() => {
                    tokio::time::sleep(BURST).await;
                    let counts = [pods.len(), services.len(), slices.len(), nodes.len(), namespaces.len()];
                    for (resource, n) in super::RESOURCES.iter().zip(counts) {
                        watched.with_watch(resource, |w| w.objects = n);
                    }
                    // Before every kind listed once, "absent" only means "not listed yet".
                    let listed = ["pods", "services", "endpointslices", "nodes"].iter().all(|r| {
                        watched.watches.lock().unwrap_or_else(|e| e.into_inner())
                            .iter().any(|w| &w.resource == r && w.synced_since.is_some())
                    });
                    if !listed {
                        continue;
                    }
                    let desired = reconcile::desired(&pods.state(), &services.state(), &slices.state(), &nodes.state());
                    let now = now_ns();
                    let host_pods = reconcile::host_network_pods(&pods.state());
                    let changes = watched.write(|h| {
                        reconcile::apply(h, &desired, now) + reconcile::apply_host_pods(h, &host_pods, now)
                    });
                    if changes > 0 {
                        tracing::debug!(changes, addresses = desired.len(), "workload history updated");
                        unsaved = true;
                    }
                }
                _ = tick.tick() => {}
            }
            if unsaved && last_persist.elapsed() >= PERSIST_EVERY {
                let horizon = now_ns().saturating_sub(HISTORY_KEEP.as_nanos() as i64);
                watched.write(|h| h.prune(horizon));
                match watched.persist() {
                    Ok(()) => unsaved = false,
                    Err(e) => tracing::warn!(
                        "writing the workload history {}: {e:#}; it is kept in memory and retried",
                        watched.file.display()
                    ),
                }
                last_persist = Instant::now();
            }
        }
    });
}

/// Drops what attribution never reads before an object is stored: a cluster's objects are
/// mostly managed fields, annotations, container specs and statuses, and the stores hold
/// every object of the cluster.
fn trim_meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

fn trim_pod(pod: &mut Pod) {
    trim_meta(&mut pod.metadata);
    if let Some(spec) = pod.spec.as_mut() {
        let (node_name, host_network) = (spec.node_name.take(), spec.host_network);
        *spec = k8s_openapi::api::core::v1::PodSpec {
            node_name,
            host_network,
            ..Default::default()
        };
    }
    if let Some(status) = pod.status.as_mut() {
        status.conditions = None;
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}

fn trim_node(node: &mut Node) {
    trim_meta(&mut node.metadata);
    node.spec = None;
    if let Some(status) = node.status.as_mut() {
        let addresses = status.addresses.take();
        *status = k8s_openapi::api::core::v1::NodeStatus {
            addresses,
            ..Default::default()
        };
    }
}

/// What to tell an operator about a watch error.
fn explain(resource: &str, e: &watcher::Error) -> String {
    let text = e.to_string();
    if text.contains("403") || text.contains("orbidden") {
        format!(
            "{text}: RBAC forbids listing or watching {resource}; grant get/list/watch on {resource} to the analyzer's service account (manifests/rbac.yaml)"
        )
    } else if text.contains("401") || text.contains("nauthorized") {
        format!(
            "{text}: the API server refused the credentials; check the kubeconfig user or the service account token"
        )
    } else {
        format!("{text}: retrying with backoff; recording is not affected")
    }
}

fn is_gone(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(status) if status.code == 410)
}

/// A watcher on `api` in a task; its store.
fn watch<K>(
    api: Api<K>,
    resource: &'static str,
    trim: fn(&mut K),
    watched: &Arc<Watched>,
    dirty: &Arc<Notify>,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let watched = watched.clone();
    let dirty = dirty.clone();
    tokio::spawn(async move {
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(trim),
        );
        futures_util::pin_mut!(stream);
        let mut failing = false;
        while let Some(item) = stream.next().await {
            match item {
                Ok(Event::InitDone) => {
                    watched.with_watch(resource, |w| {
                        w.synced_since.get_or_insert(now_ms());
                        w.state = "synced".into();
                    });
                    if failing {
                        tracing::info!("kubernetes: watching {resource} again");
                        failing = false;
                    }
                    dirty.notify_one();
                }
                Ok(Event::Apply(_) | Event::Delete(_)) => dirty.notify_one(),
                Ok(Event::Init | Event::InitApply(_)) => {}
                Err(e) if is_gone(&e) => {
                    // The watch's resourceVersion is too old: the watcher lists again.
                    tracing::debug!("kubernetes: {resource}: 410 Gone, listing again");
                    watched.with_watch(resource, |w| w.relists += 1);
                }
                Err(e) => {
                    let why = explain(resource, &e);
                    if !failing {
                        tracing::warn!("kubernetes: watching {resource}: {why}");
                        failing = true;
                    }
                    watched.with_watch(resource, |w| {
                        w.errors += 1;
                        w.state = "failing".into();
                        w.last_error = Some(why);
                    });
                }
            }
        }
    });
    store
}
