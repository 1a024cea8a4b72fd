//! The collector over in-memory rings laid out as the kernel lays out perf rings.

use std::sync::{
    Arc, RwLock,
    mpsc::{Receiver, Sender, channel, sync_channel},
};

use remora_agent_common::PacketEventHeader;

use super::*;
use crate::{
    clock::TaiToUtc,
    decode::Decoder,
    packets_parquet::{Compression, EncodedRowGroup, PAGE_ROWS},
    slice::{SliceFiles, SliceMsg},
    testing::read_ts,
};

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;

/// A perf ring in a vector: the test plays the kernel (writes records at `head`).
struct VecRing {
    data: Vec<u8>,
    head: u64,
    tail: u64,
}

impl VecRing {
    fn new(size: usize) -> Self {
        Self {
            data: vec![0; size],
            head: 0,
            tail: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        let size = self.data.len() as u64;
        assert!(
            self.head + bytes.len() as u64 - self.tail <= size,
            "test ring overflow"
        );
        for (i, &b) in bytes.iter().enumerate() {
            let at = ((self.head + i as u64) % size) as usize;
            self.data[at] = b;
        }
        self.head += bytes.len() as u64;
    }

    /// A packet sample: perf header, raw size, event header, frame, padding to 8 bytes.
    fn sample(&mut self, ts_tai: u64, frame: &[u8]) {
        let header = PacketEventHeader {
            ts_ns: ts_tai,
            cgroup_id: 0,
            ifindex: 5, // an L3 device: the frame is the IP packet
            frame_len: frame.len() as u32,
            cap_len: frame.len() as u32,
            protocol: 0x0008,
            direction: 1,
            reserved: 0,
        };
        let mut raw = Vec::new();
        raw.extend_from_slice(&header.ts_ns.to_ne_bytes());
        raw.extend_from_slice(&header.cgroup_id.to_ne_bytes());
        raw.extend_from_slice(&header.ifindex.to_ne_bytes());
        raw.extend_from_slice(&header.frame_len.to_ne_bytes());
        raw.extend_from_slice(&header.cap_len.to_ne_bytes());
        raw.extend_from_slice(&header.protocol.to_ne_bytes());
        raw.extend_from_slice(&[header.direction, 0]);
        raw.extend_from_slice(frame);
        let total = (12 + raw.len()).next_multiple_of(8);
        let mut record = Vec::new();
        record.extend_from_slice(&PERF_RECORD_SAMPLE.to_ne_bytes());
        record.extend_from_slice(&0u16.to_ne_bytes());
        record.extend_from_slice(&(total as u16).to_ne_bytes());
        record.extend_from_slice(&(raw.len() as u32).to_ne_bytes());
        record.extend_from_slice(&raw);
        record.resize(total, 0);
        self.put(&record);
    }

    fn lost(&mut self, count: u64) {
        let mut record = Vec::new();
        record.extend_from_slice(&PERF_RECORD_LOST.to_ne_bytes());
        record.extend_from_slice(&0u16.to_ne_bytes());
        record.extend_from_slice(&24u16.to_ne_bytes());
        record.extend_from_slice(&0u64.to_ne_bytes());
        record.extend_from_slice(&count.to_ne_bytes());
        self.put(&record);
    }
}

impl Ring for VecRing {
    fn size(&self) -> usize {
        self.data.len()
    }
    fn head(&self) -> u64 {
        self.head
    }
    fn tail(&self) -> u64 {
        self.tail
    }
    fn set_tail(&mut self, tail: u64) {
        assert!(tail >= self.tail && tail <= self.head);
        self.tail = tail;
    }
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        &self.data[at..at + len]
    }
}

/// A UDP packet whose source port carries `n`, so rows can be told apart.
fn udp(n: u16) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ];
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&[0, 53, 0, 8, 0, 0]);
    p
}

struct Harness {
    collector: Collector<VecRing>,
    msgs: Receiver<SliceMsg>,
    written: Sender<Box<EncodedRowGroup>>,
    files: SliceFiles,
    metrics: Arc<Metrics>,
    _dir: tempfile::TempDir,
}

const PERIOD: i64 = 10_000_000_000;

fn decoder() -> SharedDecoder {
    Arc::new(RwLock::new(Arc::new(Decoder {
        clock: TaiToUtc::with_offset_ns(0),
        snaplen: 4096,
        l2_len: [(5, 0)].into_iter().collect(),
    })))
}

fn harness_with(rings: Vec<VecRing>, max_bytes: u64, queue: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (to_writer, msgs) = sync_channel(queue);
    let (written, written_rx) = channel();
    let metrics = Arc::new(Metrics::default());
    let duration = std::time::Duration::from_nanos(PERIOD as u64);
    let encoder = SliceEncoder::new(Compression::Auto, duration, max_bytes).unwrap();
    let collector = Collector::new(
        rings,
        decoder(),
        encoder,
        WriterLink {
            to_writer,
            written: written_rx,
        },
        SliceEncoder::page_payload_limit(max_bytes),
        metrics.clone(),
    );
    Harness {
        collector,
        msgs,
        written,
        files: SliceFiles::new(dir.path(), "test", max_bytes),
        metrics,
        _dir: dir,
    }
}

fn harness(rings: Vec<VecRing>) -> Harness {
    harness_with(rings, 64 << 20, 64)
}

impl Harness {
    /// The timestamps of each slice published by what the collector has sent so far.
    fn slices(&mut self) -> Vec<Vec<i64>> {
        while let Ok(msg) = self.msgs.try_recv() {
            if let Some(group) = self.files.handle(msg) {
                let _ = self.written.send(group);
            }
        }
        self.files
            .take_events()
            .map(|e| match e {
                crate::slice::SliceEvent::Published(done) => read_ts(&done.path),
                crate::slice::SliceEvent::Lost { error, .. } => panic!("slice lost: {error}"),
            })
            .collect()
    }
}

const T0: u64 = 1_800_000_000_000_000_000;

#[test]
fn merges_rings_in_time_order_and_keeps_what_is_too_young() {
    let (mut a, mut b) = (VecRing::new(1 << 16), VecRing::new(1 << 16));
    for (i, t) in [1, 4, 9, 20].into_iter().enumerate() {
        a.sample(T0 + t * 1_000_000, &udp(i as u16));
    }
    for (i, t) in [2, 3, 10].into_iter().enumerate() {
        b.sample(T0 + t * 1_000_000, &udp(100 + i as u16));
    }
    let mut h = harness(vec![a, b]);
    // "Now" is 15 ms: rows up to 10 ms are released, the one at 20 ms waits in its ring.
    let stats = h.collector.round(T0 + 15_000_000, false).unwrap();
    assert_eq!(stats.records, 6);
    assert!(
        h.slices().is_empty(),
        "a slice is published only when its period ends"
    );
    assert!(h.collector.rings[0].tail < h.collector.rings[0].head);
    assert_eq!(h.collector.rings[1].tail, h.collector.rings[1].head);
    h.collector.flush().unwrap();
    let ms = |v: &[i64]| {
        v.iter()
            .map(|t| (*t - T0 as i64) / 1_000_000)
            .collect::<Vec<_>>()
    };
    assert_eq!(ms(&h.slices()[0]), [1, 2, 3, 4, 9, 10]);
    // The next round, 30 ms: the young row is released.
    h.collector.round(T0 + 30_000_000, false).unwrap();
    h.collector.flush().unwrap();
    assert_eq!(ms(&h.slices()[0]), [20]);
    assert_eq!(h.metrics.late_rows.load(Ordering::Relaxed), 0);
}

#[test]
fn slices_end_at_period_boundaries() {
    let mut a = VecRing::new(1 << 22);
    let start = T0 - T0 % PERIOD as u64; // the start of a period
    for i in 0..PAGE_ROWS as u64 + 10 {
        a.sample(start + i, &udp(i as u16));
    }
    // Two rows in the next period.
    a.sample(start + PERIOD as u64, &udp(1));
    a.sample(start + PERIOD as u64 + 1, &udp(2));
    let mut h = harness(vec![a]);
    // Everything at once: the watermark passes both periods.
    h.collector.round(start + PERIOD as u64 + 1, true).unwrap();
    let slices = h.slices();
    assert_eq!(
        slices.iter().map(Vec::len).collect::<Vec<_>>(),
        [PAGE_ROWS + 10, 2],
        "one slice per period"
    );
    assert!(slices[0].iter().all(|&t| t < (start as i64 + PERIOD)));
}

#[test]
fn a_period_ends_when_the_watermark_passes_it() {
    let mut a = VecRing::new(1 << 16);
    let start = T0 - T0 % PERIOD as u64;
    a.sample(start + 5, &udp(1));
    let mut h = harness(vec![a]);
    h.collector.round(start + 1_000_000_000, false).unwrap();
    assert!(h.slices().is_empty(), "the period is not over");
    h.collector
        .round(start + PERIOD as u64 + ORDER_MARGIN_NS, false)
        .unwrap();
    assert_eq!(h.slices(), [vec![(start + 5) as i64]]);
}

#[test]
fn wrapped_records_lost_notes_and_garbage() {
    let mut a = VecRing::new(512);
    // Fill and free most of the ring, so that the next records wrap around its end.
    a.sample(T0, &[0x45; 400]);
    a.tail = a.head;
    a.sample(T0 + 1, &udp(7)); // wraps
    a.lost(3);
    a.sample(T0 + 2, &[0xEE; 20]); // not IP: kept as a non-IP row
    let mut h = harness(vec![a]);
    let stats = h.collector.round(T0 + 10, true).unwrap();
    assert_eq!(stats.records, 3);
    h.collector.flush().unwrap();
    assert_eq!(h.slices(), [vec![(T0 + 1) as i64, (T0 + 2) as i64]]);
    assert_eq!(h.metrics.kernel_lost.load(Ordering::Relaxed), 3);
    assert_eq!(h.metrics.decode_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn a_sample_longer_than_its_record_is_skipped_and_counted() {
    let mut a = VecRing::new(1 << 12);
    a.sample(T0, &udp(1));
    // Corrupt the first sample's length: far more than its record holds.
    a.data[8..12].copy_from_slice(&60_000u32.to_ne_bytes());
    a.sample(T0 + 1, &udp(2));
    let mut h = harness(vec![a]);
    h.collector.round(T0 + 10, true).unwrap();
    h.collector.flush().unwrap();
    assert_eq!(h.slices(), [vec![(T0 + 1) as i64]]);
    assert_eq!(h.metrics.decode_errors.load(Ordering::Relaxed), 1);
}

#[test]
fn a_ring_past_half_full_is_drained_without_the_margin() {
    let mut a = VecRing::new(4096);
    for i in 0..40 {
        a.sample(T0 + i, &udp(i as u16)); // 72 bytes each: more than half the ring
    }
    let mut h = harness(vec![a]);
    // All of them are younger than the margin, but the ring is filling up.
    h.collector.round(T0 + 1_000, false).unwrap();
    assert_eq!(h.collector.rings[0].tail, h.collector.rings[0].head);
}

#[test]
fn late_records_are_written_and_counted() {
    let mut a = VecRing::new(1 << 16);
    a.sample(T0 + 10, &udp(1));
    let mut h = harness(vec![a, VecRing::new(1 << 16)]);
    h.collector.round(T0 + 100, true).unwrap();
    // CPU 1 delivers something older than what was released.
    h.collector.rings[1].sample(T0 + 5, &udp(2));
    h.collector.round(T0 + 200, true).unwrap();
    h.collector.flush().unwrap();
    assert_eq!(h.metrics.late_rows.load(Ordering::Relaxed), 1);
    let all: Vec<i64> = h.slices().concat();
    assert_eq!(all, [(T0 + 10) as i64, (T0 + 5) as i64]);
}

#[test]
fn a_full_writer_queue_holds_the_collector_back() {
    let mut a = VecRing::new(1 << 22);
    let start = T0 - T0 % PERIOD as u64;
    for i in 0..3 * PAGE_ROWS as u64 {
        a.sample(start + i, &udp(i as u16));
    }
    // Small slices, so small row groups: several of them, through a queue of one.
    let h = harness_with(vec![a], 1 << 20, 1);
    let Harness {
        mut collector,
        msgs,
        mut files,
        ..
    } = h;
    // A writer that takes a message only every 50 ms: the collector waits for it.
    let writer = std::thread::spawn(move || {
        let mut rows = 0;
        for msg in msgs {
            std::thread::sleep(std::time::Duration::from_millis(50));
            if let Some(group) = files.handle(msg) {
                rows += group.rows();
            }
        }
        rows
    });
    let started = std::time::Instant::now();
    collector.round(start + 1, true).unwrap();
    collector.flush().unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(100));
    drop(collector);
    assert_eq!(writer.join().unwrap(), 3 * PAGE_ROWS as u64);
}
