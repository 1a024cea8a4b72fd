//! The workers' rows put back into (epoch, worker) order, as one thread gives them.

use super::*;
use crate::pipeline::turns::{Turn, turn_after};

/// The rows one worker finished in one epoch.
pub(super) struct Finished {
    pub(super) epoch: u64,
    pub(super) worker: usize,
    pub(super) rows: Rows,
    /// The worker's counters, with its last epoch.
    pub(super) stats: Option<Stats>,
}

/// Rows as a worker hands them over.
pub(super) enum Rows {
    /// Handed to the tables' turns by the worker (a capture file's rows, written as they
    /// are): only their counts come to the reader.
    Written(Counted),
    /// As they are, for the reader's thread to attribute.
    Owned { calls: Vec<Call>, conns: Vec<Conn> },
}

/// What the summary counts of a set of rows.
#[derive(Default)]
pub(in crate::pipeline) struct Counted {
    pub(in crate::pipeline) calls: BTreeMap<&'static str, u64>,
    pub(in crate::pipeline) unpaired: u64,
    pub(in crate::pipeline) conns: u64,
}

impl Counted {
    /// The counts of `calls` and of `conns` connections.
    pub(in crate::pipeline) fn of<'c>(
        calls: impl IntoIterator<Item = &'c Call>,
        conns: usize,
    ) -> Self {
        let mut counted = Counted {
            conns: conns as u64,
            ..Counted::default()
        };
        for c in calls {
            *counted.calls.entry(c.protocol).or_default() += 1;
            counted.unpaired += u64::from(c.error_type.is_some());
        }
        counted
    }
}

/// Puts the workers' batches into (epoch, worker) order.
pub(super) struct Order {
    pub(super) workers: usize,
    waiting: BTreeMap<Turn, Finished>,
    next: Turn,
    stats: Stats,
    /// Workers whose last epoch (with their counters) was written.
    pub(super) ended: usize,
    failed: Option<PipelineError>,
    frame_base: u64,
    /// Rows handed over as they are, gathered until their epoch's last range.
    owned: (Vec<Call>, Vec<Conn>),
}

impl Order {
    /// The order of `workers` workers' epochs, numbered from 0; the recorder's frames are
    /// numbered after `frame_base`.
    pub(super) fn new(workers: usize, frame_base: u64) -> Self {
        Self {
            workers,
            waiting: BTreeMap::new(),
            next: (0, 0),
            stats: Stats::default(),
            ended: 0,
            failed: None,
            frame_base,
            owned: Default::default(),
        }
    }

    /// Takes one worker's epoch and writes every batch that is now next in order.
    pub(super) fn add(&mut self, result: Result<Finished, PipelineError>, sink: &mut Sink<'_>) {
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
            let written = match f.rows {
                Rows::Written(counted) => {
                    sink.count(counted);
                    Ok(())
                }
                Rows::Owned { calls, conns } => {
                    // An epoch's rows are written at once when its last range comes, as one
                    // thread writes them (the sink groups them by node).
                    self.owned.0.extend(calls);
                    self.owned.1.extend(conns);
                    if self.next.1 + 1 == self.workers {
                        // Attributed with what the reader had noted when the epoch ended (all
                        // of it for the last one).
                        sink.visible_frames = match f.stats {
                            Some(_) => u64::MAX,
                            None => self.frame_base + (f.epoch + 1) * EPOCH_FRAMES,
                        };
                        let (calls, conns) = std::mem::take(&mut self.owned);
                        sink.write(calls, conns)
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = written {
                self.failed.get_or_insert(e);
            }
            if let Some(s) = &f.stats {
                self.stats.add(s);
                self.ended += 1;
            }
            self.next = turn_after(self.next, self.workers);
        }
    }

    /// The summed counters, once every worker's last epoch is written.
    pub(super) fn end(&mut self) -> Result<Stats, PipelineError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.ended != self.workers || !self.waiting.is_empty() {
            return Err(PipelineError::Worker(
                "a dissection worker stopped before the end of the input".into(),
            ));
        }
        Ok(std::mem::take(&mut self.stats))
    }
}
