//! The router of a sharded dissection: names each packet's shard, puts IP fragments back
//! together (outside or inside tunnels), numbers DNS datagrams over UDP, and says when the
//! shards sweep (see the parent module for why). For the recorder's input it also counts a
//! packet's copies once and joins the views of a flow across a NAT ([`Router::counting_copies_once`]).

use std::hash::{Hash as _, Hasher as _};
use std::ops::Range;

use super::SHARDS;
use crate::{
    call::Endpoint,
    dedup::Dedup,
    defrag::Defrag,
    engine::SWEEP_EVERY_NS,
    flow::{FlowKey, key},
    nat::{NatJoin, ViewChange},
    net::{self, MAX_TUNNEL_DEPTH},
    output::Stats,
    udp_flows::{UdpDatagram, UdpFlows},
};

/// Names each packet's shard, puts fragments together, and says when the shards sweep.
#[derive(Default)]
pub struct Router {
    defrag: Defrag,
    /// Frames routed so far (the last frame's number, 1-based).
    frames: u64,
    last_sweep_ns: i64,
    /// Counters of what the router itself handled (fragments, copies).
    stats: Stats,
    /// Where a packet the router changed is built: a datagram put back together, a packet
    /// rewritten to its flow's earlier view. Two, so that one level can be built from the
    /// other.
    built: [Vec<u8>; 2],
    /// UDP flows carrying DNS, whose datagrams the router numbers (see the module's docs).
    udp_flows: UdpFlows,
    /// Copies and NAT views, when the input is the recorder's.
    copies: Option<Copies>,
    /// Changes to the NAT views made by the packet being routed, and by the sweep after it.
    joined: Vec<ViewChange>,
    forgotten: Vec<ViewChange>,
}

/// What a single engine does with [`crate::Engine::count_copies_once`], done before the packets
/// are split, since a packet's copies (and its flow's other view) may go to other shards.
struct Copies {
    dedup: Dedup,
    nat: NatJoin,
}

/// Where one frame goes.
pub struct Routed<'a> {
    /// The frame's number (1-based, in input order): a connection it opens takes it as id.
    pub frame: u64,
    /// The packet to give the shard: the frame's own bytes, or a datagram its fragment
    /// completed; `None` when there is nothing to give (a fragment of an incomplete datagram).
    pub packet: Option<(usize, &'a [u8], u32)>,
    /// The tunnel depth the packet is at (the router peeled that many tunnels off it when it
    /// counts copies; else 0): the shard's engine reads it from there
    /// ([`crate::Engine::push_routed`]).
    pub depth: u8,
    /// Every shard sweeps at this time after the packet (finished connections, expired
    /// queries), as one engine would.
    pub sweep: Option<i64>,
    /// The packet's place on its UDP flow when it is DNS over UDP: the shard's engine takes
    /// it ([`crate::Engine::push_routed`]).
    pub datagram: Option<UdpDatagram>,
    /// Flows this packet joined across a NAT: applied to every shard's views before the packet.
    pub joined: &'a [ViewChange],
    /// Views the sweep forgot: applied after the shards' sweep.
    pub forgotten: &'a [ViewChange],
}

/// Bytes of a packet: the frame's own (`None`) or in one of the router's buffers.
#[derive(Clone)]
struct Place {
    buffer: Option<usize>,
    range: Range<usize>,
}

impl Place {
    fn frame(l3: &[u8]) -> Self {
        Self {
            buffer: None,
            range: 0..l3.len(),
        }
    }

    fn built(buffer: usize, len: usize) -> Self {
        Self {
            buffer: Some(buffer),
            range: 0..len,
        }
    }

    fn bytes<'a>(&self, l3: &'a [u8], built: &'a [Vec<u8>; 2]) -> &'a [u8] {
        let all = match self.buffer {
            None => l3,
            Some(b) => &built[b][..],
        };
        &all[self.range.clone()]
    }

    /// A buffer this packet is not in.
    fn other_buffer(&self) -> usize {
        match self.buffer {
            Some(0) => 1,
            _ => 0,
        }
    }
}

impl Router {
    /// A router at the start of an input.
    pub fn new() -> Self {
        Self::default()
    }

    /// A router for the recorder's input, where a packet recorded on several interfaces or
    /// nodes counts once and the views of a flow across a NAT are joined, as
    /// [`crate::Engine::count_copies_once`] does. It hands the shards each packet as that
    /// engine would read it (tunnels peeled, rewritten to its flow's earlier view), and the
    /// changes to the views ([`Routed::joined`], [`Routed::forgotten`]) for the shards' rows.
    pub fn counting_copies_once() -> Self {
        Self {
            copies: Some(Copies {
                dedup: Dedup::default(),
                nat: NatJoin::recording(),
            }),
            ..Self::default()
        }
    }

    /// Routes one packet (its time, its bytes from the IP header on, its length on the wire).
    pub fn route<'a>(&'a mut self, ts_ns: i64, l3: &'a [u8], wire_len: u32) -> Routed<'a> {
        self.frames += 1;
        let frame = self.frames;
        self.joined.clear();
        self.forgotten.clear();
        let sweep = (ts_ns - self.last_sweep_ns >= SWEEP_EVERY_NS).then(|| {
            self.last_sweep_ns = ts_ns;
            self.stats.defrag_dropped += self.defrag.expire(ts_ns);
            ts_ns
        });
        let destination = if self.copies.is_some() {
            self.walk(frame, ts_ns, l3, wire_len)
        } else {
            self.destination(frame, ts_ns, l3, wire_len)
        };
        if let Some(now) = sweep {
            // After the packet, as the engines sweep after it.
            self.udp_flows.expire(now);
            if let Some(copies) = &mut self.copies {
                copies.nat.expire(now);
                copies.nat.take_changes(&mut self.forgotten);
            }
        }
        let built = &self.built;
        Routed {
            frame,
            packet: destination
                .as_ref()
                .map(|to| (to.shard, to.place.bytes(l3, built), to.wire_len)),
            depth: destination.as_ref().map_or(0, |to| to.depth),
            sweep,
            datagram: destination.and_then(|to| to.datagram),
            joined: &self.joined,
            forgotten: &self.forgotten,
        }
    }

    /// Where frame `frame` goes; `None` for a fragment of a datagram not yet complete.
    fn destination(
        &mut self,
        frame: u64,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
    ) -> Option<Destination> {
        let Some(ip) = net::ip(l3, wire_len) else {
            // The shard's engine counts it as undecodable.
            return Some(Destination::undecodable(Place::frame(l3), wire_len, 0));
        };
        // A fragment, at the outer level or inside tunnels (a pod's large datagram on an
        // overlay), is put back together here: its flow's ports are in the first fragment
        // only, and the flow's other packets go by them.
        let (ip, frag) = match level_of(ip, 0) {
            Level::Flow(flow) => {
                let place = Place::frame(l3);
                return Some(self.destination_of(&flow, place, 0, wire_len, frame, ts_ns));
            }
            Level::Fragment(ip, frag) => (ip, frag),
        };
        let datagram = defragment(&mut self.defrag, &mut self.stats, ts_ns, &ip, frag)?;
        rebuild(&mut self.built[0], ip.src, ip.dst, ip.proto, &datagram);
        let place = Place::built(0, self.built[0].len());
        let len = place.range.len() as u32;
        // The rebuilt datagram goes to the shard as the frame's packet (its tunnels' headers,
        // if any, are gone: the engine reads it as it would have read the inner datagram).
        let flow = match net::ip(&self.built[0], len).map(|ip| level_of(ip, 0)) {
            Some(Level::Flow(flow)) => flow,
            // A fragment inside the rebuilt datagram's own tunnel: by its addresses.
            Some(Level::Fragment(ip, _)) => Flow::of_addresses(&ip),
            None => return Some(Destination::undecodable(place, len, 0)),
        };
        Some(self.destination_of(&flow, place, 0, len, frame, ts_ns))
    }

    /// [`Router::destination`] when copies count once: level by level, as the engine reads a
    /// packet (`Engine::push_at_depth`), a later NAT view is rewritten to the earlier one, a
    /// copy is dropped, a fragment is put back together and a tunnel is opened; the shard gets
    /// the innermost packet and its depth. `None` for a copy, or a fragment of an incomplete
    /// datagram.
    fn walk(&mut self, frame: u64, ts_ns: i64, l3: &[u8], wire_len: u32) -> Option<Destination> {
        let mut place = Place::frame(l3);
        let mut wire = wire_len;
        let mut depth = 0u8;
        // A datagram just put back together is read on at its level, without being compared
        // again (its fragments were).
        let mut rebuilt = false;
        loop {
            if !rebuilt {
                // Only called when there are copies to count.
                let copies = self.copies.as_mut()?;
                let bytes = place.bytes(l3, &self.built);
                if let Some(rewritten) = copies.nat.rewrite(ts_ns, bytes, wire) {
                    let to = place.other_buffer();
                    self.built[to].clear();
                    self.built[to].extend_from_slice(rewritten);
                    place = Place::built(to, self.built[to].len());
                }
                copies.nat.take_changes(&mut self.joined);
                let bytes = place.bytes(l3, &self.built);
                if copies.dedup.is_copy(ts_ns, bytes, wire) {
                    self.stats.duplicates += 1;
                    return None;
                }
            }
            rebuilt = false;
            let bytes = place.bytes(l3, &self.built);
            let Some(ip) = net::ip(bytes, wire) else {
                return Some(Destination::undecodable(place, wire, depth));
            };
            if let Some(frag) = ip.fragment {
                let (src, dst, proto) = (ip.src, ip.dst, ip.proto);
                let datagram = defragment(&mut self.defrag, &mut self.stats, ts_ns, &ip, frag)?;
                let to = place.other_buffer();
                rebuild(&mut self.built[to], src, dst, proto, &datagram);
                place = Place::built(to, self.built[to].len());
                wire = place.range.len() as u32;
                rebuilt = true;
                continue;
            }
            if depth < MAX_TUNNEL_DEPTH
                && let Some((inner, inner_wire)) = ip.tunnelled()
            {
                let at = place.range.start + (inner.as_ptr().addr() - bytes.as_ptr().addr());
                place.range = at..at + inner.len();
                wire = inner_wire;
                depth += 1;
                continue;
            }
            let flow = match level_of(ip, MAX_TUNNEL_DEPTH) {
                Level::Flow(flow) => flow,
                Level::Fragment(ip, _) => Flow::of_addresses(&ip),
            };
            return Some(self.destination_of(&flow, place, depth, wire, frame, ts_ns));
        }
    }

    /// The destination of a packet of `flow`, numbered on its UDP flow when it is DNS.
    fn destination_of(
        &mut self,
        flow: &Flow,
        place: Place,
        depth: u8,
        wire_len: u32,
        frame: u64,
        ts_ns: i64,
    ) -> Destination {
        Destination {
            shard: flow.shard(),
            place,
            depth,
            wire_len,
            datagram: flow
                .dns_id
                .is_some()
                .then(|| self.udp_flows.datagram(flow.key, frame, ts_ns)),
        }
    }

    /// Frames routed so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// What the router counted (fragments, copies), to add to the shards' counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The shard of the TLS plaintext stream of the connection between `local` and `peer`: the
/// shard of the connection's packets, whose engine joins the two.
pub fn plaintext_shard(local: Endpoint, peer: Endpoint) -> usize {
    Flow {
        key: key(local, peer),
        dns_id: None,
    }
    .shard()
}

/// Adds a fragment to its datagram; the datagram when this completed it.
fn defragment(
    defrag: &mut Defrag,
    stats: &mut Stats,
    ts_ns: i64,
    ip: &net::Ip<'_>,
    frag: net::Fragment,
) -> Option<Vec<u8>> {
    stats.fragments += 1;
    // A fragment cut by the snaplen cannot complete its datagram.
    let whole = ip.payload.len() as u32 >= ip.payload_wire_len;
    let datagram = whole
        .then(|| defrag.add(ts_ns, (ip.src, ip.dst, ip.proto, frag.id), frag, ip.payload))
        .flatten()?;
    stats.reassembled += 1;
    Some(datagram)
}

/// Where a frame's packet goes.
struct Destination {
    shard: usize,
    /// The packet's bytes.
    place: Place,
    /// Its tunnel depth.
    depth: u8,
    wire_len: u32,
    /// Its place on its UDP flow, when it is DNS over UDP.
    datagram: Option<UdpDatagram>,
}

impl Destination {
    /// A packet that is no IP packet: to shard 0, whose engine counts it.
    fn undecodable(place: Place, wire_len: u32, depth: u8) -> Self {
        Self {
            shard: 0,
            place,
            depth,
            wire_len,
            datagram: None,
        }
    }
}

/// What a packet is routed by: its innermost flow, and its DNS id when it is DNS over UDP.
struct Flow {
    key: FlowKey,
    /// `Some` for a UDP datagram to or from port 53 (0 when too short to hold an id: the
    /// engine counts it as a bad DNS message).
    dns_id: Option<u16>,
}

impl Flow {
    /// A packet's flow by its addresses alone.
    fn of_addresses(ip: &net::Ip<'_>) -> Self {
        let end = |ip| Endpoint { ip, port: 0 };
        Self {
            key: key(end(ip.src), end(ip.dst)),
            dns_id: None,
        }
    }

    /// The flow's shard; a DNS message over UDP's also depends on its id.
    fn shard(&self) -> usize {
        let mut hasher = rustc_hash::FxHasher::default();
        self.key.hash(&mut hasher);
        if let Some(id) = self.dns_id {
            id.hash(&mut hasher);
        }
        // FxHash's low bits are weak: mix, then take the top bits.
        let mixed = hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - SHARDS.trailing_zeros())) as usize
    }
}

/// What routes a packet: its innermost flow, or the first fragment met on the way in (at the
/// outer level or inside a tunnel), whose datagram must be put back together first.
enum Level<'p> {
    Flow(Flow),
    Fragment(net::Ip<'p>, net::Fragment),
}

/// A packet's [`Level`]: its transport ends when it has them (inside tunnels, the innermost
/// packet's, as the engine reads it).
fn level_of(ip: net::Ip<'_>, depth: u8) -> Level<'_> {
    if let Some(frag) = ip.fragment {
        return Level::Fragment(ip, frag);
    }
    // As deep as the engine looks.
    let tunnel = (depth < MAX_TUNNEL_DEPTH).then(|| ip.tunnelled()).flatten();
    if let Some(inner_ip) = tunnel.and_then(|(inner, wire)| net::ip(inner, wire)) {
        return level_of(inner_ip, depth + 1);
    }
    let mut dns_id = None;
    let ports = match ip.proto {
        // As the engine reads a UDP datagram (`net::udp`), so that both see the same DNS.
        17 => match net::udp(ip.payload) {
            Some((sport, dport, data)) => {
                // A tunnel's packet is no DNS message to the engine, even when its inner
                // packet does not parse (the engine then counts that one undecodable).
                if tunnel.is_none() && (sport == 53 || dport == 53) {
                    dns_id = Some(
                        data.get(..2)
                            .map_or(0, |id| u16::from_be_bytes([id[0], id[1]])),
                    );
                }
                (sport, dport)
            }
            None => (0, 0),
        },
        6 | 132 if ip.payload.len() >= 4 => (
            u16::from_be_bytes([ip.payload[0], ip.payload[1]]),
            u16::from_be_bytes([ip.payload[2], ip.payload[3]]),
        ),
        _ => (0, 0),
    };
    let key = key(
        Endpoint {
            ip: ip.src,
            port: ports.0,
        },
        Endpoint {
            ip: ip.dst,
            port: ports.1,
        },
    );
    Level::Flow(Flow { key, dns_id })
}

/// Writes an unfragmented IP packet carrying `datagram` into `out`.
fn rebuild(
    out: &mut Vec<u8>,
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    proto: u8,
    datagram: &[u8],
) {
    use std::net::IpAddr;
    out.clear();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + datagram.len()).min(usize::from(u16::MAX)) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => {
            let to16 = |a: IpAddr| match a {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            let len = datagram.len().min(usize::from(u16::MAX)) as u16;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&to16(src));
            out.extend_from_slice(&to16(dst));
        }
    }
    out.extend_from_slice(datagram);
}
