//! One packet, seen more than once, counted once.
//!
//! A node records a packet on every interface it crosses: a pod's veth, a bridge, the uplink
//! (and, inside tunnels, the inner packet again). The copies are the same IP packet except for
//! what routers change on the way: the TTL (IPv6 hop limit) and so the IPv4 header checksum.
//! A sender's retransmission is a *new* packet: Linux gives it a new IPv4 ID, and with TCP
//! timestamps (Linux's default) a new TSval, so it differs within the bytes compared here.
//!
//! Identity: the packet's wire length and its first [`PREFIX`] bytes (IP header, transport
//! header and the start of the payload) with TTL/hop limit and the IP and transport checksums
//! masked, hashed (a copy joined across a NAT by `crate::nat` has a stale transport checksum). Copies
//! are expected within [`WINDOW_NS`] of the first; the earliest is kept (the engine sees packets
//! in time order).

use std::collections::VecDeque;
use std::hash::{Hash as _, Hasher as _};

use rustc_hash::{FxHashMap as HashMap, FxHasher};

/// Bytes of the packet that make its identity.
const PREFIX: usize = 128;
/// How long after a packet a copy of it is recognised as one.
pub const WINDOW_NS: i64 = 50_000_000;
/// Identities remembered at once (a burst over this just lets a few copies through).
const MAX_REMEMBERED: usize = 1 << 18;

/// Recently seen packets.
#[derive(Default)]
pub(crate) struct Dedup {
    seen: HashMap<u64, i64>,
    order: VecDeque<(i64, u64)>,
}

impl Dedup {
    /// True when `l3` is a copy of a packet seen within the window before `ts_ns`; otherwise
    /// remembers it.
    pub(crate) fn is_copy(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) -> bool {
        let Some(key) = identity(l3, wire_len) else {
            return false;
        };
        while let Some(&(t, k)) = self.order.front() {
            if ts_ns - t <= WINDOW_NS && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
        match self.seen.get(&key) {
            Some(&first) if ts_ns - first <= WINDOW_NS => true,
            _ => {
                self.seen.insert(key, ts_ns);
                self.order.push_back((ts_ns, key));
                false
            }
        }
    }
}

/// The hash of what stays the same across the copies of one packet.
fn identity(l3: &[u8], wire_len: u32) -> Option<u64> {
    let mut prefix = [0u8; PREFIX];
    let n = l3.len().min(PREFIX);
    prefix[..n].copy_from_slice(&l3[..n]);
    match prefix[0] >> 4 {
        4 if n >= 20 => {
            prefix[8] = 0; // TTL
            prefix[10] = 0; // header checksum
            prefix[11] = 0;
        }
        6 if n >= 40 => prefix[7] = 0, // hop limit
        _ => return None,
    }
    // A copy rewritten from the other side of a NAT carries a stale transport checksum.
    if let Some(at) = crate::nat::transport_checksum(l3)
        && at + 2 <= n
    {
        prefix[at] = 0;
        prefix[at + 1] = 0;
    }
    let mut h = FxHasher::default();
    wire_len.hash(&mut h);
    prefix[..n].hash(&mut h);
    Some(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(ttl: u8, ip_id: u16, payload: &[u8]) -> Vec<u8> {
        let total = (28 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&ip_id.to_be_bytes());
        p.extend_from_slice(&[0x40, 0, ttl, 17, 0xab, 0xcd]);
        p.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
        p.extend_from_slice(&[0x13, 0x88, 0, 53]);
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn a_routed_copy_is_one_packet_a_new_ip_id_is_another() {
        let mut d = Dedup::default();
        let first = udp(64, 7, b"query");
        let mut routed = udp(63, 7, b"query");
        routed[10] = 0x12; // a router rewrote the checksum too
        assert!(!d.is_copy(1_000, &first, first.len() as u32));
        assert!(d.is_copy(1_500, &routed, routed.len() as u32));
        let retry = udp(64, 8, b"query");
        assert!(!d.is_copy(2_000, &retry, retry.len() as u32));
        let other = udp(64, 7, b"other");
        assert!(!d.is_copy(2_100, &other, other.len() as u32));
    }

    #[test]
    fn identical_bytes_after_the_window_are_a_new_packet() {
        let mut d = Dedup::default();
        let p = udp(64, 7, b"query");
        assert!(!d.is_copy(0, &p, p.len() as u32));
        assert!(d.is_copy(WINDOW_NS, &p, p.len() as u32));
        assert!(!d.is_copy(3 * WINDOW_NS, &p, p.len() as u32));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut d = Dedup::default();
        for i in 0..(MAX_REMEMBERED as u32 + 1000) {
            let p = udp(64, (i % 65_536) as u16, &i.to_be_bytes());
            d.is_copy(0, &p, p.len() as u32);
        }
        assert!(d.order.len() <= MAX_REMEMBERED);
        assert!(d.seen.len() <= MAX_REMEMBERED);
    }
}
