//! One task per CPU ring: drain, decode, hand the batch to the writer with a watermark.

use std::{
    ops::ControlFlow,
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{MapData, PerfEventArray, perf::PerfEvent};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::{
    clock::tai_now_ns,
    decode::{Decoder, PacketBatch},
    error::{AgentError, Result},
    metrics::{Metrics, add},
};

/// A drained batch from one CPU.
#[derive(Debug)]
pub struct ReaderMsg {
    /// Index of the stream (position in the online CPU list).
    pub stream: usize,
    /// The rows, in ring order.
    pub batch: PacketBatch,
    /// Every event of this CPU stamped before this time (UTC ns) is in this or an earlier batch.
    pub watermark_ns: i64,
}

/// The decoder the readers use; replaced when interfaces come and go.
pub type SharedDecoder = Arc<RwLock<Arc<Decoder>>>;

/// A ring is drained at least this often, so watermarks advance on idle CPUs.
const POLL: Duration = Duration::from_millis(50);
/// Events are submitted within microseconds of their timestamp (softirq, no preemption); this
/// margin keeps the watermark safely behind the newest possible undelivered event.
const WATERMARK_MARGIN_NS: i64 = 5_000_000;
/// A batch is handed over once it holds this many payload bytes (bounds memory under load).
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Opens every online CPU's ring and spawns its reader. Returns the tasks and the stream count.
pub fn spawn_readers(
    rings: &mut PerfEventArray<MapData>,
    pages: usize,
    decoder: SharedDecoder,
    tx: mpsc::Sender<ReaderMsg>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>> {
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| AgentError::io(format!("reading {what}"), e))?;
    let mut tasks = Vec::with_capacity(cpus.len());
    for (stream, cpu) in cpus.into_iter().enumerate() {
        let buf = rings.open(cpu, Some(pages)).map_err(|e| {
            AgentError::Load(format!(
                "opening the perf ring of CPU {cpu} ({pages} pages): {e}; lower --ring-bytes \
                 or raise the locked-memory limit"
            ))
        })?;
        // SAFETY: the buffer owns its perf event fd and keeps it open, unchanged, for as long as
        // it lives; the AsyncFd owns the buffer.
        let fd =
            unsafe { AsyncFd::register_with_interest(buf, Interest::READABLE) }.map_err(|e| {
                AgentError::io(format!("polling the ring of CPU {cpu}"), e.into_parts().1)
            })?;
        tasks.push(tokio::spawn(read_ring(
            stream,
            fd,
            decoder.clone(),
            tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

async fn read_ring(
    stream: usize,
    mut fd: AsyncFd<aya::maps::perf::PerfEventArrayBuffer<MapData>>,
    decoder: SharedDecoder,
    tx: mpsc::Sender<ReaderMsg>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut scratch = Vec::new();
    loop {
        let stopping = tokio::select! {
            ready = fd.readable_mut() => {
                if let Ok(mut guard) = ready {
                    guard.clear_ready();
                }
                false
            }
            () = tokio::time::sleep(POLL) => false,
            _ = shutdown.changed() => true,
        } || *shutdown.borrow();

        let decoder = match decoder.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        // Taken before the drain starts: everything stamped before it is already in the ring.
        let watermark_ns = decoder.clock.utc_ns(tai_now_ns()) - WATERMARK_MARGIN_NS;
        loop {
            let mut batch = PacketBatch::default();
            let (mut lost, mut bad) = (0u64, 0u64);
            let flow = fd.get_mut().try_fold((), |(), event| {
                match event {
                    PerfEvent::Sample { head, tail } => {
                        let bytes = if tail.is_empty() {
                            head
                        } else {
                            scratch.clear();
                            scratch.extend_from_slice(head);
                            scratch.extend_from_slice(tail);
                            &scratch[..]
                        };
                        if decoder.decode_into(bytes, &mut batch).is_err() {
                            bad += 1;
                        }
                    }
                    PerfEvent::Lost { count } => lost += count,
                }
                if batch.payload.len() >= MAX_BATCH_BYTES {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            add(&metrics.kernel_lost, lost);
            add(&metrics.decode_errors, bad);
            let more = flow.is_break();
            // Until the ring is empty, the watermark may only claim what this batch covers.
            let mark = if more {
                batch
                    .rows
                    .last()
                    .map_or(i64::MIN, |r| r.ts_ns.min(watermark_ns))
            } else {
                watermark_ns
            };
            let msg = ReaderMsg {
                stream,
                batch,
                watermark_ns: mark,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            if !more {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}
