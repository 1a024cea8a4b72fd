//! The router of a sharded dissection: names each packet's shard, puts IP fragments back
//! together (outside or inside tunnels), numbers DNS datagrams over UDP, and says when the
//! shards sweep (see the parent module for why).

use std::hash::{Hash as _, Hasher as _};

use super::SHARDS;
use crate::{
    call::Endpoint,
    defrag::Defrag,
    engine::SWEEP_EVERY_NS,
    flow::{FlowKey, key},
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
    /// Counters of what the router itself handled (fragments).
    stats: Stats,
    /// A datagram put back together, as an unfragmented IP packet.
    rebuilt: Vec<u8>,
    /// UDP flows carrying DNS, whose datagrams the router numbers (see the module's docs).
    udp_flows: UdpFlows,
}

/// Where one frame goes.
pub struct Routed<'a> {
    /// The frame's number (1-based, in input order): a connection it opens takes it as id.
    pub frame: u64,
    /// The packet to give the shard: the frame's own bytes, or a datagram its fragment
    /// completed; `None` when there is nothing to give (a fragment of an incomplete datagram).
    pub packet: Option<(usize, &'a [u8], u32)>,
    /// Every shard sweeps at this time after the packet (finished connections, expired
    /// queries), as one engine would.
    pub sweep: Option<i64>,
    /// The packet's place on its UDP flow when it is DNS over UDP: the shard's engine takes
    /// it ([`crate::Engine::push_routed`]).
    pub datagram: Option<UdpDatagram>,
}

impl Router {
    /// A router at the start of an input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes one packet (its time, its bytes from the IP header on, its length on the wire).
    pub fn route<'a>(&'a mut self, ts_ns: i64, l3: &'a [u8], wire_len: u32) -> Routed<'a> {
        self.frames += 1;
        let frame = self.frames;
        let sweep = (ts_ns - self.last_sweep_ns >= SWEEP_EVERY_NS).then(|| {
            self.last_sweep_ns = ts_ns;
            self.stats.defrag_dropped += self.defrag.expire(ts_ns);
            ts_ns
        });
        let destination = self.destination(frame, ts_ns, l3, wire_len);
        if let Some(now) = sweep {
            // After the packet, as the engines sweep after it.
            self.udp_flows.expire(now);
        }
        let rebuilt = &self.rebuilt[..];
        Routed {
            frame,
            packet: destination.as_ref().map(|to| {
                let bytes = if to.rebuilt { rebuilt } else { l3 };
                (to.shard, bytes, to.wire_len)
            }),
            sweep,
            datagram: destination.and_then(|to| to.datagram),
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
            return Some(Destination::undecodable(false, wire_len));
        };
        // A fragment, at the outer level or inside tunnels (a pod's large datagram on an
        // overlay), is put back together here: its flow's ports are in the first fragment
        // only, and the flow's other packets go by them.
        let (ip, frag) = match level_of(ip, 0) {
            Level::Flow(flow) => {
                return Some(self.destination_of(&flow, false, wire_len, frame, ts_ns));
            }
            Level::Fragment(ip, frag) => (ip, frag),
        };
        self.stats.fragments += 1;
        // A fragment cut by the snaplen cannot complete its datagram.
        let whole = ip.payload.len() as u32 >= ip.payload_wire_len;
        let datagram = whole
            .then(|| {
                self.defrag
                    .add(ts_ns, (ip.src, ip.dst, ip.proto, frag.id), frag, ip.payload)
            })
            .flatten()?;
        self.stats.reassembled += 1;
        rebuild(&mut self.rebuilt, ip.src, ip.dst, ip.proto, &datagram);
        let len = self.rebuilt.len() as u32;
        // The rebuilt datagram goes to the shard as the frame's packet (its tunnels' headers,
        // if any, are gone: the engine reads it as it would have read the inner datagram).
        let flow = match net::ip(&self.rebuilt, len).map(|ip| level_of(ip, 0)) {
            Some(Level::Flow(flow)) => flow,
            // A fragment inside the rebuilt datagram's own tunnel: by its addresses.
            Some(Level::Fragment(ip, _)) => Flow::of_addresses(&ip),
            None => return Some(Destination::undecodable(true, len)),
        };
        Some(self.destination_of(&flow, true, len, frame, ts_ns))
    }

    /// The destination of a packet of `flow`, numbered on its UDP flow when it is DNS.
    fn destination_of(
        &mut self,
        flow: &Flow,
        rebuilt: bool,
        wire_len: u32,
        frame: u64,
        ts_ns: i64,
    ) -> Destination {
        Destination {
            shard: flow.shard(),
            rebuilt,
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

    /// What the router counted (fragments), to add to the shards' counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// Where a frame's packet goes.
struct Destination {
    shard: usize,
    /// The packet is the datagram rebuilt from fragments, not the frame's own bytes.
    rebuilt: bool,
    wire_len: u32,
    /// Its place on its UDP flow, when it is DNS over UDP.
    datagram: Option<UdpDatagram>,
}

impl Destination {
    /// A packet that is no IP packet: to shard 0, whose engine counts it.
    fn undecodable(rebuilt: bool, wire_len: u32) -> Self {
        Self {
            shard: 0,
            rebuilt,
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
