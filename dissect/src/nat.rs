//! One connection, seen on both sides of an address translation, dissected once.
//!
//! A pod that calls a Service sends to the Service's ClusterIP; kube-proxy (iptables, IPVS or
//! nftables) or the CNI's eBPF rewrites the destination to one backend pod (DNAT), and traffic
//! leaving a node may also get the node's address as its source (SNAT). The recorder sees both
//! copies: on the client pod's veth before the rewrite, on the uplink or the server pod's veth
//! after it. They are the same packets with other addresses and ports, because NAT changes
//! neither the TCP sequence numbers, options and payload, nor the IPv4 ID.
//!
//! So the identity that joins two views is [`crate::dedup`]'s with the addresses, ports and
//! transport checksum masked too. TCP is compared on segments with SYN only (the random 32-bit
//! ISN and, with Linux's defaults, the per-connection TSval make a chance match negligible);
//! UDP datagrams are compared until their flow is joined, and must share their source (DNAT of a
//! request) or their destination and source port (the reply, un-translated), because an
//! identical datagram from an unrelated sender is not unlikely there.
//!
//! When a packet matches another flow's within [`crate::dedup::WINDOW_NS`], its flow (the later
//! view) is joined to that one (the earlier view): its packets are rewritten to the earlier
//! view's addresses, so that dedup counts them as copies and fills in what one copy missed, and
//! the earlier view's rows carry the later one's addresses ([`crate::call::Translated`]).

use std::collections::VecDeque;
use std::hash::{Hash as _, Hasher as _};

use rustc_hash::{FxHashMap as HashMap, FxHasher};

use crate::{
    call::{Endpoint, Translated},
    dedup::WINDOW_NS,
    flow::{FlowKey, key},
};

/// Bytes of a packet that make its identity (as dedup's).
const PREFIX: usize = 128;
/// Packet identities remembered at once.
const MAX_REMEMBERED: usize = 1 << 16;
/// A join unused for this long is forgotten (a connection idle that long is finished anyway).
const IDLE_NS: i64 = 120_000_000_000;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Where the fields of one unfragmented TCP or UDP packet are.
#[derive(Clone, Copy)]
struct Layout {
    /// Offset of the source address (the destination follows it).
    addr_at: usize,
    addr_len: usize,
    /// Offset of the transport header.
    l4_at: usize,
    proto: u8,
    src: Endpoint,
    dst: Endpoint,
}

impl Layout {
    fn of(l3: &[u8]) -> Option<Self> {
        let (addr_at, addr_len, l4_at, proto) = match l3.first()? >> 4 {
            4 => {
                let ihl = usize::from(l3.first()? & 0x0f) * 4;
                let frag = u16::from_be_bytes([*l3.get(6)?, *l3.get(7)?]);
                if ihl < 20 || frag & 0x3fff != 0 {
                    return None;
                }
                (12, 4, ihl, *l3.get(9)?)
            }
            // Extension headers are rare inside a cluster; such packets are just not joined.
            6 => (8, 16, 40, *l3.get(6)?),
            _ => return None,
        };
        if !matches!(proto, TCP | UDP) || l3.len() < l4_at + 4 {
            return None;
        }
        let ip = |at: usize| -> Option<std::net::IpAddr> {
            let bytes = l3.get(at..at + addr_len)?;
            Some(match addr_len {
                4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
                _ => <[u8; 16]>::try_from(bytes).ok()?.into(),
            })
        };
        let port = |at: usize| u16::from_be_bytes([l3[l4_at + at], l3[l4_at + at + 1]]);
        Some(Self {
            addr_at,
            addr_len,
            l4_at,
            proto,
            src: Endpoint {
                ip: ip(addr_at)?,
                port: port(0),
            },
            dst: Endpoint {
                ip: ip(addr_at + addr_len)?,
                port: port(2),
            },
        })
    }

    /// Offset of the transport checksum.
    fn checksum_at(&self) -> usize {
        self.l4_at + if self.proto == TCP { 16 } else { 6 }
    }
}

/// A view's direction rewritten to the earlier view's.
#[derive(Clone, Copy)]
struct Rewrite {
    src: Endpoint,
    dst: Endpoint,
    last_ns: i64,
}

/// The later view of a flow, as the earlier view's rows will name it.
#[derive(Clone, Copy)]
struct View {
    ends: ViewEnds,
    last_ns: i64,
}

/// (earlier endpoint, later endpoint) for the two ends of a flow's earlier view.
type ViewEnds = [(Endpoint, Endpoint); 2];

/// The later view of the flow `a` ↔ `b` whose ends map as `ends` says, oriented as `(a, b)`.
fn translated(ends: &ViewEnds, a: &Endpoint, b: &Endpoint) -> Option<Translated> {
    let later = |e: &Endpoint| {
        ends.iter()
            .find(|(earlier, _)| earlier == e)
            .map(|(_, later)| *later)
    };
    Some(Translated {
        src: later(a)?,
        dst: later(b)?,
    })
}

/// A change to the views of translated flows (see the module's docs): a flow (by its earlier
/// view) joined to a later view, or forgotten. A sharded dissection joins views where it routes
/// the packets ([`crate::Router::counting_copies_once`]) and sends these to the threads that
/// dissect them, which keep a [`NatViews`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewChange {
    /// The flow, by its earlier view.
    flow: FlowKey,
    /// Its later view's ends, or `None` when it is forgotten.
    ends: Option<ViewEnds>,
}

/// The views of translated flows as the router of a sharded dissection knows them, kept up to
/// date by its [`ViewChange`]s: what the rows of the shards are annotated with.
#[derive(Debug, Default, Clone)]
pub struct NatViews {
    views: HashMap<FlowKey, ViewEnds>,
}

impl NatViews {
    /// Applies one change.
    pub fn apply(&mut self, change: &ViewChange) {
        match change.ends {
            Some(ends) => {
                self.views.insert(change.flow, ends);
            }
            None => {
                self.views.remove(&change.flow);
            }
        }
    }

    /// The later view of the flow `a` ↔ `b`, oriented as `(a, b)`.
    pub fn view(&self, a: &Endpoint, b: &Endpoint) -> Option<Translated> {
        translated(self.views.get(&key(*a, *b))?, a, b)
    }

    /// True when no flow is translated.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }
}

/// Views of one flow on both sides of a NAT, joined.
#[derive(Default)]
pub(crate) struct NatJoin {
    /// Identity → when, and the directed ends it was seen with.
    seen: HashMap<u64, (i64, Endpoint, Endpoint)>,
    order: VecDeque<(i64, u64)>,
    /// Directed ends of a later view → the earlier view's.
    joined: HashMap<(Endpoint, Endpoint), Rewrite>,
    /// The earlier view's flow → its later view.
    views: HashMap<FlowKey, View>,
    /// Where a rewritten packet is built.
    scratch: Vec<u8>,
    /// Changes to `views` not yet taken, when they are recorded ([`NatJoin::recording`]).
    changes: Option<Vec<ViewChange>>,
}

impl NatJoin {
    /// A join that records every change to its views, for [`NatJoin::take_changes`].
    pub(crate) fn recording() -> Self {
        Self {
            changes: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// The changes to the views since the last call (none unless [`NatJoin::recording`]).
    pub(crate) fn take_changes(&mut self, into: &mut Vec<ViewChange>) {
        if let Some(changes) = &mut self.changes {
            into.append(changes);
        }
    }

    /// The packet as the engine should see it: rewritten to the earlier view's addresses when
    /// it belongs to a later view of a flow, else `None` (use it as it is).
    pub(crate) fn rewrite(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) -> Option<&[u8]> {
        let layout = Layout::of(l3)?;
        let flags = match layout.proto {
            TCP => l3.get(layout.l4_at + 13).copied().unwrap_or(0),
            _ => 0,
        };
        let is_syn = flags & SYN != 0;
        if is_syn && flags & ACK == 0 {
            // A client's SYN may start a new connection on a reused tuple, to another backend:
            // look again. (A SYN-ACK stays joined: the backend's copy comes before the
            // un-translated one.)
            self.unjoin(layout.src, layout.dst);
        }
        let compared = is_syn || (layout.proto == UDP && !tunnel(&layout));
        if !compared && self.joined.is_empty() {
            // Most packets: mid-connection TCP with no translated flow live.
            return None;
        }
        let target = match self.joined.get_mut(&(layout.src, layout.dst)) {
            Some(rewrite) => {
                rewrite.last_ns = ts_ns;
                Some((rewrite.src, rewrite.dst))
            }
            None if compared => self.compare(ts_ns, l3, wire_len, &layout),
            None => None,
        }?;
        if let Some(view) = self.views.get_mut(&key(target.0, target.1)) {
            view.last_ns = ts_ns;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(l3);
        let (at, len) = (layout.addr_at, layout.addr_len);
        put_ip(&mut self.scratch[at..at + len], target.0);
        put_ip(&mut self.scratch[at + len..at + 2 * len], target.1);
        let l4 = layout.l4_at;
        self.scratch[l4..l4 + 2].copy_from_slice(&target.0.port.to_be_bytes());
        self.scratch[l4 + 2..l4 + 4].copy_from_slice(&target.1.port.to_be_bytes());
        Some(&self.scratch)
    }

    /// The later view of the flow `a` ↔ `b`, oriented as `(a, b)`.
    pub(crate) fn view(&self, a: &Endpoint, b: &Endpoint) -> Option<Translated> {
        translated(&self.views.get(&key(*a, *b))?.ends, a, b)
    }

    /// Forgets joins unused for a long time.
    pub(crate) fn expire(&mut self, now_ns: i64) {
        self.joined.retain(|_, r| now_ns - r.last_ns <= IDLE_NS);
        let changes = &mut self.changes;
        self.views.retain(|flow, v| {
            let keep = now_ns - v.last_ns <= IDLE_NS;
            if let (false, Some(changes)) = (keep, changes.as_mut()) {
                changes.push(ViewChange {
                    flow: *flow,
                    ends: None,
                });
            }
            keep
        });
    }

    /// Looks `l3` up among recent packets of other flows; joins its flow to a match's.
    fn compare(
        &mut self,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
        layout: &Layout,
    ) -> Option<(Endpoint, Endpoint)> {
        let identity = identity(l3, wire_len, layout);
        while let Some(&(t, k)) = self.order.front() {
            if ts_ns - t <= WINDOW_NS && self.order.len() < MAX_REMEMBERED {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k).is_some_and(|(first, ..)| *first == t) {
                self.seen.remove(&k);
            }
        }
        let (src, dst) = (layout.src, layout.dst);
        match self.seen.get(&identity) {
            Some(&(first, e_src, e_dst))
                if ts_ns - first <= WINDOW_NS
                    && (e_src, e_dst) != (src, dst)
                    && (layout.proto == TCP
                        || e_src == src
                        || (e_dst == dst && e_src.port == src.port)) =>
            {
                self.join((src, dst), (e_src, e_dst), ts_ns);
                Some((e_src, e_dst))
            }
            Some(&(first, ..)) if ts_ns - first <= WINDOW_NS => None,
            _ => {
                self.seen.insert(identity, (ts_ns, src, dst));
                self.order.push_back((ts_ns, identity));
                None
            }
        }
    }

    /// Joins the later view `later` (directed) to the earlier view `earlier`, both ways.
    fn join(&mut self, later: (Endpoint, Endpoint), earlier: (Endpoint, Endpoint), ts_ns: i64) {
        let rewrite = |src, dst| Rewrite {
            src,
            dst,
            last_ns: ts_ns,
        };
        self.joined.insert(later, rewrite(earlier.0, earlier.1));
        self.joined
            .insert((later.1, later.0), rewrite(earlier.1, earlier.0));
        let flow = key(earlier.0, earlier.1);
        let ends = [(earlier.0, later.0), (earlier.1, later.1)];
        self.views.insert(
            flow,
            View {
                ends,
                last_ns: ts_ns,
            },
        );
        if let Some(changes) = &mut self.changes {
            changes.push(ViewChange {
                flow,
                ends: Some(ends),
            });
        }
    }

    fn unjoin(&mut self, src: Endpoint, dst: Endpoint) {
        if self.joined.remove(&(src, dst)).is_some() {
            self.joined.remove(&(dst, src));
        }
    }
}

/// VXLAN, Geneve and the like: the inner packets are what get joined.
fn tunnel(layout: &Layout) -> bool {
    matches!(layout.dst.port, 4789 | 6081 | 8472)
}

fn put_ip(out: &mut [u8], endpoint: Endpoint) {
    match endpoint.ip {
        std::net::IpAddr::V4(ip) => out.copy_from_slice(&ip.octets()),
        std::net::IpAddr::V6(ip) => out.copy_from_slice(&ip.octets()),
    }
}

/// The hash of what NAT leaves as it is.
fn identity(l3: &[u8], wire_len: u32, layout: &Layout) -> u64 {
    let mut prefix = [0u8; PREFIX];
    let n = l3.len().min(PREFIX);
    prefix[..n].copy_from_slice(&l3[..n]);
    let mut mask = |from: usize, len: usize| {
        for b in prefix.iter_mut().skip(from).take(len) {
            *b = 0;
        }
    };
    if layout.addr_len == 4 {
        mask(8, 1); // TTL
        mask(10, 2); // header checksum
    } else {
        mask(7, 1); // hop limit
    }
    mask(layout.addr_at, 2 * layout.addr_len);
    mask(layout.l4_at, 4); // ports
    mask(layout.checksum_at(), 2);
    let mut h = FxHasher::default();
    wire_len.hash(&mut h);
    prefix[..n].hash(&mut h);
    h.finish()
}

/// Offset and length of the transport checksum of `l3`, when it is an unfragmented TCP or UDP
/// packet (dedup masks it: a rewritten copy's checksum is stale, a NATed one's recomputed).
pub(crate) fn transport_checksum(l3: &[u8]) -> Option<usize> {
    Layout::of(l3).map(|l| l.checksum_at())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: [u8; 4], port: u16) -> Endpoint {
        Endpoint {
            ip: ip.into(),
            port,
        }
    }

    fn tcp(src: Endpoint, dst: Endpoint, ttl: u8, flags: u8, seq: u32) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0x12, 0x34, 0x40, 0, ttl, TCP, 0, 0];
        for e in [src, dst] {
            if let std::net::IpAddr::V4(ip) = e.ip {
                p.extend_from_slice(&ip.octets());
            }
        }
        p.extend_from_slice(&src.port.to_be_bytes());
        p.extend_from_slice(&dst.port.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0xaa, 0xbb, 0, 0]);
        p
    }

    #[test]
    fn a_dnat_copy_is_rewritten_to_the_first_view_and_the_rows_learn_the_backend() {
        let client = ep([198, 18, 1, 2], 40000);
        let service = ep([198, 19, 0, 10], 80);
        let pod = ep([198, 18, 3, 2], 8080);
        let mut nat = NatJoin::default();
        let syn = tcp(client, service, 64, SYN, 7);
        assert!(nat.rewrite(0, &syn, 40).is_none(), "the first view is kept");
        let dnat = tcp(client, pod, 63, SYN, 7);
        let seen = nat.rewrite(1_000, &dnat, 40).expect("joined").to_vec();
        assert_eq!(
            Layout::of(&seen).map(|l| (l.src, l.dst)),
            Some((client, service))
        );
        // The reply from the backend (seen before its un-translated copy) becomes the reply
        // from the service, and the copy is left as it is, for dedup.
        let synack = tcp(pod, client, 64, SYN | ACK, 99);
        let seen = nat.rewrite(2_000, &synack, 40).expect("joined").to_vec();
        assert_eq!(
            Layout::of(&seen).map(|l| (l.src, l.dst)),
            Some((service, client))
        );
        assert!(
            nat.rewrite(2_500, &tcp(service, client, 63, SYN | ACK, 99), 40)
                .is_none()
        );
        let view = nat.view(&client, &service).expect("a view");
        assert_eq!((view.src, view.dst), (client, pod));
        let back = nat.view(&service, &client).expect("either order");
        assert_eq!((back.src, back.dst), (pod, client));
        // An unrelated SYN to the backend is left alone.
        let other = tcp(ep([198, 18, 1, 3], 41000), pod, 64, SYN, 8);
        assert!(nat.rewrite(3_000, &other, 40).is_none());
        nat.expire(IDLE_NS + 10_000);
        assert!(nat.view(&client, &service).is_none(), "forgotten when idle");
    }

    #[test]
    fn a_new_syn_on_a_joined_tuple_is_looked_at_again() {
        let client = ep([198, 18, 1, 2], 40000);
        let service = ep([198, 19, 0, 10], 80);
        let mut nat = NatJoin::default();
        nat.rewrite(0, &tcp(client, service, 64, SYN, 7), 40);
        let pod_a = ep([198, 18, 3, 2], 8080);
        assert!(
            nat.rewrite(10, &tcp(client, pod_a, 63, SYN, 7), 40)
                .is_some()
        );
        // Much later the port is reused for a connection that is not translated.
        let later = 10 * WINDOW_NS;
        assert!(
            nat.rewrite(later, &tcp(client, pod_a, 64, SYN, 9), 40)
                .is_none()
        );
        assert!(
            nat.rewrite(later + 5, &tcp(pod_a, client, 64, ACK, 1), 40)
                .is_none(),
            "no longer joined"
        );
    }

    #[test]
    fn an_unrelated_udp_datagram_with_the_same_bytes_is_not_joined() {
        let udp = |src: Endpoint, dst: Endpoint, payload: &[u8; 5]| {
            let mut p = vec![0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, UDP, 0, 0];
            for e in [src, dst] {
                if let std::net::IpAddr::V4(ip) = e.ip {
                    p.extend_from_slice(&ip.octets());
                }
            }
            p.extend_from_slice(&src.port.to_be_bytes());
            p.extend_from_slice(&dst.port.to_be_bytes());
            p.extend_from_slice(&[0, 13, 0, 0]);
            p.extend_from_slice(payload);
            p
        };
        let statsd = ep([198, 18, 9, 9], 8125);
        let mut nat = NatJoin::default();
        assert!(
            nat.rewrite(0, &udp(ep([198, 18, 1, 2], 5000), statsd, b"c:1|c"), 33)
                .is_none()
        );
        assert!(
            nat.rewrite(5, &udp(ep([198, 18, 1, 3], 6000), statsd, b"c:1|c"), 33)
                .is_none(),
            "another sender"
        );
        let dns = ep([198, 19, 0, 53], 53);
        let client = ep([198, 18, 1, 2], 5001);
        assert!(nat.rewrite(10, &udp(client, dns, b"query"), 33).is_none());
        assert!(
            nat.rewrite(15, &udp(client, ep([198, 18, 4, 4], 53), b"query"), 33)
                .is_some(),
            "the same sender's datagram, translated"
        );
    }
}
