//! HTTP/2 framing and HPACK on arbitrary bytes, both directions interleaved.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::{hpack, http2};

fuzz_target!(|data: &[u8]| {
    let _ = hpack::Decoder::default().decode(data);
    let Some((&control, rest)) = data.split_first() else { return };
    let mut conn = http2::Conn::new(usize::from(control & 1), control & 2 == 2);
    for (i, piece) in rest.chunks(usize::from(control >> 2) + 1).enumerate() {
        conn.data(i % 2, i as i64, piece);
        if conn.done.len() > 64 {
            conn.done.clear();
        }
    }
    conn.close();
});
