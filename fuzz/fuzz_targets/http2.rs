//! HTTP/2 framing and HPACK on arbitrary bytes, both directions interleaved.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::{hpack, http2};

fuzz_target!(|data: &[u8]| {
    // Whatever the block, what it decodes to stays within the header-list bound.
    if let Ok(decoded) = hpack::Decoder::default().decode_bounded(data) {
        let kept: usize = decoded.fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert!(kept <= hpack::MAX_HEADER_LIST);
    }
    let Some((&control, rest)) = data.split_first() else { return };
    let mut conn = http2::Conn::new(usize::from(control & 1), control & 2 == 2);
    for (i, piece) in rest.chunks(usize::from(control >> 2) + 1).enumerate() {
        conn.data(i % 2, i as i64, piece);
        // Bounded by its parts' limits: two 16 MiB frame buffers, a 256 KiB block, two 64 KiB
        // tables, 256 open streams of at most 2 x (64 KiB preview + 2 x 256 KiB of fields).
        assert!(conn.buffered() < 400 << 20, "{} bytes held", conn.buffered());
        if conn.done.len() > 64 {
            conn.done.clear();
        }
    }
    conn.close();
});
