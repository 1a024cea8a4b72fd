//! Merging the per-CPU streams into one time-ordered stream.
//!
//! Each CPU ring delivers its events in order, but the rings are drained independently. A row
//! may be written only once no CPU can still deliver an earlier one: each reader reports, with
//! every drain, a watermark ("all my events before this time have been delivered"), and rows up
//! to the smallest watermark over all CPUs are released in time order. Slices are therefore
//! sorted by `ts`, which lets readers merge slices and nodes without sorting.

use std::collections::VecDeque;

use crate::decode::{PacketBatch, PacketRow};

#[derive(Default)]
struct CpuQueue {
    batches: VecDeque<PacketBatch>,
    /// Next unreleased row of the front batch.
    cursor: usize,
    /// Every event of this CPU before this time (UTC ns) has been delivered.
    watermark_ns: i64,
}

impl CpuQueue {
    fn front(&self) -> Option<(&PacketBatch, &PacketRow)> {
        let batch = self.batches.front()?;
        Some((batch, batch.rows.get(self.cursor)?))
    }

    /// Moves past the front row; returns the batch when that finished it.
    fn advance(&mut self) -> Option<PacketBatch> {
        self.cursor += 1;
        if self
            .batches
            .front()
            .is_some_and(|b| self.cursor >= b.rows.len())
        {
            self.cursor = 0;
            return self.batches.pop_front();
        }
        None
    }
}

/// K-way merge of per-CPU row streams, released by watermark.
pub struct Merger {
    cpus: Vec<CpuQueue>,
    last_released_ns: i64,
    late_rows: u64,
    pending_rows: usize,
    pending_bytes: usize,
    spent: Vec<PacketBatch>,
}

impl Merger {
    /// A merger for `cpus` streams.
    pub fn new(cpus: usize) -> Self {
        Self {
            cpus: (0..cpus)
                .map(|_| CpuQueue {
                    watermark_ns: i64::MIN,
                    ..CpuQueue::default()
                })
                .collect(),
            last_released_ns: i64::MIN,
            late_rows: 0,
            pending_rows: 0,
            pending_bytes: 0,
            spent: Vec::new(),
        }
    }

    /// Adds a drained batch of stream `cpu` and that stream's new watermark.
    pub fn push(&mut self, cpu: usize, batch: PacketBatch, watermark_ns: i64) {
        let Some(queue) = self.cpus.get_mut(cpu) else {
            return;
        };
        queue.watermark_ns = queue.watermark_ns.max(watermark_ns);
        if batch.rows.is_empty() {
            self.spent.push(batch);
        } else {
            self.pending_rows += batch.rows.len();
            self.pending_bytes += batch.payload.len();
            queue.batches.push_back(batch);
        }
    }

    /// The time before which every stream has delivered everything.
    pub fn watermark_ns(&self) -> i64 {
        self.cpus
            .iter()
            .map(|c| c.watermark_ns)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Rows held back, waiting for the watermark.
    pub fn pending_rows(&self) -> usize {
        self.pending_rows
    }

    /// Batches whose rows have all been released, for reuse.
    pub fn take_spent(&mut self) -> std::vec::Drain<'_, PacketBatch> {
        self.spent.drain(..)
    }

    /// Payload bytes held back (released when their whole batch is).
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Rows that arrived after a later row had already been released (written out of order).
    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Releases, in time order, every row at or before the watermark.
    pub fn release<E>(
        &mut self,
        emit: impl FnMut(&PacketRow, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let watermark = self.watermark_ns();
        self.release_until(watermark, emit)
    }

    /// Releases everything (shutdown, or too much held back: rows that then arrive for an
    /// earlier time are written late and counted).
    pub fn release_all<E>(
        &mut self,
        emit: impl FnMut(&PacketRow, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.release_until(i64::MAX, emit)
    }

    fn release_until<E>(
        &mut self,
        limit_ns: i64,
        mut emit: impl FnMut(&PacketRow, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            let mut best: Option<(usize, i64)> = None;
            for (i, queue) in self.cpus.iter_mut().enumerate() {
                if let Some((_, row)) = queue.front()
                    && row.ts_ns <= limit_ns
                    && best.is_none_or(|(_, ts)| row.ts_ns < ts)
                {
                    best = Some((i, row.ts_ns));
                }
            }
            let Some((i, ts)) = best else {
                return Ok(());
            };
            let queue = &mut self.cpus[i];
            if let Some((batch, row)) = queue.front() {
                if ts < self.last_released_ns {
                    self.late_rows += 1;
                }
                emit(row, batch.payload_of(row))?;
            }
            self.last_released_ns = self.last_released_ns.max(ts);
            if let Some(done) = queue.advance() {
                self.pending_bytes -= done.payload.len();
                self.spent.push(done);
            }
            self.pending_rows -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ts: &[i64]) -> PacketBatch {
        let mut b = PacketBatch::default();
        for &t in ts {
            let start = b.payload.len() as u32;
            b.payload.extend_from_slice(&t.to_le_bytes());
            b.rows.push(PacketRow {
                ts_ns: t,
                ifindex: 1,
                direction: 0,
                wire_len: 8,
                cgroup_id: None,
                l3: 0,
                ip_proto: 0,
                src_ip: None,
                dst_ip: None,
                src_port: None,
                dst_port: None,
                tcp_flags: None,
                tcp_seq: None,
                tcp_ack: None,
                payload: start..start + 8,
            });
        }
        b
    }

    fn collect(m: &mut Merger, all: bool) -> Vec<i64> {
        let mut out = Vec::new();
        let mut f = |r: &PacketRow, p: &[u8]| -> Result<(), ()> {
            assert_eq!(p, r.ts_ns.to_le_bytes());
            out.push(r.ts_ns);
            Ok(())
        };
        if all {
            m.release_all(&mut f).unwrap();
        } else {
            m.release(&mut f).unwrap();
        }
        out
    }

    #[test]
    fn releases_in_order_up_to_the_slowest_watermark() {
        let mut m = Merger::new(2);
        m.push(0, batch(&[1, 4, 9]), 10);
        // CPU 1 has not reported yet: nothing may be released.
        assert!(collect(&mut m, false).is_empty());
        m.push(1, batch(&[2, 3, 12]), 5);
        assert_eq!(collect(&mut m, false), [1, 2, 3, 4]);
        assert_eq!(m.pending_rows(), 2);
        m.push(1, batch(&[]), 20);
        // CPU 0 has only vouched for times up to 10: 12 must wait.
        assert_eq!(collect(&mut m, false), [9]);
        m.push(0, batch(&[15]), 30);
        m.push(1, batch(&[14]), 30);
        assert_eq!(collect(&mut m, false), [12, 14, 15]);
        assert_eq!(m.late_rows(), 0);
        m.push(0, batch(&[13, 40]), 30);
        assert_eq!(collect(&mut m, true), [13, 40]);
        assert_eq!(m.late_rows(), 1);
        assert_eq!(m.pending_rows(), 0);
    }
}
