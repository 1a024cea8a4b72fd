//! HTTP/1 parsers fed arbitrary bytes in arbitrary pieces, with gaps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::http1::{Parser, Role};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    for role in [Role::Request, Role::Response] {
        let mut p = Parser::new(role);
        p.pending_requests.extend([control & 1 == 1, false, true]);
        for (i, piece) in rest.chunks(usize::from(control % 31) + 1).enumerate() {
            if i % 7 == 6 {
                p.gap(i as i64, u64::from(piece[0]));
            } else {
                p.data(i as i64, piece);
            }
            if p.messages.len() > 64 {
                p.messages.clear();
            }
        }
        p.close(1);
    }
});
