//! What a dissection produces: the rows, and counters of what was skipped.

use crate::call::{Call, Conn};

/// Counters of what the engine skipped, so nothing is lost silently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets pushed.
    pub packets: u64,
    /// Packets that were not IPv4/IPv6 or were malformed.
    pub undecodable: u64,
    /// IP fragments seen.
    pub fragments: u64,
    /// DNS messages that did not parse.
    pub dns_errors: u64,
    /// HTTP heads that did not parse (the stream resynchronised).
    pub http_errors: u64,
    /// Datagrams put back together from fragments.
    pub reassembled: u64,
    /// Connections finished early to stay within [`Limits`](crate::engine::Limits) (their unpaired halves become rows).
    pub evicted_conns: u64,
    /// Fragmented datagrams given up (incomplete after 30 s, too large, or too many at once).
    pub defrag_dropped: u64,
    /// HTTP/1.1 connections that switched to HTTP/2 with `Upgrade: h2c`.
    pub h2c_upgrades: u64,
    /// Copies of a packet already seen (another interface or node recorded it too).
    pub duplicates: u64,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            packets,
            undecodable,
            fragments,
            dns_errors,
            http_errors,
            reassembled,
            evicted_conns,
            defrag_dropped,
            h2c_upgrades,
            duplicates,
        } = other;
        self.packets += packets;
        self.undecodable += undecodable;
        self.fragments += fragments;
        self.dns_errors += dns_errors;
        self.http_errors += http_errors;
        self.reassembled += reassembled;
        self.evicted_conns += evicted_conns;
        self.defrag_dropped += defrag_dropped;
        self.h2c_upgrades += h2c_upgrades;
        self.duplicates += duplicates;
    }
}

/// Everything a dissection produced.
#[derive(Debug, Default)]
pub struct Output {
    /// API calls, in the order they completed.
    pub calls: Vec<Call>,
    /// TCP connections.
    pub conns: Vec<Conn>,
    /// Counters.
    pub stats: Stats,
}
