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
        // A run shorter than eight is packed whatever comes next: one compare rules it out
        // (most runs of keys that change row by row are a single value).
        if values.get(i + 7) != Some(&value) {
            i += 1;
            continue;
        }
        let end = run_end(values, i + 1, value);
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

/// Where the run of `value` that reaches `from` ends: eight values at a time while they all
/// match (a page of a constant column is one run of 20,000 keys or levels; compared one by one,
/// the runs of a dissection's pages took ~2% of a core), then one at a time.
fn run_end(values: &[u32], from: usize, value: u32) -> usize {
    let mut end = from;
    while let Some(eight) = values.get(end..end + 8) {
        // Every lane compared, no early exit: the compiler makes it one vector compare.
        if !eight.iter().fold(true, |all, &v| all & (v == value)) {
            break;
        }
        end += 8;
    }
    while end < values.len() && values[end] == value {
        end += 1;
    }
    end
}

fn bit_pack(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    uleb128(((groups as u64) << 1) | 1, out);
    if bit_width <= 16 {
        bit_pack_narrow(values, bit_width, out);
        return;
    }
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

/// Bit-packs groups of eight values of at most 16 bits (dictionary keys of up to 65,536 values,
/// levels): a group is at most 128 bits, put together in one `u128` and appended as its
/// `bit_width` bytes, instead of a byte at a time. The width is a constant in each copy of the
/// loop, so that the append is a fixed-size store.
fn bit_pack_narrow(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    match bit_width {
        0 => {}
        1 => pack_groups::<1>(values, out),
        2 => pack_groups::<2>(values, out),
        3 => pack_groups::<3>(values, out),
        4 => pack_groups::<4>(values, out),
        5 => pack_groups::<5>(values, out),
        6 => pack_groups::<6>(values, out),
        7 => pack_groups::<7>(values, out),
        8 => pack_groups::<8>(values, out),
        9 => pack_groups::<9>(values, out),
        10 => pack_groups::<10>(values, out),
        11 => pack_groups::<11>(values, out),
        12 => pack_groups::<12>(values, out),
        13 => pack_groups::<13>(values, out),
        14 => pack_groups::<14>(values, out),
        15 => pack_groups::<15>(values, out),
        _ => pack_groups::<16>(values, out),
    }
}

fn pack_groups<const WIDTH: usize>(values: &[u32], out: &mut Vec<u8>) {
    out.reserve(values.len().div_ceil(8) * WIDTH);
    let pack = |group: &[u32; 8], out: &mut Vec<u8>| {
        let mut acc = 0u128;
        for (j, &v) in group.iter().enumerate() {
            acc |= u128::from(v) << (j * WIDTH);
        }
        let bytes: [u8; 16] = acc.to_le_bytes();
        let mut group_bytes = [0u8; WIDTH];
        group_bytes.copy_from_slice(&bytes[..WIDTH]);
        out.extend_from_slice(&group_bytes);
    };
    let mut chunks = values.chunks_exact(8);
    for group in &mut chunks {
        let mut eight = [0u32; 8];
        eight.copy_from_slice(group);
        pack(&eight, out);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u32; 8];
        last[..rest.len()].copy_from_slice(rest);
        pack(&last, out);
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
