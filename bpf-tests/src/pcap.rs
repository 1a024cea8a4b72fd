//! A minimal reader of classic pcap files (what `tcpdump -w` writes), to compare bytes and
//! timestamps exactly. Header fields are also cross-checked with tshark in the tests.

use std::path::Path;

/// One captured frame.
#[derive(Debug, Clone)]
pub struct PcapRecord {
    /// Capture time, ns since the epoch.
    pub ts_ns: i64,
    /// Frame length on the wire.
    pub orig_len: u32,
    /// Captured bytes (link header included).
    pub data: Vec<u8>,
}

/// Reads a little-endian pcap with micro- or nanosecond timestamps.
pub fn read_pcap(path: &Path) -> Vec<PcapRecord> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(bytes.len() >= 24, "{} is not a pcap file", path.display());
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let scale = match u32_at(0) {
        0xa1b2_c3d4 => 1_000,
        0xa1b2_3c4d => 1,
        magic => panic!("unsupported pcap magic {magic:#x} in {}", path.display()),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let secs = i64::from(u32_at(at));
        let frac = i64::from(u32_at(at + 4));
        let incl = u32_at(at + 8) as usize;
        let orig_len = u32_at(at + 12);
        let Some(data) = bytes.get(at + 16..at + 16 + incl) else {
            break; // a truncated last record (tcpdump killed mid-write)
        };
        out.push(PcapRecord {
            ts_ns: secs * 1_000_000_000 + frac * scale,
            orig_len,
            data: data.to_vec(),
        });
        at += 16 + incl;
    }
    out
}
