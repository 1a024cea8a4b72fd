//! HPACK header block decoding (RFC 7541), one decoder per direction of a connection.
//!
//! Owned here rather than taken whole from a crate: the decoder must be bounded and panic-free
//! on hostile input, and the crates' Huffman decoders were the slowest part of HTTP/2 dissection
//! (see huffman.rs).

use std::collections::VecDeque;

use crate::huffman;

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// Largest dynamic table accepted. Peers use 4 KiB unless SETTINGS raise it, and common
/// servers allow at most 64 KiB; a bigger size update is an attack on the decoder's memory.
pub const MAX_TABLE: usize = 64 << 10;

/// Most decoded bytes kept from one header block, counted as SETTINGS_MAX_HEADER_LIST_SIZE
/// counts them (name + value + 32 per field). A block may refer to one large table entry many
/// times, one byte each: without this bound 256 KiB of block could decode to gigabytes. Fields
/// past it are decoded (the table must stay in step) but not kept. Servers refuse far less
/// (Envoy 60 KiB, nginx 32 KiB); 256 KiB keeps every real header list.
pub const MAX_HEADER_LIST: usize = 256 << 10;

/// Why a header block could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError {
    /// The block ends inside a representation.
    Truncated,
    /// An integer does not fit.
    Overflow,
    /// An index points outside both tables.
    BadIndex,
    /// A Huffman string does not decode.
    Huffman,
    /// A size update above the allowed maximum.
    TableSize,
}

/// The decoding state of one direction.
pub struct Decoder {
    table: VecDeque<(String, String)>,
    size: usize,
    max: usize,
    /// Scratch space for Huffman-decoded bytes.
    scratch: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self {
            table: VecDeque::new(),
            size: 0,
            max: 4096,
            scratch: Vec::new(),
        }
    }
}

fn integer(buf: &[u8], at: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << prefix) as usize - 1;
    let first = usize::from(*buf.get(*at).ok_or(HpackError::Truncated)?) & mask;
    *at += 1;
    if first < mask {
        return Ok(first);
    }
    let mut value = mask;
    for shift in (0..35).step_by(7) {
        let b = *buf.get(*at).ok_or(HpackError::Truncated)?;
        *at += 1;
        value = value
            .checked_add(usize::from(b & 0x7F) << shift)
            .ok_or(HpackError::Overflow)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::Overflow)
}

impl Decoder {
    fn string(&mut self, buf: &[u8], at: &mut usize) -> Result<String, HpackError> {
        let huffman = buf.get(*at).ok_or(HpackError::Truncated)? & 0x80 != 0;
        let len = integer(buf, at, 7)?;
        let raw = buf.get(*at..*at + len).ok_or(HpackError::Truncated)?;
        *at += len;
        if huffman {
            self.scratch.clear();
            huffman::decode(raw, &mut self.scratch).map_err(|_| HpackError::Huffman)?;
            Ok(String::from_utf8_lossy(&self.scratch).into_owned())
        } else {
            Ok(String::from_utf8_lossy(raw).into_owned())
        }
    }

    fn entry(&self, index: usize) -> Result<(&str, &str), HpackError> {
        match index {
            0 => Err(HpackError::BadIndex),
            1..=61 => Ok(STATIC_TABLE[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .ok_or(HpackError::BadIndex),
        }
    }

    /// Bytes held by the dynamic table.
    pub fn table_size(&self) -> usize {
        self.size
    }

    fn evict(&mut self) {
        while self.size > self.max {
            match self.table.pop_back() {
                Some((n, v)) => self.size -= n.len() + v.len() + 32,
                None => break,
            }
        }
    }

    fn insert(&mut self, name: String, value: String) {
        self.size += name.len() + value.len() + 32;
        self.table.push_front((name, value));
        self.evict();
    }

    /// Decodes one complete header block. Fields past [`MAX_HEADER_LIST`] decoded bytes are
    /// left out, and `truncated` says so.
    pub fn decode(&mut self, buf: &[u8]) -> Result<crate::Headers, HpackError> {
        self.decode_bounded(buf).map(|d| d.fields)
    }

    /// [`decode`](Self::decode), saying whether fields were left out.
    pub fn decode_bounded(&mut self, buf: &[u8]) -> Result<Decoded, HpackError> {
        let mut out = Decoded::default();
        let mut kept = 0usize;
        let mut keep = |out: &mut Decoded, name: &str, value: &str| {
            let size = name.len() + value.len() + 32;
            if kept + size > MAX_HEADER_LIST {
                out.truncated = true;
            } else {
                kept += size;
                out.fields.push(name, value);
            }
        };
        let mut at = 0;
        while at < buf.len() {
            let b = buf[at];
            if b & 0x80 != 0 {
                let index = integer(buf, &mut at, 7)?;
                let (name, value) = self.entry(index)?;
                keep(&mut out, name, value);
            } else if b & 0xE0 == 0x20 {
                let size = integer(buf, &mut at, 5)?;
                if size > MAX_TABLE {
                    return Err(HpackError::TableSize);
                }
                self.max = size;
                self.evict();
            } else {
                // Literal: with incremental indexing (01), without (0000) or never (0001).
                let (prefix, index_it) = if b & 0x40 != 0 { (6, true) } else { (4, false) };
                let index = integer(buf, &mut at, prefix)?;
                let name = if index == 0 {
                    self.string(buf, &mut at)?
                } else {
                    self.entry(index)?.0.to_owned()
                };
                let value = self.string(buf, &mut at)?;
                keep(&mut out, &name, &value);
                if index_it {
                    self.insert(name, value);
                }
            }
        }
        Ok(out)
    }
}

/// A decoded header block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The fields, in order, up to [`MAX_HEADER_LIST`] decoded bytes.
    pub fields: crate::Headers,
    /// Fields were left out past the bound.
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_encoder_and_survives_garbage() {
        // Blocks from an independent encoder, with the dynamic table carried across blocks.
        let mut enc = fluke_hpack::Encoder::new();
        let mut dec = Decoder::default();
        let blocks: [&[(&[u8], &[u8])]; 3] = [
            &[
                (b":method", b"GET"),
                (b":path", b"/a?b=c"),
                (b"x-request-id", b"abc-123"),
            ],
            &[
                (b":method", b"POST"),
                (b"x-request-id", b"abc-123"),
                (b"user-agent", b"curl/7.88.1"),
            ],
            &[(b":status", b"200"), (b"content-type", b"application/grpc")],
        ];
        for headers in blocks {
            let block = enc.encode(headers.iter().map(|(n, v)| (*n, *v)));
            let got = dec.decode(&block).unwrap();
            let want: crate::Headers = headers
                .iter()
                .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
                .collect();
            assert_eq!(got, want);
        }
        // RFC 7541 C.4.1: a Huffman-coded request.
        let c41 = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let got = Decoder::default().decode(&c41).unwrap();
        assert_eq!(got.iter().nth(3), Some((":authority", "www.example.com")));
        for garbage in [
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0x7f],
            &[0x40, 0x85],
            &[0xbf, 0x00],
        ] {
            assert!(Decoder::default().decode(garbage).is_err());
        }
        for cut in 0..c41.len() {
            let _ = Decoder::default().decode(&c41[..cut]);
        }
    }

    /// A block that names one big table entry over and over decodes to a bounded list, and
    /// the table stays in step for the next block; a huge table size is refused.
    #[test]
    fn repeated_references_to_a_big_entry_are_bounded() {
        let mut dec = Decoder::default();
        // A 3,000-byte literal with incremental indexing (new name), then 200,000 references
        // to it (index 62, one byte each): 600 MB if all were kept.
        let mut block = vec![0x40, 0x01, b'x', 0x7f];
        let mut len = 3000 - 127;
        while len >= 128 {
            block.push((len % 128) as u8 | 0x80);
            len /= 128;
        }
        block.push(len as u8);
        block.extend(std::iter::repeat_n(b'v', 3000));
        block.extend(std::iter::repeat_n(0x80 | 62, 200_000));
        let d = dec.decode_bounded(&block).unwrap();
        assert!(d.truncated);
        let kept: usize = d.fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert!(kept <= MAX_HEADER_LIST, "{kept}");
        assert_eq!(d.fields.len(), MAX_HEADER_LIST / 3033);
        // The next block still decodes against the same table.
        let next = dec.decode_bounded(&[0x80 | 62]).unwrap();
        assert_eq!(
            next.fields.iter().collect::<Vec<_>>(),
            [("x", "v".repeat(3000).as_str())]
        );
        assert!(!next.truncated);
        // A table size update over the bound.
        assert_eq!(
            Decoder::default().decode(&[0x3f, 0xe1, 0xff, 0x04]),
            Err(HpackError::TableSize)
        );
    }
}
