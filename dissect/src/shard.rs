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

mod router;

pub use router::{Routed, Router};

use crate::{
    call::{Call, Conn},
    engine::{Engine, Limits},
    output::Output,
    udp_flows::UdpDatagram,
};

/// Shards a dissection is split into (the most threads it can use).
pub const SHARDS: usize = 64;

/// Frames between two takings of the rows (one batch per shard range per epoch). The rows of
/// an epoch are in memory at once, as owned rows and then as a record batch: at 65,536 frames a
/// burst of keep-alive calls held ~60 MiB of them.
pub const EPOCH_FRAMES: u64 = 16_384;

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
mod tests;
