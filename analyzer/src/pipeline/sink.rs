//! Where a dissection's rows go as they complete: attributed to workloads, then written into the
//! `calls` and `conns` tables batch by batch, with counts for the summary.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Instant};

use arrow::{array::RecordBatch, error::ArrowError};
use remora_dissect::{Call, Conn, Endpoint, Stats, TakenRows, Translated};
use remora_tables::{Peer, Table, TableWriter, calls, conns};

use super::{PipelineError, Summary, parallel::Counted, tables::Tables, translation, turns::Turns};
use crate::services::workloads::Resolve;

/// The `calls` rows of `calls` as a record batch, each side attributed by `workloads` at the
/// call's time: its workload, and its process when the socket events named it. A call joined
/// across a NAT (its `nat` as `translation::untranslate` leaves it) also names the Service its
/// client dialled.
pub fn calls_batch<'c>(
    node: &str,
    capture_source: &str,
    calls: impl IntoIterator<Item = &'c Call, IntoIter: Clone>,
    workloads: &dyn Resolve,
) -> Result<RecordBatch, ArrowError> {
    let calls = calls.into_iter();
    let sides: Vec<Sides> = calls
        .clone()
        .map(|c| Sides::of(&c.src, &c.dst, c.nat.as_ref(), c.timestamp_ns, workloads))
        .collect();
    let mut rows = calls::Rows::new(node, capture_source);
    rows.reserve(sides.len());
    for (c, sides) in calls.zip(&sides) {
        rows.push(c, sides.src(), sides.dst());
    }
    rows.finish()
}

/// The `conns` rows of `conns` as a record batch, attributed as [`calls_batch`] does.
fn conns_batch<'c>(
    node: &str,
    conns: impl Iterator<Item = &'c Conn> + Clone,
    workloads: &dyn Resolve,
) -> Result<RecordBatch, ArrowError> {
    let sides: Vec<Sides> = conns
        .clone()
        .map(|c| Sides::of(&c.src, &c.dst, c.nat.as_ref(), c.first_ns, workloads))
        .collect();
    let peers: Vec<_> = sides.iter().map(|s| (s.src(), s.dst())).collect();
    conns::attributed(node, conns, &peers)
}

/// The rows `taken` as record batches of `calls` and `conns` (none for no rows) with their
/// counts; `taken` is emptied, keeping its lists. What [`Sink::write_rows`] and the parallel
/// workers write.
pub(super) fn take_batches(
    node: &str,
    source: &str,
    taken: &mut TakenRows,
    workloads: &dyn Resolve,
) -> Result<(Option<RecordBatch>, Option<RecordBatch>, Counted), PipelineError> {
    let counted = Counted::of(taken.calls(), taken.conns_len());
    let call_batch = (taken.calls_len() > 0)
        .then(|| calls_batch(node, source, taken.calls(), workloads))
        .transpose()?;
    let conn_batch = (taken.conns_len() > 0)
        .then(|| conns_batch(node, taken.conns(), workloads))
        .transpose()?;
    taken.clear();
    Ok((call_batch, conn_batch, counted))
}

/// Who both ends of a row are: the workload by address (borrowed), or an owned copy when the
/// row adds to it (the process of the socket, the Service the client dialled).
struct Sides<'w> {
    src: Side<'w>,
    dst: Side<'w>,
}

enum Side<'w> {
    Borrowed(Option<&'w Peer>),
    Owned(Box<Peer>),
}

impl<'w> Side<'w> {
    fn get(&self) -> Option<&Peer> {
        match self {
            Side::Borrowed(p) => *p,
            Side::Owned(p) => Some(p),
        }
    }

    fn owned(&mut self) -> &mut Peer {
        if let Side::Borrowed(p) = self {
            *self = Side::Owned(Box::new(p.cloned().unwrap_or_default()));
        }
        match self {
            Side::Owned(p) => p,
            Side::Borrowed(_) => unreachable!("made owned just above"),
        }
    }
}

impl<'w> Sides<'w> {
    fn of(
        src: &Endpoint,
        dst: &Endpoint,
        nat: Option<&Translated>,
        ts_ns: i64,
        workloads: &'w dyn Resolve,
    ) -> Self {
        let server = workloads.resolve(dst, ts_ns);
        let mut sides = Sides {
            src: Side::Borrowed(workloads.resolve(src, ts_ns)),
            dst: Side::Borrowed(server),
        };
        if let Some(service) = translation::dialled_service(server, nat, ts_ns, workloads) {
            sides.dst = Side::Owned(Box::new(translation::with_service(server, service)));
        }
        // Each socket's peer as that socket saw it: across a NAT the client's peer is the
        // address it dialled, the server's the client as translated.
        let client_peer = nat.map_or(*dst, |n| n.dst);
        let server_peer = nat.map_or(*src, |n| n.src);
        if let Some((pid, comm)) = workloads.process(src, &client_peer, ts_ns) {
            let p = sides.src.owned();
            (p.pid, p.process) = (pid, comm.to_owned());
        }
        if let Some((pid, comm)) = workloads.process(dst, &server_peer, ts_ns) {
            let p = sides.dst.owned();
            (p.pid, p.process) = (pid, comm.to_owned());
        }
        sides
    }

    fn src(&self) -> Option<&Peer> {
        self.src.get()
    }

    fn dst(&self) -> Option<&Peer> {
        self.dst.get()
    }
}

/// The two tables of one dissection, being written, and what went into them.
pub(super) struct Sink<'w> {
    workloads: &'w dyn Resolve,
    /// The node the rows now written come from.
    pub(super) node: String,
    pub(super) source: &'static str,
    tables: Tables,
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
    /// Sockets named by their process (the agent's socket events).
    pub(super) processes: Option<super::processes::Processes>,
    /// What the reader noted (flows' first nodes, sockets' owners) up to this frame is what
    /// the rows now written are attributed with: the rows of an epoch as of its end, however
    /// far the reader went meanwhile.
    pub(super) visible_frames: u64,
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
            tables: Tables::here(
                TableWriter::new(Table::Calls, &out.join("calls.parquet")),
                TableWriter::new(Table::Conns, &out.join("conns.parquet")),
            ),
            calls: BTreeMap::new(),
            unpaired: 0,
            conns: 0,
            window: None,
            outside: 0,
            origins: None,
            sockets: None,
            processes: None,
            visible_frames: u64::MAX,
        })
    }

    /// Calls written so far.
    pub(super) fn calls_total(&self) -> u64 {
        self.calls.values().sum()
    }

    /// Writes finished rows (those of the window, when there is one).
    pub(super) fn write(
        &mut self,
        mut calls: Vec<Call>,
        mut conns: Vec<Conn>,
    ) -> Result<(), PipelineError> {
        if let Some((start, end)) = self.window {
            let before = calls.len() + conns.len();
            calls.retain(|c| (start..=end).contains(&c.timestamp_ns));
            conns.retain(|c| c.last_ns >= start && c.first_ns <= end);
            self.outside += (before - calls.len() - conns.len()) as u64;
        }
        self.count(Counted::of(&calls, conns.len()));
        let by_socket;
        let workloads: &dyn Resolve = if self.sockets.is_some() || self.processes.is_some() {
            by_socket = super::sockets::BySocket {
                inner: self.workloads,
                sockets: self.sockets.as_ref(),
                processes: self.processes.as_ref(),
                visible_frames: self.visible_frames,
            };
            &by_socket
        } else {
            self.workloads
        };
        // Each row under the node that saw its flow first (by the ends as recorded, so before
        // they are untranslated), sorted into their nodes in one pass.
        let mut by_node: Vec<(Vec<Call>, Vec<Conn>)> = match &self.origins {
            Some(origins) => {
                let mut by_node: Vec<(Vec<Call>, Vec<Conn>)> =
                    origins.nodes.iter().map(|_| Default::default()).collect();
                for c in calls {
                    by_node[origins.node_of(&c.src, &c.dst, self.visible_frames)]
                        .0
                        .push(c);
                }
                for c in conns {
                    by_node[origins.node_of(&c.src, &c.dst, self.visible_frames)]
                        .1
                        .push(c);
                }
                by_node
            }
            None => vec![(calls, conns)],
        };
        for (calls, conns) in &mut by_node {
            for c in calls.iter_mut() {
                translation::untranslate(
                    &mut c.src,
                    &mut c.dst,
                    &mut c.nat,
                    c.timestamp_ns,
                    workloads,
                );
            }
            for c in conns.iter_mut() {
                translation::untranslate(&mut c.src, &mut c.dst, &mut c.nat, c.first_ns, workloads);
            }
        }
        let nodes: Vec<&str> = match &self.origins {
            Some(origins) => origins.nodes.iter().map(String::as_str).collect(),
            None => vec![self.node.as_str()],
        };
        for (node, (calls, conns)) in nodes.into_iter().zip(&by_node) {
            let calls = (!calls.is_empty())
                .then(|| calls_batch(node, self.source, calls, workloads))
                .transpose()?;
            let conns = (!conns.is_empty())
                .then(|| conns_batch(node, conns.iter(), workloads))
                .transpose()?;
            self.tables.write(calls, conns)?;
        }
        Ok(())
    }

    /// Writes the rows `taken` and empties it, keeping its lists (a capture file's rows: no
    /// window, no nodes to split them by).
    pub(super) fn write_rows(&mut self, taken: &mut TakenRows) -> Result<(), PipelineError> {
        if self.window.is_some()
            || self.origins.is_some()
            || self.sockets.is_some()
            || self.processes.is_some()
        {
            let (mut calls, mut conns) = (Vec::new(), Vec::new());
            taken.move_into(&mut calls, &mut conns);
            return self.write(calls, conns);
        }
        let (call_batch, conn_batch, counted) =
            take_batches(&self.node, self.source, taken, self.workloads)?;
        self.count(counted);
        self.tables.write(call_batch, conn_batch)
    }

    /// Counts rows written elsewhere (batches from [`super::parallel`]'s workers).
    pub(super) fn count(&mut self, counted: Counted) {
        for (protocol, n) in counted.calls {
            *self.calls.entry(protocol).or_default() += n;
        }
        self.unpaired += counted.unpaired;
        self.conns += counted.conns;
    }

    /// The same sink, with Parquet encoding on a writer thread while the caller goes on.
    pub(super) fn in_background(mut self) -> Result<Self, PipelineError> {
        self.tables = self.tables.into_thread()?;
        Ok(self)
    }

    /// The same sink, its tables written by `workers` dissection workers in turns through the
    /// returned [`Turns`]; the caller still counts what they write ([`Sink::count`]).
    pub(super) fn in_turns(mut self, workers: usize) -> (Self, Arc<Turns>) {
        let turns;
        (self.tables, turns) = self.tables.into_turns(workers);
        (self, turns)
    }

    /// Publishes both tables and sums up.
    pub(super) fn close(
        self,
        frames: u64,
        stats: Stats,
        started: Instant,
    ) -> Result<Summary, PipelineError> {
        self.tables.finish()?;
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
