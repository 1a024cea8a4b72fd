//! The Parquet value encodings the packets file uses, written for speed on its columns.
//!
//! - `DELTA_BINARY_PACKED` for every integer column: time, sequence numbers and one flow's ports
//!   move in small steps or not at all, so most miniblocks pack into a few bits or none, with
//!   no hashing (a dictionary hashes every value).
//! - The RLE/bit-packed hybrid for definition levels and dictionary indexes.
//! - `PLAIN` for payloads (length-prefixed bytes) and dictionary pages.
//!
//! Bit packing is the hybrid's order: values fill each byte from its least significant bit.

use super::thrift::{put_varint, zigzag};

/// Values per DELTA_BINARY_PACKED block, and miniblocks per block (32 values each).
const BLOCK: usize = 128;
const MINIBLOCKS: usize = 4;
const MINIBLOCK: usize = BLOCK / MINIBLOCKS;

/// Number of bits needed to hold `v`.
pub fn bits_for(v: u64) -> u8 {
    (64 - v.leading_zeros()) as u8
}

/// Packs `values` (a multiple of 8 of them, each below 2^width) at `width` bits each.
pub fn bitpack(out: &mut Vec<u8>, values: &[u64], width: u8) {
    debug_assert!(values.len().is_multiple_of(8));
    if width == 0 {
        return;
    }
    let width = u32::from(width);
    let mut acc: u64 = 0;
    let mut filled: u32 = 0;
    for &v in values {
        acc |= v << filled;
        if filled + width >= 64 {
            out.extend_from_slice(&acc.to_le_bytes());
            let used = 64 - filled;
            acc = if used >= 64 { 0 } else { v >> used };
            filled = filled + width - 64;
        } else {
            filled += width;
        }
    }
    let tail = filled.div_ceil(8) as usize;
    out.extend_from_slice(&acc.to_le_bytes()[..tail]);
}

/// Integer column values as the physical type sees them (INT32 or INT64).
pub trait DeltaValue: Copy {
    /// `self - prev` in the physical type's wrapping arithmetic, widened to i64.
    fn delta(self, prev: Self) -> i64;
    /// The value as the physical type's signed integer, widened.
    fn signed(self) -> i64;
    /// `delta - min` as the unsigned offset a miniblock packs.
    fn offset(delta: i64, min: i64) -> u64;
}

impl DeltaValue for u32 {
    fn delta(self, prev: Self) -> i64 {
        i64::from((self as i32).wrapping_sub(prev as i32))
    }
    fn signed(self) -> i64 {
        i64::from(self as i32)
    }
    fn offset(delta: i64, min: i64) -> u64 {
        u64::from((delta as i32).wrapping_sub(min as i32) as u32)
    }
}

/// u8 and u16 columns are INT32 physically: their deltas never wrap.
macro_rules! narrow_delta {
    ($t:ty) => {
        impl DeltaValue for $t {
            fn delta(self, prev: Self) -> i64 {
                i64::from(self) - i64::from(prev)
            }
            fn signed(self) -> i64 {
                i64::from(self)
            }
            fn offset(delta: i64, min: i64) -> u64 {
                (delta - min) as u64
            }
        }
    };
}

narrow_delta!(u8);
narrow_delta!(u16);

impl DeltaValue for u64 {
    fn delta(self, prev: Self) -> i64 {
        (self as i64).wrapping_sub(prev as i64)
    }
    fn signed(self) -> i64 {
        self as i64
    }
    fn offset(delta: i64, min: i64) -> u64 {
        delta.wrapping_sub(min) as u64
    }
}

/// Appends `values` in DELTA_BINARY_PACKED encoding.
///
/// The deltas of a block are computed from adjacent pairs (no value carried from one step to
/// the next, so the loops vectorise), then each miniblock packs them at the width of its
/// spread; constant runs take width 0 and no bytes.
pub fn delta_binary_packed<T: DeltaValue>(out: &mut Vec<u8>, values: &[T]) {
    put_varint(out, BLOCK as u64);
    put_varint(out, MINIBLOCKS as u64);
    put_varint(out, values.len() as u64);
    let Some(&first) = values.first() else {
        put_varint(out, 0);
        return;
    };
    put_varint(out, zigzag(first.signed()));
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINIBLOCK];
    // Block k covers the deltas between values[k*BLOCK .. k*BLOCK + BLOCK + 1].
    let mut start = 0;
    while start + 1 < values.len() {
        let end = (start + 1 + BLOCK).min(values.len());
        let pairs = &values[start..end];
        let n = pairs.len() - 1;
        for (d, w) in deltas.iter_mut().zip(pairs.windows(2)) {
            *d = w[1].delta(w[0]);
        }
        let min = deltas[..n].iter().copied().min().unwrap_or(0);
        put_varint(out, zigzag(min));
        let used = n.div_ceil(MINIBLOCK);
        let mut widths = [0u8; MINIBLOCKS];
        for (m, width) in widths.iter_mut().enumerate().take(used) {
            let block = &deltas[m * MINIBLOCK..n.min((m + 1) * MINIBLOCK)];
            let spread = block.iter().fold(0u64, |acc, &d| acc | T::offset(d, min));
            *width = bits_for(spread);
        }
        out.extend_from_slice(&widths);
        for (m, &width) in widths.iter().enumerate().take(used) {
            if width == 0 {
                continue;
            }
            let block = &deltas[m * MINIBLOCK..n.min((m + 1) * MINIBLOCK)];
            for (p, &d) in packed.iter_mut().zip(block) {
                *p = T::offset(d, min);
            }
            packed[block.len()..].fill(0);
            bitpack(out, &packed, width);
        }
        start = end - 1;
    }
}

/// Appends `values` (each below 2^width) in the RLE/bit-packed hybrid, without a length prefix.
///
/// Runs of at least 16 equal values that start on a multiple of 8 become RLE runs; everything
/// else is bit-packed in groups of 8 (the last group zero-padded).
pub fn rle_hybrid(out: &mut Vec<u8>, values: &[u32], width: u8) {
    let n = values.len();
    let value_bytes = usize::from(width).div_ceil(8);
    let run_at = |i: usize| {
        let v = values[i];
        values[i..].iter().take_while(|&&x| x == v).count()
    };
    let mut i = 0;
    let mut group = [0u64; 8];
    while i < n {
        let run = run_at(i);
        if run >= 8 {
            put_varint(out, (run as u64) << 1);
            out.extend_from_slice(&values[i].to_le_bytes()[..value_bytes]);
            i += run;
            continue;
        }
        // A bit-packed section: whole groups of 8 until a long run starts on a group boundary.
        let start = i;
        let mut end = i;
        loop {
            end = (end + 8).min(n);
            if end >= n || run_at(end) >= 16 {
                break;
            }
        }
        let groups = (end - start).div_ceil(8);
        put_varint(out, ((groups as u64) << 1) | 1);
        for chunk in values[start..end].chunks(8) {
            for (g, &v) in group.iter_mut().zip(chunk) {
                *g = u64::from(v);
            }
            group[chunk.len()..].fill(0);
            bitpack(out, &group, width);
        }
        i = end;
    }
}

/// The definition levels of one nullable column's page.
#[derive(Clone, Copy, Debug)]
pub struct Levels<'a> {
    /// Rows in the page.
    pub rows: usize,
    /// Rows whose value is null.
    pub nulls: usize,
    /// 1 present / 0 null per row; only read when the page mixes both.
    pub present: &'a [u32],
}

/// Definition levels of a V1 data page: a 4-byte length, then the hybrid.
pub fn def_levels(out: &mut Vec<u8>, levels: Levels<'_>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    if levels.nulls == 0 || levels.nulls == levels.rows {
        // One run: the common cases of a column that is always or never set in a page.
        put_varint(out, (levels.rows as u64) << 1);
        out.push(u8::from(levels.nulls == 0));
    } else {
        rle_hybrid(out, levels.present, 1);
    }
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitpack_matches_the_spec_example() {
        // Parquet's encoding docs: 0..=7 at 3 bits.
        let mut out = Vec::new();
        bitpack(&mut out, &[0, 1, 2, 3, 4, 5, 6, 7], 3);
        assert_eq!(out, [0b1000_1000, 0b1100_0110, 0b1111_1010]);
    }

    #[test]
    fn bitpack_wide_values_cross_words() {
        let values: Vec<u64> = (0..32).map(|i| (1u64 << 63) | i).collect();
        let mut out = Vec::new();
        bitpack(&mut out, &values, 64);
        assert_eq!(out.len(), 32 * 8);
        assert_eq!(&out[8..16], &((1u64 << 63) | 1).to_le_bytes());
        let mut out = Vec::new();
        bitpack(&mut out, &[u64::from(u32::MAX); 8], 33);
        assert_eq!(out.len(), 33);
    }
}
