//! Dissection split by flow, so that it can use every core and give the same rows whatever the
//! number of cores.
//!
//! Connections are independent, so the packets are split by flow into [`SHARDS`] shards, each
//! with its own [`Engine`]. A [`Router`] reads the packets in order and names each one's shard
//! (a hash of its flow, the same both ways); it also puts IP fragments back together (outside
//! or inside tunnels), because a fragment after the first carries no ports to route by. The shards are then divided into
//! contiguous ranges ([`ShardRange`]), one per thread.
//!
//! DNS over UDP is split finer: a query and its answer share a flow and a DNS id, and nothing
//! else ties the messages of a flow together, so they are routed by flow and id. A resolver
//! that sends every query from one socket (a node-local cache, a forwarder, a load generator)
//! is spread over every shard instead of loading one thread. The router numbers these datagrams
//! on their flow (`crate::udp_flows`), so that the calls' ids are the ones one engine gives.
//!
//! What makes the output independent of the number of threads:
//! - the number of shards is fixed, so a shard's engine sees the same packets, in the same
//!   order, whether it runs alone or beside the others;
//! - the router decides when every shard sweeps for finished connections (once per second of
//!   capture time, as one engine would) and the thread running a shard obeys;
//! - connection ids are the frame number of the connection's first packet, not a counter;
//! - rows are taken out in epochs of [`EPOCH_FRAMES`] frames, and within an epoch in shard
//!   order: one thread taking its shards in order, or several threads whose ranges are then
//!   written one after the other, produce the same sequence.
//!
//! Pure, like the rest of the crate: threads and channels are the caller's.

use std::hash::{Hash as _, Hasher as _};

use crate::{
    call::{Call, Conn, Endpoint},
    defrag::Defrag,
    engine::{Engine, Limits, SWEEP_EVERY_NS},
    flow::{FlowKey, key},
    net,
    output::{Output, Stats},
    udp_flows::{UdpDatagram, UdpFlows},
};

/// Shards a dissection is split into (the most threads it can use).
pub const SHARDS: usize = 64;

/// Frames between two takings of the rows (one batch per shard range per epoch). The rows of
/// an epoch are in memory at once, as owned rows and then as a record batch: at 65,536 frames a
/// burst of keep-alive calls held ~60 MiB of them.
pub const EPOCH_FRAMES: u64 = 16_384;

/// Tunnels looked into for the inner flow, at most this deep (as the engine does).
const MAX_TUNNEL_DEPTH: u8 = 3;

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
    /// it ([`Engine::push_routed`]).
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
        let (packet, datagram) = self.destination(frame, ts_ns, l3, wire_len);
        if let Some(now) = sweep {
            // After the packet, as the engines sweep after it.
            self.udp_flows.expire(now);
        }
        let packet = match packet {
            Some((shard, true, wire)) => Some((shard, &self.rebuilt[..], wire)),
            Some((shard, false, wire)) => Some((shard, l3, wire)),
            None => None,
        };
        Routed {
            frame,
            packet,
            sweep,
            datagram,
        }
    }

    /// The shard of frame `frame`, whether its packet is the datagram rebuilt from fragments,
    /// and its wire length; and its place on its UDP flow. `None` for a fragment of a datagram
    /// not yet complete.
    #[allow(clippy::type_complexity)]
    fn destination(
        &mut self,
        frame: u64,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
    ) -> (Option<(usize, bool, u32)>, Option<UdpDatagram>) {
        let Some(ip) = net::ip(l3, wire_len) else {
            // The shard's engine counts it as undecodable.
            return (Some((0, false, wire_len)), None);
        };
        // A fragment, at the outer level or inside tunnels (a pod's large datagram on an
        // overlay), is put back together here: its flow's ports are in the first fragment
        // only, and the flow's other packets go by them.
        let (ip, frag) = match level_of(ip, 0) {
            Level::Flow(flow) => {
                let datagram = self.number(&flow, frame, ts_ns);
                return (Some((flow.shard(), false, wire_len)), datagram);
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
            .flatten();
        let Some(datagram) = datagram else {
            return (None, None);
        };
        self.stats.reassembled += 1;
        rebuild(&mut self.rebuilt, ip.src, ip.dst, ip.proto, &datagram);
        let len = self.rebuilt.len() as u32;
        // The rebuilt datagram goes to the shard as the frame's packet (its tunnels' headers,
        // if any, are gone: the engine reads it as it would have read the inner datagram).
        let flow = match net::ip(&self.rebuilt, len).map(|ip| level_of(ip, 0)) {
            Some(Level::Flow(flow)) => flow,
            // A fragment inside the rebuilt datagram's own tunnel: by its addresses.
            Some(Level::Fragment(ip, _)) => Flow::of_addresses(&ip),
            None => return (Some((0, true, len)), None),
        };
        let numbered = self.number(&flow, frame, ts_ns);
        (Some((flow.shard(), true, len)), numbered)
    }

    /// Numbers a DNS datagram over UDP on its flow.
    fn number(&mut self, flow: &Flow, frame: u64, ts_ns: i64) -> Option<UdpDatagram> {
        flow.dns_id
            .is_some()
            .then(|| self.udp_flows.datagram(flow.key, frame, ts_ns))
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
    let tunnel = (depth < MAX_TUNNEL_DEPTH)
        .then(|| net::decapsulate(ip.proto, ip.payload))
        .flatten();
    if let Some(inner) = tunnel {
        let wire = ip
            .payload_wire_len
            .saturating_sub((ip.payload.len() - inner.len()) as u32);
        if let Some(inner_ip) = net::ip(inner, wire) {
            return level_of(inner_ip, depth + 1);
        }
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

/// The engines of a contiguous range of shards (all of them when one thread dissects).
pub struct ShardRange {
    first: usize,
    engines: Vec<Engine>,
}

impl ShardRange {
    /// The engines of shards `range`, each with its share of `limits` (a shard holds a
    /// sixteenth of the connections and bytes one engine may: hashing spreads flows evenly, and
    /// the margin covers the unevenness).
    pub fn new(range: std::ops::Range<usize>, limits: Limits) -> Self {
        let share = Limits {
            max_conns: (limits.max_conns / 16).max(1024),
            max_buffered: (limits.max_buffered / 16).max(4 << 20),
        };
        Self {
            first: range.start,
            engines: range
                .map(|_| Engine::with_limits(share).sweeps_from_outside())
                .collect(),
        }
    }

    /// The ranges `threads` threads take: contiguous, as even as can be.
    pub fn split(threads: usize) -> Vec<std::ops::Range<usize>> {
        let threads = threads.clamp(1, SHARDS);
        (0..threads)
            .map(|t| t * SHARDS / threads..(t + 1) * SHARDS / threads)
            .collect()
    }

    /// Feeds frame `frame` to shard `shard` (which must be in this range), with its place on
    /// its UDP flow when the router numbered it ([`Routed::datagram`]).
    pub fn push(
        &mut self,
        shard: usize,
        frame: u64,
        ts_ns: i64,
        l3: &[u8],
        wire_len: u32,
        datagram: Option<UdpDatagram>,
    ) {
        if let Some(engine) = self.engines.get_mut(shard - self.first) {
            engine.push_routed(frame, ts_ns, l3, wire_len, datagram);
        }
    }

    /// Every shard sweeps at `now_ns`.
    pub fn sweep(&mut self, now_ns: i64) {
        for engine in &mut self.engines {
            engine.sweep_at(now_ns);
        }
    }

    /// Moves the rows finished so far to the end of `calls` and `conns`, shard after shard
    /// (reuse both: rows are large, and growing fresh vectors every epoch made the kernel zero
    /// new pages for a quarter of the run).
    pub fn take_rows_into(&mut self, calls: &mut Vec<Call>, conns: &mut Vec<Conn>) {
        for engine in &mut self.engines {
            engine.take_rows_into(calls, conns);
        }
    }

    /// Live connections and pending queries across the range.
    pub fn live(&self) -> (usize, usize) {
        self.engines.iter().fold((0, 0), |(c, q), e| {
            let (ec, eq) = e.live();
            (c + ec, q + eq)
        })
    }

    /// Ends the input: every shard's remaining rows, shard after shard, and the counters.
    pub fn finish(self) -> Output {
        let mut out = Output::default();
        for engine in self.engines {
            let o = engine.finish();
            out.calls.extend(o.calls);
            out.conns.extend(o.conns);
            out.stats.add(&o.stats);
        }
        out
    }
}

/// One thread's whole dissection: the router and every shard, so that the rows are the ones
/// several threads give.
pub struct Sharded {
    router: Router,
    shards: ShardRange,
}

impl Default for Sharded {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Sharded {
    /// All shards in this thread, with `limits` shared out as [`ShardRange::new`] does.
    pub fn new(limits: Limits) -> Self {
        Self {
            router: Router::new(),
            shards: ShardRange::new(0..SHARDS, limits),
        }
    }

    /// Feeds one packet (see [`Engine::push`]).
    pub fn push(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) {
        let routed = self.router.route(ts_ns, l3, wire_len);
        if let Some((shard, packet, wire)) = routed.packet {
            self.shards
                .push(shard, routed.frame, ts_ns, packet, wire, routed.datagram);
        }
        if let Some(now) = routed.sweep {
            self.shards.sweep(now);
        }
    }

    /// Frames fed so far.
    pub fn frames(&self) -> u64 {
        self.router.frames()
    }

    /// Moves the rows finished so far, in shard order, to the end of `calls` and `conns` (take
    /// them every [`EPOCH_FRAMES`] frames for the order several threads give).
    pub fn take_rows_into(&mut self, calls: &mut Vec<Call>, conns: &mut Vec<Conn>) {
        self.shards.take_rows_into(calls, conns);
    }

    /// Ends the input.
    pub fn finish(self) -> Output {
        let mut out = self.shards.finish();
        out.stats.add(self.router.stats());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_shard_once() {
        for threads in [1, 2, 3, 7, 64, 100] {
            let ranges = ShardRange::split(threads);
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(SHARDS));
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        }
    }

    /// A DNS message over UDP/IPv4 between 198.18.0.1:`port` and 198.18.0.2:53 (`answer`:
    /// from the server), with DNS id `id`, asking for `name` A.
    fn dns(port: u16, id: u16, answer: bool, name: &str) -> Vec<u8> {
        let flags: [u8; 2] = if answer { [0x81, 0x80] } else { [0x01, 0] };
        let mut dns = id.to_be_bytes().to_vec();
        dns.extend_from_slice(&flags);
        dns.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            dns.push(label.len() as u8);
            dns.extend_from_slice(label.as_bytes());
        }
        dns.extend_from_slice(&[0, 0, 1, 0, 1]);
        udp(port, answer, &dns)
    }

    fn udp(port: u16, answer: bool, payload: &[u8]) -> Vec<u8> {
        let (client, server) = ([198, 18, 0, 1], [198, 18, 0, 2]);
        let (src, dst, sport, dport) = if answer {
            (server, client, 53, port)
        } else {
            (client, server, port, 53)
        };
        let total = (28 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn dns_over_one_udp_socket_spreads_over_the_shards_and_pairs() {
        let mut router = Router::new();
        let mut shards = std::collections::HashSet::new();
        for id in 0..400u16 {
            let query = dns(5353, id, false, "app.test");
            let answer = dns(5353, id, true, "app.test");
            let q = router.route(0, &query, query.len() as u32);
            let (qs, qd) = (q.packet.map(|p| p.0), q.datagram);
            let a = router.route(0, &answer, answer.len() as u32);
            assert_eq!(a.packet.map(|p| p.0), qs, "query {id} and its answer");
            // One flow, numbered by the router datagram after datagram.
            let (qd, ad) = (qd.unwrap(), a.datagram.unwrap());
            assert_eq!((qd.flow_id, ad.flow_id), (1, 1));
            assert_eq!(
                (qd.number, ad.number),
                (2 * u32::from(id) + 1, 2 * u32::from(id) + 2)
            );
            shards.insert(qs);
        }
        assert!(
            shards.len() > SHARDS / 2,
            "one socket's queries spread over {} shards",
            shards.len()
        );
    }

    /// `inner` inside VXLAN between two nodes (198.19.0.1 → 198.19.0.2:4789).
    fn vxlan(inner: &[u8]) -> Vec<u8> {
        let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        payload.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        payload.extend_from_slice(inner);
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&[198, 19, 0, 1, 198, 19, 0, 2]);
        p.extend_from_slice(&50_000u16.to_be_bytes());
        p.extend_from_slice(&4789u16.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&payload);
        p
    }

    /// The IPv4 packet `whole` cut into two fragments (IPv4 id 0x99), the first carrying
    /// `first` bytes (a multiple of 8) of its payload.
    fn fragments(whole: &[u8], first: usize) -> [Vec<u8>; 2] {
        let payload = &whole[20..];
        let piece = |data: &[u8], offset: usize, more: bool| {
            let mut p = whole[..20].to_vec();
            p[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x99u16.to_be_bytes());
            let field = (u16::from(more) << 13) | (offset / 8) as u16;
            p[6..8].copy_from_slice(&field.to_be_bytes());
            p.extend_from_slice(data);
            p
        };
        [
            piece(&payload[..first], 0, true),
            piece(&payload[first..], first, false),
        ]
    }

    /// A pod's DNS answer fragmented inside the overlay (its second fragment first) meets its
    /// query in the shards as it does in one engine.
    #[test]
    fn fragments_inside_a_tunnel_are_put_together_before_routing() {
        let ms = 1_000_000i64;
        let mut packets = vec![(0, vxlan(&dns(6000, 42, false, "big.app.test")))];
        let [first, second] = fragments(&dns(6000, 42, true, "big.app.test"), 16);
        packets.push((ms, vxlan(&second)));
        packets.push((2 * ms, vxlan(&first)));
        // And more queries on the flow, answered whole.
        for id in 43..50u16 {
            let t = i64::from(id) * 10 * ms;
            packets.push((t, vxlan(&dns(6000, id, false, "app.test"))));
            packets.push((t + ms, vxlan(&dns(6000, id, true, "app.test"))));
        }
        let mut engine = Engine::new();
        let mut sharded = Sharded::default();
        for (t, p) in &packets {
            engine.push(*t, p, p.len() as u32);
            sharded.push(*t, p, p.len() as u32);
        }
        let rows = |out: Output| {
            let mut rows: Vec<_> = out
                .calls
                .into_iter()
                .map(|c| {
                    (
                        c.conn_id,
                        c.index,
                        c.dns_questions,
                        c.error_type,
                        c.status_code,
                    )
                })
                .collect();
            rows.sort();
            (rows, out.stats.reassembled)
        };
        let (alone, shards) = (rows(engine.finish()), rows(sharded.finish()));
        assert_eq!(alone.0.len(), 8);
        assert!(alone.0.iter().all(|r| r.3.is_none()), "{:?}", alone.0);
        assert_eq!(alone.1, 1);
        assert_eq!(alone, shards);
    }

    #[test]
    fn a_tunnel_packet_from_port_53_is_not_numbered_as_dns() {
        // VXLAN (flags 0x08) to 4789 from port 53: an Ethernet frame of IPv4 type whose
        // packet is junk (version 0).
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vxlan.extend_from_slice(&[2; 12]);
        vxlan.extend_from_slice(&[0x08, 0x00]);
        vxlan.extend_from_slice(&[0; 20]);
        let mut p = udp(4789, true, &vxlan);
        // `udp(_, true, _)` sends from port 53 to the given port.
        assert_eq!(&p[20..24], &[0, 53, 0x12, 0xb5]);
        let mut router = Router::new();
        assert_eq!(router.route(0, &p, p.len() as u32).datagram, None);
        // The same datagram from any other port is no DNS either; one to port 53 is.
        p[21] = 54;
        assert_eq!(router.route(0, &p, p.len() as u32).datagram, None);
        let q = dns(4000, 1, false, "app.test");
        assert!(router.route(0, &q, q.len() as u32).datagram.is_some());
    }

    /// The calls of one resolver socket (answered and not, an answer without its query, a
    /// datagram that is no DNS message, the flow idle long enough to start over) have the same
    /// ids, names and outcomes from the shards as from one engine.
    #[test]
    fn shards_number_dns_calls_as_one_engine_does() {
        let second = 1_000_000_000i64;
        let mut packets = Vec::new();
        for id in 0..300u16 {
            let t = i64::from(id) * second / 10;
            packets.push((t, dns(7000, id, false, &format!("n{id}.app.test"))));
            if id % 7 != 0 {
                packets.push((
                    t + 1_000_000,
                    dns(7000, id, true, &format!("n{id}.app.test")),
                ));
            }
            if id % 50 == 0 {
                packets.push((t + 2_000_000, dns(7000, 60_000 + id, true, "orphan.test")));
                packets.push((t + 3_000_000, udp(7000, false, &[1, 2, 3])));
            }
        }
        // A resolver socket on a tunnel's port, whose server sends one datagram the engine
        // reads as a tunnel's (and its inner packet as junk): not a DNS message, so not counted.
        let mut junk_tunnel = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        junk_tunnel.extend_from_slice(&[2; 12]);
        junk_tunnel.extend_from_slice(&[0x08, 0x00]);
        junk_tunnel.extend_from_slice(&[0; 20]);
        for id in 0..5u16 {
            let t = 40 * second + i64::from(id) * second / 10;
            packets.push((t, dns(4789, id, false, "tunnel.test")));
            packets.push((t + 1_000_000, dns(4789, id, true, "tunnel.test")));
            if id == 2 {
                packets.push((t + 2_000_000, udp(4789, true, &junk_tunnel)));
            }
        }
        // Idle for more than two minutes (a sweep in between, which another socket's query
        // brings): the socket's next query starts a new flow.
        packets.push((200 * second, dns(7001, 1, false, "tick.test")));
        let later = 300 * second;
        for id in 0..20u16 {
            let t = later + i64::from(id) * second;
            packets.push((t, dns(7000, id, false, "again.test")));
            packets.push((t + 1_000_000, dns(7000, id, true, "again.test")));
        }
        let mut engine = Engine::new();
        let mut sharded = Sharded::default();
        for (t, p) in &packets {
            engine.push(*t, p, p.len() as u32);
            sharded.push(*t, p, p.len() as u32);
        }
        let rows = |calls: Vec<Call>| {
            let mut rows: Vec<_> = calls
                .into_iter()
                .map(|c| {
                    (
                        c.conn_id,
                        c.index,
                        c.dns_questions,
                        c.error_type,
                        c.status_code,
                    )
                })
                .collect();
            rows.sort();
            rows
        };
        let (alone, shards) = (rows(engine.finish().calls), rows(sharded.finish().calls));
        assert_eq!(alone.len(), 300 + 6 + 5 + 1 + 20);
        assert_eq!(alone, shards);
        let ids: std::collections::HashSet<_> = alone.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(ids.len(), alone.len(), "call ids are unique");
        assert_eq!(
            ids.iter().filter(|(flow, _)| *flow != 1).count(),
            5 + 1 + 20
        );
    }

    #[test]
    fn both_directions_of_a_flow_share_a_shard() {
        let packet = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| {
            let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
            p.extend_from_slice(&src);
            p.extend_from_slice(&dst);
            p.extend_from_slice(&sport.to_be_bytes());
            p.extend_from_slice(&dport.to_be_bytes());
            p.extend_from_slice(&[0; 16]);
            p
        };
        let mut shards = std::collections::HashSet::new();
        for port in 10_000..10_200u16 {
            let a = packet([198, 18, 0, 1], [198, 18, 0, 2], port, 80);
            let b = packet([198, 18, 0, 2], [198, 18, 0, 1], 80, port);
            let mut router = Router::new();
            let sa = router.route(0, &a, 40).packet.map(|p| p.0);
            let sb = router.route(0, &b, 40).packet.map(|p| p.0);
            assert_eq!(sa, sb);
            shards.insert(sa);
        }
        assert!(
            shards.len() > SHARDS / 2,
            "flows spread over {} shards",
            shards.len()
        );
    }
}
