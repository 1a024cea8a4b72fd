//! The `workloads` table: who each address was, over time. One row per interval in which one
//! workload held one address. The analyzer keeps its Kubernetes history in this form
//! (`<data>/workloads/history.parquet`) and freezes the intervals of a snapshot's window into
//! `<snapshot>/workloads.parquet`. Resolving addresses with them is the analyzer's
//! `services::workload_history`.

use std::net::IpAddr;

use crate::{
    Peer, Table,
    column::{Column, Encoding::Default as Plain, Get, MapEntries},
};

/// One interval of one address: `peer` held `ip` from `from_ns` until `to_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRecord {
    /// The address.
    pub ip: IpAddr,
    /// Held from (ns since the epoch, inclusive); 0 for "always" (a static file).
    pub from_ns: i64,
    /// Held until (ns, exclusive); `None` while it still holds it.
    pub to_ns: Option<i64>,
    /// What the address is: `pod`, `service` (a ClusterIP), `node`, `host` (a static file), or
    /// `hostpod` (a pod on its node's network: the address is the node's, the pod is told apart
    /// by its cgroups).
    pub kind: String,
    /// Who held it.
    pub peer: Peer,
    /// The workload's labels (a pod's, a service's, a node's), sorted by key.
    pub labels: Vec<(String, String)>,
    /// A pod's `metadata.uid` (empty for other kinds): what the agents' cgroup maps name.
    pub pod_uid: String,
}

fn labels(r: &WorkloadRecord, e: &mut MapEntries<'_>) {
    for (k, v) in &r.labels {
        e.insert(k, v);
    }
}

/// The columns of `workloads`, in file order.
#[rustfmt::skip]
pub fn columns() -> Vec<Column<WorkloadRecord>> {
    vec![
        Column::new("ip", "ip", Get::Ip(|r| r.ip), Plain, "all", "The address.", r#"ip == "198.18.0.1""#),
        Column::new("from_ts", "from_ts", Get::Timestamp(|r| r.from_ns), Plain, "all", "Held from (inclusive); the epoch for a static file's records.", r#"from_ts <= timestamp("2026-11-24T10:00:00Z")"#),
        Column::new("to_ts", "to_ts", Get::OptTimestamp(|r| r.to_ns), Plain, "all", "Held until (exclusive); null while still held.", "to_ts == null"),
        Column::new("kind", "kind", Get::Str(|r| &r.kind), Plain, "all", "pod, service (a ClusterIP), node, host (a static file's record), or hostpod (a pod on its node's network).", r#"kind == "pod""#),
        Column::new("pod.name", "pod_name", Get::Str(|r| &r.peer.pod_name), Plain, "all", "Pod at the address.", r#"pod.name == "checkout-0""#),
        Column::new("pod.namespace", "pod_namespace", Get::Str(|r| &r.peer.pod_namespace), Plain, "all", "The pod's namespace.", r#"pod.namespace == "shop""#),
        Column::new("pod.uid", "pod_uid", Get::Str(|r| &r.pod_uid), Plain, "all", "The pod's metadata.uid (its cgroups carry it).", r#"pod.uid == "1a2b3c4d-0000-4000-8000-0123456789ab""#),
        Column::new("service.name", "service_name", Get::Str(|r| &r.peer.service_name), Plain, "all", "Service at the address (its ClusterIP, or a pod it selects).", r#"service.name == "checkout""#),
        Column::new("service.namespace", "service_namespace", Get::Str(|r| &r.peer.service_namespace), Plain, "all", "The service's namespace.", r#"service.namespace == "shop""#),
        Column::new("node.name", "node_name", Get::Str(|r| &r.peer.node), Plain, "all", "The pod's node, or the node whose address it is.", r#"node.name == "node-a""#),
        Column::new("process", "process", Get::Str(|r| &r.peer.process), Plain, "all", "Process name (comm).", r#"process == "nginx""#),
        Column::new("pid", "pid", Get::UInt32(|r| r.peer.pid), Plain, "all", "Process id, 0 when unknown.", "pid == 1"),
        Column::new("labels", "labels", Get::Map(labels), Plain, "all", "The workload's labels.", r#"labels["app"] == "checkout""#),
    ]
}

/// The record batch of `records`.
pub fn batch(
    records: &[WorkloadRecord],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    crate::batch::record_batch(&columns(), Table::Workloads.write_schema(), records)
}
