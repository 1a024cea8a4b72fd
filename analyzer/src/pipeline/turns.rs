//! A capture file's tables written by the dissection workers themselves, in turns: a worker
//! hands over its epoch's record batches and writes, in (epoch, worker) order, every batch up
//! to its own; later ones are left to their workers. The files get the batches in the order
//! one thread writes them.
//!
//! So each worker mostly encodes its own rows: the work follows the shards, which are split
//! evenly, and memory is mostly freed by the thread that allocated it. (When the first worker
//! to find the writers free wrote everything waiting, one worker did 1.6 times the other's
//! work. When each wrote only its own, a batch delayed by a busy writer stayed a turn behind
//! for good, and the lag grew with the capture: 250 MiB instead of 140.)
//!
//! Why not a writer thread per table, as the recorder's slices have (`tables::Background`):
//! with one, a two-core dissection ran five threads (reader, two workers, two writers) that
//! woke each other ~4,000 times a second for ~1,400 batches, and each came back to caches the
//! others had filled: every function of the engines took ~25% longer than on one thread.
//! In turns the writing lands on the workers' threads, which are busy anyway.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use arrow::array::RecordBatch;

use super::{PipelineError, tables::Tables};

/// One worker's batches of one epoch (either may be absent).
pub(super) type Batches = (Option<RecordBatch>, Option<RecordBatch>);

/// Both tables, written in turns by the workers (see the module's docs).
pub(super) struct Turns {
    state: Mutex<State>,
}

struct State {
    workers: usize,
    /// Batches that came before their turn.
    waiting: BTreeMap<(u64, usize), Batches>,
    /// Whose batches are written next: (epoch, worker).
    next: (u64, usize),
    /// None while a worker writes with them.
    tables: Option<Tables>,
    /// The first write that failed; later batches are dropped unwritten.
    failed: Option<PipelineError>,
}

impl Turns {
    /// `tables`, written by `workers` workers whose epochs are numbered from 0.
    pub(super) fn new(tables: Tables, workers: usize) -> Self {
        Self {
            state: Mutex::new(State {
                workers,
                waiting: BTreeMap::new(),
                next: (0, 0),
                tables: Some(tables),
                failed: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked holds no lock while it writes: the state stays whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands over `worker`'s batches of `epoch` (every epoch of every worker must come, empty
    /// or not, for the later ones to be written), and writes the batches that are next in
    /// order up to these (unless another worker is writing, which then does). With `last`
    /// (the worker's last epoch), it writes every batch that is next, whoever's it is.
    pub(super) fn deliver(&self, epoch: u64, worker: usize, batches: Batches, last: bool) {
        let mut state = self.lock();
        state.waiting.insert((epoch, worker), batches);
        let Some(mut tables) = state.tables.take() else {
            return;
        };
        loop {
            let at = state.next;
            if at > (epoch, worker) && !last {
                break;
            }
            let Some((calls, conns)) = state.waiting.remove(&at) else {
                break;
            };
            state.next = if at.1 + 1 == state.workers {
                (at.0 + 1, 0)
            } else {
                (at.0, at.1 + 1)
            };
            let write = state.failed.is_none();
            // Encoded without the lock: the others hand over meanwhile.
            drop(state);
            let written = if write {
                tables.write(calls, conns)
            } else {
                Ok(())
            };
            state = self.lock();
            if let Err(e) = written {
                state.failed.get_or_insert(e);
            }
        }
        // Put back under the same lock as the last look at `waiting`: a batch handed over
        // while this worker wrote is either written above, or finds the tables here, or
        // waits for the next worker to hand over a later batch.
        state.tables = Some(tables);
    }

    /// The tables, once every worker has handed over its last epoch and returned from
    /// [`deliver`](Self::deliver) (then nothing is written any more); an error if a write
    /// failed or a batch never came.
    ///
    /// On an error the tables are dropped here, unpublished files and all, whoever still holds
    /// this.
    pub(super) fn take_tables(&self) -> Result<Tables, PipelineError> {
        let mut state = self.lock();
        let tables = state.tables.take();
        let failed = state.failed.take();
        let missing = !std::mem::take(&mut state.waiting).is_empty();
        drop(state);
        if let Some(e) = failed {
            return Err(e);
        }
        if missing {
            return Err(PipelineError::Worker(
                "a dissection worker stopped before handing over all its rows".into(),
            ));
        }
        tables.ok_or_else(|| {
            PipelineError::Worker("a dissection worker stopped while writing the tables".into())
        })
    }
}

#[cfg(test)]
mod tests;
