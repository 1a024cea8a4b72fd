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
//! The recorder's slices need what one engine does with [`Engine::count_copies_once`] before
//! the split, since a packet's copies (and its flow's view on the other side of a NAT) may go
//! to other shards: [`Router::counting_copies_once`] drops the copies and rewrites later NAT
//! views itself, level by level through tunnels, and hands the shard the innermost packet. The
//! rows name the other view from the changes the router reports ([`Routed::joined`],
//! [`Routed::forgotten`]), which the shards apply at the same points in the stream
//! ([`ShardRange::joining_views`]). TLS plaintext goes to the shard of its connection
//! ([`plaintext_shard`]).
//!
//! Pure, like the rest of the crate: threads and channels are the caller's.

mod router;

pub use router::{Routed, Router, plaintext_shard};

use std::sync::{Arc, PoisonError, RwLock};

use crate::{
    call::Endpoint,
    engine::{Engine, Limits},
    nat::{NatViews, ViewChange},
    output::{Output, Stats, TakenRows},
    udp_flows::UdpDatagram,
};

/// Shards a dissection is split into (the most threads it can use).
pub const SHARDS: usize = 64;

/// Frames between two takings of the rows (one batch per shard range per epoch). The rows of
/// an epoch are in memory at once, as owned rows and then as a record batch, and on several
/// threads a few epochs' batches are on their way to the writer: at 65,536 frames a burst of
/// keep-alive calls held ~60 MiB of them. At 8,192 rather than 16,384 the two-thread peak went
/// from 177–187 to 164–171 MiB on the benchmark capture and from 222–241 to 193–200 MiB on ten
/// copies of it in a row, as fast on one thread and on two. At 2,048 the rows an epoch leaves
/// behind are still in cache when they are encoded and freed, and the allocator hands the same
/// warm memory to the next epoch's rows: one thread went from 1.64 to 1.53 s (peak 145 → 120
/// MiB), two threads stayed at 0.97–1.02 s (peak 166 → 148 MiB). At 1,024 two threads lost 10%
/// to the hand-overs.
pub const EPOCH_FRAMES: u64 = 2_048;

/// The engines of a contiguous range of shards (all of them when one thread dissects).
pub struct ShardRange {
    first: usize,
    engines: Vec<Engine>,
    /// The NAT views the router joined, shared by the range's engines, when it counts copies.
    views: Option<Arc<RwLock<NatViews>>>,
}

/// Where the plaintext stream ids of shard `shard` start (`Engine::plaintext_ids_after`): far
/// apart, so that no shard runs into the next.
fn plaintext_ids_of(shard: usize) -> u64 {
    (shard as u64) << 40
}

impl ShardRange {
    /// The engines of shards `range`, each with its share of `limits` (a shard holds a
    /// sixteenth of the connections and bytes one engine may: hashing spreads flows evenly, and
    /// the margin covers the unevenness).
    pub fn new(range: std::ops::Range<usize>, limits: Limits) -> Self {
        Self::with_views(range, limits, None)
    }

    /// [`ShardRange::new`] for a router that counts copies
    /// ([`Router::counting_copies_once`]): the rows name the views across a NAT that the
    /// router's changes, given to [`ShardRange::apply_views`], describe.
    pub fn joining_views(range: std::ops::Range<usize>, limits: Limits) -> Self {
        Self::with_views(range, limits, Some(Arc::default()))
    }

    fn with_views(
        range: std::ops::Range<usize>,
        limits: Limits,
        views: Option<Arc<RwLock<NatViews>>>,
    ) -> Self {
        let share = Limits {
            max_conns: (limits.max_conns / 16).max(1024),
            max_buffered: (limits.max_buffered / 16).max(4 << 20),
        };
        Self {
            first: range.start,
            engines: range
                .map(|shard| {
                    let engine = Engine::with_limits(share)
                        .sweeps_from_outside()
                        .plaintext_ids_after(plaintext_ids_of(shard));
                    match &views {
                        Some(views) => engine.nat_views_from(views.clone()),
                        None => engine,
                    }
                })
                .collect(),
            views,
        }
    }

    /// The ranges `threads` threads take of the shards `shards` (all of them: `0..SHARDS`):
    /// contiguous, in order, as even as can be, none empty (fewer ranges than threads when
    /// there are fewer shards).
    pub fn split(shards: std::ops::Range<usize>, threads: usize) -> Vec<std::ops::Range<usize>> {
        let (first, span) = (shards.start, shards.len());
        let threads = threads.clamp(1, span.max(1));
        (0..threads)
            .map(|t| first + t * span / threads..first + (t + 1) * span / threads)
            .collect()
    }

    /// Feeds frame `frame` to shard `shard` (which must be in this range): its bytes, wire
    /// length and tunnel depth as the router gave them ([`Routed::packet`], [`Routed::depth`]),
    /// with its place on its UDP flow when the router numbered it ([`Routed::datagram`]).
    pub fn push(
        &mut self,
        shard: usize,
        frame: u64,
        ts_ns: i64,
        packet: (&[u8], u32, u8),
        datagram: Option<UdpDatagram>,
    ) {
        if let Some(engine) = self.engines.get_mut(shard - self.first) {
            engine.push_routed(frame, ts_ns, packet, datagram);
        }
    }

    /// Feeds TLS plaintext to shard `shard` ([`plaintext_shard`] of its ends; see
    /// [`Engine::push_plaintext`]); `missing_after` bytes of the call were cut after it.
    pub fn push_plaintext(&mut self, shard: usize, ts_ns: i64, chunk: Plaintext<'_>) {
        if let Some(engine) = self.engines.get_mut(shard - self.first) {
            chunk.feed(engine, ts_ns);
        }
    }

    /// Applies the router's changes to the NAT views ([`Routed::joined`],
    /// [`Routed::forgotten`]).
    pub fn apply_views(&mut self, changes: &[ViewChange]) {
        if let (Some(views), false) = (&self.views, changes.is_empty()) {
            let mut views = views.write().unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                views.apply(change);
            }
        }
    }

    /// Every shard sweeps at `now_ns`.
    pub fn sweep(&mut self, now_ns: i64) {
        for engine in &mut self.engines {
            engine.sweep_at(now_ns);
        }
    }

    /// Moves the rows finished so far into `into`, shard after shard (moved, not copied:
    /// [`TakenRows`]).
    pub fn take_rows(&mut self, into: &mut TakenRows) {
        for (slot, engine) in self.engines.iter_mut().enumerate() {
            engine.take_rows(slot, into);
        }
    }

    /// Gives each shard back the lists [`ShardRange::take_rows`] took from it, once `taken`'s
    /// rows are written and it is cleared ([`TakenRows::clear`]).
    pub fn give_back(&mut self, taken: &mut TakenRows) {
        for (slot, engine) in self.engines.iter_mut().enumerate() {
            engine.reuse_lists(taken.spares_of(slot));
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
        let mut taken = TakenRows::new();
        let mut out = Output {
            stats: self.finish_into(&mut taken),
            ..Output::default()
        };
        taken.move_into(&mut out.calls, &mut out.conns);
        out
    }

    /// Ends the input: every shard's remaining rows into `into`, shard after shard (moved, not
    /// copied: [`TakenRows`]); the counters.
    pub fn finish_into(self, into: &mut TakenRows) -> Stats {
        let mut stats = Stats::default();
        for (slot, engine) in self.engines.into_iter().enumerate() {
            stats.add(&into.take_output(slot, engine.finish()));
        }
        stats
    }
}

/// A chunk of TLS plaintext, as [`Engine::push_plaintext`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct Plaintext<'a> {
    /// The process's end.
    pub local: Endpoint,
    /// The other end.
    pub peer: Endpoint,
    /// Written by the process (else read).
    pub outbound: bool,
    /// The bytes.
    pub bytes: &'a [u8],
    /// Bytes of the call cut after these ([`Engine::plaintext_gap`]), 0 when none.
    pub missing_after: u64,
}

impl Plaintext<'_> {
    /// The shard whose engine reads this chunk.
    pub fn shard(&self) -> usize {
        plaintext_shard(self.local, self.peer)
    }

    fn feed(&self, engine: &mut Engine, ts_ns: i64) {
        engine.push_plaintext(ts_ns, self.local, self.peer, self.outbound, self.bytes);
        if self.missing_after > 0 {
            engine.plaintext_gap(
                ts_ns,
                self.local,
                self.peer,
                self.outbound,
                self.missing_after,
            );
        }
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

    /// All shards in this thread, counting copies once as
    /// [`Router::counting_copies_once`] does.
    pub fn counting_copies_once(limits: Limits) -> Self {
        Self {
            router: Router::counting_copies_once(),
            shards: ShardRange::joining_views(0..SHARDS, limits),
        }
    }

    /// Feeds one packet (see [`Engine::push`]).
    pub fn push(&mut self, ts_ns: i64, l3: &[u8], wire_len: u32) {
        let routed = self.router.route(ts_ns, l3, wire_len);
        self.shards.apply_views(routed.joined);
        if let Some((shard, packet, wire)) = routed.packet {
            self.shards.push(
                shard,
                routed.frame,
                ts_ns,
                (packet, wire, routed.depth),
                routed.datagram,
            );
        }
        if let Some(now) = routed.sweep {
            self.shards.sweep(now);
        }
        self.shards.apply_views(routed.forgotten);
    }

    /// Feeds a chunk of TLS plaintext, read at `ts_ns` (between the packets of its time).
    pub fn push_plaintext(&mut self, ts_ns: i64, chunk: Plaintext<'_>) {
        self.shards.push_plaintext(chunk.shard(), ts_ns, chunk);
    }

    /// Frames fed so far.
    pub fn frames(&self) -> u64 {
        self.router.frames()
    }

    /// Moves the rows finished so far, in shard order, into `into` (take them every
    /// [`EPOCH_FRAMES`] frames for the order several threads give).
    pub fn take_rows(&mut self, into: &mut TakenRows) {
        self.shards.take_rows(into);
    }

    /// Gives each shard back its lists, once `taken`'s rows are written ([`ShardRange::give_back`]).
    pub fn give_back(&mut self, taken: &mut TakenRows) {
        self.shards.give_back(taken);
    }

    /// Ends the input.
    pub fn finish(self) -> Output {
        let mut out = self.shards.finish();
        out.stats.add(self.router.stats());
        out
    }

    /// Ends the input: the remaining rows into `into` (as [`Sharded::finish`] gives them);
    /// the counters.
    pub fn finish_into(self, into: &mut TakenRows) -> Stats {
        let mut stats = self.shards.finish_into(into);
        stats.add(self.router.stats());
        stats
    }
}

#[cfg(test)]
mod tests;
