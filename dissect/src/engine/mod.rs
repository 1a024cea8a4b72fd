//! The engine: packets in time order in, calls and connections out.
//!
//! It owns the per-connection state and drives the protocol parsers; turning parsed messages
//! into rows is `crate::pairing`'s job, which depends only on the row and flow types, never on
//! the engine.
//!
//! By concern: this module holds the engine's state, its inputs (packets, sweeps) and its
//! limits; `tcp` a TCP segment's bookkeeping and a finished connection's rows; `l7` protocol
//! detection and each connection's parser and messages; `plaintext` TLS plaintext from uprobes.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

// FxHash: the keys are packet 5-tuples hashed several times per packet; SipHash cost ~18% of the
// engine's time. Hash flooding is bounded by connection eviction and the map sizes.
use rustc_hash::FxHashMap as HashMap;

use crate::output::TakenRows;
pub use crate::output::{Output, Stats};
mod l7;
mod plaintext;
mod tcp;
#[cfg(test)]
mod tests;

use l7::{annotate, collect, collect_messages, on_chunk};

use crate::{
    call::{Call, Conn, Endpoint},
    dedup::Dedup,
    defrag::Defrag,
    flow::{FlowKey, key},
    http1::{self, Message, Parser, Role},
    http2,
    nat::{NatJoin, NatViews},
    net::{self, MAX_TUNNEL_DEPTH, flags},
    pairing::{DnsFlow, dns_message, h2_call, h2_half, http_call, tls_call},
    reassembly::{Chunk, HalfStream},
    tcp_analysis::{Segment, TcpAnalysis},
    tls::{self, Hello, TlsHandshake},
    udp_flows::{UdpDatagram, UdpFlows},
};

/// A connection with no packet for this long is finished (its rows are written, its memory
/// freed); so is a closed (FIN both ways, or RST) one after a grace for stragglers. UDP flows
/// end after the same time.
const IDLE_NS: i64 = crate::udp_flows::IDLE_NS;
/// The grace of a closed connection. A FIN or last ACK lost after the capture point brings a
/// retransmitted FIN and its ACK one retransmission timeout later (200 ms and up on Linux);
/// these belong to the connection's row, as tshark counts them there.
const CLOSED_GRACE_NS: i64 = 1_000_000_000;
/// The grace of a closed connection that lost segments on the way: its sender's timeout has
/// backed off (doubling per loss), so a lost FIN comes again seconds later (2 s was seen on
/// traffic with 8% loss). Only such connections wait this long, so that the memory of a busy
/// capture's clean closes (thousands a second) still frees within a second.
const LOSSY_CLOSED_GRACE_NS: i64 = 10_000_000_000;
/// A DNS query without an answer after this long is a `timeout` row.
const DNS_TIMEOUT_NS: i64 = 30_000_000_000;
/// Capture time between two sweeps for finished connections and expired queries.
pub(crate) const SWEEP_EVERY_NS: i64 = 1_000_000_000;

/// DNS queries waiting for their answer, by flow and DNS id, with their start time.
type DnsPending = HashMap<(FlowKey, u16), (Box<Call>, i64)>;

/// Ids of plaintext streams without recorded packets start above this (frame numbers stay
/// below it).
const PLAINTEXT_IDS: u64 = 1 << 48;

/// Bounds on what the engine holds, whatever the input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Live TCP connections; beyond this the longest idle are finished early.
    pub max_conns: usize,
    /// Bytes buffered across all connections (reassembly holes, partial messages, previews);
    /// beyond this the connections holding the most are finished early.
    pub max_buffered: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_conns: 262_144,
            max_buffered: 256 << 20,
        }
    }
}

struct Http1 {
    /// Index of the direction carrying requests (0 = first packet's sender).
    req_dir: usize,
    parsers: [Parser; 2],
    pending: VecDeque<Message>,
}

enum L7 {
    Unknown,
    Http1(Box<Http1>),
    Http2(Box<http2::Conn>),
    Dns([Vec<u8>; 2]),
    Tls(Box<TlsHandshake>),
    Other,
}

struct TcpConn {
    id: u64,
    /// Sender of the first packet is side 0.
    sides: [Endpoint; 2],
    /// Which side is the client (initiator) as far as is known.
    client: usize,
    first_ns: i64,
    last_ns: i64,
    syn_ns: Option<i64>,
    /// The last SYN (a retransmitted one).
    last_syn_ns: Option<i64>,
    /// Sequence number of the client's first SYN.
    syn_seq: Option<u32>,
    synack_ns: Option<i64>,
    handshake_us: Option<i64>,
    halves: [HalfStream; 2],
    packets: [u64; 2],
    bytes: [u64; 2],
    fins: u32,
    /// Which sides sent a FIN.
    fin_by: [bool; 2],
    resets: u32,
    rst_by: Option<usize>,
    rst_ns: Option<i64>,
    analysis: TcpAnalysis,
    l7: L7,
    calls: u32,
    /// What [`TcpConn::buffered`] said after the last segment (for the engine's running total).
    held: usize,
    /// A TLS plaintext stream (`Engine::push_plaintext`), not packets: no reassembly, no
    /// `conns` row, its calls marked as read from plaintext.
    plaintext: bool,
    /// The hellos of the encrypted connection a plaintext stream belongs to.
    tls_info: Option<Box<crate::tls::TlsInfo>>,
}

/// Why a connection without FIN or RST ends.
#[derive(Clone, Copy)]
enum Unclosed {
    /// Still going when the input ended (or its tuple was reused by a new SYN).
    Open,
    /// Silent for longer than the idle timeout.
    Idle,
    /// Finished early by the engine's memory limits.
    Evicted,
}

/// The dissection engine. Feed packets with [`Engine::push`], then call [`Engine::finish`].
#[derive(Default)]
pub struct Engine {
    limits: Limits,
    /// Sum of the live connections' `held` bytes.
    held: usize,
    defrag: Defrag,
    /// On for the recorder's slices (see [`Engine::count_copies_once`]).
    dedup: Option<Dedup>,
    /// Joins the views of a flow across a NAT; on with `dedup`.
    nat: Option<NatJoin>,
    /// The views across a NAT a router joined, for a shard's rows ([`Engine::nat_views_from`]).
    shared_views: Option<Arc<RwLock<NatViews>>>,
    /// Calls in `out.calls` already given their NAT view.
    nat_annotated: usize,
    tcp: HashMap<FlowKey, TcpConn>,
    /// Number of the frame being read (1-based): a connection or UDP flow takes the number of
    /// its first frame as its id, which stays the same however the input is split
    /// (`crate::shard`).
    frame: u64,
    /// Ids of plaintext streams whose packets were not recorded (above every frame number).
    plain_ids: u64,
    /// Sweeps are ordered by the caller ([`Engine::sweep_at`]), not by `push`.
    outside_sweeps: bool,
    dns_pending: DnsPending,
    /// UDP flows carrying DNS, numbered here when the caller does not ([`Engine::push_routed`]).
    udp_flows: UdpFlows,
    /// The place on its UDP flow of the frame being read, when the caller numbered it.
    routed_datagram: Option<UdpDatagram>,
    out: Output,
    last_sweep_ns: i64,
}

impl Engine {
    /// A new engine with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A new engine with explicit limits.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Finishes connections early until at most `max_conns` are live and at most
    /// `max_buffered` bytes are held: the longest idle first for the count, the biggest
    /// holders first for the bytes.
    fn enforce_limits(&mut self) {
        if self.tcp.len() > self.limits.max_conns {
            let excess = self.tcp.len() - self.limits.max_conns;
            // Evict a tenth more than needed, so this does not run for every new connection.
            let mut by_idle: Vec<(i64, FlowKey)> =
                self.tcp.iter().map(|(k, c)| (c.last_ns, *k)).collect();
            by_idle.sort_unstable_by_key(|(last, _)| *last);
            for (_, k) in by_idle
                .into_iter()
                .take(excess + self.limits.max_conns / 10)
            {
                if let Some(conn) = self.tcp.remove(&k) {
                    self.out.stats.evicted_conns += 1;
                    self.close(conn, Unclosed::Evicted);
                }
            }
        }
        if self.held <= self.limits.max_buffered {
            return;
        }
        // The biggest holders first, down to half the limit so this does not run per packet.
        let mut sizes: Vec<(usize, FlowKey)> = self.tcp.iter().map(|(k, c)| (c.held, *k)).collect();
        sizes.sort_unstable_by_key(|(b, _)| std::cmp::Reverse(*b));
        for (_, k) in sizes {
            if self.held <= self.limits.max_buffered / 2 {
                break;
            }
            if let Some(conn) = self.tcp.remove(&k) {
                self.out.stats.evicted_conns += 1;
                self.close(conn, Unclosed::Evicted);
            }
        }
    }

    /// Counts a packet recorded on several interfaces or nodes once (`crate::dedup`: same
    /// bytes but TTL and checksum, within 50 ms). On for the recorder's slices, where a pod's
    /// veth, a bridge and the uplink each record the packet; off by default, so that a capture
    /// file is read as it is (as tshark does).
    ///
    /// Also joins the views of one flow on both sides of an address translation (`crate::nat`):
    /// a call to a Service's ClusterIP, recorded before and after kube-proxy's DNAT, is one call
    /// whose row names both views ([`Call::nat`]).
    pub fn count_copies_once(mut self) -> Self {
        self.dedup = Some(Dedup::default());
        self.nat = Some(NatJoin::default());
        self
    }

    /// Names the rows' views across a NAT from `views`, which the caller keeps up to date (the
    /// changes a [`crate::Router::counting_copies_once`] made, as [`crate::ViewChange`]s): the
    /// engine of a shard, whose packets the router already joined and counted once.
    pub fn nat_views_from(mut self, views: Arc<RwLock<NatViews>>) -> Self {
        self.shared_views = Some(views);
        self
    }

    /// Numbers the plaintext streams whose packets were not recorded `offset` above where an
    /// engine starts (each shard its own range, so that ids do not depend on how the shards are
    /// run).
    pub fn plaintext_ids_after(mut self, offset: u64) -> Self {
        self.plain_ids = offset;
        self
    }

    /// Leaves the sweeps for finished connections to the caller ([`Engine::sweep_at`]), which
    /// orders them for several engines at once (`crate::shard`).
    pub fn sweeps_from_outside(mut self) -> Self {
        self.outside_sweeps = true;
        self
    }

    /// Feeds one packet: its time, its bytes from the IP header on (possibly cut), and its
    /// length on the wire from the IP header on. It is the next frame of the input.
    pub fn push(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) {
        self.push_frame(self.frame + 1, ts_ns, l3, wire_len);
    }

    /// Feeds frame number `frame` of the input, as [`crate::Router`] routed it: `datagram` is
    /// its place on its UDP flow when it is DNS over UDP (the router numbers those, since the
    /// messages of one flow go to several shards; see `crate::udp_flows`).
    ///
    /// `depth` is the tunnel depth the router read the packet at: a router that counts copies
    /// ([`crate::Router::counting_copies_once`]) peels tunnels itself and hands the innermost
    /// packet; else 0.
    pub fn push_routed(
        &mut self,
        frame: u64,
        ts_ns: i64,
        packet: (&[u8], u32, u8),
        datagram: Option<UdpDatagram>,
    ) {
        let (l3, wire_len, depth) = packet;
        self.routed_datagram = datagram;
        self.frame = frame;
        self.out.stats.packets += 1;
        self.push_at_depth(ts_ns, l3, wire_len, depth);
        if !self.outside_sweeps && ts_ns - self.last_sweep_ns >= SWEEP_EVERY_NS {
            self.sweep_at(ts_ns);
        }
        // Taken by the DNS message it numbers; a packet that turned out to be none drops it.
        self.routed_datagram = None;
    }

    /// Feeds frame number `frame` of the input (1-based; some frames may go to other engines).
    pub fn push_frame(&mut self, frame: u64, ts_ns: i64, l3: &[u8], wire_len: u32) {
        self.push_routed(frame, ts_ns, (l3, wire_len, 0), None);
    }

    /// Finishes closed and idle connections and expires unanswered DNS queries, as of
    /// `now_ns` (`push` does it every second of capture time unless
    /// [`Engine::sweeps_from_outside`]).
    pub fn sweep_at(&mut self, now_ns: i64) {
        self.sweep(now_ns);
        self.last_sweep_ns = now_ns;
    }

    /// Moves the rows finished so far into `into`, as the engine of `slot` (call now and then
    /// to bound memory; the rest comes from [`Engine::finish`]). The engine's lists are moved,
    /// not copied ([`TakenRows`]); [`Engine::reuse_lists`] gives them back once written.
    pub fn take_rows(&mut self, slot: usize, into: &mut TakenRows) {
        self.annotate_nat();
        self.nat_annotated = 0;
        into.take_from(slot, &mut self.out.calls, &mut self.out.conns);
    }

    /// Takes back lists for the rows to come (those [`Engine::take_rows`] gave, once written),
    /// emptied; a list is dropped if the engine already has rows or room.
    pub fn reuse_lists(&mut self, (mut calls, mut conns): (Vec<Call>, Vec<Conn>)) {
        if self.out.calls.capacity() == 0 {
            calls.clear();
            self.out.calls = calls;
        }
        if self.out.conns.capacity() == 0 {
            conns.clear();
            self.out.conns = conns;
        }
    }

    /// Live connections and pending queries (memory is proportional to these).
    pub fn live(&self) -> (usize, usize) {
        (self.tcp.len(), self.dns_pending.len())
    }

    /// Finishes closed and idle connections and expires unanswered DNS queries.
    fn sweep(&mut self, now_ns: i64) {
        let done: Vec<FlowKey> = self
            .tcp
            .iter()
            .filter(|(_, c)| now_ns - c.last_ns > c.linger_ns())
            .map(|(k, _)| *k)
            .collect();
        for k in done {
            if let Some(conn) = self.tcp.remove(&k) {
                self.close(conn, Unclosed::Idle);
            }
        }
        let expired: Vec<(FlowKey, u16)> = self
            .dns_pending
            .iter()
            .filter(|(_, (_, start))| now_ns - start > DNS_TIMEOUT_NS)
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some((mut call, _)) = self.dns_pending.remove(&k) {
                call.error_type = Some("timeout");
                self.out.calls.push(*call);
            }
        }
        self.udp_flows.expire(now_ns);
        self.out.stats.defrag_dropped += self.defrag.expire(now_ns);
        self.enforce_limits();
        self.annotate_nat();
        if let Some(nat) = &mut self.nat {
            nat.expire(now_ns);
        }
    }

    /// Gives the calls finished since the last time their flow's view across a NAT.
    fn annotate_nat(&mut self) {
        let from = std::mem::replace(&mut self.nat_annotated, self.out.calls.len());
        let calls = &mut self.out.calls[from..];
        if let Some(nat) = &self.nat {
            for call in calls.iter_mut().filter(|c| c.nat.is_none()) {
                call.nat = nat.view(&call.src, &call.dst);
            }
        } else if let Some(shared) = &self.shared_views {
            let views = shared
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if views.is_empty() {
                return;
            }
            for call in calls.iter_mut().filter(|c| c.nat.is_none()) {
                call.nat = views.view(&call.src, &call.dst);
            }
        }
    }

    /// The later view across a NAT of the flow `a` ↔ `b`, oriented as `(a, b)`.
    fn nat_view(&self, a: &Endpoint, b: &Endpoint) -> Option<crate::call::Translated> {
        if let Some(nat) = &self.nat {
            return nat.view(a, b);
        }
        let shared = self.shared_views.as_ref()?;
        shared
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .view(a, b)
    }

    fn push_at_depth(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32, depth: u8) {
        // A later view of a flow across a NAT is read as the earlier view (then dedup drops the
        // copies). The rewritten bytes are moved out so that `self` stays free to borrow.
        if let Some(nat) = &mut self.nat
            && let Some(rewritten) = nat.rewrite(ts_ns, l3, wire_len)
        {
            let rewritten = rewritten.to_vec();
            self.push_translated(ts_ns, &rewritten, wire_len, depth);
            return;
        }
        self.push_translated(ts_ns, l3, wire_len, depth);
    }

    fn push_translated(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32, depth: u8) {
        // The same packet recorded on several interfaces (or nodes) counts once.
        if let Some(dedup) = &mut self.dedup
            && dedup.is_copy(ts_ns, l3, wire_len)
        {
            self.out.stats.duplicates += 1;
            return;
        }
        let Some(ip) = net::ip(l3, wire_len) else {
            self.out.stats.undecodable += 1;
            return;
        };
        if let Some(frag) = ip.fragment {
            self.out.stats.fragments += 1;
            let key = (ip.src, ip.dst, ip.proto, frag.id);
            // A fragment cut by the snaplen cannot complete its datagram.
            let whole = ip.payload.len() as u32 >= ip.payload_wire_len;
            if let Some(datagram) = whole
                .then(|| self.defrag.add(ts_ns, key, frag, ip.payload))
                .flatten()
            {
                self.out.stats.reassembled += 1;
                let len = datagram.len() as u32;
                self.transport(ts_ns, ip.src, ip.dst, ip.proto, &datagram, len, depth);
            }
            return;
        }
        self.transport(
            ts_ns,
            ip.src,
            ip.dst,
            ip.proto,
            ip.payload,
            ip.payload_wire_len,
            depth,
        );
    }

    /// Dispatches a transport payload (tunnels opened here too).
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one IP header, passed flat"
    )]
    fn transport(
        &mut self,
        ts_ns: i64,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: u8,
        payload: &[u8],
        payload_wire_len: u32,
        depth: u8,
    ) {
        let ip = net::Ip {
            src,
            dst,
            proto,
            payload,
            payload_wire_len,
            fragment: None,
        };
        // Overlay networks (VXLAN, Geneve, GRE, IP-in-IP) carry the pods' packets inside the
        // nodes': dissect the inner packet. Bounded, so crafted nesting cannot recurse deeply.
        if depth < MAX_TUNNEL_DEPTH
            && let Some((inner, inner_wire)) = ip.tunnelled()
        {
            self.push_at_depth(ts_ns, inner, inner_wire, depth + 1);
            return;
        }
        match ip.proto {
            6 => match net::tcp(ip.payload, ip.payload_wire_len) {
                Some(seg) => self.tcp(ts_ns, ip.src, ip.dst, seg),
                None => self.out.stats.undecodable += 1,
            },
            17 => match net::udp(ip.payload) {
                Some((sport, dport, data)) => {
                    let src = Endpoint {
                        ip: ip.src,
                        port: sport,
                    };
                    let dst = Endpoint {
                        ip: ip.dst,
                        port: dport,
                    };
                    if sport == 53 || dport == 53 {
                        self.dns_udp(ts_ns, src, dst, data);
                    }
                }
                None => self.out.stats.undecodable += 1,
            },
            _ => {}
        }
    }

    fn dns_udp(&mut self, ts_ns: i64, src: Endpoint, dst: Endpoint, data: &[u8]) {
        let datagram = match self.routed_datagram.take() {
            Some(numbered) => numbered,
            None => self.udp_flows.datagram(key(src, dst), self.frame, ts_ns),
        };
        // A call this datagram starts takes the datagram's number (`crate::udp_flows`).
        let mut numbered_before = datagram.number.saturating_sub(1);
        let flow = DnsFlow {
            conn_id: datagram.flow_id,
            ts_ns,
            src,
            dst,
            transport: "udp",
            calls: &mut numbered_before,
        };
        dns_message(&mut self.out, &mut self.dns_pending, flow, data);
    }

    /// Ends the input: open connections are closed, unpaired messages become rows.
    pub fn finish(mut self) -> Output {
        let mut open: Vec<TcpConn> = self.tcp.drain().map(|(_, c)| c).collect();
        open.sort_by_key(|c| c.id);
        for conn in open {
            self.close(conn, Unclosed::Open);
        }
        let mut left: Vec<(Box<Call>, i64)> = self.dns_pending.drain().map(|(_, v)| v).collect();
        left.sort_by_key(|(c, _)| c.timestamp_ns);
        for (mut call, _) in left {
            call.error_type = Some("pair_not_found");
            self.out.calls.push(*call);
        }
        self.annotate_nat();
        self.out
    }
}

impl TcpConn {
    /// A connection between `sides` (side 0 sent the first packet) first seen at `ts_ns`.
    fn new(id: u64, sides: [Endpoint; 2], client: usize, ts_ns: i64) -> Self {
        Self {
            id,
            sides,
            client,
            first_ns: ts_ns,
            last_ns: ts_ns,
            syn_ns: None,
            last_syn_ns: None,
            syn_seq: None,
            synack_ns: None,
            handshake_us: None,
            halves: [HalfStream::default(), HalfStream::default()],
            packets: [0; 2],
            bytes: [0; 2],
            fins: 0,
            fin_by: [false; 2],
            resets: 0,
            rst_by: None,
            rst_ns: None,
            analysis: TcpAnalysis::default(),
            l7: L7::Unknown,
            calls: 0,
            held: 0,
            plaintext: false,
            tls_info: None,
        }
    }

    /// Both sides sent a FIN, or either a RST: only stragglers are still to come.
    fn closed(&self) -> bool {
        self.fin_by == [true, true] || self.resets > 0
    }

    /// How long after its last packet the connection is finished.
    fn linger_ns(&self) -> i64 {
        if !self.closed() {
            return IDLE_NS;
        }
        let lossy = self
            .analysis
            .counters()
            .iter()
            .any(|c| c.retransmissions + c.lost_segments > 0);
        if lossy {
            LOSSY_CLOSED_GRACE_NS
        } else {
            CLOSED_GRACE_NS
        }
    }

    /// Bytes this connection holds.
    fn buffered(&self) -> usize {
        let l7 = match &self.l7 {
            L7::Http1(h) => {
                h.parsers.iter().map(Parser::buffered).sum::<usize>()
                    + h.pending.iter().map(http1::Message::held).sum::<usize>()
            }
            L7::Http2(h) => h.buffered(),
            L7::Dns(bufs) => bufs[0].len() + bufs[1].len(),
            L7::Tls(t) => t.collectors.iter().map(tls::Collector::buffered).sum(),
            L7::Unknown | L7::Other => 0,
        };
        self.halves[0].pending_bytes() + self.halves[1].pending_bytes() + l7
    }
}

impl Http1 {
    fn new(req_dir: usize) -> Self {
        let mut parsers = [Parser::new(Role::Request), Parser::new(Role::Response)];
        if req_dir == 1 {
            parsers.swap(0, 1);
        }
        Self {
            req_dir,
            parsers,
            pending: VecDeque::new(),
        }
    }
}
