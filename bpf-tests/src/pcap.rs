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

/// A classic pcap (microsecond timestamps, link type RAW: each frame starts at its IPv4
/// header), built in memory: how the tests make captures no real peer would send.
pub struct PcapWriter {
    /// The file's bytes so far.
    pub bytes: Vec<u8>,
}

impl Default for PcapWriter {
    fn default() -> Self {
        let mut bytes = Vec::new();
        for field in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 101] {
            bytes.extend_from_slice(&field.to_le_bytes());
        }
        // Version 2.4 is two u16s, written above as one u32: major 2 (low half), minor 4.
        bytes[4..8].copy_from_slice(&[2, 0, 4, 0]);
        Self { bytes }
    }
}

impl PcapWriter {
    /// Appends one IPv4/TCP segment.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        ts_us: u64,
        (src, sport): ([u8; 4], u16),
        (dst, dport): ([u8; 4], u16),
        seq: u32,
        ack: u32,
        flags: u8,
        payload: &[u8],
    ) {
        let total = 40 + payload.len();
        let mut frame = Vec::with_capacity(total);
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(total.min(0xffff) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&dst);
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        frame.extend_from_slice(&ack.to_be_bytes());
        frame.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        frame.extend_from_slice(payload);
        for field in [
            (ts_us / 1_000_000) as u32,
            (ts_us % 1_000_000) as u32,
            frame.len() as u32,
            frame.len() as u32,
        ] {
            self.bytes.extend_from_slice(&field.to_le_bytes());
        }
        self.bytes.extend_from_slice(&frame);
    }
}
