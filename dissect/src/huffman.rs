//! HPACK's Huffman code (RFC 7541 Appendix B), decoded from its code lengths alone.
//!
//! The code is canonical (codes of one length are consecutive numbers, in symbol order, and
//! shorter codes sort first), so a symbol is found by comparing the bits read so far with the
//! first code of their length: a few integer operations per bit, no lookup structure per string.
//! (The `fluke-hpack` decoder we used before did two SipHash map lookups per bit: ~8% of a whole
//! dissection for the ~3% of calls that were HTTP/2.)

/// Code length in bits of each symbol, 0–255 and EOS (256), from RFC 7541 Appendix B.
const CODE_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// Longest code (EOS and a few rare bytes).
const MAX_LEN: usize = 30;

/// Why a Huffman string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The EOS symbol appeared inside the string.
    #[error("EOS symbol inside a Huffman string")]
    EosInString,
    /// More than 7 bits of padding, or padding that is not a prefix of EOS (all ones).
    #[error("invalid Huffman padding")]
    BadPadding,
    /// No code matched within the longest code's length (impossible for this complete code;
    /// checked so that no input can index past the table).
    #[error("no Huffman code matches")]
    NoCode,
}

/// The canonical code, per length: first code, number of codes, and where its symbols start.
struct Canonical {
    first: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [u16; MAX_LEN + 1],
    symbols: [u16; 257],
}

const fn canonical() -> Canonical {
    let mut table = Canonical {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut next = 0usize;
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        table.first[len] = code;
        table.offset[len] = next as u16;
        let mut symbol = 0;
        while symbol < 257 {
            if CODE_LENGTHS[symbol] as usize == len {
                table.symbols[next] = symbol as u16;
                next += 1;
                table.count[len] += 1;
            }
            symbol += 1;
        }
        code = (code + table.count[len]) << 1;
        len += 1;
    }
    table
}

static TABLE: Canonical = canonical();

/// Appends the decoding of `input` to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let table = &TABLE;
    let mut code = 0u32;
    let mut len = 0usize;
    out.reserve(input.len() * 8 / 5);
    for &byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            let delta = code.wrapping_sub(table.first[len]);
            if delta < table.count[len] {
                let symbol = table.symbols[usize::from(table.offset[len]) + delta as usize];
                let Ok(byte) = u8::try_from(symbol) else {
                    return Err(HuffmanError::EosInString);
                };
                out.push(byte);
                code = 0;
                len = 0;
            } else if len == MAX_LEN {
                return Err(HuffmanError::NoCode);
            }
        }
    }
    // What is left must be at most 7 bits of EOS's prefix, which is all ones.
    if len > 7 || code != (1u32 << len) - 1 {
        return Err(HuffmanError::BadPadding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical code built from the lengths, for encoding in tests.
    fn codes() -> Vec<(u32, usize)> {
        let mut codes = vec![(0, 0); 257];
        for len in 1..=MAX_LEN {
            for i in 0..TABLE.count[len] {
                let symbol = TABLE.symbols[usize::from(TABLE.offset[len]) + i as usize];
                codes[usize::from(symbol)] = (TABLE.first[len] + i, len);
            }
        }
        codes
    }

    fn encode(input: &[u8]) -> Vec<u8> {
        let codes = codes();
        let (mut acc, mut bits, mut out) = (0u64, 0usize, Vec::new());
        for &b in input {
            let (code, len) = codes[usize::from(b)];
            acc = (acc << len) | u64::from(code);
            bits += len;
            while bits >= 8 {
                out.push((acc >> (bits - 8)) as u8);
                bits -= 8;
            }
        }
        if bits > 0 {
            let pad = 8 - bits;
            out.push(((acc << pad) as u8) | ((1u8 << pad) - 1));
        }
        out
    }

    #[test]
    fn rfc_7541_examples() {
        // C.4.1: "www.example.com"
        let bytes = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut out = Vec::new();
        decode(&bytes, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        assert_eq!(encode(b"www.example.com"), bytes);
        // C.4.2: "no-cache"
        let mut out = Vec::new();
        decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out).unwrap();
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn agrees_with_fluke_hpack_on_random_and_encoded_bytes() {
        let mut fluke = fluke_hpack::huffman::HuffmanDecoder::new();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = (next() % 24) as usize;
            let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the inputs are valid encodings of random bytes, half random bits.
            let input = if round % 2 == 0 {
                encode(&raw)
            } else {
                raw.clone()
            };
            let mut ours = Vec::new();
            let ours = decode(&input, &mut ours).map(|()| ours);
            let theirs = fluke.decode(&input);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{input:02x?}: {ours:?} vs {theirs:?}"
            );
            if let (Ok(a), Ok(b)) = (&ours, &theirs) {
                assert_eq!(a, b, "{input:02x?}");
            }
            if round % 2 == 0 {
                assert_eq!(ours.as_deref(), Ok(raw.as_slice()));
            }
        }
    }

    #[test]
    fn eos_and_bad_padding_are_errors() {
        // EOS is 30 one-bits: four 0xff bytes hold it.
        let mut out = Vec::new();
        assert_eq!(decode(&[0xff; 4], &mut out), Err(HuffmanError::EosInString));
        // '0' is 00000 (5 bits); three zero padding bits are not EOS's prefix.
        assert_eq!(decode(&[0x00], &mut out), Err(HuffmanError::BadPadding));
        // A whole byte of ones after a complete symbol: more than 7 bits of padding.
        assert_eq!(
            decode(&[0x07, 0xff], &mut out),
            Err(HuffmanError::BadPadding)
        );
        out.clear();
        assert_eq!(decode(&[], &mut out), Ok(()));
        assert!(out.is_empty());
    }
}
