//! Dissection on every core: the reader routes packets by flow to worker threads, each running
//! the engines of a range of shards (`remora_dissect::shard`) and building its own record
//! batches; a writer puts the batches into the tables in a fixed order, epoch by epoch and
//! range by range, so that the files hold the same rows, in the same order, as one thread
//! gives.
//!
//! One thread ([`Dissector::new`] with `threads == 1`) runs the same shards inline, with no
//! channel in between.
//!
//! Memory stays bounded whatever the input's size: the queues between the threads hold a few
//! batches each, and a worker that runs ahead of the others can only be an epoch or two ahead
//! before the reader, waiting for the slowest worker, stops feeding it.

use std::{
    collections::BTreeMap,
    sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel},
    thread::JoinHandle,
};

use arrow::array::RecordBatch;
use remora_dissect::{
    Call, Conn, Limits, Router, ShardRange, Sharded, Stats, UdpDatagram,
    shard::{EPOCH_FRAMES, SHARDS},
};

use super::{PipelineError, sink::Sink};
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

/// One entry of a worker's batch.
enum Item {
    /// A packet: its shard, frame number, time, wire length, where its bytes are, and its
    /// place on its UDP flow when it is DNS over UDP.
    Frame {
        shard: u8,
        frame: u64,
        ts_ns: i64,
        wire_len: u32,
        start: u32,
        len: u32,
        datagram: Option<UdpDatagram>,
    },
    /// Every shard sweeps at this time.
    Sweep(i64),
    /// The epoch ends: the rows go to the writer.
    EndEpoch(u64),
}

/// Packets for one worker, their bytes in one buffer.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    items: Vec<Item>,
}

/// The rows one worker finished in one epoch, as record batches.
struct Finished {
    epoch: u64,
    worker: usize,
    calls: Option<RecordBatch>,
    conns: Option<RecordBatch>,
    counted: Counted,
    /// The worker's counters, with its last epoch.
    stats: Option<Stats>,
}

/// What the summary counts of a set of rows.
#[derive(Default)]
pub(super) struct Counted {
    pub(super) calls: BTreeMap<&'static str, u64>,
    pub(super) unpaired: u64,
    pub(super) conns: u64,
}

impl Counted {
    pub(super) fn of(calls: &[Call], conns: &[Conn]) -> Self {
        let mut counted = Counted {
            conns: conns.len() as u64,
            ..Counted::default()
        };
        for c in calls {
            *counted.calls.entry(c.protocol).or_default() += 1;
            counted.unpaired += u64::from(c.error_type.is_some());
        }
        counted
    }
}

/// Feeds packets to the shards, on this thread or on workers, and their rows to a sink.
pub(super) struct Dissector<'w> {
    mode: Mode,
    sink: Sink<'w>,
    /// Rows taken at an epoch's end, written, then cleared: the buffers stay allocated.
    calls: Vec<Call>,
    conns: Vec<Conn>,
}

enum Mode {
    Inline(Box<Sharded>),
    Threads(Box<Threads>),
}

struct Threads {
    router: Router,
    /// Which worker runs each shard.
    owner: [u8; SHARDS],
    batches: Vec<Batch>,
    senders: Vec<SyncSender<Batch>>,
    spares: Vec<Receiver<Batch>>,
    workers: Vec<JoinHandle<()>>,
    epoch: u64,
    /// The workers' finished epochs (unbounded: a worker must never wait for the reader, which
    /// may itself be waiting for that worker's queue), and the writing order's state.
    done: Receiver<Result<Finished, PipelineError>>,
    order: Order,
}

/// Puts the workers' batches into (epoch, worker) order.
struct Order {
    workers: usize,
    waiting: BTreeMap<(u64, usize), Finished>,
    next: (u64, usize),
    stats: Stats,
    /// Workers whose last epoch (with their counters) was written.
    ended: usize,
    failed: Option<PipelineError>,
}

impl<'w> Dissector<'w> {
    /// A dissection on `threads` threads (at most [`SHARDS`]) writing into `sink`, which
    /// writes every row it gets as it is (no window, no attribution beyond `NoWorkloads`): a
    /// capture file's dissection. With one thread, the reader's thread encodes the tables; with
    /// more, a writer thread does.
    pub(super) fn new(threads: usize, sink: Sink<'w>) -> Result<Self, PipelineError> {
        let threads = threads.clamp(1, SHARDS);
        if threads == 1 {
            return Ok(Self {
                mode: Mode::Inline(Box::new(Sharded::new(Limits::default()))),
                sink,
                calls: Vec::new(),
                conns: Vec::new(),
            });
        }
        let ranges = ShardRange::split(threads);
        let mut owner = [0u8; SHARDS];
        for (worker, range) in ranges.iter().enumerate() {
            for shard in range.clone() {
                owner[shard] = worker as u8;
            }
        }
        let (done_tx, done_rx) = channel::<Result<Finished, PipelineError>>();
        let node = sink.node.clone();
        let source = sink.source;
        let mut senders = Vec::new();
        let mut spares = Vec::new();
        let mut workers = Vec::new();
        for (worker, range) in ranges.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<Batch>(QUEUED_BATCHES);
            let (spare_tx, spare_rx) = sync_channel::<Batch>(QUEUED_BATCHES + 2);
            let done = done_tx.clone();
            let node = node.clone();
            let handle = std::thread::Builder::new()
                .name(format!("remora-dissect-{worker}"))
                .spawn(move || work(worker, range, &rx, &spare_tx, &done, &node, source))
                .map_err(|e| PipelineError::Worker(format!("starting a dissection thread: {e}")))?;
            workers.push(handle);
            senders.push(tx);
            spares.push(spare_rx);
        }
        drop(done_tx);
        // Parquet encoding runs on its own thread, so that the reader keeps feeding the workers.
        let sink = sink.in_background()?;
        Ok(Self {
            mode: Mode::Threads(Box::new(Threads {
                router: Router::new(),
                owner,
                batches: (0..threads).map(|_| Batch::default()).collect(),
                senders,
                spares,
                workers,
                epoch: 0,
                done: done_rx,
                order: Order {
                    workers: threads,
                    waiting: BTreeMap::new(),
                    next: (0, 0),
                    stats: Stats::default(),
                    ended: 0,
                    failed: None,
                },
            })),
            sink,
            calls: Vec::new(),
            conns: Vec::new(),
        })
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
                if sharded.frames().is_multiple_of(EPOCH_FRAMES) {
                    sharded.take_rows_into(&mut self.calls, &mut self.conns);
                    self.sink.write_rows(&mut self.calls, &mut self.conns)?;
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

    /// Ends the input; returns the sink and the counters once every row is written.
    pub(super) fn finish(self) -> Result<(Sink<'w>, Stats), PipelineError> {
        let mut sink = self.sink;
        match self.mode {
            Mode::Inline(sharded) => {
                let mut output = sharded.finish();
                sink.write_rows(&mut output.calls, &mut output.conns)?;
                Ok((sink, output.stats))
            }
            Mode::Threads(t) => {
                let mut t = *t;
                // The rest goes as the workers' last epoch, which their engines' `finish`
                // ends (rows not yet taken, then the connections still open, shard by shard,
                // as one thread's `finish` gives them).
                for worker in 0..t.batches.len() {
                    t.send(worker)?;
                }
                let router_stats = t.router.stats().clone();
                drop(t.senders);
                for result in t.done {
                    t.order.add(result, &mut sink);
                }
                for worker in t.workers {
                    let _ = worker.join();
                }
                let mut stats = t.order.end()?;
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
        if let Some((shard, packet, wire)) = routed.packet {
            let worker = usize::from(self.owner[shard]);
            let batch = &mut self.batches[worker];
            batch.items.push(Item::Frame {
                shard: shard as u8,
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
        if let Some(now) = routed.sweep {
            for batch in &mut self.batches {
                batch.items.push(Item::Sweep(now));
            }
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

    /// Ends the epoch in every worker.
    fn end_epoch(&mut self) -> Result<(), PipelineError> {
        for worker in 0..self.batches.len() {
            self.batches[worker].items.push(Item::EndEpoch(self.epoch));
            self.send(worker)?;
        }
        self.epoch += 1;
        Ok(())
    }

    fn send(&mut self, worker: usize) -> Result<(), PipelineError> {
        let spare = self.spares[worker].try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batches[worker], spare);
        self.senders[worker]
            .send(batch)
            .map_err(|_| PipelineError::Worker(format!("dissection worker {worker} stopped")))
    }
}

/// One worker: the engines of `range`, fed from `input`, its rows to `done` at each epoch's end.
fn work(
    worker: usize,
    range: std::ops::Range<usize>,
    input: &Receiver<Batch>,
    spares: &SyncSender<Batch>,
    done: &Sender<Result<Finished, PipelineError>>,
    node: &str,
    source: &'static str,
) {
    let mut shards = ShardRange::new(range, Limits::default());
    // Epochs seen; the last one, numbered after them, carries what `finish` gives.
    let mut epochs = 0;
    // Rows of an epoch, made into batches, then cleared: the buffers stay allocated.
    let (mut calls, mut conns) = (Vec::new(), Vec::new());
    let finished = |epoch: u64,
                    calls: &mut Vec<Call>,
                    conns: &mut Vec<Conn>,
                    stats: Option<Stats>|
     -> Result<Finished, PipelineError> {
        let (calls, conns, counted) =
            super::sink::take_batches(node, source, calls, conns, &NoWorkloads)?;
        Ok(Finished {
            epoch,
            worker,
            calls,
            conns,
            counted,
            stats,
        })
    };
    while let Ok(mut batch) = input.recv() {
        for item in batch.items.drain(..) {
            match item {
                Item::Frame {
                    shard,
                    frame,
                    ts_ns,
                    wire_len,
                    start,
                    len,
                    datagram,
                } => {
                    let bytes = &batch.bytes[start as usize..(start + len) as usize];
                    shards.push(usize::from(shard), frame, ts_ns, bytes, wire_len, datagram);
                }
                Item::Sweep(now) => shards.sweep(now),
                Item::EndEpoch(epoch) => {
                    epochs = epoch + 1;
                    shards.take_rows_into(&mut calls, &mut conns);
                    let result = finished(epoch, &mut calls, &mut conns, None);
                    if done.send(result).is_err() {
                        return;
                    }
                }
            }
        }
        batch.bytes.clear();
        let _ = spares.try_send(batch);
    }
    let mut output = shards.finish();
    let result = finished(
        epochs,
        &mut output.calls,
        &mut output.conns,
        Some(output.stats),
    );
    let _ = done.send(result);
}

impl Order {
    /// Takes one worker's epoch and writes every batch that is now next in order.
    fn add(&mut self, result: Result<Finished, PipelineError>, sink: &mut Sink<'_>) {
        match result {
            Ok(f) => {
                self.waiting.insert((f.epoch, f.worker), f);
            }
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
        while let Some(f) = self.waiting.remove(&self.next) {
            // A writer that stopped on an error says so when the sink closes.
            if let Err(e) = sink.write_batches(f.calls, f.conns, f.counted) {
                self.failed.get_or_insert(e);
            }
            if let Some(s) = &f.stats {
                self.stats.add(s);
                self.ended += 1;
            }
            self.next = if self.next.1 + 1 == self.workers {
                (self.next.0 + 1, 0)
            } else {
                (self.next.0, self.next.1 + 1)
            };
        }
    }

    /// The summed counters, once every worker's last epoch is written.
    fn end(self) -> Result<Stats, PipelineError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.ended != self.workers || !self.waiting.is_empty() {
            return Err(PipelineError::Worker(
                "a dissection worker stopped before the end of the input".into(),
            ));
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow::compute::concat_batches;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// Every frame of the shared fixtures, as (time, IP bytes, wire length from the IP header).
    fn fixture_frames() -> Vec<(i64, Vec<u8>, u32)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("shared fixtures")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        files.sort();
        let mut frames = Vec::new();
        for file in files {
            let Ok(all) = remora_dissect::capture::frames(&std::fs::read(&file).unwrap()) else {
                continue;
            };
            for (info, data) in all {
                if let Some(l3) = remora_dissect::capture::l3_of(info.linktype, &data) {
                    let l2 = (data.len() - l3.len()) as u32;
                    frames.push((info.ts_ns, l3.to_vec(), info.orig_len.saturating_sub(l2)));
                }
            }
        }
        frames
    }

    /// A raw-IP pcap of the fixtures played `rounds` times, each round 1,000 s after the last
    /// (each fixture's own timing kept), so that it spans several epochs and sweeps.
    fn looped_capture(path: &Path, rounds: usize) -> usize {
        let frames = fixture_frames();
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&65_535u32.to_le_bytes());
        out.extend_from_slice(&101u32.to_le_bytes());
        let mut clock = 1_700_000_000_000_000_000i64;
        let mut count = 0;
        for _ in 0..rounds {
            let mut previous = None;
            for (ts, l3, wire) in &frames {
                // Frames keep their spacing within a fixture; a jump back starts the next one
                // a second later.
                clock += match previous {
                    Some(p) if *ts >= p => (ts - p).min(5_000_000_000),
                    _ => 1_000_000_000,
                };
                previous = Some(*ts);
                out.extend_from_slice(&((clock / 1_000_000_000) as u32).to_le_bytes());
                out.extend_from_slice(&((clock % 1_000_000_000) as u32).to_le_bytes());
                out.extend_from_slice(&(l3.len() as u32).to_le_bytes());
                out.extend_from_slice(&wire.to_le_bytes());
                out.extend_from_slice(l3);
                count += 1;
            }
            clock += 1_000_000_000_000;
        }
        std::fs::write(path, out).unwrap();
        count
    }

    fn table(dir: &Path, name: &str) -> RecordBatch {
        let file = std::fs::File::open(dir.join(name)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn any_number_of_threads_gives_the_same_rows_in_the_same_order() {
        let tmp = tempfile::tempdir().unwrap();
        let pcap = tmp.path().join("looped.pcap");
        let frames = looped_capture(&pcap, 90);
        assert!(
            frames as u64 > 2 * EPOCH_FRAMES,
            "{frames} frames: fewer than three epochs"
        );
        let mut tables = Vec::new();
        for threads in [1, 2, 3] {
            let out = tmp.path().join(format!("t{threads}"));
            let summary = super::super::dissect_file(&pcap, &out, "n", false, threads).unwrap();
            assert!(summary.calls.values().sum::<u64>() > 10_000, "{summary}");
            tables.push((
                threads,
                table(&out, "calls.parquet"),
                table(&out, "conns.parquet"),
            ));
        }
        let (_, calls, conns) = &tables[0];
        for (threads, c, n) in &tables[1..] {
            assert_eq!(
                c.num_rows(),
                calls.num_rows(),
                "calls with {threads} threads"
            );
            assert!(c == calls, "calls differ with {threads} threads");
            assert!(n == conns, "conns differ with {threads} threads");
        }
    }
}
