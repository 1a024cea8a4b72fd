//! The `workloads` table: the address → workload records a snapshot froze when it was made
//! (`<snapshot>/workloads.parquet`), one row per address. Resolving addresses with them is the
//! analyzer's `services::workloads`.

use std::net::IpAddr;

use crate::{
    Peer, Table,
    column::{Column, Encoding::Default as Plain, Get},
};

/// One row of `workloads`.
pub type WorkloadRow = (IpAddr, Peer);

/// The columns of `workloads`, in file order.
#[rustfmt::skip]
pub fn columns() -> Vec<Column<WorkloadRow>> {
    vec![
        Column::new("ip", "ip", Get::Ip(|r| r.0), Plain, "all", "The address.", r#"ip == "198.18.0.1""#),
        Column::new("pod.name", "pod_name", Get::Str(|r| &r.1.pod_name), Plain, "all", "Pod at the address.", r#"pod.name == "checkout-0""#),
        Column::new("pod.namespace", "pod_namespace", Get::Str(|r| &r.1.pod_namespace), Plain, "all", "The pod's namespace.", r#"pod.namespace == "shop""#),
        Column::new("service.name", "service_name", Get::Str(|r| &r.1.service_name), Plain, "all", "Service at the address.", r#"service.name == "checkout""#),
        Column::new("service.namespace", "service_namespace", Get::Str(|r| &r.1.service_namespace), Plain, "all", "The service's namespace.", r#"service.namespace == "shop""#),
        Column::new("process", "process", Get::Str(|r| &r.1.process), Plain, "all", "Process name (comm).", r#"process == "nginx""#),
        Column::new("pid", "pid", Get::UInt32(|r| r.1.pid), Plain, "all", "Process id, 0 when unknown.", "pid == 1"),
    ]
}

/// The record batch of `records`.
pub fn batch(
    records: &[WorkloadRow],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    crate::batch::record_batch(&columns(), Table::Workloads.schema(), records)
}
