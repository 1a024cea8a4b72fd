//! A range of shards run by a worker thread or by the reader itself: the packets it is sent, in
//! batches, and its rows handed over epoch by epoch.

use super::*;

/// One entry of a worker's batch.
pub(super) enum Item {
    /// A packet: its shard, frame number, time, wire length, tunnel depth, where its bytes
    /// are, and its place on its UDP flow when it is DNS over UDP.
    Frame {
        shard: u8,
        depth: u8,
        frame: u64,
        ts_ns: i64,
        wire_len: u32,
        start: u32,
        len: u32,
        datagram: Option<UdpDatagram>,
    },
    /// A chunk of TLS plaintext (rare next to packets, so boxed).
    Plaintext(Box<PlainItem>),
    /// A flow joined across a NAT, or forgotten (rare, so boxed).
    View(Box<ViewChange>),
    /// Every shard sweeps at this time.
    Sweep(i64),
    /// The epoch ends: the rows go to the writer.
    EndEpoch(u64),
}

/// A chunk of TLS plaintext in a batch; its bytes are in the batch's buffer.
pub(super) struct PlainItem {
    pub(super) shard: u8,
    pub(super) ts_ns: i64,
    pub(super) local: Endpoint,
    pub(super) peer: Endpoint,
    pub(super) outbound: bool,
    pub(super) start: u32,
    pub(super) len: u32,
    pub(super) missing_after: u64,
}

/// Packets for one worker, their bytes in one buffer.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) bytes: Vec<u8>,
    pub(super) items: Vec<Item>,
}

/// In [`Threads::owner`]: the shard is run on the reader's thread.
pub(super) const LOCAL: u8 = u8::MAX;

/// A range of shards and where its rows go, epoch by epoch: run by a worker thread ([`work`]),
/// or by the reader itself ([`Threads::local`]).
pub(super) struct Runner {
    pub(super) shards: ShardRange,
    output: Output,
    /// Where its epochs go.
    done: Sender<Result<Finished, PipelineError>>,
    /// Rows of an epoch, made into batches, then cleared: the buffers stay allocated.
    rows: TakenRows,
}

impl Runner {
    pub(super) fn new(
        shards: ShardRange,
        output: Output,
        done: Sender<Result<Finished, PipelineError>>,
    ) -> Self {
        Self {
            shards,
            output,
            done,
            rows: TakenRows::new(),
        }
    }

    /// Ends epoch `epoch`: its rows are handed over. False when nobody takes them any more.
    pub(super) fn end_epoch(&mut self, epoch: u64) -> bool {
        self.shards.take_rows(&mut self.rows);
        let result = self.output.finished(epoch, &mut self.rows, None);
        self.shards.give_back(&mut self.rows);
        self.done.send(result).is_ok()
    }

    /// Ends the input: the rows not yet taken, then the connections still open, shard by
    /// shard, with the counters, as epoch `epoch` (the one after the last ended).
    pub(super) fn finish(self, epoch: u64) {
        let mut rows = self.rows;
        let stats = self.shards.finish_into(&mut rows);
        let result = self.output.finished(epoch, &mut rows, Some(stats));
        let _ = self.done.send(result);
    }
}

/// Where a worker's rows go.
pub(super) struct Output {
    pub(super) worker: usize,
    pub(super) node: String,
    pub(super) source: &'static str,
    /// Where the worker writes its rows as record batches; none: it hands them back as they
    /// are.
    pub(super) turns: Option<Arc<Turns>>,
    /// When this range is behind the others, so that its batches are better encoded by them.
    pub(super) behind: Behind,
}

/// When a range of shards is behind the rest of a dissection: then it leaves the encoding of
/// its rows to a thread that would otherwise wait ([`Turns::deliver`] with `defer`).
///
/// Which thread is behind changes with the traffic: a capture's few heavy connections may
/// land mostly on one side of the split, its many short ones spread evenly (docs/dissection.md,
/// "Encoding goes to whoever would wait"). Queue lengths say it at once, with no estimate.
pub(super) enum Behind {
    /// Never (rows handed back as they are, or one thread).
    Never,
    /// A worker thread: when its queue of batches is at least half full.
    WhenQueued(Arc<[AtomicUsize]>, usize),
    /// The reader's own shards: when every worker's queue is (nearly) empty, so that the
    /// workers wait for the reader.
    WhenWorkersWait(Arc<[AtomicUsize]>),
}

impl Behind {
    fn now(&self) -> bool {
        match self {
            Self::Never => false,
            Self::WhenQueued(queued, worker) => {
                queued[*worker].load(Ordering::Relaxed) >= QUEUED_BATCHES / 2
            }
            Self::WhenWorkersWait(queued) => queued.iter().all(|q| q.load(Ordering::Relaxed) <= 1),
        }
    }
}

impl Output {
    /// One epoch's rows, handed over; `taken` is emptied.
    pub(super) fn finished(
        &self,
        epoch: u64,
        taken: &mut TakenRows,
        stats: Option<Stats>,
    ) -> Result<Finished, PipelineError> {
        let rows = match &self.turns {
            None => {
                // To the reader's thread, which gathers every range's rows of the epoch.
                let (mut calls, mut conns) = (Vec::new(), Vec::new());
                taken.move_into(&mut calls, &mut conns);
                Rows::Owned { calls, conns }
            }
            Some(turns) => {
                match super::super::sink::take_batches(&self.node, self.source, taken, &NoWorkloads)
                {
                    Ok((calls, conns, counted)) => {
                        let last = stats.is_some();
                        let defer = self.behind.now();
                        turns.deliver(epoch, self.worker, (calls, conns), last, defer);
                        Rows::Written(counted)
                    }
                    Err(e) => {
                        // The others' later batches are written after this turn, empty.
                        turns.deliver(epoch, self.worker, (None, None), stats.is_some(), false);
                        return Err(e);
                    }
                }
            }
        };
        Ok(Finished {
            epoch,
            worker: self.worker,
            rows,
            stats,
        })
    }
}

/// The next batch from `input` (none once the reader is gone); while there is none, the
/// worker encodes the batches that are next in the writing order, if any are in.
fn next_batch(
    input: &Receiver<Batch>,
    turns: Option<&Turns>,
    queued: &AtomicUsize,
) -> Option<Batch> {
    let batch = loop {
        match input.try_recv() {
            Ok(batch) => break Some(batch),
            Err(TryRecvError::Disconnected) => break None,
            Err(TryRecvError::Empty) => {
                if !turns.is_some_and(Turns::help) {
                    break input.recv().ok();
                }
            }
        }
    };
    if batch.is_some() {
        queued.fetch_sub(1, Ordering::Relaxed);
    }
    batch
}

/// One worker: the engines of its shards, fed from `input`, its rows handed over at each
/// epoch's end. `queued` counts the batches waiting in `input` (the reader adds, this takes).
pub(super) fn work(
    mut runner: Runner,
    input: &Receiver<Batch>,
    queued: &AtomicUsize,
    spares: &SyncSender<Batch>,
) {
    // Epochs seen; the last one, numbered after them, carries what `finish` gives.
    let mut epochs = 0;
    let turns = runner.output.turns.clone();
    while let Some(mut batch) = next_batch(input, turns.as_deref(), queued) {
        for item in batch.items.drain(..) {
            match item {
                Item::Frame {
                    shard,
                    depth,
                    frame,
                    ts_ns,
                    wire_len,
                    start,
                    len,
                    datagram,
                } => {
                    let bytes = &batch.bytes[start as usize..(start + len) as usize];
                    runner.shards.push(
                        usize::from(shard),
                        frame,
                        ts_ns,
                        (bytes, wire_len, depth),
                        datagram,
                    );
                }
                Item::Plaintext(chunk) => {
                    let bytes =
                        &batch.bytes[chunk.start as usize..(chunk.start + chunk.len) as usize];
                    runner.shards.push_plaintext(
                        usize::from(chunk.shard),
                        chunk.ts_ns,
                        Plaintext {
                            local: chunk.local,
                            peer: chunk.peer,
                            outbound: chunk.outbound,
                            bytes,
                            missing_after: chunk.missing_after,
                        },
                    );
                }
                Item::View(change) => runner.shards.apply_views(std::slice::from_ref(&*change)),
                Item::Sweep(now) => runner.shards.sweep(now),
                Item::EndEpoch(epoch) => {
                    epochs = epoch + 1;
                    if !runner.end_epoch(epoch) {
                        return;
                    }
                }
            }
        }
        batch.bytes.clear();
        let _ = spares.try_send(batch);
    }
    runner.finish(epochs);
}
