//! Who addresses were, and what is watched: `GET /mcp/resolve/workloads`,
//! `GET /mcp/resolve/ips` (Kubeshark's `list_workloads` / `list_ips`), `GET /mcp/coverage`.
//!
//! Both resolve routes read the live history (the watchers' or a static file's), or with
//! `snapshot_id` the intervals a snapshot froze. `timestamp` (unix ms) keeps the intervals that
//! held at that moment; without it every interval is listed, so an address used by two pods
//! in turn shows both with their times.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AnalyzerState, ApiError};
use crate::services::workload_history::WorkloadRecord;

type Api<T> = Result<T, ApiError>;

/// Workloads or addresses listed at most, unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// The most a page holds.
const MAX_LIMIT: usize = 1000;

/// The filters both routes take.
#[derive(Debug, Default, Deserialize)]
pub struct ResolveQuery {
    /// A snapshot's frozen records instead of the live history.
    snapshot_id: Option<String>,
    /// One workload by name (with `namespace`).
    name: Option<String>,
    /// The namespace of `name`.
    namespace: Option<String>,
    /// Namespaces, comma-separated.
    namespaces: Option<String>,
    /// A regular expression the name must match.
    name_regex: Option<String>,
    /// Labels that must all match: `app=checkout,tier=web`.
    labels: Option<String>,
    /// `pod`, `service`, `node` or `host`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Unix ms: only what held at that moment.
    timestamp: Option<i64>,
    /// One address (`/mcp/resolve/ips`).
    ip: Option<String>,
    /// Entries at most (default 100, at most 1000).
    limit: Option<usize>,
}

/// A record's workload: (kind, namespace, name).
fn workload_of(r: &WorkloadRecord) -> (&str, &str, &str) {
    let p = &r.peer;
    match r.kind.as_str() {
        // A host-network pod shares its node's address; it is a pod all the same.
        "pod" | "hostpod" => ("pod", &p.pod_namespace, &p.pod_name),
        "service" => ("service", &p.service_namespace, &p.service_name),
        "node" => ("node", "", &p.node),
        _ => ("host", p.namespace(), p.name()),
    }
}

struct Filter {
    name: Option<(String, Option<String>)>,
    namespaces: Vec<String>,
    regex: Option<regex::Regex>,
    labels: Vec<(String, String)>,
    kind: Option<String>,
    at_ns: Option<i64>,
}

impl Filter {
    fn parse(q: &ResolveQuery) -> Result<Self, ApiError> {
        let regex = q
            .name_regex
            .as_deref()
            .map(|r| {
                regex::RegexBuilder::new(r)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| ApiError::bad(format!("name_regex: {e}")))
            })
            .transpose()?;
        let labels = q
            .labels
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "labels: `{l}` is not key=value; e.g. app=checkout,tier=web"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        if let Some(kind) = &q.kind
            && !matches!(kind.as_str(), "pod" | "service" | "node" | "host")
        {
            return Err(ApiError::bad(format!(
                "type `{kind}`: expected pod, service, node or host"
            )));
        }
        Ok(Self {
            name: q.name.clone().map(|n| (n, q.namespace.clone())),
            namespaces: q
                .namespaces
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
            regex,
            labels,
            kind: q.kind.clone(),
            at_ns: q.timestamp.map(|ms| ms.saturating_mul(1_000_000)),
        })
    }

    fn keeps(&self, r: &WorkloadRecord) -> bool {
        let (kind, namespace, name) = workload_of(r);
        if let Some(at) = self.at_ns
            && !(r.from_ns <= at && r.to_ns.is_none_or(|to| at < to))
        {
            return false;
        }
        if self.kind.as_deref().is_some_and(|k| k != kind) {
            return false;
        }
        if let Some((n, ns)) = &self.name {
            // A service's name also finds the pods that serve it.
            let named =
                name == n || (self.kind.as_deref() != Some("pod") && r.peer.service_name == *n);
            if !named
                || ns
                    .as_deref()
                    .is_some_and(|ns| ns != namespace && ns != r.peer.service_namespace)
            {
                return false;
            }
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            return false;
        }
        if self.regex.as_ref().is_some_and(|re| !re.is_match(name)) {
            return false;
        }
        self.labels
            .iter()
            .all(|(k, v)| r.labels.iter().any(|(rk, rv)| rk == k && rv == v))
    }
}

fn records(s: &AnalyzerState, q: &ResolveQuery) -> Result<Vec<WorkloadRecord>, ApiError> {
    match &q.snapshot_id {
        Some(snapshot) => {
            s.store.get(snapshot)?;
            Ok(s.store
                .snapshot_workloads(snapshot)?
                .map(|h| h.records())
                .unwrap_or_default())
        }
        None => Ok(s.workloads.records_between(i64::MIN, i64::MAX)),
    }
}

fn ms(ns: i64) -> i64 {
    ns / 1_000_000
}

fn interval(r: &WorkloadRecord) -> Value {
    json!({
        "ip": r.ip.to_string(),
        "timestamp": ms(r.from_ns),
        "from": ms(r.from_ns),
        "to": r.to_ns.map(ms),
        "kind": r.kind,
        "pod": r.peer.pod_name,
        "service": r.peer.service_name,
        "node": r.peer.node,
    })
}

fn source(q: &ResolveQuery) -> Value {
    match &q.snapshot_id {
        Some(s) => json!(format!("snapshot {s}")),
        None => json!("live"),
    }
}

/// `GET /mcp/resolve/workloads`: `{workloads: [{name, namespace, kind, labels, node, ips:
/// [{ip, timestamp, from, to}]}], total, truncated}`.
pub async fn workloads(
    State(s): State<Arc<AnalyzerState>>,
    Query(q): Query<ResolveQuery>,
) -> Api<Json<Value>> {
    let filter = Filter::parse(&q)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut by_workload: BTreeMap<
        (String, String, String),
        (Vec<&WorkloadRecord>, &WorkloadRecord),
    > = BTreeMap::new();
    let all = records(&s, &q)?;
    for r in all.iter().filter(|r| filter.keeps(r)) {
        let (kind, namespace, name) = workload_of(r);
        if name.is_empty() {
            continue;
        }
        let key = (namespace.to_owned(), name.to_owned(), kind.to_owned());
        let entry = by_workload.entry(key).or_insert_with(|| (Vec::new(), r));
        entry.0.push(r);
        if r.from_ns >= entry.1.from_ns {
            entry.1 = r; // the latest record's labels and node describe the workload
        }
    }
    let total = by_workload.len();
    let workloads: Vec<Value> = by_workload
        .into_iter()
        .take(limit)
        .map(|((namespace, name, kind), (held, latest))| {
            json!({
                "name": name,
                "namespace": namespace,
                "kind": kind,
                "labels": latest.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
                "node": latest.peer.node,
                "service": latest.peer.service_name,
                "ips": held.iter().map(|r| interval(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({
        "workloads": workloads,
        "total": total,
        "truncated": total > limit,
        "source": source(&q),
    })))
}

/// `GET /mcp/resolve/ips`: `{ips: [{ip, records: [{name, namespace, kind, timestamp, from,
/// to, service, node}]}], total, truncated}`.
pub async fn ips(
    State(s): State<Arc<AnalyzerState>>,
    Query(q): Query<ResolveQuery>,
) -> Api<Json<Value>> {
    let filter = Filter::parse(&q)?;
    let only: Option<std::net::IpAddr> =
        q.ip.as_deref()
            .map(|ip| {
                ip.parse()
                    .map_err(|_| ApiError::bad(format!("ip `{ip}` is not an IPv4 or IPv6 address")))
            })
            .transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut by_ip: BTreeMap<std::net::IpAddr, Vec<Value>> = BTreeMap::new();
    for r in records(&s, &q)?
        .iter()
        .filter(|r| only.is_none_or(|ip| ip == r.ip) && filter.keeps(r))
    {
        let (kind, namespace, name) = workload_of(r);
        by_ip.entry(r.ip).or_default().push(json!({
            "name": name,
            "namespace": namespace,
            "kind": kind,
            "timestamp": ms(r.from_ns),
            "from": ms(r.from_ns),
            "to": r.to_ns.map(ms),
            "pod": r.peer.pod_name,
            "service": r.peer.service_name,
            "service_namespace": r.peer.service_namespace,
            "node": r.peer.node,
        }));
    }
    let total = by_ip.len();
    let ips: Vec<Value> = by_ip
        .into_iter()
        .take(limit)
        .map(|(ip, records)| json!({"ip": ip.to_string(), "records": records}))
        .collect();
    Ok(Json(json!({
        "ips": ips,
        "total": total,
        "truncated": total > limit,
        "source": source(&q),
    })))
}

/// A node whose newest slice is older than this is not recording now.
const RECORDING_WITHIN_MS: i64 = 120_000;

/// `GET /mcp/coverage`: which nodes are recorded and since when, which workloads run where
/// (and whether their node is recorded), what feeds the names, and how dissection covers a
/// snapshot. An empty answer about a workload listed as recorded means "no traffic".
pub async fn coverage(State(s): State<Arc<AnalyzerState>>) -> Api<Json<Value>> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let capture = s.data.join("capture");
    let mut nodes = Vec::new();
    let mut recording = std::collections::BTreeSet::new();
    for name in crate::services::snapshots::recorded_nodes(&s.data) {
        let slices = remora_agent::store::list_node(&capture.join(&name));
        let span = remora_agent::store::recorded_span(&slices);
        let first = span.map(|(first, _)| ms(first));
        let last = span.map(|(_, last)| ms(last));
        let live = last.is_some_and(|l| now_ms - l <= RECORDING_WITHIN_MS)
            || s.local_node.get() == Some(&name);
        if live {
            recording.insert(name.clone());
        }
        nodes.push(json!({
            "name": name,
            "recording": live,
            "since": first,
            "newest_ts": last,
            "drops": remora_agent::drops::sum_slices(&slices).packets,
        }));
    }
    if let Some(agents) = s.store.remote_agents().cloned() {
        let answers = agents.all_boundaries_async().await;
        for remote in answers {
            let (name, url, answer) = (remote.node, remote.url, remote.answer);
            let newest = answer.as_ref().ok().and_then(|b| b["newest_ts"].as_i64());
            let live = answer.is_ok();
            if live {
                recording.insert(name.clone());
            }
            nodes.push(json!({
                "name": name,
                "source": url,
                "recording": live,
                "since": answer.as_ref().ok().map(|b| b["oldest_ts"].clone()),
                "newest_ts": newest,
                "error": answer.err(),
            }));
        }
    }
    if let Some(local) = s.local_node.get()
        && !recording.contains(local)
    {
        recording.insert(local.clone());
        nodes.push(
            json!({"name": local, "recording": true, "since": null, "newest_ts": null, "drops": 0}),
        );
    }
    let source = s.workloads.describe();
    let now_ns = now_ms.saturating_mul(1_000_000);
    let current = s.workloads.records_between(now_ns, now_ns);
    let mut recorded = Vec::new();
    let mut not_recorded = Vec::new();
    let mut cluster_nodes = std::collections::BTreeSet::new();
    for r in current.iter() {
        if r.kind == "node" {
            cluster_nodes.insert(r.peer.node.clone());
        }
        if r.kind != "pod" && r.kind != "hostpod" {
            continue;
        }
        let entry = json!({
            "name": r.peer.pod_name, "namespace": r.peer.pod_namespace,
            "node": r.peer.node, "since": ms(r.from_ns),
        });
        // Without a node (a static file) the local recorder sees the address if anyone does.
        if r.peer.node.is_empty() || recording.contains(&r.peer.node) {
            recorded.push(entry);
        } else {
            not_recorded.push(entry);
        }
    }
    let unrecorded_nodes: Vec<&String> = cluster_nodes
        .iter()
        .filter(|n| !recording.contains(*n))
        .collect();
    const SHOWN: usize = 200;
    Ok(Json(json!({
        "nodes": nodes,
        "cluster_nodes_without_recording": unrecorded_nodes,
        "workloads_source": source,
        "pods": {
            "recorded": recorded.len(),
            "not_recorded": not_recorded.len(),
            "recorded_list": recorded.into_iter().take(SHOWN).collect::<Vec<_>>(),
            "not_recorded_list": not_recorded.into_iter().take(SHOWN).collect::<Vec<_>>(),
        },
        "dissection": "delayed: every snapshot is dissected in full when a dissection is started (HTTP/1, HTTP/2, gRPC, DNS, TLS handshakes, TCP health); nothing is sampled",
        "meaning": "A node with recording=true records every packet of every interface; a pod on such a node is recorded since the later of its own start and the node's `since`. An empty query answer about a recorded pod means it had no traffic in the window; about a pod under not_recorded_list it means nothing was recorded.",
    })))
}
