//! Capture files as bytes: classic pcap (both byte orders, µs or ns) and pcapng (SHB, IDB, EPB,
//! SPB), turned into frames with their link type. Pure: the caller reads the file.

use crate::error::DissectError;

/// One frame of a capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Link type (`LINKTYPE_*`) of the interface it was captured on.
    pub linktype: u32,
    /// Length on the wire.
    pub orig_len: u32,
    /// Captured bytes.
    pub data: &'a [u8],
}

/// Reads every frame of a pcap or pcapng file held in memory.
pub fn frames(file: &[u8]) -> Result<Vec<Frame<'_>>, DissectError> {
    match file.get(..4) {
        Some(
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d],
        ) => pcap(file),
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => pcapng(file),
        _ => Err(DissectError::Capture(
            "not a pcap or pcapng file (unknown magic)".into(),
        )),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    little: bool,
}

impl Reader<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.bytes.get(at..at + 2)?.try_into().ok()?;
        Some(if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.bytes.get(at..at + 4)?.try_into().ok()?;
        Some(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }
}

fn pcap(file: &[u8]) -> Result<Vec<Frame<'_>>, DissectError> {
    let little = matches!(file[0], 0xd4 | 0x4d);
    let r = Reader {
        bytes: file,
        little,
    };
    let magic = r.u32(0).unwrap_or(0);
    let nanos = magic == 0xa1b2_3c4d;
    let linktype = r
        .u32(20)
        .ok_or_else(|| DissectError::Capture("pcap header truncated".into()))?
        & 0x0FFF_FFFF;
    let mut out = Vec::new();
    let mut at = 24;
    while let (Some(secs), Some(frac), Some(incl), Some(orig)) =
        (r.u32(at), r.u32(at + 4), r.u32(at + 8), r.u32(at + 12))
    {
        let Some(data) = file.get(at + 16..at + 16 + incl as usize) else {
            break; // truncated last record: keep what came before
        };
        let frac_ns = if nanos {
            i64::from(frac)
        } else {
            i64::from(frac) * 1000
        };
        out.push(Frame {
            ts_ns: i64::from(secs) * 1_000_000_000 + frac_ns,
            linktype,
            orig_len: orig,
            data,
        });
        at += 16 + incl as usize;
    }
    Ok(out)
}

fn pcapng(file: &[u8]) -> Result<Vec<Frame<'_>>, DissectError> {
    // (link type, ns per timestamp unit) per interface of the current section.
    let mut interfaces: Vec<(u32, i64)> = Vec::new();
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut r = Reader {
        bytes: file,
        little: true,
    };
    while at + 12 <= file.len() {
        if file.get(at..at + 4) == Some(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            r.little = file.get(at + 8..at + 12) == Some(&[0x4d, 0x3c, 0x2b, 0x1a]);
            interfaces.clear();
        }
        let kind = r.u32(at).unwrap_or(0);
        let len = r.u32(at + 4).unwrap_or(0) as usize;
        if len < 12 || at + len > file.len() {
            break;
        }
        let body = at + 8;
        match kind {
            1 => {
                let linktype = u32::from(r.u16(body).unwrap_or(0));
                interfaces.push((linktype, if_ts_unit(&r, body + 8, at + len - 4)));
            }
            6 => {
                let (Some(iface), Some(hi), Some(lo), Some(incl), Some(orig)) = (
                    r.u32(body),
                    r.u32(body + 4),
                    r.u32(body + 8),
                    r.u32(body + 12),
                    r.u32(body + 16),
                ) else {
                    break;
                };
                let (linktype, unit) = interfaces.get(iface as usize).copied().unwrap_or((1, 1000));
                let raw = (u64::from(hi) << 32) | u64::from(lo);
                if let Some(data) = file.get(body + 20..body + 20 + incl as usize) {
                    out.push(Frame {
                        ts_ns: raw as i64 * unit,
                        linktype,
                        orig_len: orig,
                        data,
                    });
                }
            }
            3 => {
                let orig = r.u32(body).unwrap_or(0);
                let incl = (orig as usize).min(len.saturating_sub(16));
                let (linktype, _) = interfaces.first().copied().unwrap_or((1, 1000));
                if let Some(data) = file.get(body + 4..body + 4 + incl) {
                    out.push(Frame {
                        ts_ns: 0,
                        linktype,
                        orig_len: orig,
                        data,
                    });
                }
            }
            _ => {}
        }
        at += len;
    }
    Ok(out)
}

/// The `if_tsresol` option of an IDB: nanoseconds per timestamp unit (default µs).
fn if_ts_unit(r: &Reader<'_>, mut at: usize, end: usize) -> i64 {
    while at + 4 <= end {
        let (Some(code), Some(len)) = (r.u16(at), r.u16(at + 2)) else {
            break;
        };
        if code == 0 {
            break;
        }
        if code == 9 && len >= 1 {
            let v = r.bytes.get(at + 4).copied().unwrap_or(6);
            return if v & 0x80 == 0 {
                10i64.pow(9u32.saturating_sub(u32::from(v)).min(9))
            } else {
                1 // powers of two: rare; treat as ns
            };
        }
        at += 4 + usize::from(len).div_ceil(4) * 4;
    }
    1000
}

/// The IP packet inside a frame: strips Ethernet (with VLAN tags), BSD loopback, Linux cooked
/// (SLL, SLL2) and raw-IP link headers. `None` for non-IP frames.
pub fn l3_of(linktype: u32, data: &[u8]) -> Option<&[u8]> {
    let (mut ethertype_at, mut l3_at) = match linktype {
        1 => (12, 14), // Ethernet
        0 | 108 => {
            return data
                .get(4..)
                .filter(|d| matches!(d.first().map(|b| b >> 4), Some(4 | 6)));
        } // BSD loopback
        101 | 12 | 14 | 228 | 229 => return Some(data), // raw IPv4/IPv6
        113 => (14, 16), // Linux SLL
        276 => (0, 20), // Linux SLL2
        _ => return None,
    };
    loop {
        let ethertype =
            u16::from_be_bytes(data.get(ethertype_at..ethertype_at + 2)?.try_into().ok()?);
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => {
                ethertype_at += 4;
                l3_at += 4;
            }
            0x0800 | 0x86dd => return data.get(l3_at..),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_classic_pcap_and_strips_vlans() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        file.extend_from_slice(&65535u32.to_le_bytes());
        file.extend_from_slice(&1u32.to_le_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00, 0x45, 0]);
        file.extend_from_slice(&10u32.to_le_bytes());
        file.extend_from_slice(&5u32.to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        file.extend_from_slice(&frame);
        file.extend_from_slice(&[1, 2, 3]); // truncated trailing record
        let got = frames(&file).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ts_ns, 10_000_005_000);
        assert_eq!(l3_of(1, got[0].data), Some(&[0x45, 0][..]));
        assert!(frames(b"nope").is_err());
    }
}
