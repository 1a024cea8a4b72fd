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
//!
//! Encoding is also the work that moves to whichever thread has time for it. A worker that is
//! behind (its queue of packets is filling up) defers its batches, and a thread that would
//! wait, for packets or for room in a worker's queue, writes the next ones instead
//! ([`Turns::help`]). Which side is behind changes with the traffic, batch by batch; moving
//! shards between the threads to follow it was measured slower (docs/dissection.md, "Encoding
//! goes to whoever would wait").

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use arrow::array::RecordBatch;

use super::{PipelineError, tables::Tables};

/// One worker's batches of one epoch (either may be absent).
pub(super) type Batches = (Option<RecordBatch>, Option<RecordBatch>);

/// Where in the writing order a worker's epoch comes: (epoch, worker).
pub(super) type Turn = (u64, usize);

/// The turn after `turn` among `workers` workers: the next worker's, or the first's of the
/// next epoch.
pub(super) fn turn_after(turn: Turn, workers: usize) -> Turn {
    if turn.1 + 1 == workers {
        (turn.0 + 1, 0)
    } else {
        (turn.0, turn.1 + 1)
    }
}

/// Batches a worker may leave unwritten for the others ([`Turns::deliver`] with `defer`): a
/// few epochs' worth, so that what waits stays small next to the open row groups.
const DEFERRED_PER_WORKER: usize = 2;

/// Both tables, written in turns by the workers (see the module's docs).
pub(super) struct Turns {
    state: Mutex<State>,
}

struct State {
    workers: usize,
    /// Batches handed over and not yet written: those that came before their turn, and
    /// those left for others to write.
    waiting: BTreeMap<Turn, Batches>,
    /// Whose batches are written next.
    next: Turn,
    /// A worker handed over its last epoch: whoever holds the tables writes every turn that is
    /// in before putting them back (a worker that does not is sure to hand over again, and
    /// writes then).
    drain: bool,
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
                drain: false,
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
    /// order up to these (unless another thread holds the tables: then they wait for a later
    /// writer, or the holder writes them if their turn comes before it stops). With `last`
    /// (the worker's last epoch), every batch that is next is written, whoever's it is.
    ///
    /// With `defer` (the worker is behind the others), nothing is written here and the
    /// batches wait for whoever writes next: a worker handing over its own, or one with
    /// nothing else to do ([`help`](Self::help)). A worker defers at most
    /// [`DEFERRED_PER_WORKER`] batches; past that it writes as without `defer`.
    pub(super) fn deliver(
        &self,
        epoch: u64,
        worker: usize,
        batches: Batches,
        last: bool,
        defer: bool,
    ) {
        let mut state = self.lock();
        let turn = (epoch, worker);
        state.waiting.insert(turn, batches);
        if last {
            state.drain = true;
        } else if defer
            && state.waiting.keys().filter(|turn| turn.1 == worker).count() <= DEFERRED_PER_WORKER
        {
            return;
        }
        self.write_up_to(state, turn, false);
    }

    /// Writes the batches that are next in order, if some are in and nobody is writing:
    /// what a worker does instead of waiting (for its input, or for room in another's).
    /// False when there was nothing to write.
    pub(super) fn help(&self) -> bool {
        let state = self.lock();
        if state.tables.is_none() || !state.waiting.contains_key(&state.next) {
            return false;
        }
        self.write_up_to(state, (0, 0), true);
        true
    }

    /// Takes the tables (unless someone holds them) and writes every turn up to `upto` that is
    /// in (all of them with [`State::drain`]), and with `one_more` the next turn even if it is
    /// later. A worker writes up to its own turn only: the batches of one that is ahead are
    /// left to it, so that each mostly encodes its own.
    fn write_up_to<'a>(&'a self, mut state: MutexGuard<'a, State>, upto: Turn, mut one_more: bool) {
        let Some(mut tables) = state.tables.take() else {
            return;
        };
        loop {
            let at = state.next;
            if at > upto && !state.drain && !one_more {
                break;
            }
            let Some((calls, conns)) = state.waiting.remove(&at) else {
                break;
            };
            one_more = false;
            state.next = turn_after(at, state.workers);
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
        // Put back under the same lock as the last look at `waiting` and `drain`: a batch
        // handed over while this worker wrote is either written above, or finds the tables
        // here, or waits for a later batch's writer (its worker hands over again, or has handed
        // over its last and set `drain`) or a helper.
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
impl Turns {
    /// The turn written next.
    fn next_turn(&self) -> Turn {
        self.lock().next
    }
}

#[cfg(test)]
mod tests;
