//! Where a dissection's rows go as they complete: attributed to workloads, then written into the
//! `calls` and `conns` tables batch by batch, with counts for the summary.

use std::{collections::BTreeMap, path::Path, time::Instant};

use arrow::{array::RecordBatch, error::ArrowError};
use remora_dissect::{Call, Conn, Engine, Stats};
use remora_tables::{Table, TableWriter, calls, conns};

use super::{PipelineError, Summary};
use crate::services::workloads::Resolve;

/// The `calls` rows of `calls` as a record batch, each side attributed by `workloads` at the
/// call's time.
pub fn calls_batch(
    node: &str,
    capture_source: &str,
    calls: &[Call],
    workloads: &dyn Resolve,
) -> Result<RecordBatch, ArrowError> {
    let mut rows = calls::Rows::new(node, capture_source);
    for c in calls {
        rows.push(
            c,
            workloads.resolve(&c.src, c.timestamp_ns),
            workloads.resolve(&c.dst, c.timestamp_ns),
        );
    }
    rows.finish()
}

/// The two tables of one dissection, being written, and what went into them.
pub(super) struct Sink<'w> {
    workloads: &'w dyn Resolve,
    /// The node the rows now written come from.
    pub(super) node: String,
    source: &'static str,
    calls_out: TableWriter,
    conns_out: TableWriter,
    calls: BTreeMap<&'static str, u64>,
    unpaired: u64,
    conns: u64,
    /// Only calls that start in this window (ns, inclusive) and connections that overlap it
    /// are written: a snapshot holds whole slices, so its packets run past its window, and
    /// they are read (connections across an edge are reassembled) but not reported.
    pub(super) window: Option<(i64, i64)>,
    /// Calls and connections left out by the window.
    pub(super) outside: u64,
    /// Several nodes merged into one stream: each row's node is its flow's first node.
    pub(super) origins: Option<super::origin::Origins>,
    /// Endpoints named by the cgroup of the socket that sent from them.
    pub(super) sockets: Option<super::sockets::SocketOwners>,
}

impl<'w> Sink<'w> {
    /// Writers for `<out>/calls.parquet` and `<out>/conns.parquet`; nothing is published before
    /// [`close`](Self::close).
    pub(super) fn new(
        out: &Path,
        source: &'static str,
        workloads: &'w dyn Resolve,
    ) -> Result<Self, PipelineError> {
        std::fs::create_dir_all(out).map_err(|source| PipelineError::Output {
            path: out.to_owned(),
            source,
        })?;
        Ok(Self {
            workloads,
            node: String::new(),
            source,
            calls_out: TableWriter::new(Table::Calls, &out.join("calls.parquet")),
            conns_out: TableWriter::new(Table::Conns, &out.join("conns.parquet")),
            calls: BTreeMap::new(),
            unpaired: 0,
            conns: 0,
            window: None,
            outside: 0,
            origins: None,
            sockets: None,
        })
    }

    /// Calls written so far.
    pub(super) fn calls_total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Writes finished rows (those of the window, when there is one).
    pub(super) fn write(&mut self, calls: &[Call], conns: &[Conn]) -> Result<(), PipelineError> {
        let (kept_calls, kept_conns);
        let (calls, conns) = match self.window {
            Some((start, end)) => {
                kept_calls = calls
                    .iter()
                    .filter(|c| (start..=end).contains(&c.timestamp_ns))
                    .cloned()
                    .collect::<Vec<_>>();
                kept_conns = conns
                    .iter()
                    .filter(|c| c.last_ns >= start && c.first_ns <= end)
                    .cloned()
                    .collect::<Vec<_>>();
                self.outside +=
                    (calls.len() - kept_calls.len() + conns.len() - kept_conns.len()) as u64;
                (&kept_calls[..], &kept_conns[..])
            }
            None => (calls, conns),
        };
        for c in calls {
            *self.calls.entry(c.protocol).or_default() += 1;
            self.unpaired += u64::from(c.error_type.is_some());
        }
        self.conns += conns.len() as u64;
        let by_socket;
        let workloads: &dyn Resolve = match &self.sockets {
            Some(sockets) => {
                by_socket = super::sockets::BySocket {
                    inner: self.workloads,
                    sockets,
                };
                &by_socket
            }
            None => self.workloads,
        };
        if let Some(origins) = &self.origins {
            // One batch per node, each row under the node that saw its flow first; the rows
            // are sorted into their nodes in one pass.
            let mut by_node: Vec<(Vec<Call>, Vec<Conn>)> =
                origins.nodes.iter().map(|_| Default::default()).collect();
            for c in calls {
                by_node[origins.node_of(&c.src, &c.dst)].0.push(c.clone());
            }
            for c in conns {
                by_node[origins.node_of(&c.src, &c.dst)].1.push(c.clone());
            }
            for (node, (calls, conns)) in origins.nodes.iter().zip(by_node) {
                Self::write_rows(
                    (&mut self.calls_out, &mut self.conns_out),
                    node,
                    self.source,
                    workloads,
                    &calls,
                    &conns,
                )?;
            }
            return Ok(());
        }
        Self::write_rows(
            (&mut self.calls_out, &mut self.conns_out),
            &self.node,
            self.source,
            workloads,
            calls,
            conns,
        )
    }

    fn write_rows(
        (calls_out, conns_out): (&mut TableWriter, &mut TableWriter),
        node: &str,
        source: &'static str,
        workloads: &dyn Resolve,
        calls: &[Call],
        conns: &[Conn],
    ) -> Result<(), PipelineError> {
        if !calls.is_empty() {
            calls_out.write(&calls_batch(node, source, calls, workloads)?)?;
        }
        if !conns.is_empty() {
            let batch = conns::attributed(node, conns, |ep, ts| workloads.resolve(ep, ts))?;
            conns_out.write(&batch)?;
        }
        Ok(())
    }

    /// Writes the rows the engine finished so far.
    pub(super) fn drain(&mut self, engine: &mut Engine) -> Result<(), PipelineError> {
        let (calls, conns) = engine.take_rows();
        self.write(&calls, &conns)
    }

    /// Publishes both tables and sums up.
    pub(super) fn close(
        self,
        frames: u64,
        stats: Stats,
        started: Instant,
    ) -> Result<Summary, PipelineError> {
        self.calls_out.finish()?;
        self.conns_out.finish()?;
        Ok(Summary {
            frames,
            calls: self.calls,
            unpaired: self.unpaired,
            conns: self.conns,
            outside_window: self.outside,
            stats,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}
