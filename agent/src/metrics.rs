//! The recorder's counters and their Prometheus text rendering.

use std::{
    fmt::Write as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use remora_agent_common::CpuCounters;

/// Counters shared by the collector, the writer and the API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Rows written into slices.
    pub rows_written: AtomicU64,
    /// Slices published.
    pub slices_written: AtomicU64,
    /// Bytes of published slices.
    pub slice_bytes_written: AtomicU64,
    /// Slices that failed to write (their rows are lost, counted in `rows_lost`).
    pub slice_write_errors: AtomicU64,
    /// Rows lost with failed slices.
    pub rows_lost: AtomicU64,
    /// Samples that could not be decoded.
    pub decode_errors: AtomicU64,
    /// Samples the kernel reported lost (perf `PERF_RECORD_LOST`); the BPF-side drop counters
    /// are authoritative, this is a cross-check.
    pub kernel_lost: AtomicU64,
    /// Rows written after a later row (out of order).
    pub late_rows: AtomicU64,
    /// Slices deleted by retention.
    pub retention_deleted: AtomicU64,
    /// Bytes deleted by retention.
    pub retention_deleted_bytes: AtomicU64,
    /// Temp files of a killed earlier run removed at start.
    pub swept_temp_files: AtomicU64,
    /// The last slice write error, for /v1/health.
    pub last_write_error: Mutex<Option<String>>,
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Totals over CPUs of the kernel-side counters.
pub fn total(cpus: &[CpuCounters]) -> CpuCounters {
    cpus.iter()
        .fold(CpuCounters::default(), |a, c| CpuCounters {
            packets: a.packets + c.packets,
            bytes: a.bytes + c.bytes,
            dropped_packets: a.dropped_packets + c.dropped_packets,
            dropped_bytes: a.dropped_bytes + c.dropped_bytes,
            excluded_packets: a.excluded_packets + c.excluded_packets,
        })
}

/// Reads one field of the kernel-side counters.
type CounterOf = fn(&CpuCounters) -> u64;

/// Renders all counters in the Prometheus text format.
pub fn render(node: &str, metrics: &Metrics, cpus: &[CpuCounters], interfaces: usize) -> String {
    let mut out = String::new();
    let per_cpu: [(&str, &str, CounterOf); 5] = [
        (
            "remora_packets_total",
            "Packets seen by the TC hooks",
            |c| c.packets,
        ),
        (
            "remora_packet_bytes_total",
            "Frame bytes seen by the TC hooks",
            |c| c.bytes,
        ),
        (
            "remora_dropped_packets_total",
            "Packets lost because a CPU ring was full",
            |c| c.dropped_packets,
        ),
        (
            "remora_dropped_bytes_total",
            "Frame bytes lost because a CPU ring was full",
            |c| c.dropped_bytes,
        ),
        (
            "remora_excluded_packets_total",
            "Packets of Remora's own API, not recorded",
            |c| c.excluded_packets,
        ),
    ];
    for (name, help, get) in per_cpu {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (cpu, c) in cpus.iter().enumerate() {
            let _ = writeln!(out, "{name}{{node=\"{node}\",cpu=\"{cpu}\"}} {}", get(c));
        }
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let plain = [
        (
            "remora_rows_written_total",
            "Rows written into slices",
            load(&metrics.rows_written),
        ),
        (
            "remora_slices_written_total",
            "Slices published",
            load(&metrics.slices_written),
        ),
        (
            "remora_slice_bytes_written_total",
            "Bytes of published slices",
            load(&metrics.slice_bytes_written),
        ),
        (
            "remora_slice_write_errors_total",
            "Slices that failed to write",
            load(&metrics.slice_write_errors),
        ),
        (
            "remora_rows_lost_total",
            "Rows lost with failed slices",
            load(&metrics.rows_lost),
        ),
        (
            "remora_decode_errors_total",
            "Ring samples that could not be decoded",
            load(&metrics.decode_errors),
        ),
        (
            "remora_kernel_lost_samples_total",
            "Samples the kernel reported lost",
            load(&metrics.kernel_lost),
        ),
        (
            "remora_late_rows_total",
            "Rows written out of time order",
            load(&metrics.late_rows),
        ),
        (
            "remora_retention_deleted_slices_total",
            "Slices deleted by retention",
            load(&metrics.retention_deleted),
        ),
        (
            "remora_retention_deleted_bytes_total",
            "Bytes deleted by retention",
            load(&metrics.retention_deleted_bytes),
        ),
    ];
    for (name, help, value) in plain {
        let _ = writeln!(
            out,
            "# HELP {name} {help}.\n# TYPE {name} counter\n{name}{{node=\"{node}\"}} {value}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP remora_interfaces_attached Interfaces the recorder is attached to.\n\
         # TYPE remora_interfaces_attached gauge\nremora_interfaces_attached{{node=\"{node}\"}} {interfaces}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_cpu_and_totals() {
        let m = Metrics::default();
        add(&m.rows_written, 7);
        let cpus = [
            CpuCounters {
                packets: 3,
                dropped_packets: 1,
                ..Default::default()
            },
            CpuCounters {
                packets: 4,
                ..Default::default()
            },
        ];
        let text = render("n1", &m, &cpus, 2);
        assert!(
            text.contains("remora_packets_total{node=\"n1\",cpu=\"1\"} 4"),
            "{text}"
        );
        assert!(text.contains("remora_dropped_packets_total{node=\"n1\",cpu=\"0\"} 1"));
        assert!(text.contains("remora_rows_written_total{node=\"n1\"} 7"));
        assert_eq!(total(&cpus).packets, 7);
    }
}
