//! The two tables of a dissection being written: encoded on the caller's thread, or on two
//! threads of their own (one per table) so that the engine keeps reading while Parquet encodes
//! and compresses (a fifth of one core's time on the benchmark capture).
//!
//! Either way the batches reach the files in the order they were given, so the rows are the
//! same; only where the encoding runs differs.

use std::{
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, sync_channel},
    },
    thread::JoinHandle,
};

use arrow::array::RecordBatch;
use remora_tables::TableWriter;

use super::{PipelineError, turns::Turns};

/// Batches waiting for a writer thread, at most. Few: a batch is one worker's rows of an
/// epoch, and whatever waits here when the input ends is encoded by one thread while the
/// other cores have nothing left to do (with 8, that tail was a tenth of a two-core run).
const QUEUED_WRITES: usize = 2;

/// What a writer thread is sent.
enum Write {
    /// A batch to append.
    Batch(RecordBatch),
    /// The input is over: publish the file.
    Finish,
}

/// `calls.parquet` and `conns.parquet`, being written.
pub(super) enum Tables {
    /// Encoded by whoever writes.
    Here {
        calls: Box<TableWriter>,
        conns: Box<TableWriter>,
    },
    /// Encoded by a writer thread per table.
    Thread {
        calls: Background,
        conns: Background,
    },
    /// Encoded by the dissection workers in turns, which write into them directly.
    Turns(Arc<Turns>),
}

/// One table's writer thread and the way to it.
pub(super) struct Background {
    /// None once the writer stopped on an error, which [`Tables::finish`] reports.
    to_writer: Option<SyncSender<Write>>,
    /// What the writer says once its file is published (or why it is not).
    published: Receiver<Result<(), PipelineError>>,
    /// None once joined or let go.
    writer: Option<JoinHandle<Result<(), PipelineError>>>,
}

impl Tables {
    /// Writers encoding on the caller's thread.
    pub(super) fn here(calls: TableWriter, conns: TableWriter) -> Self {
        Self::Here {
            calls: Box::new(calls),
            conns: Box::new(conns),
        }
    }

    /// Moves the encoding to writer threads (no-op when it is there already).
    pub(super) fn into_thread(self) -> Result<Self, PipelineError> {
        match self {
            Self::Here { calls, conns } => Ok(Self::Thread {
                calls: Background::start("remora-dissect-calls", *calls)?,
                conns: Background::start("remora-dissect-conns", *conns)?,
            }),
            other @ (Self::Thread { .. } | Self::Turns(_)) => Ok(other),
        }
    }

    /// Moves the encoding to the dissection workers, which write through the returned
    /// [`Turns`] (no-op when they do already).
    pub(super) fn into_turns(self, workers: usize) -> (Self, Arc<Turns>) {
        match self {
            Self::Turns(turns) => (Self::Turns(turns.clone()), turns),
            here_or_thread => {
                let turns = Arc::new(Turns::new(here_or_thread, workers));
                (Self::Turns(turns.clone()), turns)
            }
        }
    }

    /// Writes one batch of each table (either may be absent), in order after the earlier ones.
    pub(super) fn write(
        &mut self,
        calls: Option<RecordBatch>,
        conns: Option<RecordBatch>,
    ) -> Result<(), PipelineError> {
        match self {
            Self::Here {
                calls: calls_out,
                conns: conns_out,
            } => {
                if let Some(batch) = calls {
                    calls_out.write(&batch)?;
                }
                if let Some(batch) = conns {
                    conns_out.write(&batch)?;
                }
                Ok(())
            }
            Self::Thread {
                calls: calls_out,
                conns: conns_out,
            } => {
                if let Some(batch) = calls {
                    calls_out.send(Write::Batch(batch));
                }
                if let Some(batch) = conns {
                    conns_out.send(Write::Batch(batch));
                }
                Ok(())
            }
            Self::Turns(_) => Err(PipelineError::Worker(
                "a batch was written around the workers' turns (a bug)".into(),
            )),
        }
    }

    /// Waits for every batch to be written, then publishes both files (on their threads, at
    /// the same time: each is closed, fsynced and renamed into place).
    pub(super) fn finish(self) -> Result<(), PipelineError> {
        match self {
            Self::Here { calls, conns } => {
                calls.finish()?;
                conns.finish()?;
                Ok(())
            }
            Self::Thread {
                mut calls,
                mut conns,
            } => {
                calls.send(Write::Finish);
                conns.send(Write::Finish);
                let calls = calls.published();
                let conns = conns.published();
                calls.and(conns)
            }
            Self::Turns(turns) => match turns.take_tables()? {
                // The workers are done and their cores free.
                Self::Here { calls, conns } => publish_at_once(*calls, *conns),
                other => other.finish(),
            },
        }
    }
}

/// Closes both files at once, `conns` on a thread of its own (the last row groups, the
/// footers, fsync), and renames them into place only when both are whole, so that a full disk
/// leaves neither.
fn publish_at_once(mut calls: TableWriter, mut conns: TableWriter) -> Result<(), PipelineError> {
    std::thread::scope(|scope| {
        let conns_closed = scope.spawn(|| conns.close());
        let calls_closed = calls.close();
        let conns_closed = conns_closed.join().unwrap_or_else(|_| {
            Err(remora_tables::WriteError::Write {
                path: "conns.parquet".into(),
                message: "its writer panicked".into(),
            })
        });
        calls_closed.and(conns_closed)
    })?;
    calls.finish()?;
    conns.finish()?;
    Ok(())
}

impl Background {
    /// A thread named `name` writing `table` as it is sent batches.
    fn start(name: &str, mut table: TableWriter) -> Result<Self, PipelineError> {
        let (to_writer, writes) = sync_channel::<Write>(QUEUED_WRITES);
        let (publish, published) = sync_channel(1);
        let writer = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut result = Ok(());
                // Keeps receiving after an error, so that the sender never blocks on it.
                for write in writes {
                    match write {
                        Write::Batch(batch) => {
                            if result.is_ok() {
                                result = table.write(&batch).map_err(PipelineError::from);
                            }
                        }
                        Write::Finish => {
                            let result = result.and_then(|()| table.finish().map_err(Into::into));
                            // Said before the thread lets go of its memory, which the caller
                            // need not wait for.
                            let _ = publish.send(result);
                            return Ok(());
                        }
                    }
                }
                // Closed without `Finish` (the dissection stopped): dropping the writer
                // removes its unpublished file.
                result
            })
            .map_err(|e| PipelineError::Worker(format!("starting a writer thread: {e}")))?;
        Ok(Self {
            to_writer: Some(to_writer),
            published,
            writer: Some(writer),
        })
    }

    fn send(&mut self, write: Write) {
        if let Some(to) = &self.to_writer
            && to.send(write).is_err()
        {
            // The writer thread is gone; `join` says why.
            self.to_writer = None;
        }
    }

    /// Closes the way in and waits until the writer has published its file (sent `Finish`)
    /// or stopped, without waiting for its thread to free what it held (in a traced two-core
    /// run the thread ended 16 ms after its rename, which the caller waited for).
    fn published(&mut self) -> Result<(), PipelineError> {
        self.to_writer = None;
        match self.published.recv() {
            Ok(result) => {
                // The thread only lets go of its memory now; it is not waited for.
                self.writer = None;
                result
            }
            // No word: it stopped on an error (or panicked), which joining reports.
            Err(_) => self.join(),
        }
    }

    /// Closes the way in and waits for the writer to write what it was given.
    fn join(&mut self) -> Result<(), PipelineError> {
        self.to_writer = None;
        self.writer
            .take()
            .ok_or_else(|| PipelineError::Worker("a writer thread was already joined".into()))?
            .join()
            .map_err(|_| PipelineError::Worker("a dissection's writer thread panicked".into()))?
    }
}

impl Drop for Background {
    /// A dissection stopped before [`Tables::finish`] (cancelled, failed): the writer thread
    /// is waited for, so that its unpublished file is gone when the caller returns.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.join();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use remora_tables::Table;

    use super::*;
    use crate::{pipeline::sink::calls_batch, services::workloads::NoWorkloads};

    /// A fixture's calls, as batches of a few rows each.
    pub(in crate::pipeline) fn batches() -> Vec<RecordBatch> {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/pcap/arkime_synthetic.pcap");
        let bytes = std::fs::read(&fixture)
            .unwrap_or_else(|e| panic!("shared fixture {}: {e}", fixture.display()));
        let out = remora_dissect::dissect_capture(&bytes).unwrap();
        assert!(!out.calls.is_empty());
        out.calls
            .chunks(2)
            .map(|c| calls_batch("n", "pcap", c, &NoWorkloads).unwrap())
            .collect()
    }

    pub(in crate::pipeline) fn tables(dir: &Path) -> Tables {
        Tables::here(
            TableWriter::new(Table::Calls, &dir.join("calls.parquet")),
            TableWriter::new(Table::Conns, &dir.join("conns.parquet")),
        )
    }

    #[test]
    fn the_writer_thread_writes_the_same_files() {
        let (here, thread) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut inline = tables(here.path());
        let mut background = tables(thread.path()).into_thread().unwrap();
        assert!(matches!(background, Tables::Thread { .. }));
        for batch in batches() {
            inline.write(Some(batch.clone()), None).unwrap();
            background.write(Some(batch), None).unwrap();
        }
        inline.finish().unwrap();
        background.finish().unwrap();
        for file in ["calls.parquet", "conns.parquet"] {
            let a = std::fs::read(here.path().join(file)).unwrap();
            let b = std::fs::read(thread.path().join(file)).unwrap();
            assert!(a.len() > 100, "{file} is {} bytes", a.len());
            assert!(
                a == b,
                "{file} differs between the writer thread and inline"
            );
        }
    }

    #[test]
    fn a_failed_write_on_the_thread_is_reported_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("removed");
        std::fs::create_dir(&gone).unwrap();
        let mut background = tables(&gone).into_thread().unwrap();
        std::fs::remove_dir(&gone).unwrap();
        for batch in batches() {
            background.write(Some(batch), None).unwrap();
        }
        let err = background.finish().unwrap_err();
        assert!(err.to_string().contains("calls"), "{err}");
    }

    #[test]
    fn a_dropped_writer_thread_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut background = tables(dir.path()).into_thread().unwrap();
        for batch in batches() {
            background.write(Some(batch), None).unwrap();
        }
        drop(background);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
