//! Capture files as bytes: classic pcap (both byte orders, µs or ns) and pcapng (SHB, IDB, EPB,
//! SPB), turned into frames with their link type. Pure: the caller reads the file.

use crate::error::DissectError;

/// Where and when a frame was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: i64,
    /// Link type (`LINKTYPE_*`).
    pub linktype: u32,
    /// Length on the wire.
    pub orig_len: u32,
}

enum Format {
    Pcap {
        little: bool,
        nanos: bool,
        linktype: u32,
    },
    Pcapng {
        little: bool,
        interfaces: Vec<(u32, i64)>,
    },
}

/// Reads a pcap or pcapng stream one frame at a time, so memory does not grow with the file.
/// A truncated last record ends the stream (what came before is kept).
pub struct CaptureReader<R> {
    r: R,
    format: Format,
    block: Vec<u8>,
    frames: u64,
    /// The first block's type (the pcapng magic), read by [`CaptureReader::new`] to tell the
    /// formats apart, and not yet handed to the block reader.
    carry: Option<[u8; 4]>,
}

fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> Result<bool, DissectError> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DissectError::Capture(e.to_string())),
        }
    }
    Ok(true)
}

fn u32_of(b: &[u8], little: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if little {
        u32::from_le_bytes(a)
    } else {
        u32::from_be_bytes(a)
    }
}

/// Blocks larger than this are not a sane capture (pcapng blocks hold one packet).
const MAX_BLOCK: usize = 16 << 20;

impl<R: std::io::Read> CaptureReader<R> {
    /// Reads the file header.
    pub fn new(mut r: R) -> Result<Self, DissectError> {
        let mut head = [0u8; 4];
        if !read_full(&mut r, &mut head)? {
            return Err(DissectError::Capture("empty file".into()));
        }
        let format = match head {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                let little = matches!(head[0], 0xd4 | 0x4d);
                let nanos = u32_of(&head, little) == 0xa1b2_3c4d;
                let mut rest = [0u8; 20];
                if !read_full(&mut r, &mut rest)? {
                    return Err(DissectError::Capture("pcap header truncated".into()));
                }
                Format::Pcap {
                    little,
                    nanos,
                    linktype: u32_of(&rest[16..20], little) & 0x0FFF_FFFF,
                }
            }
            [0x0a, 0x0d, 0x0d, 0x0a] => Format::Pcapng {
                little: true,
                interfaces: Vec::new(),
            },
            _ => {
                return Err(DissectError::Capture(
                    "not a pcap or pcapng file (unknown magic)".into(),
                ));
            }
        };
        let mut reader = Self {
            r,
            format,
            block: Vec::new(),
            frames: 0,
            carry: None,
        };
        if matches!(reader.format, Format::Pcapng { .. }) {
            reader.carry = Some(head);
        }
        Ok(reader)
    }

    /// Frames read so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// The underlying reader.
    pub fn inner(&self) -> &R {
        &self.r
    }

    /// The next frame and its bytes (valid until the next call), or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<(FrameInfo, &[u8])>, DissectError> {
        match self.format {
            Format::Pcap {
                little,
                nanos,
                linktype,
            } => {
                let mut h = [0u8; 16];
                if !read_full(&mut self.r, &mut h)? {
                    return Ok(None);
                }
                let (secs, frac) = (u32_of(&h[0..4], little), u32_of(&h[4..8], little));
                let (incl, orig) = (
                    u32_of(&h[8..12], little) as usize,
                    u32_of(&h[12..16], little),
                );
                if incl > MAX_BLOCK {
                    return Err(DissectError::Capture(format!(
                        "record of {incl} bytes: the file is damaged"
                    )));
                }
                self.block.resize(incl, 0);
                if !read_full(&mut self.r, &mut self.block)? {
                    return Ok(None);
                }
                let frac_ns = if nanos {
                    i64::from(frac)
                } else {
                    i64::from(frac) * 1000
                };
                self.frames += 1;
                let info = FrameInfo {
                    ts_ns: i64::from(secs) * 1_000_000_000 + frac_ns,
                    linktype,
                    orig_len: orig,
                };
                Ok(Some((info, &self.block)))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<(FrameInfo, &[u8])>, DissectError> {
        loop {
            // Block type and length (the first SHB's type bytes were read by `new`).
            let mut head = [0u8; 12];
            let have = match self.carry.take() {
                Some(magic) => {
                    head[..4].copy_from_slice(&magic);
                    4
                }
                None => 0,
            };
            self.block.clear();
            if !read_full(&mut self.r, &mut head[have..8])? {
                return Ok(None);
            }
            let Format::Pcapng { little, interfaces } = &mut self.format else {
                return Ok(None);
            };
            if head[..4] == [0x0a, 0x0d, 0x0d, 0x0a] {
                if !read_full(&mut self.r, &mut head[8..12])? {
                    return Ok(None);
                }
                *little = head[8..12] == [0x4d, 0x3c, 0x2b, 0x1a];
                interfaces.clear();
            }
            let little = *little;
            let kind = u32_of(&head[0..4], little);
            let len = u32_of(&head[4..8], little) as usize;
            let consumed = if kind == 0x0A0D_0D0A { 12 } else { 8 };
            if !(12..=MAX_BLOCK).contains(&len) || len < consumed {
                return Err(DissectError::Capture(format!(
                    "pcapng block of {len} bytes: the file is damaged"
                )));
            }
            self.block.resize(len - consumed, 0);
            if !read_full(&mut self.r, &mut self.block)? {
                return Ok(None);
            }
            let b = &self.block;
            let Format::Pcapng { interfaces, .. } = &mut self.format else {
                return Ok(None);
            };
            match kind {
                1 if b.len() >= 8 => {
                    let linktype = if little {
                        u16::from_le_bytes([b[0], b[1]])
                    } else {
                        u16::from_be_bytes([b[0], b[1]])
                    };
                    let reader = Reader { bytes: b, little };
                    interfaces.push((
                        u32::from(linktype),
                        if_ts_unit(&reader, 8, b.len().saturating_sub(4)),
                    ));
                }
                6 if b.len() >= 20 => {
                    let (iface, hi, lo) = (
                        u32_of(&b[0..4], little),
                        u32_of(&b[4..8], little),
                        u32_of(&b[8..12], little),
                    );
                    let (incl, orig) = (
                        u32_of(&b[12..16], little) as usize,
                        u32_of(&b[16..20], little),
                    );
                    let (linktype, unit) =
                        interfaces.get(iface as usize).copied().unwrap_or((1, 1000));
                    let raw = (u64::from(hi) << 32) | u64::from(lo);
                    if 20 + incl <= b.len() {
                        self.frames += 1;
                        let info = FrameInfo {
                            // A hostile timestamp must not overflow.
                            ts_ns: (raw as i64).saturating_mul(unit),
                            linktype,
                            orig_len: orig,
                        };
                        return Ok(Some((info, &self.block[20..20 + incl])));
                    }
                }
                3 if b.len() >= 4 => {
                    let orig = u32_of(&b[0..4], little);
                    let incl = (orig as usize).min(b.len().saturating_sub(8));
                    let (linktype, _) = interfaces.first().copied().unwrap_or((1, 1000));
                    self.frames += 1;
                    let info = FrameInfo {
                        ts_ns: 0,
                        linktype,
                        orig_len: orig,
                    };
                    return Ok(Some((info, &self.block[4..4 + incl])));
                }
                _ => {}
            }
        }
    }
}

/// Reads every frame of a capture held in memory (tests and small files).
pub fn frames(file: &[u8]) -> Result<Vec<(FrameInfo, Vec<u8>)>, DissectError> {
    let mut reader = CaptureReader::new(file)?;
    let mut out = Vec::new();
    while let Some((info, data)) = reader.next_frame()? {
        out.push((info, data.to_vec()));
    }
    Ok(out)
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
        assert_eq!(got[0].0.ts_ns, 10_000_005_000);
        assert_eq!(l3_of(1, &got[0].1), Some(&[0x45, 0][..]));
        assert!(frames(b"nope").is_err());
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    /// A pcapng stream read block by block: the section header, an interface, two packets.
    #[test]
    fn reads_pcapng_block_by_block() {
        let mut shb = 0x1A2B_3C4Du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut file = block(0x0A0D_0D0A, &shb);
        let mut idb = 1u16.to_le_bytes().to_vec(); // Ethernet
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&65535u32.to_le_bytes());
        file.extend(block(1, &idb));
        for (i, payload) in [[0x45u8, 0, 0, 0], [0x60, 0, 0, 0]].iter().enumerate() {
            let mut frame = vec![0u8; 12];
            frame.extend_from_slice(&[0x08, 0x00]);
            frame.extend_from_slice(payload);
            let micros = 1_700_000_000_000_000u64 + i as u64;
            let mut epb = 0u32.to_le_bytes().to_vec();
            epb.extend_from_slice(&((micros >> 32) as u32).to_le_bytes());
            epb.extend_from_slice(&(micros as u32).to_le_bytes());
            epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(frame.len() as u32 + 100).to_le_bytes());
            epb.extend_from_slice(&frame);
            epb.extend_from_slice(&[0, 0]); // pad to 32 bits
            file.extend(block(6, &epb));
        }
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        let mut got = Vec::new();
        while let Some((info, data)) = reader.next_frame().unwrap() {
            got.push((info.ts_ns, info.orig_len, data.to_vec()));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 1_700_000_000_000_000_000);
        assert_eq!(got[1].0, 1_700_000_000_000_001_000);
        assert_eq!(got[0].1, 118);
        assert_eq!(l3_of(1, &got[1].2), Some(&[0x60, 0, 0, 0][..]));
        assert_eq!(reader.frames(), 2);
    }
}
