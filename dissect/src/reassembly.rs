//! TCP reassembly of one direction of a connection.
//!
//! Segments arrive in any order, repeated, overlapping, or cut by the capture's snaplen. The
//! stream is delivered in order as [`Chunk`]s: bytes, or an explicit gap of a known length (the
//! capture missed or cut them), so that a parser can skip a body it knows the length of and stay
//! in step. Nothing waits forever: when more than a bounded number of bytes wait behind a hole,
//! the hole becomes a gap and delivery goes on.

use std::collections::BTreeMap;

/// A piece of the reassembled stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes, in order.
    Data {
        /// Capture time of the segment they came in.
        ts_ns: i64,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// This many bytes of the stream are missing.
    Gap {
        /// Capture time of what came after the hole.
        ts_ns: i64,
        /// Missing byte count.
        len: u64,
    },
}

/// Bytes held behind a hole before the hole is declared a gap.
pub const MAX_PENDING_BYTES: usize = 1 << 20;

struct Pending {
    ts_ns: i64,
    data: Vec<u8>,
    missing: u64,
}

/// One direction of a TCP connection.
#[derive(Default)]
pub struct HalfStream {
    started: bool,
    /// Sequence number of stream offset 0.
    base: u32,
    /// Next expected stream offset.
    next: u64,
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Segments that carried nothing new.
    pub retransmissions: u64,
    /// Bytes declared missing.
    pub gap_bytes: u64,
}

impl HalfStream {
    fn position(&self, seq: u32) -> u64 {
        let expected = self.base.wrapping_add(self.next as u32);
        let delta = i64::from(seq.wrapping_sub(expected) as i32);
        (self.next as i64 + delta).max(0) as u64
    }

    /// Feeds one segment: `data` is what was captured, `wire_len` the payload length on the wire.
    pub fn segment(
        &mut self,
        ts_ns: i64,
        seq: u32,
        syn: bool,
        data: &[u8],
        wire_len: u32,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        if syn {
            if !self.started {
                self.started = true;
                self.base = seq.wrapping_add(1);
            }
            // Data on a SYN (TCP Fast Open) follows the SYN's sequence number.
            if data.is_empty() {
                return;
            }
            return self.segment(ts_ns, seq.wrapping_add(1), false, data, wire_len, out);
        }
        let len = u64::from(wire_len.max(data.len() as u32));
        if len == 0 {
            return;
        }
        if !self.started {
            self.started = true; // seen from the middle
            self.base = seq;
        }
        let pos = self.position(seq);
        let end = pos + len;
        if end <= self.next {
            self.retransmissions += 1;
            return;
        }
        if pos > self.next {
            if self.pending.contains_key(&pos) {
                self.retransmissions += 1;
                return;
            }
            self.pending_bytes += data.len();
            self.pending.insert(
                pos,
                Pending {
                    ts_ns,
                    data: data.to_vec(),
                    missing: len - data.len() as u64,
                },
            );
            if self.pending_bytes > MAX_PENDING_BYTES {
                self.skip_hole(out);
            }
            return;
        }
        self.deliver(ts_ns, pos, data, len, out);
        self.drain(out);
    }

    /// Delivers a segment that starts at or before `next` and ends after it.
    fn deliver(
        &mut self,
        ts_ns: i64,
        pos: u64,
        data: &[u8],
        len: u64,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        let trim = (self.next - pos) as usize;
        if trim < data.len() {
            out(Chunk::Data {
                ts_ns,
                bytes: &data[trim..],
            });
        }
        let captured_end = pos + data.len() as u64;
        let end = pos + len;
        if end > captured_end.max(self.next) {
            let missing = end - captured_end.max(self.next);
            self.gap_bytes += missing;
            out(Chunk::Gap {
                ts_ns,
                len: missing,
            });
        }
        self.next = end;
    }

    fn drain(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.next {
                return;
            }
            let pos = *entry.key();
            let p = entry.remove();
            self.pending_bytes -= p.data.len();
            let len = p.data.len() as u64 + p.missing;
            if pos + len <= self.next {
                self.retransmissions += 1;
                continue;
            }
            self.deliver(p.ts_ns, pos, &p.data, len, out);
        }
    }

    /// Declares the hole before the first waiting segment a gap and delivers what follows it.
    fn skip_hole(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        let Some((&pos, p)) = self.pending.first_key_value() else {
            return;
        };
        if pos > self.next {
            let len = pos - self.next;
            self.gap_bytes += len;
            out(Chunk::Gap {
                ts_ns: p.ts_ns,
                len,
            });
            self.next = pos;
        }
        self.drain(out);
    }

    /// Bytes held behind holes.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// End of the connection or of the capture: everything still waiting is delivered, holes
    /// becoming gaps.
    pub fn flush(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_hole(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(segments: &[(u32, &[u8], u32)]) -> (String, HalfStream) {
        let mut h = HalfStream::default();
        let mut text = String::new();
        let mut out = |c: Chunk<'_>| match c {
            Chunk::Data { bytes, .. } => text.push_str(std::str::from_utf8(bytes).unwrap()),
            Chunk::Gap { len, .. } => text.push_str(&format!("<{len}>")),
        };
        h.segment(0, 999, true, b"", 0, &mut out);
        for (i, (seq, data, wire)) in segments.iter().enumerate() {
            h.segment(i as i64, *seq, false, data, *wire, &mut out);
        }
        h.flush(&mut out);
        (text, h)
    }

    #[test]
    fn in_order_out_of_order_retransmitted_overlapping() {
        let (t, _) = run(&[(1000, b"abc", 3), (1003, b"def", 3)]);
        assert_eq!(t, "abcdef");
        let (t, h) = run(&[(1003, b"def", 3), (1000, b"abc", 3), (1000, b"abc", 3)]);
        assert_eq!(t, "abcdef");
        assert_eq!(h.retransmissions, 1);
        let (t, _) = run(&[(1000, b"abcd", 4), (1002, b"cdefg", 5)]);
        assert_eq!(t, "abcdefg");
    }

    #[test]
    fn snaplen_cuts_and_holes_become_gaps() {
        // 10 bytes on the wire, 4 captured; then the next segment.
        let (t, _) = run(&[(1000, b"abcd", 10), (1010, b"xyz", 3)]);
        assert_eq!(t, "abcd<6>xyz");
        // A hole that is never filled: flushed as a gap at the end.
        let (t, h) = run(&[(1000, b"ab", 2), (1005, b"fg", 2)]);
        assert_eq!(t, "ab<3>fg");
        assert_eq!(h.gap_bytes, 3);
    }

    #[test]
    fn sequence_wraps() {
        let mut h = HalfStream::default();
        let mut text = Vec::new();
        let mut out = |c: Chunk<'_>| {
            if let Chunk::Data { bytes, .. } = c {
                text.extend_from_slice(bytes);
            }
        };
        h.segment(0, u32::MAX - 2, false, b"abc", 3, &mut out);
        h.segment(1, 1, false, b"e", 1, &mut out);
        h.segment(2, 0, false, b"d", 1, &mut out);
        assert_eq!(text, b"abcde");
    }
}
