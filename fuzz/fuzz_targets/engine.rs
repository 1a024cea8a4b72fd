//! The whole engine on arbitrary packets: the input is a sequence of (u16 length, bytes)
//! records pushed as IP packets with increasing timestamps (and sometimes a claimed wire length
//! larger than the bytes, as after a snaplen cut). Reassembly, tunnels, defragmentation and
//! every dissector are reached from here.
//!
//! Inputs that count copies once are also dissected by the sharded path the recorder's slices
//! take (`Sharded::counting_copies_once`: the router drops copies and joins NAT views), whose
//! rows and copy count must be one engine's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::{Engine, Limits, Output, Sharded};

/// Rows in an order that does not depend on the shards.
fn sorted(out: &Output) -> (Vec<String>, Vec<String>, u64) {
    let mut calls: Vec<String> = out.calls.iter().map(|c| format!("{c:?}")).collect();
    let mut conns: Vec<String> = out.conns.iter().map(|c| format!("{c:?}")).collect();
    calls.sort();
    conns.sort();
    (calls, conns, out.stats.duplicates)
}

fuzz_target!(|data: &[u8]| {
    // Half the inputs also go through the copy detection the recorder's slices use.
    let copies = data.first().is_some_and(|b| b & 1 == 1);
    let mut engine = if copies {
        Engine::new().count_copies_once()
    } else {
        Engine::new()
    };
    let mut sharded = copies.then(|| Sharded::counting_copies_once(Limits::default()));
    let mut at = 0usize;
    let mut ts = 0i64;
    while at + 3 <= data.len() {
        let len = usize::from(u16::from_le_bytes([data[at], data[at + 1]])) % 2048;
        let extra = u32::from(data[at + 2]);
        at += 3;
        let end = (at + len).min(data.len());
        let pkt = &data[at..end];
        ts += i64::from(extra) * 10_000_000;
        engine.push(ts, pkt, pkt.len() as u32 + extra * 3);
        if let Some(s) = sharded.as_mut() {
            s.push(ts, pkt, pkt.len() as u32 + extra * 3);
        }
        at = end;
    }
    let out = engine.finish();
    if let Some(s) = sharded {
        assert_eq!(sorted(&out), sorted(&s.finish()));
    }
    std::hint::black_box(out.calls.len());
});
