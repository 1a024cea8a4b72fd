//! Dissection on every core: the reader routes packets by flow to worker threads, each running
//! the engines of a range of shards (`remora_dissect::shard`); their rows go into the tables in
//! a fixed order, epoch by epoch and range by range, so that the files hold the same rows, in
//! the same order, as one thread gives.
//!
//! Two kinds of input:
//! - a capture file ([`Dissector::new`]): every row is written as it is, so the workers also
//!   build the record batches and encode them into the files, in turns (`super::turns`); the
//!   reader runs the first shards itself, as the first worker ([`Threads::local`]);
//! - the recorder's slices ([`Dissector::recorded`]): the router counts a packet's copies once
//!   and joins NAT views, TLS plaintext goes to the shard of its connection, and the rows come
//!   back to the reader's thread, which attributes them (window, node, workload, process) as
//!   of the end of their epoch, so that what the reader noted since cannot change them.
//!
//! One thread (`threads == 1`) runs the same shards inline, with no channel in between.
//!
//! Here: the reader's side (routing, batches, the split of the shards); `worker`: a range of
//! shards run on a thread, epoch by epoch; `order`: the rows put back in (epoch, worker) order.
//!
//! Memory stays bounded whatever the input's size: the queues between the threads hold a few
//! batches each, and a worker that runs ahead of the others can only be an epoch or two ahead
//! before the reader, waiting for the slowest worker, stops feeding it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError, channel, sync_channel},
    },
    thread::JoinHandle,
};

use remora_dissect::{
    Call, Conn, Endpoint, Limits, Router, ShardRange, Sharded, Stats, TakenRows, UdpDatagram,
    ViewChange,
    shard::{EPOCH_FRAMES, Plaintext, SHARDS},
};

mod order;
mod worker;

pub(super) use order::Counted;
use order::{Finished, Order, Rows};
use worker::{Batch, Behind, Item, LOCAL, Output, PlainItem, Runner, work};

use super::{PipelineError, sink::Sink, turns::Turns};
use crate::services::workloads::NoWorkloads;

/// Frames a batch for a worker holds before it is sent.
const BATCH_FRAMES: usize = 1024;
/// Batches waiting for each worker, at most: enough that a worker does not run dry while the
/// reader waits on another one.
const QUEUED_BATCHES: usize = 16;

/// The number of threads to dissect with by default: every core this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(SHARDS)
}

/// What kind of input a [`Dissector`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// A capture file: rows as they are.
    File,
    /// The recorder's slices: rows attributed on the reader's thread; copies counted once
    /// when `copies_once`.
    Recorded { copies_once: bool },
}

/// Feeds packets to the shards, on this thread or on workers, and their rows to a sink.
pub(super) struct Dissector<'w> {
    mode: Mode,
    sink: Sink<'w>,
    /// Rows taken at an epoch's end, written, then cleared: the lists stay allocated.
    rows: TakenRows,
    /// Frames of the inputs dissected before this one into the same sink: what the reader
    /// notes is numbered after them.
    frame_base: u64,
}

enum Mode {
    Inline(Box<Sharded>),
    Threads(Box<Threads>),
}

struct Threads {
    router: Router,
    /// Which worker thread runs each shard (its index in `senders`), or [`LOCAL`].
    owner: [u8; SHARDS],
    /// The shards the reader's own thread runs (a capture file's first ones), as the first
    /// worker: on two cores a reader thread beside two workers made three busy threads for two
    /// cores, and the reader, waiting on a full queue, starved the other worker (a run's reader
    /// waited ~600 ms in all, each worker 100–140 ms). The reader takes fewer shards than a
    /// worker, as routing is its work too ([`reader_shards`]).
    local: Option<Runner>,
    batches: Vec<Batch>,
    senders: Vec<SyncSender<Batch>>,
    /// Batches sent to each worker and not yet taken by it.
    queued: Arc<[AtomicUsize]>,
    /// The tables' turns, when the workers encode (a capture file): the reader encodes the
    /// next batches instead of waiting for room in a worker's queue.
    turns: Option<Arc<Turns>>,
    spares: Vec<Receiver<Batch>>,
    workers: Vec<JoinHandle<()>>,
    epoch: u64,
    /// The workers' finished epochs (unbounded: a worker must never wait for the reader, which
    /// may itself be waiting for that worker's queue), and the writing order's state.
    done: Receiver<Result<Finished, PipelineError>>,
    order: Order,
}

/// Shards of [`SHARDS`] the reader runs itself when a capture file is dissected on `threads`
/// threads: what makes its routing plus its shards one thread's share of the whole. Routing
/// (reading, finding each packet's shard, copying the workers' packets into their batches)
/// is a fifth of the reader's load here: on two threads, with 28 shards the worker waited
/// 90–110 ms per run for the reader, with 20 the reader 70–140 ms for the worker, with 24 each
/// ~50 ms (docs/dissection.md). None from five threads on: routing is then a share of its own.
fn reader_shards(threads: usize) -> usize {
    const ROUTING_PERCENT: usize = 20;
    let share = (100 / threads.max(1)).saturating_sub(ROUTING_PERCENT);
    (SHARDS * share + (100 - ROUTING_PERCENT) / 2) / (100 - ROUTING_PERCENT)
}

/// The shards the reader runs (the first ones, when `reader_runs_shards`) and the ranges of
/// the worker threads after them, for `threads` threads (2 to [`SHARDS`]).
fn split(threads: usize, reader_runs_shards: bool) -> (usize, Vec<std::ops::Range<usize>>) {
    let local = if reader_runs_shards {
        reader_shards(threads).min(SHARDS - (threads - 1))
    } else {
        0
    };
    let workers = threads - usize::from(local > 0);
    (local, ShardRange::split(local..SHARDS, workers))
}

impl<'w> Dissector<'w> {
    /// A capture file's dissection on `threads` threads (at most [`SHARDS`]) writing into
    /// `sink`, which writes every row it gets as it is (no window, no attribution beyond
    /// `NoWorkloads`). The reader's thread runs the first shards ([`Threads::local`]), worker threads
    /// the rest, and each encodes its own rows into the tables, in turns.
    pub(super) fn new(threads: usize, sink: Sink<'w>) -> Result<Self, PipelineError> {
        Self::start(threads, sink, Input::File, 0)
    }

    /// A dissection of the recorder's slices on `threads` threads into `sink`, which
    /// attributes the rows (see the module's docs); copies of a packet count once when
    /// `copies_once`. `frame_base` frames were dissected into `sink` before.
    pub(super) fn recorded(
        threads: usize,
        sink: Sink<'w>,
        copies_once: bool,
        frame_base: u64,
    ) -> Result<Self, PipelineError> {
        Self::start(threads, sink, Input::Recorded { copies_once }, frame_base)
    }

    fn start(
        threads: usize,
        sink: Sink<'w>,
        input: Input,
        frame_base: u64,
    ) -> Result<Self, PipelineError> {
        let threads = threads.clamp(1, SHARDS);
        let copies_once = input == Input::Recorded { copies_once: true };
        if threads == 1 {
            let sharded = if copies_once {
                Sharded::counting_copies_once(Limits::default())
            } else {
                Sharded::new(Limits::default())
            };
            return Ok(Self {
                mode: Mode::Inline(Box::new(sharded)),
                sink,
                rows: TakenRows::new(),
                frame_base,
            });
        }
        // A capture file's reader runs the first shards itself (see `Threads::local`); the rest are
        // split evenly between the worker threads. The files are the same for any split: the
        // turns go by shard order.
        let (local_shards, ranges) = split(threads, input == Input::File);
        let remote = ranges.len();
        let mut owner = [LOCAL; SHARDS];
        for (worker, range) in ranges.iter().enumerate() {
            for shard in range.clone() {
                owner[shard] = worker as u8;
            }
        }
        // The turns' workers: the reader first when it runs shards.
        let first_remote = usize::from(local_shards > 0);
        let (done_tx, done_rx) = channel::<Result<Finished, PipelineError>>();
        let node = sink.node.clone();
        let source = sink.source;
        // A capture file's rows are encoded by the workers; the recorder's, attributed on this
        // thread, by a writer thread per table, so that the reader keeps feeding the workers.
        let (sink, turns) = match input {
            Input::File => {
                let (sink, turns) = sink.in_turns(threads);
                (sink, Some(turns))
            }
            Input::Recorded { .. } => (sink.in_background()?, None),
        };
        let mut senders = Vec::new();
        let mut spares = Vec::new();
        let mut workers = Vec::new();
        let queued: Arc<[AtomicUsize]> = (0..remote).map(|_| AtomicUsize::new(0)).collect();
        // Who is behind matters only where the workers encode.
        let behind = |of: Behind| if turns.is_some() { of } else { Behind::Never };
        for (worker, range) in ranges.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Batch>(QUEUED_BATCHES);
            let (spare_tx, spare_rx) = sync_channel::<Batch>(QUEUED_BATCHES + 2);
            let done = done_tx.clone();
            let node = node.clone();
            let shards = if copies_once {
                ShardRange::joining_views(range, Limits::default())
            } else {
                ShardRange::new(range, Limits::default())
            };
            let output = Output {
                worker: first_remote + worker,
                node,
                source,
                turns: turns.clone(),
                behind: behind(Behind::WhenQueued(queued.clone(), worker)),
            };
            let runner = Runner::new(shards, output, done);
            let queued = queued.clone();
            let handle = std::thread::Builder::new()
                .name(format!("remora-dissect-{worker}"))
                .spawn(move || work(runner, &rx, &queued[worker], &spare_tx))
                .map_err(|e| PipelineError::Worker(format!("starting a dissection thread: {e}")))?;
            workers.push(handle);
            senders.push(tx);
            spares.push(spare_rx);
        }
        let local = (local_shards > 0).then(|| {
            let output = Output {
                worker: 0,
                node: node.clone(),
                source,
                turns: turns.clone(),
                behind: behind(Behind::WhenWorkersWait(queued.clone())),
            };
            let shards = ShardRange::new(0..local_shards, Limits::default());
            Runner::new(shards, output, done_tx.clone())
        });
        drop(done_tx);
        let router = if copies_once {
            Router::counting_copies_once()
        } else {
            Router::new()
        };
        Ok(Self {
            mode: Mode::Threads(Box::new(Threads {
                router,
                owner,
                local,
                batches: (0..remote).map(|_| Batch::default()).collect(),
                senders,
                queued,
                turns,
                spares,
                workers,
                epoch: 0,
                done: done_rx,
                order: Order::new(threads, frame_base),
            })),
            sink,
            rows: TakenRows::new(),
            frame_base,
        })
    }

    /// Frames fed so far.
    fn frames(&self) -> u64 {
        match &self.mode {
            Mode::Inline(sharded) => sharded.frames(),
            Mode::Threads(t) => t.router.frames(),
        }
    }

    /// Calls written so far.
    pub(super) fn calls_total(&self) -> u64 {
        self.sink.calls_total()
    }

    /// Feeds one packet of node `tag`, sent from cgroup `cgroup` (0: none): the reader notes
    /// its flow's first node and its socket's owner for attribution.
    pub(super) fn push_noted(
        &mut self,
        tag: usize,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
        cgroup: u64,
    ) -> Result<(), PipelineError> {
        let frame = self.frame_base + self.frames() + 1;
        if let Some(o) = self.sink.origins.as_mut() {
            o.note(tag, l3, frame);
        }
        if let Some(s) = self.sink.sockets.as_mut() {
            s.note(tag, l3, cgroup, frame);
        }
        self.push(ts_ns, l3, wire_len)
    }

    /// Feeds one packet.
    pub(super) fn push(
        &mut self,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
    ) -> Result<(), PipelineError> {
        match &mut self.mode {
            Mode::Inline(sharded) => {
                sharded.push(ts_ns, l3, wire_len);
                let frames = sharded.frames();
                if frames.is_multiple_of(EPOCH_FRAMES) {
                    sharded.take_rows(&mut self.rows);
                    self.sink.visible_frames = self.frame_base + frames;
                    self.sink.write_rows(&mut self.rows)?;
                    sharded.give_back(&mut self.rows);
                }
                Ok(())
            }
            Mode::Threads(t) => {
                if t.push(ts_ns, l3, wire_len)? {
                    // An epoch ended: write what the workers have finished meanwhile.
                    while let Ok(result) = t.done.try_recv() {
                        t.order.add(result, &mut self.sink);
                    }
                }
                Ok(())
            }
        }
    }

    /// Feeds a chunk of TLS plaintext read at `ts_ns` (between the packets of its time).
    pub(super) fn push_plaintext(
        &mut self,
        ts_ns: i64,
        chunk: Plaintext<'_>,
    ) -> Result<(), PipelineError> {
        match &mut self.mode {
            Mode::Inline(sharded) => {
                sharded.push_plaintext(ts_ns, chunk);
                Ok(())
            }
            Mode::Threads(t) => t.push_plaintext(ts_ns, chunk),
        }
    }

    /// Ends the input; returns the sink and the counters once every row is written.
    pub(super) fn finish(self) -> Result<(Sink<'w>, Stats), PipelineError> {
        let mut sink = self.sink;
        // The last rows are attributed with everything the reader noted.
        sink.visible_frames = u64::MAX;
        match self.mode {
            Mode::Inline(sharded) => {
                let mut rows = self.rows;
                let stats = sharded.finish_into(&mut rows);
                sink.write_rows(&mut rows)?;
                Ok((sink, stats))
            }
            Mode::Threads(t) => {
                let mut t = *t;
                // The rest goes as the workers' last epoch, which their engines' `finish`
                // ends (rows not yet taken, then the connections still open, shard by shard,
                // as one thread's `finish` gives them).
                for worker in 0..t.batches.len() {
                    t.send(worker)?;
                }
                t.finish_local();
                let router_stats = t.router.stats().clone();
                t.senders.clear();
                // Until every worker's last epoch is in (or a worker is gone without it): a
                // worker that sent its last rows then frees its engines, which nothing here
                // needs to wait for.
                while t.order.ended < t.order.workers {
                    match t.done.recv() {
                        Ok(result) => t.order.add(result, &mut sink),
                        Err(_) => break,
                    }
                }
                let stats = t.order.end();
                if stats.is_ok() {
                    // Let go, not joined (see above); on an error, dropping `t` joins them.
                    t.workers.clear();
                }
                let mut stats = stats?;
                stats.add(&router_stats);
                Ok((sink, stats))
            }
        }
    }
}

impl Threads {
    /// Routes one packet; true when it ended an epoch.
    fn push(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) -> Result<bool, PipelineError> {
        let routed = self.router.route(ts_ns, l3, wire_len);
        let mut full = None;
        // Views joined by this packet, in every worker before it; those the sweep forgot,
        // after the sweep.
        broadcast(&mut self.batches, routed.joined);
        if let Some(local) = &mut self.local {
            local.shards.apply_views(routed.joined);
        }
        if let Some((shard, packet, wire)) = routed.packet {
            if self.owner[shard] == LOCAL {
                if let Some(local) = &mut self.local {
                    local.shards.push(
                        shard,
                        routed.frame,
                        ts_ns,
                        (packet, wire, routed.depth),
                        routed.datagram,
                    );
                }
            } else {
                let worker = usize::from(self.owner[shard]);
                let batch = &mut self.batches[worker];
                batch.items.push(Item::Frame {
                    shard: shard as u8,
                    depth: routed.depth,
                    frame: routed.frame,
                    ts_ns,
                    wire_len: wire,
                    start: batch.bytes.len() as u32,
                    len: packet.len() as u32,
                    datagram: routed.datagram,
                });
                batch.bytes.extend_from_slice(packet);
                if batch.items.len() >= BATCH_FRAMES {
                    full = Some(worker);
                }
            }
        }
        if let Some(now) = routed.sweep {
            for batch in &mut self.batches {
                batch.items.push(Item::Sweep(now));
            }
            if let Some(local) = &mut self.local {
                local.shards.sweep(now);
            }
        }
        broadcast(&mut self.batches, routed.forgotten);
        if let Some(local) = &mut self.local {
            local.shards.apply_views(routed.forgotten);
        }
        if let Some(worker) = full {
            self.send(worker)?;
        }
        if self.router.frames().is_multiple_of(EPOCH_FRAMES) {
            self.end_epoch()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Routes a chunk of TLS plaintext to the worker of its shard.
    fn push_plaintext(&mut self, ts_ns: i64, chunk: Plaintext<'_>) -> Result<(), PipelineError> {
        let shard = chunk.shard();
        if self.owner[shard] == LOCAL {
            if let Some(local) = &mut self.local {
                local.shards.push_plaintext(shard, ts_ns, chunk);
            }
            return Ok(());
        }
        let worker = usize::from(self.owner[shard]);
        let batch = &mut self.batches[worker];
        batch.items.push(Item::Plaintext(Box::new(PlainItem {
            shard: shard as u8,
            ts_ns,
            local: chunk.local,
            peer: chunk.peer,
            outbound: chunk.outbound,
            start: batch.bytes.len() as u32,
            len: chunk.bytes.len() as u32,
            missing_after: chunk.missing_after,
        })));
        batch.bytes.extend_from_slice(chunk.bytes);
        if batch.items.len() >= BATCH_FRAMES {
            self.send(worker)?;
        }
        Ok(())
    }

    /// Ends the epoch in every worker, then in the reader's own shards (whose turn may write
    /// the workers' earlier batches: they have everything they need for them by then).
    fn end_epoch(&mut self) -> Result<(), PipelineError> {
        for worker in 0..self.batches.len() {
            self.batches[worker].items.push(Item::EndEpoch(self.epoch));
            self.send(worker)?;
        }
        if let Some(local) = &mut self.local {
            // The receiver lives as long as this: the send cannot fail.
            local.end_epoch(self.epoch);
        }
        self.epoch += 1;
        Ok(())
    }

    /// Ends the input in the reader's own shards: their last epoch.
    fn finish_local(&mut self) {
        if let Some(local) = self.local.take() {
            local.finish(self.epoch);
        }
    }

    /// Sends `worker` its batch; while its queue is full, encodes the batches that are next
    /// in the writing order, if any are in.
    fn send(&mut self, worker: usize) -> Result<(), PipelineError> {
        let spare = self.spares[worker].try_recv().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.batches[worker], spare);
        let stopped = || PipelineError::Worker(format!("dissection worker {worker} stopped"));
        // Counted before the worker can take it, so that the count never goes below zero.
        self.queued[worker].fetch_add(1, Ordering::Relaxed);
        if let Some(turns) = &self.turns {
            loop {
                match self.senders[worker].try_send(batch) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Disconnected(_)) => return Err(stopped()),
                    Err(TrySendError::Full(back)) => batch = back,
                }
                if !turns.help() {
                    break;
                }
            }
        }
        self.senders[worker].send(batch).map_err(|_| stopped())
    }
}

impl Drop for Threads {
    /// A dissection that stops early (an error, a cancel) lets its workers go and waits for
    /// them, so that what they hold is gone when the caller returns: with a capture file, the
    /// tables they write in turns, whose unpublished files go with them. (A finished one has
    /// let go of them already, without waiting.)
    fn drop(&mut self) {
        self.senders.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Puts `changes` into every worker's batch.
fn broadcast(batches: &mut [Batch], changes: &[ViewChange]) {
    for change in changes {
        for batch in batches.iter_mut() {
            batch.items.push(Item::View(Box::new(*change)));
        }
    }
}

#[cfg(test)]
mod tests;
