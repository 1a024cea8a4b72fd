//! The writer thread: lays the collector's row groups out in slice files, publishes them,
//! enforces retention.
//!
//! File I/O blocks (a full page cache, a slow disk, the fsync of each slice), so it runs on its
//! own thread and never stalls the collector; a slow disk shows up as a collector waiting for
//! room in the queue, then as full rings and counted drops, not as memory.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        mpsc::{Receiver, Sender},
    },
    time::Duration,
};

use crate::{
    clock::realtime_now_ns,
    metrics::{Metrics, add},
    packets_parquet::EncodedRowGroup,
    slice::{SliceEvent, SliceFiles, SliceMsg},
    store::{enforce_retention, free_bytes, make_room},
};

/// Settings of the writer thread.
pub struct WriterSettings {
    /// `<data>/capture/<node>`, for retention across kinds.
    pub node_dir: PathBuf,
    /// Retention quota.
    pub retention_bytes: u64,
    /// Retention age.
    pub retention_age: Option<Duration>,
    /// Free space kept on the filesystem.
    pub min_free_bytes: u64,
}

/// Handles messages from `msgs` until the collector hangs up, then publishes what is left.
/// Written row groups go back on `written`.
pub fn run_writer(
    msgs: Receiver<SliceMsg>,
    written: Sender<Box<EncodedRowGroup>>,
    mut files: SliceFiles,
    settings: WriterSettings,
    metrics: Arc<Metrics>,
) {
    for msg in msgs {
        if let Some(group) = files.handle(msg) {
            add(&metrics.rows_written, group.rows());
            let _ = written.send(group);
        }
        if files.has_events() {
            handle_events(&mut files, &settings, &metrics);
        }
    }
    files.finish();
    handle_events(&mut files, &settings, &metrics);
}

/// Counts published and lost slices, and enforces retention after each publication.
fn handle_events(files: &mut SliceFiles, settings: &WriterSettings, metrics: &Metrics) {
    for event in files.take_events() {
        match event {
            SliceEvent::Published(done) => {
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
            SliceEvent::Lost { error, rows } => {
                add(&metrics.slice_write_errors, 1);
                add(&metrics.rows_lost, rows);
                tracing::error!(%error, "slice lost; recording continues with the next slice");
                if let Ok(mut last) = metrics.last_write_error.lock() {
                    *last = Some(error.to_string());
                }
            }
        }
        // Whatever filled the disk, the next slice needs room: the oldest go first.
        let node_dir = &settings.node_dir;
        let deleted = make_room(node_dir, settings.min_free_bytes, || free_bytes(node_dir));
        if !deleted.is_empty() {
            let bytes: u64 = deleted.iter().map(|s| s.bytes).sum();
            tracing::warn!(
                slices = deleted.len(),
                bytes,
                min_free = settings.min_free_bytes,
                "the data directory's filesystem is nearly full: deleted the oldest slices to keep recording (free space, or lower --retention-bytes)"
            );
            add(&metrics.retention_deleted, deleted.len() as u64);
            add(&metrics.retention_deleted_bytes, bytes);
        }
    }
}
