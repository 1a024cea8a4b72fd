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

/// Packs one miniblock of 32 values at a width known at compile time: the loop unrolls into
/// fixed shifts, several times faster than [`bitpack`]'s per-value bookkeeping.
#[inline(always)]
fn pack32<const W: usize>(values: &[u64; MINIBLOCK], out: &mut Vec<u8>) {
    let mut words = [0u64; MINIBLOCK];
    for (i, &v) in values.iter().enumerate() {
        let bit = i * W;
        let (word, shift) = (bit / 64, bit % 64);
        words[word] |= v << shift;
        if shift + W > 64 {
            words[word + 1] |= v >> (64 - shift);
        }
    }
    let bytes = 4 * W; // 32 values of W bits
    for (i, w) in words.iter().enumerate().take(bytes.div_ceil(8)) {
        let le = w.to_le_bytes();
        let take = (bytes - i * 8).min(8);
        out.extend_from_slice(&le[..take]);
    }
}

/// Packs a miniblock of 32 values at `width` bits.
fn pack_miniblock(values: &[u64; MINIBLOCK], width: u8, out: &mut Vec<u8>) {
    macro_rules! widths {
        ($($w:literal)*) => {
            match width {
                $($w => pack32::<$w>(values, out),)*
                _ => bitpack(out, values, width),
            }
        };
    }
    widths!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
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
    let mut offsets = [[0u64; MINIBLOCK]; MINIBLOCKS];
    // Block k covers the deltas between values[k*BLOCK .. k*BLOCK + BLOCK + 1].
    let mut start = 0;
    while start + 1 < values.len() {
        let end = (start + 1 + BLOCK).min(values.len());
        let pairs = &values[start..end];
        let n = pairs.len() - 1;
        // Pass 1: the deltas and their minimum.
        let mut min = i64::MAX;
        for (d, w) in deltas.iter_mut().zip(pairs.windows(2)) {
            let x = w[1].delta(w[0]);
            *d = x;
            min = min.min(x);
        }
        put_varint(out, zigzag(min));
        // Pass 2: each miniblock's offsets from the minimum, and their spread.
        let used = n.div_ceil(MINIBLOCK);
        let mut widths = [0u8; MINIBLOCKS];
        for (m, (width, miniblock)) in widths.iter_mut().zip(&mut offsets).enumerate().take(used) {
            let block = &deltas[m * MINIBLOCK..n.min((m + 1) * MINIBLOCK)];
            let mut spread = 0;
            for (o, &d) in miniblock.iter_mut().zip(block) {
                *o = T::offset(d, min);
                spread |= *o;
            }
            miniblock[block.len()..].fill(0);
            *width = bits_for(spread);
        }
        out.extend_from_slice(&widths);
        // Pass 3: pack the miniblocks that need bits.
        for (miniblock, &width) in offsets.iter().zip(&widths).take(used) {
            if width > 0 {
                pack_miniblock(miniblock, width, out);
            }
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
    fn the_unrolled_packer_agrees_with_the_general_one() {
        let mut state = 0x1234_5678u64;
        for width in 1..=64u8 {
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1 << width) - 1
            };
            let mut values = [0u64; MINIBLOCK];
            for v in &mut values {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *v = state & mask;
            }
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            pack_miniblock(&values, width, &mut fast);
            bitpack(&mut general, &values, width);
            assert_eq!(fast, general, "width {width}");
            assert_eq!(fast.len(), 4 * usize::from(width));
        }
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
