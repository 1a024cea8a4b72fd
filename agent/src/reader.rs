//! One thread per CPU ring: drain, decode, hand the batch to the writer with a watermark.
//!
//! The readers poll on a short timer instead of waiting for the rings' readiness: a reader
//! blocked in epoll is woken (an IPI and a context switch, paid on the sending CPU) whenever the
//! kernel signals, and the rings (see [`crate::perf_ring`]) signal only once per half ring
//! anyway. Each drain takes everything that arrived in the last interval in one pass.

use std::{
    ops::ControlFlow,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::MapData;
use tokio::sync::mpsc;

use crate::{
    clock::tai_now_ns,
    decode::{BatchPool, Decoder, PacketBatch},
    error::{AgentError, Result},
    metrics::{Metrics, add},
    perf_ring::{PerfRing, Record},
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

/// How often a quiet ring is drained. At 250k packets/s this is ~300 KiB of an 8 MiB ring.
const POLL: Duration = Duration::from_millis(10);
/// How often a busy ring is drained: data in flight (and so memory) is rate × interval.
const BUSY_POLL: Duration = Duration::from_millis(2);
/// A drain that brought at least this many bytes marks the ring busy.
const BUSY_BYTES: usize = 256 << 10;
/// Events are submitted within microseconds of their timestamp (softirq, no preemption); this
/// margin keeps the watermark safely behind the newest possible undelivered event.
const WATERMARK_MARGIN_NS: i64 = 5_000_000;
/// A batch is handed over once it holds this many payload bytes (bounds memory under load).
const MAX_BATCH_BYTES: usize = 512 << 10;

/// Opens every online CPU's ring, installs it in the `PACKETS` map and starts its reader thread.
pub fn spawn_readers(
    rings: &MapData,
    pages: usize,
    pool: BatchPool,
    decoder: SharedDecoder,
    tx: mpsc::Sender<ReaderMsg>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<JoinHandle<()>>> {
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| AgentError::io(format!("reading {what}"), e))?;
    let mut threads = Vec::with_capacity(cpus.len());
    for (stream, cpu) in cpus.into_iter().enumerate() {
        let ring = PerfRing::open(cpu, pages)
            .and_then(|ring| ring.install(rings.fd(), cpu).map(|()| ring))
            .map_err(|e| {
                AgentError::Load(format!(
                    "opening the perf ring of CPU {cpu} ({pages} pages): {e}; lower \
                     --ring-bytes or raise the locked-memory limit"
                ))
            })?;
        let reader = RingReader {
            stream,
            ring,
            decoder: decoder.clone(),
            pool: pool.clone(),
            tx: tx.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            scratch: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("remora-ring-{cpu}"))
            .spawn(move || reader.run())
            .map_err(|e| AgentError::io(format!("starting the reader of CPU {cpu}"), e))?;
        threads.push(thread);
    }
    Ok(threads)
}

struct RingReader {
    stream: usize,
    ring: PerfRing,
    decoder: SharedDecoder,
    pool: BatchPool,
    tx: mpsc::Sender<ReaderMsg>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
}

impl RingReader {
    fn run(mut self) {
        loop {
            // Read the flag before draining: after a stop, one last drain takes what is left.
            let stopping = self.stop.load(Ordering::Acquire);
            let Some(bytes) = self.drain() else {
                return; // the writer is gone
            };
            if stopping {
                return;
            }
            if bytes >= MAX_BATCH_BYTES {
                continue; // more is waiting
            }
            std::thread::sleep(if bytes >= BUSY_BYTES { BUSY_POLL } else { POLL });
        }
    }

    /// Drains the ring once (up to the batch limit). Returns the payload bytes taken (at least
    /// `MAX_BATCH_BYTES` when the limit cut the drain short), or `None` when the writer hung up.
    fn drain(&mut self) -> Option<usize> {
        let decoder = match self.decoder.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        // Taken before the drain starts: everything stamped before it is already in the ring.
        let watermark_ns = decoder.clock.utc_ns(tai_now_ns()) - WATERMARK_MARGIN_NS;
        let mut batch = self.pool.take();
        let (mut lost, mut bad) = (0u64, 0u64);
        let scratch = &mut self.scratch;
        let flow = self.ring.drain(|record| {
            match record {
                Record::Sample(head, tail) => {
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
                Record::Lost(count) => lost += count,
            }
            if batch.payload.len() >= MAX_BATCH_BYTES {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        add(&self.metrics.kernel_lost, lost);
        add(&self.metrics.decode_errors, bad);
        let full = flow.is_break();
        // Until the ring is empty, the watermark may only claim what this batch covers.
        let mark = if full {
            batch
                .rows
                .last()
                .map_or(i64::MIN, |r| r.ts_ns.min(watermark_ns))
        } else {
            watermark_ns
        };
        let bytes = if full {
            MAX_BATCH_BYTES
        } else {
            batch.payload.len()
        };
        let msg = ReaderMsg {
            stream: self.stream,
            batch,
            watermark_ns: mark,
        };
        self.tx.blocking_send(msg).ok()?;
        Some(bytes)
    }
}
