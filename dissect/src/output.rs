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

/// Rows an engine's output buffers keep room for once they are taken, at most. A shard's
/// usual epoch (a hundred rows or so) then reuses its buffer from one epoch to the next: grown
/// afresh every epoch, the buffers cost a copy of every row at each doubling and fresh pages
/// for the kernel to zero (~1.5% of a one-core profile). A burst's larger buffer is given back.
pub(crate) const KEPT_ROWS: usize = 256;

/// Finished rows taken from engines, shard after shard: each engine's list is moved here whole,
/// so no row is copied on its way to the tables. A row is several hundred bytes; copying an
/// epoch's rows into one list cost 2.2% of a one-core run's instructions, and as much memory
/// traffic as writing them (docs/dissection.md, "Rows moved, not copied").
///
/// Once the rows are written, [`TakenRows::clear`] keeps each emptied list for the engine it
/// came from (its *slot*), which gets it back with [`crate::ShardRange::give_back`], so that
/// no memory is allocated for rows once the lists have grown to an epoch's size. Each list goes
/// back to its own engine, and only after its rows are written: shared among the engines,
/// every list grew to the busiest engine's size; swapped for a spare at once, every engine held
/// two; either way the peak rose by 8–10 MiB.
#[derive(Debug, Default)]
pub struct TakenRows {
    calls: Vec<(usize, Vec<Call>)>,
    conns: Vec<(usize, Vec<Conn>)>,
    /// By slot: the list that slot gave last, emptied by [`TakenRows::clear`].
    spare_calls: Vec<Vec<Call>>,
    spare_conns: Vec<Vec<Conn>>,
}

impl TakenRows {
    /// No rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the rows in `calls` and `conns`, the output of the engine in `slot`, leaving
    /// them empty (with the lists this slot gave before, when they were not given back).
    pub(crate) fn take_from(&mut self, slot: usize, calls: &mut Vec<Call>, conns: &mut Vec<Conn>) {
        if !calls.is_empty() {
            let spare = spare(&mut self.spare_calls, slot);
            self.calls.push((slot, std::mem::replace(calls, spare)));
        }
        if !conns.is_empty() {
            let spare = spare(&mut self.spare_conns, slot);
            self.conns.push((slot, std::mem::replace(conns, spare)));
        }
    }

    /// Takes everything `output` holds; its counters are returned.
    pub fn take_output(&mut self, slot: usize, mut output: Output) -> Stats {
        self.take_from(slot, &mut output.calls, &mut output.conns);
        output.stats
    }

    /// The calls, in the order they were taken.
    pub fn calls(&self) -> impl Iterator<Item = &Call> + Clone {
        self.calls.iter().flat_map(|(_, list)| list)
    }

    /// The connections, in the order they were taken.
    pub fn conns(&self) -> impl Iterator<Item = &Conn> + Clone {
        self.conns.iter().flat_map(|(_, list)| list)
    }

    /// How many calls.
    pub fn calls_len(&self) -> usize {
        self.calls.iter().map(|(_, list)| list.len()).sum()
    }

    /// How many connections.
    pub fn conns_len(&self) -> usize {
        self.conns.iter().map(|(_, list)| list.len()).sum()
    }

    /// Neither calls nor connections.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.conns.is_empty()
    }

    /// Drops the rows; their lists are kept, emptied, for the engines to fill again.
    pub fn clear(&mut self) {
        recycle(&mut self.calls, &mut self.spare_calls);
        recycle(&mut self.conns, &mut self.spare_conns);
    }

    /// Emptied lists kept for their engines, not yet given back.
    #[cfg(test)]
    pub(crate) fn spare_lists(&self) -> usize {
        fn kept<T>(spares: &[Vec<T>]) -> usize {
            spares.iter().filter(|l| l.capacity() > 0).count()
        }
        kept(&self.spare_calls) + kept(&self.spare_conns)
    }

    /// The emptied lists of `slot`, to give back to its engine (empty ones when it has none).
    pub(crate) fn spares_of(&mut self, slot: usize) -> (Vec<Call>, Vec<Conn>) {
        (
            spare(&mut self.spare_calls, slot),
            spare(&mut self.spare_conns, slot),
        )
    }

    /// Moves every row to the end of `calls` and `conns`, in order; the lists are kept, as
    /// [`TakenRows::clear`] keeps them.
    pub fn move_into(&mut self, calls: &mut Vec<Call>, conns: &mut Vec<Conn>) {
        calls.reserve(self.calls_len());
        for (_, list) in &mut self.calls {
            calls.append(list);
        }
        conns.reserve(self.conns_len());
        for (_, list) in &mut self.conns {
            conns.append(list);
        }
        self.clear();
    }
}

/// The spare list of `slot` (an empty one when it has none).
fn spare<T>(spares: &mut [Vec<T>], slot: usize) -> Vec<T> {
    spares.get_mut(slot).map(std::mem::take).unwrap_or_default()
}

/// Empties `lists` into the spares of their slots, each list cleared and its room cut to
/// [`KEPT_ROWS`] (a burst, one busy DNS flow or a second of closing connections, must not pin
/// its buffer for the rest of the run: 64 shards once kept 56 MiB of empty rows).
fn recycle<T>(lists: &mut Vec<(usize, Vec<T>)>, spares: &mut Vec<Vec<T>>) {
    for (slot, mut list) in lists.drain(..) {
        list.clear();
        list.shrink_to(KEPT_ROWS);
        if spares.len() <= slot {
            spares.resize_with(slot + 1, Vec::new);
        }
        spares[slot] = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Endpoint;

    fn call(n: u16) -> Call {
        let end = |port| Endpoint {
            ip: "198.18.0.1".parse().expect("address"),
            port,
        };
        Call::new("HTTP", end(n), end(80))
    }

    #[test]
    fn rows_keep_their_order_and_lists_go_back_to_their_slot() {
        let mut taken = TakenRows::new();
        let mut a = Vec::with_capacity(8);
        a.extend([call(1), call(2)]);
        let mut b = vec![call(3)];
        let mut no_conns = Vec::new();
        taken.take_from(0, &mut a, &mut no_conns);
        taken.take_from(1, &mut Vec::new(), &mut no_conns);
        taken.take_from(2, &mut b, &mut no_conns);
        assert!(a.is_empty() && b.is_empty());
        let ports: Vec<u16> = taken.calls().map(|c| c.src.port).collect();
        assert_eq!(ports, [1, 2, 3]);
        assert_eq!((taken.calls_len(), taken.conns_len()), (3, 0));
        taken.clear();
        assert!(taken.is_empty());
        assert_eq!(taken.spares_of(1).0.capacity(), 0, "slot 1 gave nothing");
        // Slot 0 gets its own list back (room for 8), slot 2 its own (room for 1).
        let mut c = vec![call(4)];
        taken.take_from(0, &mut c, &mut no_conns);
        assert_eq!(c.capacity(), 8);
        let mut d = vec![call(5)];
        taken.take_from(2, &mut d, &mut no_conns);
        assert_eq!(d.capacity(), 1);
        let (mut calls, mut conns) = (vec![call(0)], Vec::new());
        taken.move_into(&mut calls, &mut conns);
        let ports: Vec<u16> = calls.iter().map(|c| c.src.port).collect();
        assert_eq!(ports, [0, 4, 5]);
        assert!(taken.is_empty());
    }

    #[test]
    fn a_burst_gives_its_room_back() {
        let mut taken = TakenRows::new();
        let mut burst: Vec<Call> = (0..2 * KEPT_ROWS as u16).map(call).collect();
        taken.take_from(3, &mut burst, &mut Vec::new());
        taken.clear();
        assert!(taken.spare_calls[3].capacity() <= KEPT_ROWS);
    }
}
