//! DNS messages and TLS hellos from arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remora_dissect::{dns, tls};

fuzz_target!(|data: &[u8]| {
    let _ = dns::parse(data);
    let mut c = tls::Collector::default();
    for piece in data.chunks(7) {
        let _ = c.data(piece);
    }
    let mut whole = tls::Collector::default();
    let _ = whole.data(data);
});
