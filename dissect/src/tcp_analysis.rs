//! The health of one TCP connection, from its packets, in the terms of Wireshark's
//! `tcp.analysis.*` flags: retransmissions, out-of-order and lost (not captured) segments,
//! zero windows, duplicate ACKs, and the data round-trip time (`tcp.analysis.ack_rtt`).
//!
//! Each packet is classified by the sender's highest sequence number so far (`next_seq`, set
//! only when a segment advances it), the last ACK and window each side sent, and whether the
//! peer's last packet was a keep-alive. The rules follow the Wireshark user's guide, section
//! "TCP Analysis", in its order: a packet is a keep-alive before it can be a retransmission,
//! and an ACK answering a keep-alive or a zero-window probe is not a duplicate. Reassembly
//! (`reassembly.rs`) is separate: it decides which bytes reach the parsers, this decides what
//! the connection went through.

use std::collections::VecDeque;

use crate::net::flags::{ACK, FIN, RST, SYN};

/// Below this gap since the sender last advanced, a segment that goes back is out of order
/// rather than retransmitted, when the handshake gave no round-trip time (Wireshark's default).
const DEFAULT_OOO_THRESHOLD_NS: i64 = 3_000_000;
/// A retransmission this soon after the peer's duplicate ACKs is a fast retransmission.
const FAST_RETRANSMIT_NS: i64 = 20_000_000;
/// Segments remembered per direction for the round-trip time; older ones are forgotten.
const MAX_UNACKED: usize = 256;

/// One TCP segment as the analysis needs it.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Capture time, ns.
    pub ts_ns: i64,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with [`ACK`]).
    pub ack: u32,
    /// Flags byte.
    pub flags: u8,
    /// Window as sent.
    pub window: u16,
    /// Payload length on the wire.
    pub len: u32,
}

/// What one direction's segments went through (counts of segments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Retransmissions, fast and spurious ones included (`tcp.analysis.retransmission`,
    /// `fast_retransmission`, `spurious_retransmission`).
    pub retransmissions: u64,
    /// Segments that went back in sequence soon after a later one (`out_of_order`).
    pub out_of_order: u64,
    /// Segments after a hole the capture never filled in time (`lost_segment`, "previous
    /// segment not captured").
    pub lost_segments: u64,
    /// Segments advertising a zero window (`zero_window`).
    pub zero_windows: u64,
    /// Duplicate ACKs (`duplicate_ack`).
    pub dup_acks: u64,
    /// Keep-alives (`keep_alive`).
    pub keep_alives: u64,
}

#[derive(Debug, Default)]
struct Direction {
    /// Highest sequence number sent + length, once anything was sent.
    next_seq: Option<u32>,
    /// When `next_seq` last advanced.
    next_seq_ns: i64,
    /// Last acknowledgment number sent, and when.
    last_ack: Option<u32>,
    last_ack_ns: i64,
    /// Last acknowledgment number sent with the ACK flag.
    acked_to: Option<u32>,
    /// Last window sent.
    window: Option<u16>,
    /// Duplicate ACKs in a row.
    dup_acks: u32,
    /// The last packet was a keep-alive or zero-window probe.
    last_was_probe: bool,
    /// Sent segments not yet acknowledged: (sequence number after them, time).
    unacked: Unacked,
}

/// Sent segments not yet acknowledged, in sending order: (sequence number after them, time).
/// Their ends usually grow with the sending order; while they do, the covered ones are a prefix
/// and an ACK costs only what it covers. A retransmission breaks the order until the list
/// empties, and then an ACK looks at every entry.
#[derive(Debug)]
struct Unacked {
    segments: VecDeque<(u32, i64)>,
    ordered: bool,
}

impl Default for Unacked {
    fn default() -> Self {
        Self {
            segments: VecDeque::new(),
            ordered: true,
        }
    }
}

impl Unacked {
    fn push(&mut self, end: u32, ts_ns: i64) {
        if let Some(&(last, _)) = self.segments.back()
            && !after(end, last)
        {
            self.ordered = false;
        }
        if self.segments.len() == MAX_UNACKED {
            self.segments.pop_front();
        }
        self.segments.push_back((end, ts_ns));
    }

    /// Removes what `ack` covers; returns when the first-sent segment ending exactly at `ack`
    /// was sent.
    fn acknowledge(&mut self, ack: u32) -> Option<i64> {
        let mut exact: Option<i64> = None;
        let mut note = |(e, sent): (u32, i64)| {
            if e == ack {
                exact = Some(exact.map_or(sent, |x| x.min(sent)));
            }
        };
        if self.ordered {
            while let Some(&(e, sent)) = self.segments.front() {
                if after(e, ack) {
                    break;
                }
                note((e, sent));
                self.segments.pop_front();
            }
        } else {
            for &segment in self.segments.iter().filter(|(e, _)| !after(*e, ack)) {
                note(segment);
            }
            self.segments.retain(|(e, _)| after(*e, ack));
            self.ordered = self.segments.is_empty();
        }
        exact
    }
}

/// `a` is after `b` in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The analysis of one connection; side 0 and 1 are the engine's.
#[derive(Debug, Default)]
pub struct TcpAnalysis {
    dirs: [Direction; 2],
    counters: [Counters; 2],
    /// Handshake round trip, ns, when seen (the out-of-order threshold).
    initial_rtt_ns: Option<i64>,
    rtt_sum_ns: i64,
    rtt_samples: u64,
}

impl TcpAnalysis {
    /// Sets the handshake's round trip (SYN to the client's ACK).
    pub fn set_initial_rtt(&mut self, ns: i64) {
        self.initial_rtt_ns = Some(ns);
    }

    /// Counts per side.
    pub fn counters(&self) -> [Counters; 2] {
        self.counters
    }

    /// Mean time from a data segment to the ACK that covered it exactly, µs.
    pub fn data_rtt_us(&self) -> Option<i64> {
        let samples = i64::try_from(self.rtt_samples).ok().filter(|n| *n > 0)?;
        Some(self.rtt_sum_ns / samples / 1000)
    }

    /// Takes in one packet sent by side `dir`.
    pub fn packet(&mut self, dir: usize, s: &Segment) {
        let (this, peer) = if dir == 0 {
            let [a, b] = &mut self.dirs;
            (a, b)
        } else {
            let [a, b] = &mut self.dirs;
            (b, a)
        };
        let c = &mut self.counters[dir];
        let control = s.flags & (SYN | FIN | RST) != 0;
        let has_ack = s.flags & ACK != 0;
        let seq_len = s.len + u32::from(s.flags & SYN != 0) + u32::from(s.flags & FIN != 0);
        let end = s.seq.wrapping_add(seq_len);

        let mut probe = false;
        let mut keep_alive = false;
        if s.window == 0 && !control {
            c.zero_windows += 1;
        }
        if let Some(next) = this.next_seq {
            if s.len == 1 && s.seq == next && peer.window == Some(0) {
                probe = true; // zero-window probe
            }
            if after(s.seq, next) && s.flags & RST == 0 {
                c.lost_segments += 1;
            }
            if s.len <= 1 && !control && s.seq == next.wrapping_sub(1) {
                keep_alive = true;
                c.keep_alives += 1;
            }
            let pure_ack = s.len == 0 && !control && s.seq == next && Some(s.ack) == this.last_ack;
            if pure_ack && s.window != 0 && Some(s.window) == this.window && !peer.last_was_probe {
                this.dup_acks += 1;
                c.dup_acks += 1;
            } else if Some(s.ack) != this.last_ack {
                this.dup_acks = 0;
            }
            if (s.len > 0 || s.flags & (SYN | FIN) != 0) && after(next, s.seq) && !keep_alive {
                let since_ack = s.ts_ns - peer.last_ack_ns;
                let since_advance = s.ts_ns - this.next_seq_ns;
                let threshold = self.initial_rtt_ns.unwrap_or(DEFAULT_OOO_THRESHOLD_NS);
                let fast = peer.dup_acks >= 2
                    && peer.last_ack == Some(s.seq)
                    && since_ack < FAST_RETRANSMIT_NS;
                // Data the peer had already acknowledged is a (spurious) retransmission,
                // however soon it came.
                let spurious = peer.acked_to.is_some_and(|a| !after(end, a));
                // A segment stamped before the one that advanced (clock steps, merged
                // captures) is not out of order: Wireshark compares a non-negative gap.
                if !fast && !spurious && (0..threshold).contains(&since_advance) && next != end {
                    c.out_of_order += 1;
                } else {
                    c.retransmissions += 1;
                }
            }
        }

        // The data round trip, as Wireshark's `ack_rtt`: from the peer's segment that ends
        // exactly where this packet's acknowledgment field points, the first sent among equals
        // (so a lost segment's round trip includes the wait for its retransmission). As in
        // Wireshark, every packet's field is read, the ACK flag or not: a retransmitted SYN's
        // zero "covers" a SYN-ACK whose sequence number is in the upper half of the space, and
        // the client's ACK is then timed from the retransmitted SYN-ACK. A zero gap says the
        // clock could not tell them apart; tshark shows no RTT then.
        let sent = peer.unacked.acknowledge(s.ack);
        if let Some(sent) = sent.filter(|sent| *sent != s.ts_ns) {
            self.rtt_sum_ns += s.ts_ns - sent;
            self.rtt_samples += 1;
        }
        if has_ack {
            this.acked_to = Some(s.ack);
        }
        // Every packet's acknowledgment field counts, as in Wireshark, so that an ACK repeating
        // a SYN's zero reads as a duplicate the way tshark reads it.
        this.last_ack = Some(s.ack);
        this.last_ack_ns = s.ts_ns;
        if seq_len > 0 {
            this.unacked.push(end, s.ts_ns);
        }
        if seq_len > 0 && this.next_seq.is_none_or(|n| after(end, n)) {
            this.next_seq = Some(end);
            this.next_seq_ns = s.ts_ns;
        } else if this.next_seq.is_none() {
            // A pure ACK seen first (a capture from the middle): its seq is where data resumes.
            this.next_seq = Some(s.seq);
            this.next_seq_ns = s.ts_ns;
        }
        this.window = Some(s.window);
        this.last_was_probe = keep_alive || probe;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SYN-ACK is lost after the capture point: the client retransmits its SYN after 1 s and
    /// the server answers again. Which SYN-ACK the client's ACK is timed from depends, in
    /// Wireshark, on where the server's sequence number lies relative to the retransmitted
    /// SYN's acknowledgment field (zero): in the lower half of the space the first SYN-ACK is
    /// still waiting and times the ACK (1 s), in the upper half the zero "covers" it and the
    /// retransmission times the ACK (2 ms). Both read from tshark 4.0 on captures made here.
    #[test]
    fn a_retransmitted_syn_ack_is_timed_as_wireshark_times_it() {
        for (server_isn, want_sum_ms) in [(500u32, 1 + 1 + 1002), (3_000_000_000, 1 + 1 + 2)] {
            let mut a = TcpAnalysis::default();
            a.packet(0, &seg(0, 100, 0, SYN, 0));
            a.packet(1, &seg(1, server_isn, 101, SYN | ACK, 0));
            a.packet(0, &seg(1000, 100, 0, SYN, 0));
            a.packet(1, &seg(1001, server_isn, 101, SYN | ACK, 0));
            a.packet(0, &seg(1003, 101, server_isn + 1, ACK, 0));
            // Samples: SYN → SYN-ACK, SYN again → SYN-ACK again, a SYN-ACK → the ACK.
            assert_eq!(a.rtt_samples, 3, "server ISN {server_isn}");
            assert_eq!(
                a.rtt_sum_ns,
                want_sum_ms * 1_000_000,
                "server ISN {server_isn}"
            );
        }
    }

    fn seg(ts_ms: i64, seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment {
            ts_ns: ts_ms * 1_000_000,
            seq,
            ack,
            flags,
            window: 100,
            len,
        }
    }

    #[test]
    fn a_resent_segment_is_a_retransmission_and_a_hole_a_lost_segment() {
        let mut a = TcpAnalysis::default();
        a.packet(0, &seg(0, 100, 0, SYN, 0));
        a.packet(1, &seg(1, 500, 101, SYN | ACK, 0));
        a.set_initial_rtt(2_000_000);
        a.packet(0, &seg(2, 101, 501, ACK, 0));
        a.packet(0, &seg(3, 101, 501, ACK, 10));
        a.packet(0, &seg(4, 121, 501, ACK, 10)); // 111..121 missing
        a.packet(1, &seg(5, 501, 111, ACK, 0));
        a.packet(1, &seg(6, 501, 111, ACK, 0)); // duplicate ACK
        a.packet(1, &seg(7, 501, 111, ACK, 0)); // duplicate ACK
        a.packet(0, &seg(8, 111, 501, ACK, 10)); // fast retransmission
        a.packet(0, &seg(500, 111, 501, ACK, 10)); // retransmission
        let [c, s] = a.counters();
        assert_eq!(c.lost_segments, 1);
        assert_eq!(c.retransmissions, 2);
        assert_eq!(c.out_of_order, 0);
        assert_eq!(s.dup_acks, 2);
        // SYN and SYN-ACK were acknowledged after 1 ms, the first data segment after 2 ms.
        assert_eq!(a.data_rtt_us(), Some(1333));
    }

    #[test]
    fn an_early_late_segment_is_out_of_order_and_zero_windows_count() {
        let mut a = TcpAnalysis::default();
        a.packet(0, &seg(0, 1000, 1, ACK, 10));
        a.packet(0, &seg(10, 1020, 1, ACK, 10));
        // 1 ms after the sender advanced (under the 3 ms default): out of order.
        a.packet(0, &seg(11, 1010, 1, ACK, 10));
        let mut zero = seg(12, 1, 1030, ACK, 0);
        zero.window = 0;
        a.packet(1, &zero);
        // A keep-alive (one byte before next_seq) is neither retransmission nor out of order.
        a.packet(0, &seg(5000, 1029, 1, ACK, 0));
        let [c, s] = a.counters();
        assert_eq!(
            (c.out_of_order, c.retransmissions, c.keep_alives),
            (1, 0, 1)
        );
        assert_eq!(s.zero_windows, 1);
    }
}
