//! pcap/pcapng files from arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = remora_dissect::dissect_capture(data);
});
