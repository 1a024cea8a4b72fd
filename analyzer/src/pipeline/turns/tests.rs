//! Batches handed over by several threads, in any interleaving, against one writer's files.

use std::{path::Path, sync::Arc};

use super::*;
use crate::pipeline::tables::tests::{batches, tables};

const WORKERS: usize = 3;

/// Hands `batches` over as `WORKERS` threads would: batch `i` is worker `i % WORKERS`'s in
/// epoch `i / WORKERS`, each thread in its epochs' order, the threads in whatever order they
/// run (each yields between its turns so that they interleave); a worker's last batch is
/// handed over as its last epoch. `skip` is never handed over.
fn deliver_from_threads(turns: &Arc<Turns>, batches: &[RecordBatch], skip: Option<usize>) {
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
                    turns.deliver(epoch, worker, batches, Some(i) == last);
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
    let (one, many) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut inline = tables(one.path());
    for batch in &batches {
        inline.write(Some(batch.clone()), None).unwrap();
    }
    inline.finish().unwrap();
    for round in 0..5 {
        let turns = Arc::new(Turns::new(tables(many.path()), WORKERS));
        deliver_from_threads(&turns, &batches, None);
        turns.take_tables().unwrap().finish().unwrap();
        for file in ["calls.parquet", "conns.parquet"] {
            let a = std::fs::read(one.path().join(file)).unwrap();
            let b = std::fs::read(many.path().join(file)).unwrap();
            assert!(a.len() > 100, "{file} is {} bytes", a.len());
            assert!(a == b, "round {round}: {file} differs from one writer's");
        }
    }
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
