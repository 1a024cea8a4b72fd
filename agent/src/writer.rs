//! The writer thread: merges the CPU streams, writes slices, enforces retention.
//!
//! Parquet encoding and file I/O are blocking work, so they run on their own thread and never
//! stall the ring readers; a slow disk shows up as full rings and counted drops, not as memory.

use std::{path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use crate::{
    clock::realtime_now_ns,
    decode::BatchPool,
    error::AgentError,
    merge::Merger,
    metrics::{Metrics, add},
    reader::ReaderMsg,
    slice::{FinishedSlice, SliceWriter},
    store::enforce_retention,
};

/// Payload bytes the merge may hold back for ordering before it releases everything.
const MAX_PENDING_BYTES: usize = 16 << 20;

/// Settings of the writer thread.
pub struct WriterSettings {
    /// `<data>/capture/<node>`, for retention across kinds.
    pub node_dir: PathBuf,
    /// Retention quota.
    pub retention_bytes: u64,
    /// Retention age.
    pub retention_age: Option<Duration>,
}

/// Runs until every reader has hung up, then publishes what is left.
pub fn run_writer(
    mut rx: mpsc::Receiver<ReaderMsg>,
    pool: BatchPool,
    streams: usize,
    mut slices: SliceWriter,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
) {
    let mut merger = Merger::new(streams);
    let on_done = |result: Result<Option<FinishedSlice>, AgentError>, rows_at_risk: u64| {
        match result {
            Ok(Some(done)) => {
                add(&metrics.slices_written, 1);
                add(&metrics.slice_bytes_written, done.bytes);
                tracing::debug!(path = %done.path.display(), rows = done.rows, bytes = done.bytes, "slice published");
                let deleted = enforce_retention(
                    &settings.node_dir,
                    settings.retention_bytes,
                    settings.retention_age,
                    realtime_now_ns(),
                );
                for slice in deleted {
                    add(&metrics.retention_deleted, 1);
                    add(&metrics.retention_deleted_bytes, slice.bytes);
                    tracing::debug!(file = %slice.file, "retention deleted slice");
                }
            }
            Ok(None) => {}
            Err(e) => {
                add(&metrics.slice_write_errors, 1);
                add(&metrics.rows_lost, rows_at_risk);
                tracing::error!(error = %e, "slice lost; recording continues with the next slice");
                if let Ok(mut last) = metrics.last_write_error.lock() {
                    *last = Some(e.to_string());
                }
            }
        }
    };
    let mut rows_in_slice = 0u64;
    let mut last_report = std::time::Instant::now();
    let emit = |slices: &mut SliceWriter, merger: &mut Merger, all: bool| {
        let mut written = 0u64;
        let mut results = Vec::new();
        let mut step = |row: &_, payload: &[u8]| -> Result<(), ()> {
            let r = slices.append(row, payload);
            written += 1;
            if !matches!(r, Ok(None)) {
                results.push(r);
            }
            Ok(())
        };
        let _ = if all {
            merger.release_all(&mut step)
        } else {
            merger.release(&mut step)
        };
        (written, results)
    };

    while let Some(first) = rx.blocking_recv() {
        merger.push(first.stream, first.batch, first.watermark_ns);
        while let Ok(msg) = rx.try_recv() {
            merger.push(msg.stream, msg.batch, msg.watermark_ns);
        }
        // Ordering holds rows until every CPU has reported; a stalled reader must not make that
        // memory grow without bound.
        let overfull = merger.pending_bytes() > MAX_PENDING_BYTES;
        let (written, results) = emit(&mut slices, &mut merger, overfull);
        for batch in merger.take_spent() {
            pool.give(batch);
        }
        add(&metrics.rows_written, written);
        rows_in_slice += written;
        for r in results {
            on_done(r, rows_in_slice);
            rows_in_slice = 0;
        }
        let tick = slices.tick(merger.watermark_ns());
        if !matches!(tick, Ok(None)) {
            on_done(tick, rows_in_slice);
            rows_in_slice = 0;
        }
        metrics
            .late_rows
            .store(merger.late_rows(), std::sync::atomic::Ordering::Relaxed);
        if last_report.elapsed() >= Duration::from_secs(1) {
            tracing::debug!(
                held_bytes = merger.pending_bytes(),
                held_rows = merger.pending_rows(),
                queued_batches = rx.len(),
                parquet_in_progress = slices.in_progress_bytes(),
                "writer state"
            );
            last_report = std::time::Instant::now();
        }
    }
    let (written, results) = emit(&mut slices, &mut merger, true);
    add(&metrics.rows_written, written);
    rows_in_slice += written;
    for r in results {
        on_done(r, rows_in_slice);
        rows_in_slice = 0;
    }
    on_done(slices.finish(), rows_in_slice);
}
