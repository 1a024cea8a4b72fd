//! The engine: packets in time order in, calls and connections out.
//!
//! It owns the per-connection state and drives the protocol parsers; turning parsed messages
//! into rows is `crate::pairing`'s job, which depends only on the row and flow types, never on
//! the engine.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

// FxHash: the keys are packet 5-tuples hashed several times per packet; SipHash cost ~18% of the
// engine's time. Hash flooding is bounded by connection eviction and the map sizes.
use rustc_hash::FxHashMap as HashMap;

pub use crate::output::{Output, Stats};
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
/// Rows an engine's output buffers keep room for once they are taken, at most. A shard's
/// usual epoch (a hundred rows or so) then reuses its buffer from one epoch to the next: grown
/// afresh every epoch, the buffers cost a copy of every row at each doubling and fresh pages
/// for the kernel to zero (~1.5% of a one-core profile). A burst's larger buffer is given back.
const KEPT_ROWS: usize = 256;

/// DNS queries waiting for their answer, by flow and DNS id, with their start time.
type DnsPending = HashMap<(FlowKey, u16), (Call, i64)>;

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

    /// Moves the rows finished so far to the end of `calls` and `conns` (call now and then to
    /// bound memory; the rest comes from [`Engine::finish`]): the engine keeps its buffers and
    /// the caller reuses its own, so that no memory is allocated for rows once both have grown
    /// to a batch's size.
    pub fn take_rows_into(&mut self, calls: &mut Vec<Call>, conns: &mut Vec<Conn>) {
        self.annotate_nat();
        self.nat_annotated = 0;
        calls.append(&mut self.out.calls);
        conns.append(&mut self.out.conns);
        // A burst (one busy DNS flow, a second of closing connections) must not pin its
        // buffer in every shard for the rest of the run: 64 shards kept 56 MiB of empty rows.
        // (`shrink_to` is a no-op below the bound.)
        self.out.calls.shrink_to(KEPT_ROWS);
        self.out.conns.shrink_to(KEPT_ROWS);
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
                self.out.calls.push(call);
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

    fn tcp(
        &mut self,
        ts_ns: i64,
        src_ip: std::net::IpAddr,
        dst_ip: std::net::IpAddr,
        seg: net::Tcp<'_>,
    ) {
        let src = Endpoint {
            ip: src_ip,
            port: seg.src_port,
        };
        let dst = Endpoint {
            ip: dst_ip,
            port: seg.dst_port,
        };
        let k = key(src, dst);
        let syn = seg.flags & flags::SYN != 0;
        let ack = seg.flags & flags::ACK != 0;
        // A SYN with a new initial sequence number on a known tuple starts a new connection
        // (port reuse), as does any SYN on a finished or reset one; a SYN that repeats the
        // first one's number is a retransmission of it.
        let reuse = syn
            && !ack
            && self.tcp.get(&k).is_some_and(|c| match c.syn_seq {
                Some(first) => first != seg.seq,
                None => c.closed(),
            });
        if reuse && let Some(old) = self.tcp.remove(&k) {
            self.close(old, Unclosed::Open);
        }
        // The table's size first: the lookup is only needed when it is full.
        if self.tcp.len() >= self.limits.max_conns && !self.tcp.contains_key(&k) {
            self.enforce_limits();
        }
        let id = self.frame;
        let conn = self.tcp.entry(k).or_insert_with(|| {
            // The initiator: the SYN's sender, the SYN-ACK's receiver, else the sender of the
            // first packet unless it comes from the lower (server-like) port.
            let client = if syn && ack {
                1
            } else if syn || src.port > dst.port {
                0
            } else {
                1
            };
            TcpConn::new(id, [src, dst], client, ts_ns)
        });
        let dir = usize::from(conn.sides[0] != src);
        conn.last_ns = ts_ns;
        conn.packets[dir] += 1;
        conn.bytes[dir] += u64::from(seg.payload_wire_len);
        if syn && !ack {
            conn.syn_ns.get_or_insert(ts_ns);
            conn.last_syn_ns = Some(ts_ns);
            conn.syn_seq.get_or_insert(seg.seq);
            conn.client = dir;
        } else if syn && ack {
            conn.synack_ns.get_or_insert(ts_ns);
            // The SYN-ACK names the client's number when the SYN itself was not captured.
            conn.syn_seq.get_or_insert(seg.ack.wrapping_sub(1));
        } else if ack
            && conn.handshake_us.is_none()
            && dir == conn.client
            && let (Some(s), Some(_)) = (conn.syn_ns, conn.synack_ns)
        {
            conn.handshake_us = Some((ts_ns - s) / 1000);
            // Wireshark's initial RTT (the out-of-order threshold) starts at the last SYN, so
            // a retransmitted SYN does not stretch it.
            conn.analysis
                .set_initial_rtt(ts_ns - conn.last_syn_ns.unwrap_or(s));
        }
        if seg.flags & flags::RST != 0 {
            conn.resets += 1;
            conn.rst_by.get_or_insert(dir);
            conn.rst_ns.get_or_insert(ts_ns);
        }
        if seg.flags & flags::FIN != 0 {
            conn.fins += 1;
            conn.fin_by[dir] = true;
        }
        conn.analysis.packet(
            dir,
            &Segment {
                ts_ns,
                seq: seg.seq,
                ack: seg.ack,
                flags: seg.flags,
                window: seg.window,
                len: seg.payload_wire_len,
            },
        );
        let TcpConn {
            halves, l7, sides, ..
        } = &mut *conn;
        let ports = (sides[0].port, sides[1].port);
        let stats = &mut self.out.stats;
        halves[dir].segment(
            ts_ns,
            seg.seq,
            syn,
            seg.payload,
            seg.payload_wire_len,
            &mut |chunk| {
                on_chunk(l7, dir, ports, chunk, stats);
            },
        );
        // The connection found above serves for the rest: one lookup per packet.
        collect(conn, &mut self.out, &mut self.dns_pending);
        if conn.closed()
            && let L7::Http1(h) = &mut conn.l7
        {
            for p in &mut h.parsers {
                p.release_spare();
            }
            if h.pending.is_empty() {
                h.pending = VecDeque::new();
            }
        }
        let now = conn.buffered();
        // `held` includes this connection's previous figure.
        self.held = self.held.saturating_sub(conn.held) + now;
        conn.held = now;
        if self.held > self.limits.max_buffered {
            self.enforce_limits();
        }
    }

    /// Feeds TLS plaintext (what `SSL_write` sent or `SSL_read` returned, from uprobes) of the
    /// connection between `local` (the process's end) and `peer`: `outbound` for writes. The
    /// plaintext is dissected as the connection's bytes would be, without reassembly (it comes
    /// whole and in order), and the connection's packets, when recorded too, give its `conns`
    /// row and its handshake time; its TLS handshake is then no call of its own.
    ///
    /// When both ends' processes are hooked (client and server on one node), each byte comes
    /// twice, once as written and once as read: the stream follows the process it heard first,
    /// and the other's chunks count as copies.
    pub fn push_plaintext(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        bytes: &[u8],
    ) {
        self.plaintext(ts_ns, local, peer, outbound, Chunk::Data { ts_ns, bytes });
    }

    /// Says that `len` bytes of a plaintext stream are missing (the recorder cut a long call),
    /// after what [`Engine::push_plaintext`] fed with the same ends and direction.
    pub fn plaintext_gap(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        len: u64,
    ) {
        self.plaintext(ts_ns, local, peer, outbound, Chunk::Gap { ts_ns, len });
    }

    fn plaintext(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        chunk: Chunk<'_>,
    ) {
        let k = crate::flow::plain_key(local, peer);
        if !self.tcp.contains_key(&k) {
            if self.tcp.len() >= self.limits.max_conns {
                self.enforce_limits();
            }
            // The encrypted connection, when its packets are recorded: its id, its handshake.
            let (mut id, mut handshake_us, mut tls_info) = (None, None, None);
            if let Some(packets) = self.tcp.get_mut(&key(local, peer)) {
                id = Some(packets.id);
                handshake_us = packets.handshake_us;
                if let L7::Tls(t) = &mut packets.l7 {
                    t.decrypted = true;
                    tls_info = crate::pairing::tls_info(t);
                }
            }
            let id = id.unwrap_or_else(|| {
                self.plain_ids += 1;
                PLAINTEXT_IDS + self.plain_ids
            });
            let mut conn = TcpConn::new(id, [local, peer], 0, ts_ns);
            conn.handshake_us = handshake_us;
            conn.plaintext = true;
            conn.tls_info = tls_info.map(Box::new);
            self.tcp.insert(k, conn);
        }
        let Some(conn) = self.tcp.get_mut(&k) else {
            return;
        };
        if conn.sides[0] != local {
            // The other end's process: the same bytes, already followed from this end.
            self.out.stats.duplicates += 1;
            return;
        }
        let dir = usize::from(!outbound);
        conn.last_ns = ts_ns;
        conn.packets[dir] += 1;
        if let Chunk::Data { bytes, .. } = &chunk {
            conn.bytes[dir] += bytes.len() as u64;
        }
        let ports = (conn.sides[0].port, conn.sides[1].port);
        on_chunk(&mut conn.l7, dir, ports, chunk, &mut self.out.stats);
        collect(conn, &mut self.out, &mut self.dns_pending);
    }

    /// Turns a connection into its rows; `unclosed` says why it ends if it saw no FIN or RST.
    fn close(&mut self, mut conn: TcpConn, unclosed: Unclosed) {
        let mark = self.out.calls.len();
        self.held = self.held.saturating_sub(conn.held);
        conn.held = 0;
        let TcpConn {
            halves, l7, sides, ..
        } = &mut conn;
        let ports = (sides[0].port, sides[1].port);
        for (dir, half) in halves.iter_mut().enumerate() {
            let stats = &mut self.out.stats;
            half.flush(&mut |chunk| on_chunk(l7, dir, ports, chunk, stats));
        }
        if let L7::Http1(h) = &mut conn.l7 {
            for p in &mut h.parsers {
                p.close(conn.last_ns);
                self.out.stats.http_errors += p.parse_errors;
            }
        }
        if let L7::Http2(h) = &mut conn.l7 {
            h.close();
            self.out.stats.http_errors += h.errors;
        }
        // Every call pushed from here on is marked with the connection's handshake and
        // plaintext origin once, below.
        collect_messages(&mut conn, &mut self.out, &mut self.dns_pending);
        let l7 = match &conn.l7 {
            L7::Http1(h) => {
                let (client, server) = (conn.sides[h.req_dir], conn.sides[1 - h.req_dir]);
                let mut calls = conn.calls;
                for req in h.pending.iter().cloned() {
                    calls += 1;
                    let mut call = http_call(conn.id, calls, client, server, Some(req), None);
                    call.error_type = Some(if conn.resets > 0 {
                        "tcp_reset"
                    } else {
                        "pair_not_found"
                    });
                    self.out.calls.push(call);
                }
                "HTTP"
            }
            L7::Dns(_) => "DNS",
            L7::Tls(_) => "TLS",
            L7::Http2(_) => "HTTP/2",
            _ => "",
        };
        if let L7::Tls(t) = &mut conn.l7
            && !t.decrypted
            && let Some(call) = tls_call(conn.id, conn.sides, t, true)
        {
            self.out.calls.push(call);
        }
        if let Some(pushed) = self.out.calls.get_mut(mark..) {
            annotate(&conn, pushed);
        }
        if conn.plaintext {
            // The packets of the connection make its `conns` row.
            return;
        }
        let c = conn.client;
        let counters = conn.analysis.counters();
        let both =
            |f: fn(&crate::tcp_analysis::Counters) -> u64| [f(&counters[c]), f(&counters[1 - c])];
        let close = if conn.resets > 0 {
            "rst"
        } else if conn.fin_by == [true, true] {
            "fin"
        } else if conn.fin_by.contains(&true) {
            "half_closed"
        } else {
            match unclosed {
                Unclosed::Open => "open",
                Unclosed::Idle => "timeout",
                Unclosed::Evicted => "evicted",
            }
        };
        self.out.conns.push(Conn {
            conn_id: conn.id,
            src: conn.sides[c],
            dst: conn.sides[1 - c],
            first_ns: conn.first_ns,
            last_ns: conn.last_ns,
            handshake_us: conn.handshake_us,
            packets: [conn.packets[c], conn.packets[1 - c]],
            bytes: [conn.bytes[c], conn.bytes[1 - c]],
            retransmissions: both(|x| x.retransmissions),
            out_of_order: both(|x| x.out_of_order),
            lost_segments: both(|x| x.lost_segments),
            zero_windows: both(|x| x.zero_windows),
            dup_acks: both(|x| x.dup_acks),
            data_rtt_us: conn.analysis.data_rtt_us(),
            fins: conn.fins,
            resets: conn.resets,
            rst_by: conn
                .rst_by
                .map(|d| if d == c { "client" } else { "server" }),
            rst_ns: conn.rst_ns,
            close,
            l7,
            nat: self.nat_view(&conn.sides[c], &conn.sides[1 - c]),
        });
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
        let mut left: Vec<(Call, i64)> = self.dns_pending.drain().map(|(_, v)| v).collect();
        left.sort_by_key(|(c, _)| c.timestamp_ns);
        for (mut call, _) in left {
            call.error_type = Some("pair_not_found");
            self.out.calls.push(call);
        }
        self.annotate_nat();
        self.out
    }
}

fn on_chunk(l7: &mut L7, dir: usize, ports: (u16, u16), chunk: Chunk<'_>, stats: &mut Stats) {
    // TLS may also start later in a connection (STARTTLS, MySQL and PostgreSQL SSL requests).
    if let (L7::Unknown | L7::Other, Chunk::Data { bytes, .. }) = (&*l7, &chunk)
        && tls::is_handshake_record(bytes)
    {
        *l7 = L7::Tls(Box::new(TlsHandshake {
            collectors: Default::default(),
            client: None,
            server: None,
            emitted: false,
            decrypted: false,
        }));
    }
    if let (L7::Unknown, Chunk::Data { bytes, .. }) = (&*l7, &chunk) {
        let n = bytes.len().min(http2::PREFACE.len());
        *l7 = if bytes[..n] == http2::PREFACE[..n] {
            L7::Http2(Box::new(http2::Conn::new(dir, true)))
        } else if http2::looks_like_server_settings(bytes) {
            L7::Http2(Box::new(http2::Conn::new(1 - dir, true)))
        } else if http1::looks_like(Role::Request, bytes) {
            L7::Http1(Box::new(Http1::new(dir)))
        } else if http1::looks_like(Role::Response, bytes) {
            L7::Http1(Box::new(Http1::new(1 - dir)))
        } else if ports.0 == 53 || ports.1 == 53 {
            L7::Dns([Vec::new(), Vec::new()])
        } else {
            L7::Other
        };
    }
    match l7 {
        L7::Http1(h) => match chunk {
            Chunk::Data { ts_ns, bytes } => h.parsers[dir].data(ts_ns, bytes),
            Chunk::Gap { ts_ns, len } => h.parsers[dir].gap(ts_ns, len),
        },
        L7::Dns(bufs) => match chunk {
            Chunk::Data { bytes, .. } => bufs[dir].extend_from_slice(bytes),
            Chunk::Gap { .. } => {
                stats.dns_errors += 1;
                bufs[dir].clear();
            }
        },
        L7::Http2(h) => match chunk {
            Chunk::Data { ts_ns, bytes } => h.data(dir, ts_ns, bytes),
            Chunk::Gap { .. } => h.gap(dir),
        },
        L7::Tls(t) => {
            if let Chunk::Data { ts_ns, bytes } = chunk {
                match t.collectors[dir].data(bytes) {
                    Some(Hello::Client(info)) if t.client.is_none() => {
                        t.client = Some((dir, ts_ns, info))
                    }
                    Some(hello @ Hello::Server { .. }) if t.server.is_none() => {
                        t.server = Some((ts_ns, hello))
                    }
                    _ => {}
                }
            }
        }
        _ => {}
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

/// Turns finished messages of `conn` into calls in `out`, which carry its handshake time
/// (and, read from plaintext, the hellos of its encrypted connection).
fn collect(conn: &mut TcpConn, out: &mut Output, dns_pending: &mut DnsPending) {
    let mark = out.calls.len();
    collect_messages(conn, out, dns_pending);
    annotate(conn, &mut out.calls[mark..]);
}

/// Marks `calls` of `conn` with its handshake time, and when read from plaintext, with that
/// and the hellos of its encrypted connection.
fn annotate(conn: &TcpConn, calls: &mut [Call]) {
    for call in calls {
        call.tcp_handshake_us = conn.handshake_us;
        if conn.plaintext {
            call.from_plaintext = true;
            call.tls.clone_from(&conn.tls_info);
        }
    }
}

/// Turns finished messages of `conn` into calls in `out`.
fn collect_messages(conn: &mut TcpConn, out: &mut Output, dns_pending: &mut DnsPending) {
    let mut upgrade = None;
    match &mut conn.l7 {
        L7::Http1(h) => {
            let req_dir = h.req_dir;
            let resp_dir = 1 - req_dir;
            // Messages move once, from the parser's list to where they go; the lists
            // keep their buffers (no vector per packet).
            let [first, second] = &mut h.parsers;
            let (requests, responder) = if req_dir == 0 {
                (&mut first.messages, second)
            } else {
                (&mut second.messages, first)
            };
            for r in requests.drain(..) {
                responder.pending_requests.push_back(r.method == "HEAD");
                h.pending.push_back(r);
            }
            let mut responses = std::mem::take(&mut h.parsers[resp_dir].messages);
            let (client, server) = (conn.sides[req_dir], conn.sides[resp_dir]);
            for resp in responses.drain(..) {
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    continue; // interim (100 Continue): not a call of its own
                }
                let req = h.pending.pop_front();
                // A 101 the parser switched on (to h2c): the request continues as HTTP/2
                // stream 1, whose response makes the call, so the 101 is not a call.
                if resp.status == 101
                    && let Some(after) = h.parsers[resp_dir].take_switched()
                {
                    upgrade = Some((req.unwrap_or_default(), resp.end_ns, after));
                    break;
                }
                conn.calls += 1;
                out.calls.push(http_call(
                    conn.id,
                    conn.calls,
                    client,
                    server,
                    req,
                    Some(resp),
                ));
            }
            // The emptied list goes back with its buffer.
            let parser = &mut h.parsers[resp_dir];
            if parser.messages.is_empty() {
                parser.messages = responses;
            }
        }
        L7::Dns(bufs) => {
            for (dir, buf) in bufs.iter_mut().enumerate() {
                while buf.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if buf.len() < 2 + len {
                        break;
                    }
                    let msg: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
                    let (src, dst) = (conn.sides[dir], conn.sides[1 - dir]);
                    let ts = conn.last_ns;
                    let id = conn.id;
                    let flow = DnsFlow {
                        conn_id: id,
                        ts_ns: ts,
                        src,
                        dst,
                        transport: "tcp",
                        calls: &mut conn.calls,
                    };
                    dns_message(out, dns_pending, flow, &msg);
                }
            }
        }
        // The handshake's row waits for the connection's end: if its plaintext is read by
        // then, the calls carry the hellos instead (one call, not two).
        L7::Tls(_) => {}
        L7::Http2(h) => {
            let client_dir = h.client_dir();
            let (client, server) = (conn.sides[client_dir], conn.sides[1 - client_dir]);
            for ex in h.done.drain(..) {
                conn.calls += 1;
                out.calls.push(h2_call(
                    conn.id,
                    conn.calls,
                    client,
                    server,
                    ex,
                    conn.resets > 0,
                ));
            }
        }
        _ => {}
    }
    if let Some((request, switched_ns, after)) = upgrade
        && let L7::Http1(h) = &conn.l7
    {
        let (req_dir, resp_dir) = (h.req_dir, 1 - h.req_dir);
        let start_ns = request.start_ns;
        let mut h2 = http2::Conn::upgraded(req_dir, h2_half(request), start_ns);
        h2.data(resp_dir, switched_ns, &after);
        conn.l7 = L7::Http2(Box::new(h2));
        out.stats.h2c_upgrades += 1;
        // Stream 1's response may have come in the same segment as the 101.
        collect_messages(conn, out, dns_pending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query over UDP/IPv4, split into two fragments out of order, is still a call.
    #[test]
    fn fragmented_udp_is_reassembled() {
        let mut dns = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        dns.extend_from_slice(b"\x03app\x04test\x00\x00\x01\x00\x01");
        let mut udp = vec![0x30, 0x39, 0, 53];
        udp.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&dns);
        let ip = |payload: &[u8], off: u16, more: bool| {
            let mut p = vec![
                0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
            ];
            let total = (20 + payload.len()) as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            let ff = (off / 8) | if more { 0x2000 } else { 0 };
            p[6..8].copy_from_slice(&ff.to_be_bytes());
            p.extend_from_slice(payload);
            p
        };
        let first = ip(&udp[..16], 0, true);
        let second = ip(&udp[16..], 16, false);
        let mut e = Engine::new();
        e.push(2, &second, second.len() as u32);
        e.push(1, &first, first.len() as u32);
        let out = e.finish();
        assert_eq!(out.stats.reassembled, 1);
        assert_eq!(out.calls.len(), 1);
        assert_eq!(out.calls[0].dns_questions, ["app.test"]);
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn syn(port: u16, seq: u32) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        p.extend_from_slice(&port.to_be_bytes());
        p.extend_from_slice(&80u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        p
    }

    fn data(port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = syn(port, seq);
        p[33] = 0x18; // PSH ACK
        let total = (40 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// A segment of the connection between 198.18.0.1:`port` (the client) and 198.18.0.2:80.
    fn segment(to_server: bool, port: u16, seq: u32, ack: u32, flags: u8, len: usize) -> Vec<u8> {
        let mut p = data(port, seq, &vec![b'x'; len]);
        if !to_server {
            p[12..20].copy_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
            p[20..24].copy_from_slice(&[0, 80, (port >> 8) as u8, port as u8]);
        }
        p[28..32].copy_from_slice(&ack.to_be_bytes());
        p[33] = flags;
        p
    }

    const MS: i64 = 1_000_000;

    /// Pushes a closed exchange on `port` from `t0`: handshake, 100 bytes each way (the
    /// server's sent twice when `lossy`), FINs both ways, the last ACK. Returns the time of the
    /// last packet.
    fn closed_exchange(e: &mut Engine, port: u16, t0: i64, lossy: bool) -> i64 {
        use flags::{ACK, FIN, SYN};
        let (c, s) = (1000u32, 5000u32);
        let mut packets = vec![
            (true, c, 0, SYN, 0),
            (false, s, c + 1, SYN | ACK, 0),
            (true, c + 1, s + 1, ACK, 0),
            (true, c + 1, s + 1, ACK, 100),
            (false, s + 1, c + 101, ACK, 100),
        ];
        if lossy {
            packets.push((false, s + 1, c + 101, ACK, 100));
        }
        packets.extend([
            (true, c + 101, s + 101, ACK | FIN, 0),
            (false, s + 101, c + 102, ACK | FIN, 0),
            (true, c + 102, s + 102, ACK, 0),
        ]);
        let mut t = t0;
        for (to_server, seq, ack, f, len) in packets {
            t += MS;
            let p = segment(to_server, port, seq, ack, f, len);
            e.push(t, &p, p.len() as u32);
        }
        t
    }

    #[test]
    fn a_clean_close_frees_the_connection_after_a_second() {
        let mut e = Engine::new();
        let last = closed_exchange(&mut e, 40_000, 0, false);
        e.sweep_at(last + 900 * MS);
        assert_eq!(e.live().0, 1, "within the grace");
        e.sweep_at(last + 1100 * MS);
        assert_eq!(e.live().0, 0, "a clean close is finished after a second");
        let out = e.finish();
        assert_eq!(out.conns.len(), 1);
        assert_eq!(out.conns[0].close, "fin");
    }

    /// The FIN whose ACK was lost after the capture point comes again after the sender's
    /// backed-off timeout: it is a retransmission of the same connection, and the server's
    /// answer a duplicate ACK, as tshark reads them; not a second connection.
    #[test]
    fn a_lossy_close_keeps_late_retransmissions_in_its_row() {
        use flags::{ACK, FIN};
        let mut e = Engine::new();
        let last = closed_exchange(&mut e, 40_001, 0, true);
        e.sweep_at(last + 1500 * MS);
        assert_eq!(
            e.live().0,
            1,
            "a lossy close waits for late retransmissions"
        );
        for (dt, to_server, seq, ack, f) in [
            (2000, true, 1101, 5101, ACK | FIN),
            (2001, false, 5102, 1102, ACK),
        ] {
            let p = segment(to_server, 40_001, seq, ack, f, 0);
            e.push(last + dt * MS, &p, p.len() as u32);
        }
        e.sweep_at(last + 11_000 * MS);
        assert_eq!(e.live().0, 1, "the grace runs from the last packet");
        e.sweep_at(last + 12_100 * MS);
        assert_eq!(e.live().0, 0, "finished after the lossy grace");
        let out = e.finish();
        assert_eq!(out.conns.len(), 1, "{:#?}", out.conns);
        let conn = &out.conns[0];
        assert_eq!(conn.retransmissions, [1, 1], "client's FIN, server's data");
        assert_eq!(conn.dup_acks, [0, 1], "the server's answer to the late FIN");
        assert_eq!(conn.packets, [6, 5]);
    }

    /// One side's FIN sent twice is a half-close, not a close: the other side may still send.
    #[test]
    fn a_repeated_fin_from_one_side_is_not_a_close() {
        use flags::{ACK, FIN, SYN};
        let mut e = Engine::new();
        let mut t = 0;
        for (to_server, seq, ack, f) in [
            (true, 1000, 0, SYN),
            (false, 5000, 1001, SYN | ACK),
            (true, 1001, 5001, ACK | FIN),
            (true, 1001, 5001, ACK | FIN),
        ] {
            t += MS;
            let p = segment(to_server, 40_002, seq, ack, f, 0);
            e.push(t, &p, p.len() as u32);
        }
        e.sweep_at(t + 5000 * MS);
        assert_eq!(
            e.live().0,
            1,
            "a half-closed connection waits for the idle timeout"
        );
        let out = e.finish();
        assert_eq!(out.conns[0].close, "half_closed");
    }

    #[test]
    fn connection_count_and_buffered_bytes_stay_bounded() {
        let mut e = Engine::with_limits(Limits {
            max_conns: 100,
            max_buffered: 64 << 10,
        });
        // 1000 connections, each holding 4 KiB behind a hole that is never filled.
        for i in 0..1000u16 {
            let ts = i64::from(i) * 1_000_000;
            let port = 10_000 + i;
            let s = syn(port, 1000);
            e.push(ts, &s, s.len() as u32);
            let d = data(port, 1100, &[b'x'; 4096]);
            e.push(ts, &d, d.len() as u32);
            let (conns, _) = e.live();
            assert!(conns <= 100, "{conns} live connections");
            let held: usize = e.tcp.values().map(TcpConn::buffered).sum();
            assert_eq!(held, e.held, "the running total follows the connections");
            assert!(held <= 64 << 10, "{held} bytes held");
        }
        let out = e.finish();
        assert!(out.stats.evicted_conns >= 900, "{:?}", out.stats);
        assert_eq!(out.conns.len(), 1000, "every connection still gets its row");
    }
}
