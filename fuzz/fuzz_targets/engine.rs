//! The whole engine on arbitrary packets: the input is a sequence of (u16 length, bytes)
//! records pushed as IP packets with increasing timestamps (and sometimes a claimed wire length
//! larger than the bytes, as after a snaplen cut). Reassembly, tunnels, defragmentation and
//! every dissector are reached from here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::Engine;

fuzz_target!(|data: &[u8]| {
    // Half the inputs also go through the copy detection the recorder's slices use.
    let mut engine = if data.first().is_some_and(|b| b & 1 == 1) {
        Engine::new().count_copies_once()
    } else {
        Engine::new()
    };
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
        at = end;
    }
    let out = engine.finish();
    std::hint::black_box(out.calls.len());
});
