//! Parquet's RLE / bit-packing hybrid encoding, for definition levels and dictionary keys.
//!
//! A run of at least eight equal values is written as one RLE run (a count and the value);
//! everything else is bit-packed in groups of eight, the last group padded with zeros (the
//! page header's value count says where the values end).

/// Appends `values`, each at most `bit_width` bits wide, hybrid-encoded, to `out`.
pub(crate) fn encode(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let mut packed_from = 0;
    let mut i = 0;
    while i < values.len() {
        let value = values[i];
        let mut end = i + 1;
        while end < values.len() && values[end] == value {
            end += 1;
        }
        // Bit-packed runs hold whole groups of eight: values waiting to be packed borrow the
        // start of this run to fill their last group, and the rest is a run if still long.
        let waiting = i - packed_from;
        let lent = (8 - waiting % 8) % 8;
        if end - i >= lent + 8 {
            let run_from = i + lent;
            if run_from > packed_from {
                bit_pack(&values[packed_from..run_from], bit_width, out);
            }
            rle(value, end - run_from, bit_width, out);
            packed_from = end;
        }
        i = end;
    }
    if packed_from < values.len() {
        bit_pack(&values[packed_from..], bit_width, out);
    }
}

/// The bits a dictionary key needs when the dictionary has `entries` values.
pub(crate) fn key_bits(entries: usize) -> u8 {
    let largest = entries.saturating_sub(1) as u32;
    (u32::BITS - largest.leading_zeros()) as u8
}

fn rle(value: u32, count: usize, bit_width: u8, out: &mut Vec<u8>) {
    uleb128((count as u64) << 1, out);
    let bytes = usize::from(bit_width).div_ceil(8);
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

fn bit_pack(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    uleb128(((groups as u64) << 1) | 1, out);
    let width = u32::from(bit_width);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let padding = std::iter::repeat_n(0, groups * 8 - values.len());
    for v in values.iter().copied().chain(padding) {
        acc |= u64::from(v) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
}

fn uleb128(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder written from the format's description, to check the encoder against.
    fn decode(mut data: &[u8], bit_width: u8, count: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let bytes = usize::from(bit_width).div_ceil(8);
        while out.len() < count {
            let mut header = 0u64;
            let mut shift = 0;
            loop {
                let b = data[0];
                data = &data[1..];
                header |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            if header & 1 == 0 {
                let mut le = [0u8; 4];
                le[..bytes].copy_from_slice(&data[..bytes]);
                data = &data[bytes..];
                let n = (header >> 1) as usize;
                out.extend(std::iter::repeat_n(u32::from_le_bytes(le), n));
            } else {
                let n = (header >> 1) as usize * 8;
                let len = n * usize::from(bit_width) / 8;
                let (packed, rest) = data.split_at(len);
                data = rest;
                for k in 0..n {
                    let mut v = 0u32;
                    for b in 0..usize::from(bit_width) {
                        let bit = k * usize::from(bit_width) + b;
                        v |= u32::from(packed[bit / 8] >> (bit % 8) & 1) << b;
                    }
                    out.push(v);
                }
            }
        }
        assert!(data.is_empty(), "{} bytes left over", data.len());
        out.truncate(count);
        out
    }

    #[test]
    fn values_come_back_whatever_their_runs() {
        let mut random = crate::tests::random(0x9e37_79b9);
        let mut next = move || random(1 << 32) as u32;
        for bit_width in [0u8, 1, 2, 3, 7, 8, 9, 16, 17, 31, 32] {
            let max = if bit_width == 32 {
                u32::MAX
            } else {
                (1u32 << bit_width) - 1
            };
            for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 100, 1000] {
                let mut values = Vec::with_capacity(len);
                while values.len() < len {
                    let v = next() & max;
                    // Runs of every length, mixed with single values.
                    let run = match next() % 4 {
                        0 => 1,
                        1 => (next() % 8) as usize,
                        _ => (next() % 40) as usize,
                    };
                    values.extend(std::iter::repeat_n(v, run.min(len - values.len())));
                }
                let mut out = Vec::new();
                encode(&values, bit_width, &mut out);
                assert_eq!(
                    decode(&out, bit_width, len),
                    values,
                    "width {bit_width}, {len} values"
                );
            }
        }
    }

    #[test]
    fn a_constant_column_is_one_run() {
        let mut out = Vec::new();
        encode(&[3; 20_000], 2, &mut out);
        // Header 40,000 (3 bytes of ULEB128), then the value in one byte.
        assert_eq!(out, [0xc0, 0xb8, 0x02, 3]);
    }

    #[test]
    fn key_bits_cover_the_largest_key() {
        assert_eq!(key_bits(0), 0);
        assert_eq!(key_bits(1), 0);
        assert_eq!(key_bits(2), 1);
        assert_eq!(key_bits(3), 2);
        assert_eq!(key_bits(256), 8);
        assert_eq!(key_bits(257), 9);
    }
}
