//! Attribution: who an address was when a call was made ([`Resolve`]), and where the analyzer
//! learns it ([`WorkloadSource`]).
//!
//! In a cluster the source is the Kubernetes watchers (`services::kubernetes`). Without
//! Kubernetes it is a static file saying which pod, service, namespace and node an address
//! belongs to (`remora up --workloads FILE`), for laptops, VMs, compose setups and tests. Either
//! way the analyzer holds a [`WorkloadHistory`]; a snapshot freezes the intervals of its window
//! (`workloads.parquet`, the table `remora_tables::workloads` defines) and its dissections
//! attribute with those.
//!
//! The file is a JSON array:
//! `[{"ip": "198.18.0.1", "pod": "frontend-7d9f8", "namespace": "shop", "service": "frontend",
//!   "node": "node-a", "process": "node", "pid": 4242}]` — every field but `ip` optional.

use std::{net::IpAddr, path::Path};

use remora_dissect::Endpoint;
use serde::Deserialize;

pub use remora_tables::Peer;

use super::workload_history::{Owner, WorkloadHistory, WorkloadRecord};

/// Resolves endpoints to workloads when rows are written.
pub trait Resolve {
    /// The peer at `endpoint` at `ts_ns`, when known.
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer>;

    /// The pod with `metadata.uid` `uid` (what a node's cgroups name), when known.
    fn pod_by_uid(&self, _uid: &str) -> Option<&Peer> {
        None
    }

    /// The process (pid, command) whose socket had `local` as its own end and `remote` as its
    /// peer at `ts_ns`, when the agent's socket events named it.
    fn process(&self, _local: &Endpoint, _remote: &Endpoint, _ts_ns: i64) -> Option<(u32, &str)> {
        None
    }
}

/// Knows no workloads: every attribution column stays empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWorkloads;

impl Resolve for NoWorkloads {
    fn resolve(&self, _endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
        None
    }
}

/// Where the analyzer learns who addresses are: the history it freezes into snapshots and
/// answers `/mcp/resolve/*` from, and what it is watching (`/mcp/coverage`).
pub trait WorkloadSource: Send + Sync {
    /// The intervals that overlap `[from_ns, to_ns]`.
    fn records_between(&self, from_ns: i64, to_ns: i64) -> Vec<WorkloadRecord>;

    /// What feeds the history: `kubernetes (in-cluster)`, `kubernetes (kubeconfig …)`,
    /// `file …` or `none`, with the state of each watch.
    fn describe(&self) -> SourceStatus {
        SourceStatus::default()
    }
}

/// What feeds the workload history and how it is doing (`/mcp/coverage`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SourceStatus {
    /// `kubernetes`, `file` or `none`.
    pub kind: String,
    /// Where from: the API server's URL and how it was found, or the file's path.
    pub detail: String,
    /// One entry per watched resource (Kubernetes only).
    pub watches: Vec<WatchStatus>,
}

/// The state of one watch (`pods`, `services`, ...).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WatchStatus {
    /// `pods`, `services`, `endpointslices`, `nodes` or `namespaces`.
    pub resource: String,
    /// `starting`, `synced` (listed, watching) or `failing` (see `last_error`).
    pub state: String,
    /// Objects known now.
    pub objects: usize,
    /// When the first complete list arrived (unix ms).
    pub synced_since: Option<i64>,
    /// Watch errors so far (each is retried with backoff).
    pub errors: u64,
    /// Times the API server said the watch was too old (410 Gone) and it listed again.
    pub relists: u64,
    /// The latest error, with what to do about it.
    pub last_error: Option<String>,
}

impl WorkloadSource for NoWorkloads {
    fn records_between(&self, _from_ns: i64, _to_ns: i64) -> Vec<WorkloadRecord> {
        Vec::new()
    }

    fn describe(&self) -> SourceStatus {
        SourceStatus {
            kind: "none".into(),
            detail: "no Kubernetes API and no --workloads file: addresses are not named".into(),
            watches: Vec::new(),
        }
    }
}

/// A fixed history (a static file's records) with where it came from.
#[derive(Debug, Clone, Default)]
pub struct FixedWorkloads {
    /// The records.
    pub history: WorkloadHistory,
    /// Where they came from, for `/mcp/coverage`.
    pub origin: String,
}

impl WorkloadSource for FixedWorkloads {
    fn records_between(&self, from_ns: i64, to_ns: i64) -> Vec<WorkloadRecord> {
        self.history.records_between(from_ns, to_ns)
    }

    fn describe(&self) -> SourceStatus {
        SourceStatus {
            kind: "file".into(),
            detail: self.origin.clone(),
            watches: Vec::new(),
        }
    }
}

/// One address in a workloads file. Every field but `ip` may be absent or `null` (how most
/// tools write an unknown value, `kubectl ... -o json` included): both mean unknown.
#[derive(Deserialize)]
struct Entry {
    ip: IpAddr,
    #[serde(default, deserialize_with = "null_as_empty")]
    pod: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    namespace: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    service: String,
    #[serde(default)]
    service_namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    node: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    process: String,
    #[serde(default, deserialize_with = "null_as_zero")]
    pid: u32,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or_default())
}

/// Static workload files.
pub struct StaticWorkloads;

impl StaticWorkloads {
    /// Reads `path`; a clear error says which entry is wrong.
    pub fn load(path: &Path) -> anyhow::Result<FixedWorkloads> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading workloads file {}: {e}", path.display()))?;
        let history = Self::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "workloads file {}: {e}; expected [{{\"ip\": \"198.18.0.1\", \"pod\": \"...\", \"namespace\": \"...\", \"service\": \"...\", \"node\": \"...\"}}]",
                path.display()
            )
        })?;
        Ok(FixedWorkloads {
            history,
            origin: format!("file {}", path.display()),
        })
    }

    /// Parses the JSON text of a workloads file: every record held always (from the epoch).
    pub fn parse(text: &str) -> Result<WorkloadHistory, serde_json::Error> {
        let entries: Vec<Entry> = serde_json::from_str(text)?;
        let mut history = WorkloadHistory::default();
        for e in entries {
            let service_namespace = e.service_namespace.unwrap_or_else(|| {
                if e.service.is_empty() {
                    String::new()
                } else {
                    e.namespace.clone()
                }
            });
            let kind = if !e.pod.is_empty() {
                "pod"
            } else if !e.service.is_empty() {
                "service"
            } else if !e.node.is_empty() && e.process.is_empty() {
                "node"
            } else {
                "host"
            };
            let owner = Owner {
                kind: kind.into(),
                peer: Peer {
                    pod_namespace: if e.pod.is_empty() {
                        String::new()
                    } else {
                        e.namespace
                    },
                    pod_name: e.pod,
                    service_name: e.service,
                    service_namespace,
                    node: e.node,
                    process: e.process,
                    pid: e.pid,
                },
                labels: e.labels.unwrap_or_default().into_iter().collect(),
                ..Owner::default()
            };
            history.begin(e.ip, 0, owner);
        }
        Ok(history)
    }
}

/// The workload records a snapshot froze when it was made, in `<snapshot>/workloads.parquet`.
/// A dissection of the snapshot attributes with these, not with what the analyzer knows when
/// the job runs, so a snapshot means the same thing after its pods are gone.
pub const SNAPSHOT_FILE: &str = "workloads.parquet";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.1", "pod": "frontend-1", "namespace": "shop", "service": "frontend", "node": "node-a"},
                {"ip": "198.18.0.2", "service": "checkout", "namespace": "shop"}]"#,
        )
        .unwrap_or_default();
        assert_eq!(w.addresses(), 2);
        let ep = |ip: &str| Endpoint {
            ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: 1,
        };
        let p = w.resolve(&ep("198.18.0.1"), 0).cloned().unwrap_or_default();
        assert_eq!(
            (p.name(), p.namespace(), p.node.as_str()),
            ("frontend-1", "shop", "node-a")
        );
        let p = w
            .resolve(&ep("198.18.0.2"), i64::MAX - 1)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (p.name(), p.pod_namespace.as_str(), p.namespace()),
            ("checkout", "", "shop")
        );
        assert!(w.resolve(&ep("198.18.0.3"), 0).is_none());
        assert!(StaticWorkloads::parse("[{\"pod\": \"x\"}]").is_err());
        // null for an absent service, namespace, process or pid is accepted as unknown.
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.4", "pod": "job-1", "namespace": null, "service": null,
                 "service_namespace": null, "process": null, "pid": null}]"#,
        );
        let w = w.unwrap_or_else(|e| panic!("null fields must be accepted: {e}"));
        let p = w.resolve(&ep("198.18.0.4"), 0).cloned().unwrap_or_default();
        assert_eq!(
            (p.name(), p.namespace(), p.service_name.as_str()),
            ("job-1", "", "")
        );
        assert!(
            StaticWorkloads::parse(r#"[{"ip": null}]"#).is_err(),
            "ip is required"
        );
    }

    #[test]
    fn records_survive_a_parquet_round_trip() {
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.1", "pod": "frontend-1", "namespace": "shop", "service": "frontend", "process": "node", "pid": 42, "labels": {"app": "frontend"}},
                {"ip": "2001:db8::2", "service": "checkout", "namespace": "shop"}]"#,
        )
        .unwrap_or_default();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(SNAPSHOT_FILE);
        w.write_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = WorkloadHistory::read_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.records(), w.records());
        assert_eq!(back.addresses(), 2);
        assert_eq!(
            back.records()[0].labels,
            vec![("app".into(), "frontend".into())]
        );
    }
}
