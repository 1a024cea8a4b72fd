//! The collector: merges the per-CPU rings by timestamp, straight from ring memory into pages.
//!
//! One thread drains every CPU's ring on a short timer. Each CPU's ring is in time order, so a
//! k-way merge over the rings' next records gives global time order; the merge takes runs from
//! one ring while its timestamps stay below every other ring's next one, so the common case (one
//! busy CPU) costs one comparison per record. Each record is decoded where the kernel wrote it
//! and copied once, into the [`PageRows`]; a full page is encoded into the current row group
//! right away, while it is in this core's cache ([`SliceEncoder`]), and the page is reused.
//! Finished row groups go to the writer thread, which lays them out in files and publishes
//! them ([`crate::writer`]).
//!
//! Ordering: a record is released only once no CPU can still deliver an older one. The round
//! samples the clock before reading the rings' heads, so everything stamped before that time
//! minus a small margin is already visible (a record is committed microseconds after it is
//! stamped; the margin covers a virtual CPU paused in between). Younger records stay in their
//! ring until the next round. A ring more than half full is drained without the margin; a
//! record that then turns up older than one already released is written anyway and counted
//! (`late_rows`).

use std::{
    sync::{
        Arc, RwLock,
        atomic::Ordering,
        mpsc::{Receiver, SyncSender},
    },
    time::Duration,
};

use crate::{
    clock::tai_now_ns,
    decode::{Decoder, PacketMeta},
    metrics::{Metrics, add},
    packets_parquet::{EncodedRowGroup, PageRows},
    perf_ring::{Record, Ring},
    slice::{SliceEncoder, SliceMsg},
};

/// The decoder the collector uses; replaced when interfaces come and go.
pub type SharedDecoder = Arc<RwLock<Arc<Decoder>>>;

/// Events younger than this (TAI ns) wait for the next round, in case another CPU stamped an
/// older one it has not committed yet.
pub const ORDER_MARGIN_NS: u64 = 5_000_000;
/// How long the collector waits for quiet rings (a ring a quarter full wakes it sooner): also
/// how late a quiet period's slice may be published.
pub const IDLE_WAIT: Duration = Duration::from_millis(100);
/// How soon busy rings are drained again: data waiting in the rings is rate × interval.
pub const BUSY_POLL: Duration = Duration::from_millis(2);
/// A ring with at least this much waiting is busy.
const BUSY_BYTES: u64 = 256 << 10;

/// The writer thread went away (it failed or the agent is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterGone;

/// The collector's link to the writer thread: finished row groups go out (a bounded queue:
/// a writer that falls behind, on a slow disk, stops the collector, and the rings fill and
/// count their drops instead of memory growing); written ones come back for reuse.
pub struct WriterLink {
    /// Messages to the writer.
    pub to_writer: SyncSender<SliceMsg>,
    /// Written row groups coming back.
    pub written: Receiver<Box<EncodedRowGroup>>,
}

/// What a round found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    /// Records taken from the rings.
    pub records: u64,
    /// Bytes that were waiting in the fullest ring when the round began.
    pub most_waiting: u64,
}

impl RoundStats {
    /// Whether the next round should come soon.
    pub fn busy(&self) -> bool {
        self.most_waiting >= BUSY_BYTES
    }
}

/// Where a ring's read position is and what its next record is.
struct Cursor {
    pos: u64,
    head: u64,
    /// Timestamp of the record at `pos` (0 for a lost-records note), if there is one.
    next_ts: Option<u64>,
}

/// Merges the rings into pages, and pages into row groups.
pub struct Collector<R: Ring> {
    rings: Vec<R>,
    cursors: Vec<Cursor>,
    decoder: SharedDecoder,
    scratch: Vec<u8>,
    out: Output,
}

/// Where the collector's rows go: the page, the encoder, the writer.
struct Output {
    page: PageRows,
    /// Start of the period after the page's (UTC ns): a row at or after it starts a new page.
    page_period_end: i64,
    encoder: SliceEncoder,
    link: WriterLink,
    newest_released: i64,
    metrics: Arc<Metrics>,
}

impl Output {
    /// Appends one packet to the page, handing pages on at period boundaries and when full.
    #[inline]
    fn push(&mut self, meta: &PacketMeta, payload: &[u8]) -> Result<(), WriterGone> {
        if meta.ts_ns >= self.page_period_end {
            // A new period (a division only here, not per row).
            if !self.page.is_empty() {
                self.encode_page()?;
            }
            let period = self.encoder.period_of(meta.ts_ns);
            self.page_period_end = self.encoder.period_end(period);
        }
        if meta.ts_ns < self.newest_released {
            add(&self.metrics.late_rows, 1);
        } else {
            self.newest_released = meta.ts_ns;
        }
        self.page.push_packet(meta, payload);
        if self.page.is_full() {
            self.encode_page()?;
        }
        Ok(())
    }

    /// Encodes the page into the current row group and empties it.
    fn encode_page(&mut self) -> Result<(), WriterGone> {
        while let Ok(group) = self.link.written.try_recv() {
            self.encoder.recycle(group);
        }
        let mut gone = false;
        let to_writer = &self.link.to_writer;
        let result = self.encoder.encode(&mut self.page, &mut |msg| {
            gone |= to_writer.send(msg).is_err()
        });
        if let Err(failure) = result {
            add(&self.metrics.rows_lost, failure.rows);
            add(&self.metrics.slice_write_errors, 1);
            tracing::error!(error = %failure.error, rows = failure.rows, "encoding a row group failed; its rows are lost");
        }
        self.page.clear();
        if gone { Err(WriterGone) } else { Ok(()) }
    }

    /// Ends the encoder's period: the writer may publish its slice.
    fn end_period(&mut self) -> Result<(), WriterGone> {
        let mut gone = false;
        let to_writer = &self.link.to_writer;
        self.encoder
            .end_period(&mut |msg| gone |= to_writer.send(msg).is_err());
        if gone { Err(WriterGone) } else { Ok(()) }
    }

    /// Everything the watermark has passed goes to the writer.
    fn passed(&mut self, watermark: i64) -> Result<(), WriterGone> {
        if watermark < self.page_period_end {
            return Ok(());
        }
        // The page's period is over: its rows, and the end of the period, go to the writer
        // so that its slice can be published.
        if !self.page.is_empty() {
            self.encode_page()?;
        }
        if self
            .encoder
            .period()
            .is_some_and(|p| watermark >= self.encoder.period_end(p))
        {
            self.end_period()?;
        }
        Ok(())
    }
}

impl<R: Ring> Collector<R> {
    /// A collector over `rings` encoding with `encoder` and sending to the writer on `link`;
    /// pages are full at `page_payload_limit` payload bytes.
    pub fn new(
        rings: Vec<R>,
        decoder: SharedDecoder,
        encoder: SliceEncoder,
        link: WriterLink,
        page_payload_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            cursors: rings
                .iter()
                .map(|_| Cursor {
                    pos: 0,
                    head: 0,
                    next_ts: None,
                })
                .collect(),
            rings,
            decoder,
            scratch: Vec::new(),
            out: Output {
                page: PageRows::with_payload_limit(page_payload_limit),
                page_period_end: i64::MIN,
                encoder,
                link,
                newest_released: i64::MIN,
                metrics,
            },
        }
    }

    /// Takes every record stamped before `now_tai - margin` (everything when `drain_all`),
    /// in time order, into pages.
    pub fn round(&mut self, now_tai: u64, drain_all: bool) -> Result<RoundStats, WriterGone> {
        let decoder = match self.decoder.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let mut most_waiting = 0;
        let mut overfull = false;
        for (ring, cursor) in self.rings.iter().zip(&mut self.cursors) {
            cursor.head = ring.head();
            cursor.pos = ring.tail();
            cursor.next_ts = peek(ring, cursor);
            let waiting = cursor.head - cursor.pos;
            overfull |= waiting > ring.size() as u64 / 2;
            most_waiting = most_waiting.max(waiting);
        }
        let bound = if drain_all {
            u64::MAX
        } else if overfull {
            now_tai
        } else {
            now_tai.saturating_sub(ORDER_MARGIN_NS)
        };

        let (mut records, mut lost, mut bad) = (0u64, 0u64, 0u64);
        loop {
            // The ring with the oldest next record, and the oldest among the others.
            let mut best: Option<(usize, u64)> = None;
            let mut others = u64::MAX;
            for (i, c) in self.cursors.iter().enumerate() {
                let Some(ts) = c.next_ts else { continue };
                match best {
                    Some((_, b)) if ts >= b => others = others.min(ts),
                    Some((_, b)) => {
                        others = others.min(b);
                        best = Some((i, ts));
                    }
                    None => best = Some((i, ts)),
                }
            }
            let Some((i, ts)) = best else { break };
            if ts > bound {
                break;
            }
            let limit = bound.min(others);
            let (ring, cursor) = (&self.rings[i], &mut self.cursors[i]);
            // A run from one ring: everything up to the other rings' next record.
            while cursor.next_ts.is_some_and(|ts| ts <= limit) {
                let Some(size) = ring.record_size(cursor.pos) else {
                    // A corrupt record: skip the rest of this ring's data this round.
                    bad += 1;
                    cursor.pos = cursor.head;
                    cursor.next_ts = None;
                    break;
                };
                match ring.record_at(cursor.pos, &mut self.scratch) {
                    Record::Sample(sample) => match decoder.split(sample) {
                        Ok((meta, payload)) => self.out.push(&meta, payload)?,
                        Err(_) => bad += 1,
                    },
                    Record::Lost(n) => lost += n,
                    Record::Corrupt => bad += 1,
                    Record::Other => {}
                }
                records += 1;
                cursor.pos += size;
                cursor.next_ts = peek(ring, cursor);
            }
        }
        for (ring, cursor) in self.rings.iter_mut().zip(&self.cursors) {
            ring.set_tail(cursor.pos);
        }
        add(&self.out.metrics.kernel_lost, lost);
        add(&self.out.metrics.decode_errors, bad);

        // Everything stamped before the bound is out of the rings now.
        let watermark = if bound == u64::MAX {
            i64::MAX
        } else {
            decoder.clock.utc_ns(bound)
        };
        self.out.passed(watermark)?;
        Ok(RoundStats {
            records,
            most_waiting,
        })
    }

    /// Hands everything collected over to the writer, and ends the period (shutdown).
    pub fn flush(&mut self) -> Result<(), WriterGone> {
        if !self.out.page.is_empty() {
            self.out.encode_page()?;
        }
        self.out.end_period()
    }

    /// Rounds until `stop` is set, then a last round that takes everything, and the last page.
    ///
    /// Between rounds: a short sleep when the rings were busy, else a wait on the rings' file
    /// descriptors that the kernel ends when one is a quarter full, with a timeout. A quiet
    /// recorder so wakes ten times a second, and a busy one takes large batches.
    pub fn run(mut self, stop: &std::sync::atomic::AtomicBool) {
        loop {
            // Read the flag before the round: after a stop, one last round takes what is left.
            let stopping = stop.load(Ordering::Acquire);
            let stats = match self.round(tai_now_ns(), stopping) {
                Ok(stats) => stats,
                Err(WriterGone) => return,
            };
            if stopping {
                let _ = self.flush();
                return;
            }
            if stats.busy() {
                std::thread::sleep(BUSY_POLL);
            } else {
                R::wait(&self.rings, IDLE_WAIT);
            }
        }
    }
}

fn peek(ring: &impl Ring, cursor: &Cursor) -> Option<u64> {
    if cursor.pos >= cursor.head || !ring.committed(cursor.pos) {
        return None;
    }
    // A record that carries no timestamp is taken at once.
    Some(ring.record_ts(cursor.pos).unwrap_or(0))
}

#[cfg(test)]
mod tests;
