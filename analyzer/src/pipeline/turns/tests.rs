//! Batches handed over by several threads, in any interleaving, against one writer's files.

use std::{path::Path, sync::Arc};

use super::*;
use crate::pipeline::tables::tests::{batches, tables};

const WORKERS: usize = 3;

/// How the threads of [`deliver_from_threads`] hand over.
#[derive(Clone, Copy)]
enum Handing {
    /// Each writes its turns.
    Own,
    /// Worker `w` defers its batches of every epoch `e` with `(e + w) % 2 == 0` (at most two
    /// of them wait, as in a dissection), and each helps after every turn of its own.
    DeferAndHelp,
}

/// Hands `batches` over as `WORKERS` threads would: batch `i` is worker `i % WORKERS`'s in
/// epoch `i / WORKERS`, each thread in its epochs' order, the threads in whatever order they
/// run (each yields between its turns so that they interleave); a worker's last batch is
/// handed over as its last epoch. `skip` is never handed over.
fn deliver_from_threads(turns: &Arc<Turns>, batches: &[RecordBatch], skip: Option<usize>) {
    deliver_handing(turns, batches, skip, Handing::Own);
}

fn deliver_handing(
    turns: &Arc<Turns>,
    batches: &[RecordBatch],
    skip: Option<usize>,
    handing: Handing,
) {
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let turns = turns.clone();
            scope.spawn(move || {
                let mine = (worker..batches.len()).step_by(WORKERS);
                let last = mine.clone().next_back();
                for (i, batch) in batches.iter().enumerate() {
                    if i % WORKERS != worker || Some(i) == skip {
                        continue;
                    }
                    // Later workers start later, so that their batches wait for a turn.
                    for _ in 0..(WORKERS - worker) * 3 {
                        std::thread::yield_now();
                    }
                    let epoch = (i / WORKERS) as u64;
                    let batches = (Some(batch.clone()), None);
                    let defer = match handing {
                        Handing::Own => false,
                        Handing::DeferAndHelp => (epoch as usize + worker).is_multiple_of(2),
                    };
                    turns.deliver(epoch, worker, batches, Some(i) == last, defer);
                    if matches!(handing, Handing::DeferAndHelp) {
                        turns.help();
                    }
                }
            });
        }
    });
}

fn files_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_nothing_left(dir: &Path) {
    let left = files_of(dir);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn batches_from_several_threads_are_written_in_epoch_and_worker_order() {
    let batches = batches();
    assert!(batches.len() > WORKERS * 2, "{} batches", batches.len());
    let one = one_writers_files(&batches);
    let many = tempfile::tempdir().unwrap();
    for round in 0..10 {
        let handing = if round % 2 == 0 {
            Handing::Own
        } else {
            Handing::DeferAndHelp
        };
        let turns = Arc::new(Turns::new(tables(many.path()), WORKERS));
        deliver_handing(&turns, &batches, None, handing);
        turns.take_tables().unwrap().finish().unwrap();
        assert_same_files(one.path(), many.path(), &format!("round {round}"));
    }
}

/// `batches` written by one writer, in order, into a new directory.
fn one_writers_files(batches: &[RecordBatch]) -> tempfile::TempDir {
    let one = tempfile::tempdir().unwrap();
    let mut inline = tables(one.path());
    for batch in batches {
        inline.write(Some(batch.clone()), None).unwrap();
    }
    inline.finish().unwrap();
    one
}

/// Both tables in `other` are byte for byte those in `one` (one writer's); `what` names the
/// run in the message.
fn assert_same_files(one: &Path, other: &Path, what: &str) {
    for file in ["calls.parquet", "conns.parquet"] {
        let a = std::fs::read(one.join(file)).unwrap();
        let b = std::fs::read(other.join(file)).unwrap();
        assert!(a.len() > 100, "{file} is {} bytes", a.len());
        assert!(a == b, "{what}: {file} differs from one writer's");
    }
}

/// The files of `batches` written as two workers' turns, one after the other on this thread,
/// against the same batches written by one writer.
fn assert_same_as_one_writer(batches: &[RecordBatch], write: impl FnOnce(&Turns)) {
    let one = one_writers_files(batches);
    let two = tempfile::tempdir().unwrap();
    let turns = Turns::new(tables(two.path()), 2);
    write(&turns);
    turns.take_tables().unwrap().finish().unwrap();
    assert_same_files(one.path(), two.path(), "two workers' turns");
}

#[test]
fn a_deferred_batch_is_written_by_a_helper_or_by_the_next_writer() {
    let b = batches();
    let b = &b[..6];
    let one = |i: usize| (Some(b[i].clone()), None);
    assert_same_as_one_writer(b, |turns| {
        // Nothing is in yet.
        assert!(!turns.help());
        turns.deliver(0, 0, one(0), false, false);
        // Worker 1 is behind: its batch waits, and a thread with time writes it.
        turns.deliver(0, 1, one(1), false, true);
        assert!(turns.help(), "the deferred batch is next");
        assert!(!turns.help(), "and written");
        // Deferred again: worker 0's turn of the same epoch comes before it, so it waits for
        // worker 0's next turn, which writes it on the way to its own.
        turns.deliver(1, 1, one(3), false, true);
        turns.deliver(1, 0, one(2), false, false);
        turns.deliver(2, 0, one(4), false, false);
        assert!(!turns.help(), "written with worker 0's next turn");
        turns.deliver(2, 1, one(5), true, false);
        turns.deliver(3, 0, (None, None), true, false);
    });
}

#[test]
fn a_worker_defers_a_few_batches_at_most() {
    let b = batches();
    let b = &b[..8];
    let one = |i: usize| (Some(b[i].clone()), None);
    assert_same_as_one_writer(b, |turns| {
        // Worker 0 is behind: two of its batches wait.
        turns.deliver(0, 0, one(0), false, true);
        turns.deliver(1, 0, one(2), false, true);
        assert_eq!(turns.next_turn(), (0, 0));
        // A third is more than may wait: it writes what it can, up to its own.
        turns.deliver(2, 0, one(4), false, true);
        assert_eq!(
            turns.next_turn(),
            (0, 1),
            "written up to worker 1's missing turn"
        );
        for epoch in 0..3 {
            turns.deliver(epoch, 1, one(epoch as usize * 2 + 1), false, false);
        }
        // Each of worker 1's turns writes worker 0's that come before it.
        assert_eq!(turns.next_turn(), (3, 0));
        turns.deliver(3, 0, one(6), true, false);
        turns.deliver(3, 1, one(7), true, false);
        assert_eq!(turns.next_turn(), (4, 0));
    });
}

#[test]
fn a_turn_never_handed_over_is_an_error_and_nothing_is_published() {
    let batches = batches();
    let dir = tempfile::tempdir().unwrap();
    let turns = Arc::new(Turns::new(tables(dir.path()), WORKERS));
    deliver_from_threads(&turns, &batches, Some(1));
    let err = turns.take_tables().map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("stopped before"), "{err}");
    drop(turns);
    assert_nothing_left(dir.path());
}

#[test]
fn a_failed_write_is_reported_once_every_turn_is_in() {
    let batches = batches();
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("removed");
    std::fs::create_dir(&gone).unwrap();
    let turns = Arc::new(Turns::new(tables(&gone), WORKERS));
    std::fs::remove_dir(&gone).unwrap();
    deliver_from_threads(&turns, &batches, None);
    let err = turns.take_tables().map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("calls"), "{err}");
}

#[test]
fn an_error_drops_the_tables_while_others_still_hold_the_turns() {
    let batches = batches();
    let dir = tempfile::tempdir().unwrap();
    let turns = Arc::new(Turns::new(tables(dir.path()), WORKERS));
    deliver_from_threads(&turns, &batches, Some(1));
    // A worker that has not let go yet.
    let _still_held = turns.clone();
    assert!(!files_of(dir.path()).is_empty());
    assert!(turns.take_tables().is_err());
    assert_nothing_left(dir.path());
}
