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
///
/// The reader keeps its own window of the stream and hands out frames as slices of it: the
/// caller passes the file itself, not a `BufReader` (which would copy every frame once more,
/// and read its header in a 16-byte read of its own: reading the bench capture took 47 ms
/// that way against 39 ms, ~0.5% of its dissection; see docs/dissection.md).
pub struct CaptureReader<R> {
    r: R,
    format: Format,
    /// Bytes read and not yet handed out are `window[start..end]`.
    window: Vec<u8>,
    start: usize,
    end: usize,
    /// The stream has ended (a read returned 0).
    eof: bool,
    frames: u64,
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

/// Bytes asked of the stream at once: large reads, few system calls, and the window stays
/// small enough to sit in a core's cache while its frames are dissected.
const READ_BYTES: usize = 256 << 10;

impl<R: std::io::Read> CaptureReader<R> {
    /// Reads the file header.
    pub fn new(r: R) -> Result<Self, DissectError> {
        let mut reader = Self {
            r,
            format: Format::Pcapng {
                little: true,
                interfaces: Vec::new(),
            },
            window: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            frames: 0,
        };
        if !reader.fill(4)? {
            return Err(DissectError::Capture("empty file".into()));
        }
        let head = reader.peek::<4>(0);
        reader.format = match head {
            [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0xc3, 0xd4]
            | [0x4d, 0x3c, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d] => {
                let little = matches!(head[0], 0xd4 | 0x4d);
                let nanos = u32_of(&head, little) == 0xa1b2_3c4d;
                if !reader.fill(24)? {
                    return Err(DissectError::Capture("pcap header truncated".into()));
                }
                let linktype = u32_of(&reader.peek::<4>(20), little) & 0x0FFF_FFFF;
                reader.start += 24;
                Format::Pcap {
                    little,
                    nanos,
                    linktype,
                }
            }
            // The section header block is read as any block, by `next_pcapng`.
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

    /// Makes `n` bytes available at `start`, reading as needed; `false` when the stream ends
    /// first.
    fn fill(&mut self, n: usize) -> Result<bool, DissectError> {
        while self.end - self.start < n {
            if self.eof {
                return Ok(false);
            }
            // Move what is left to the front, and make room for `n` and a large read.
            if self.start > 0 {
                self.window.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let want = n.max(READ_BYTES);
            if self.window.len() < want {
                self.window.resize(want, 0);
            }
            match self.r.read(&mut self.window[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(got) => self.end += got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DissectError::Capture(e.to_string())),
            }
        }
        Ok(true)
    }

    /// `N` bytes at `start + at`; the caller has made them available.
    fn peek<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.window[self.start + at..self.start + at + N]);
        out
    }

    /// The next frame and its bytes (valid until the next call), or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<(FrameInfo, &[u8])>, DissectError> {
        match self.format {
            Format::Pcap {
                little,
                nanos,
                linktype,
            } => {
                if !self.fill(16)? {
                    return Ok(None);
                }
                let h = self.peek::<16>(0);
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
                if !self.fill(16 + incl)? {
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
                let at = self.start + 16;
                self.start = at + incl;
                Ok(Some((info, &self.window[at..at + incl])))
            }
            Format::Pcapng { .. } => self.next_pcapng(),
        }
    }

    fn next_pcapng(&mut self) -> Result<Option<(FrameInfo, &[u8])>, DissectError> {
        loop {
            // Block type and length; a section header says its byte order after them.
            if !self.fill(8)? {
                return Ok(None);
            }
            let kind_bytes = self.peek::<4>(0);
            if kind_bytes == [0x0a, 0x0d, 0x0d, 0x0a] {
                if !self.fill(12)? {
                    return Ok(None);
                }
                let order = self.peek::<4>(8);
                if let Format::Pcapng { little, interfaces } = &mut self.format {
                    *little = order == [0x4d, 0x3c, 0x2b, 0x1a];
                    interfaces.clear();
                }
            }
            let Format::Pcapng { little, .. } = self.format else {
                return Ok(None);
            };
            let kind = u32_of(&kind_bytes, little);
            let len = u32_of(&self.peek::<4>(4), little) as usize;
            let consumed = if kind == 0x0A0D_0D0A { 12 } else { 8 };
            if !(12..=MAX_BLOCK).contains(&len) || len < consumed {
                return Err(DissectError::Capture(format!(
                    "pcapng block of {len} bytes: the file is damaged"
                )));
            }
            if !self.fill(len)? {
                return Ok(None);
            }
            let at = self.start + consumed;
            self.start += len;
            let b = &self.window[at..at + len - consumed];
            let Format::Pcapng { interfaces, .. } = &mut self.format else {
                return Ok(None);
            };
            // The frame's place in the window, if this block holds one.
            let found = match kind {
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
                    None
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
                    (20 + incl <= b.len()).then(|| {
                        let info = FrameInfo {
                            // A hostile timestamp must not overflow.
                            ts_ns: (raw as i64).saturating_mul(unit),
                            linktype,
                            orig_len: orig,
                        };
                        (info, at + 20..at + 20 + incl)
                    })
                }
                3 if b.len() >= 4 => {
                    let orig = u32_of(&b[0..4], little);
                    let incl = (orig as usize).min(b.len().saturating_sub(8));
                    let (linktype, _) = interfaces.first().copied().unwrap_or((1, 1000));
                    let info = FrameInfo {
                        ts_ns: 0,
                        linktype,
                        orig_len: orig,
                    };
                    Some((info, at + 4..at + 4 + incl))
                }
                _ => None,
            };
            if let Some((info, frame)) = found {
                self.frames += 1;
                return Ok(Some((info, &self.window[frame])));
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

    /// A stream that hands out at most `step` bytes per read, as a pipe or a socket may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Frames that straddle the reader's window, one larger than a whole read, and reads of
    /// any size: the same frames as from the bytes in memory, and a record cut short ends the
    /// stream without an error.
    #[test]
    fn frames_are_the_same_whatever_the_reads() {
        let mut file = vec![0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&101u32.to_le_bytes());
        let mut want = Vec::new();
        for i in 0..400usize {
            let len = match i {
                7 => READ_BYTES + 12_345,
                _ => (i * 7919) % 3000,
            };
            let frame: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
            file.extend_from_slice(&(i as u32).to_le_bytes());
            file.extend_from_slice(&(i as u32 * 3).to_le_bytes());
            file.extend_from_slice(&(len as u32).to_le_bytes());
            file.extend_from_slice(&(len as u32 + 4).to_le_bytes());
            file.extend_from_slice(&frame);
            want.push((i as i64 * 1_000_000_000 + i as i64 * 3, frame));
        }
        let whole = file.len();
        // A header whose record is cut short.
        file.extend_from_slice(&[9; 8]);
        file.extend_from_slice(&100u32.to_le_bytes());
        file.extend_from_slice(&100u32.to_le_bytes());
        file.extend_from_slice(&[1, 2, 3]);
        for step in [1, 7, 4096, READ_BYTES - 1, usize::MAX] {
            let mut reader = CaptureReader::new(Trickle { data: &file, step }).unwrap();
            let mut got = Vec::new();
            while let Some((info, data)) = reader.next_frame().unwrap() {
                assert_eq!(info.linktype, 101);
                assert_eq!(info.orig_len as usize, data.len() + 4);
                got.push((info.ts_ns, data.to_vec()));
            }
            assert_eq!(got, want, "reads of {step} bytes");
        }
        let got = frames(&file[..whole]).unwrap();
        assert_eq!(got.len(), want.len());
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
        let mut reader = CaptureReader::new(Trickle {
            data: &file,
            step: 5,
        })
        .unwrap();
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
