//! IPv4/IPv6 fragment reassembly, bounded in size, count and time.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;

use crate::net;

pub(crate) type FragKey = (std::net::IpAddr, std::net::IpAddr, u8, u32);

struct Datagram {
    first_ns: i64,
    parts: BTreeMap<u32, Vec<u8>>,
    total: Option<u32>,
    bytes: usize,
}

/// IPv4/IPv6 fragment reassembly, bounded in size, count and time.
#[derive(Default)]
pub(crate) struct Defrag {
    pending: HashMap<FragKey, Datagram>,
}

/// Largest datagram put back together.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams in progress at once.
const MAX_DATAGRAMS: usize = 1024;
/// A datagram incomplete after this long is dropped.
const FRAG_TIMEOUT_NS: i64 = 30_000_000_000;

impl Defrag {
    /// Adds a fragment; returns the whole payload once every piece is there.
    pub(crate) fn add(
        &mut self,
        ts_ns: i64,
        key: FragKey,
        frag: net::Fragment,
        data: &[u8],
    ) -> Option<Vec<u8>> {
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_DATAGRAMS {
            return None;
        }
        let d = self.pending.entry(key).or_insert_with(|| Datagram {
            first_ns: ts_ns,
            parts: BTreeMap::new(),
            total: None,
            bytes: 0,
        });
        if !frag.more {
            d.total = Some(frag.offset + data.len() as u32);
        }
        if d.parts.insert(frag.offset, data.to_vec()).is_none() {
            d.bytes += data.len();
        }
        if d.bytes > MAX_DATAGRAM {
            self.pending.remove(&key);
            return None;
        }
        let total = d.total? as usize;
        // Complete when the pieces cover 0..total without a hole (overlaps: first copy wins).
        let mut out = vec![0u8; total];
        let mut covered = 0usize;
        for (&off, part) in &d.parts {
            let off = off as usize;
            if off > covered {
                return None;
            }
            let end = (off + part.len()).min(total);
            if end > covered {
                out[covered..end].copy_from_slice(&part[covered - off..end - off]);
                covered = end;
            }
        }
        if covered < total {
            return None;
        }
        self.pending.remove(&key);
        Some(out)
    }

    /// Drops datagrams that stayed incomplete too long; returns how many.
    pub(crate) fn expire(&mut self, now_ns: i64) -> u64 {
        let before = self.pending.len();
        self.pending
            .retain(|_, d| now_ns - d.first_ns <= FRAG_TIMEOUT_NS);
        (before - self.pending.len()) as u64
    }
}
