//! The pieces a packets file is built from: the per-row-group dictionaries of the address
//! columns, and a column chunk's encoded pages.

use std::{
    collections::HashMap,
    fmt::Write as _,
    hash::{BuildHasherDefault, Hasher},
};

use super::{
    encoding::{DeltaValue, Levels, bits_for, def_levels, delta_binary_packed, rle_hybrid},
    format::{ChunkMeta, Codec, PageHeader, PageLocation, Stats, encoding},
};

/// How a column's values compare, for min/max statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// As signed integers of the physical width (timestamps).
    Signed,
    /// As unsigned integers (every other integer column).
    Unsigned,
}

/// Min and max of integer values, kept as the physical type's bytes.
pub trait StatValue: DeltaValue {
    /// Little-endian bytes of the physical type.
    fn plain(self) -> Vec<u8>;
    /// Sort key of the value under `order`.
    fn key(self, order: Order) -> i128;
    /// Min and max of `values` under `order`, in one pass over the native integers.
    fn min_max(values: &[Self], order: Order) -> Option<(Self, Self)>;
}

macro_rules! stat_value {
    ($unsigned:ty, $signed:ty) => {
        impl StatValue for $unsigned {
            fn plain(self) -> Vec<u8> {
                self.to_le_bytes().to_vec()
            }
            fn key(self, order: Order) -> i128 {
                match order {
                    Order::Signed => i128::from(self as $signed),
                    Order::Unsigned => i128::from(self),
                }
            }
            fn min_max(values: &[Self], order: Order) -> Option<(Self, Self)> {
                let (&first, _) = values.split_first()?;
                Some(match order {
                    Order::Unsigned => values
                        .iter()
                        .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v))),
                    Order::Signed => {
                        let first = first as $signed;
                        let (lo, hi) = values.iter().fold((first, first), |(lo, hi), &v| {
                            (lo.min(v as $signed), hi.max(v as $signed))
                        });
                        (lo as $unsigned, hi as $unsigned)
                    }
                })
            }
        }
    };
}

stat_value!(u32, i32);
stat_value!(u64, i64);

/// u8 and u16 columns are INT32 physically: their statistics are 4-byte values.
macro_rules! narrow_stat_value {
    ($t:ty) => {
        impl StatValue for $t {
            fn plain(self) -> Vec<u8> {
                u32::from(self).to_le_bytes().to_vec()
            }
            fn key(self, _order: Order) -> i128 {
                i128::from(self)
            }
            fn min_max(values: &[Self], _order: Order) -> Option<(Self, Self)> {
                let (&first, _) = values.split_first()?;
                Some(
                    values
                        .iter()
                        .fold((first, first), |(lo, hi), &v| (lo.min(v), hi.max(v))),
                )
            }
        }
    };
}

narrow_stat_value!(u8);
narrow_stat_value!(u16);

/// Min and max of `values` under `order`.
pub fn min_max<T: StatValue>(values: &[T], order: Order) -> Option<(T, T)> {
    T::min_max(values, order)
}

/// The encoded pages of one column in the current row group, and what its metadata needs.
pub struct Chunk {
    /// The column's position in the schema.
    pub column: usize,
    /// Page headers and bodies, back to back (data pages only; a dictionary goes in front).
    pub bytes: Vec<u8>,
    /// Pages handed over whole, after `bytes`: a header, then the page's own body buffer
    /// (payload pages, whose bodies are moved here rather than copied).
    pub parts: Vec<Vec<u8>>,
    /// Codec of every page of this chunk.
    pub codec: Codec,
    /// Data page locations relative to `bytes` (made absolute when the chunk is written).
    pub pages: Vec<PageLocation>,
    /// Per-page (min, max), for the columns that keep a column index.
    pub page_stats: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Values (nulls included) in the chunk.
    pub num_values: u64,
    /// Header and body bytes before compression.
    pub uncompressed: u64,
    /// Smallest and largest value keys seen (with their PLAIN bytes), and nulls.
    pub min: Option<(i128, Vec<u8>)>,
    /// As `min`.
    pub max: Option<(i128, Vec<u8>)>,
    /// Nulls in the chunk.
    pub nulls: u64,
    /// Value encodings used by the pages.
    pub encodings: Vec<i32>,
}

impl Chunk {
    /// An empty chunk of column `column`.
    pub fn new(column: usize, keep_page_stats: bool) -> Self {
        Self {
            column,
            bytes: Vec::new(),
            parts: Vec::new(),
            codec: Codec::Uncompressed,
            pages: Vec::new(),
            page_stats: keep_page_stats.then(Vec::new),
            num_values: 0,
            uncompressed: 0,
            min: None,
            max: None,
            nulls: 0,
            encodings: Vec::new(),
        }
    }

    /// Encoded bytes of the chunk.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.parts.iter().map(Vec::len).sum::<usize>()
    }

    /// True when no page was added.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Empties the chunk for the next row group; the buffers of pages handed over whole are
    /// returned (for reuse, or to drop).
    pub fn reset(&mut self, codec: Codec) -> std::vec::Drain<'_, Vec<u8>> {
        self.bytes.clear();
        self.codec = codec;
        self.pages.clear();
        if let Some(p) = &mut self.page_stats {
            p.clear();
        }
        self.num_values = 0;
        self.uncompressed = 0;
        self.min = None;
        self.max = None;
        self.nulls = 0;
        self.encodings.clear();
        self.parts.drain(..)
    }

    /// Folds a page's min and max into the chunk's.
    pub fn observe<T: StatValue>(&mut self, min: T, max: T, order: Order) {
        let (kmin, kmax) = (min.key(order), max.key(order));
        if self.min.as_ref().is_none_or(|(k, _)| kmin < *k) {
            self.min = Some((kmin, min.plain()));
        }
        if self.max.as_ref().is_none_or(|(k, _)| kmax > *k) {
            self.max = Some((kmax, max.plain()));
        }
    }

    /// Appends one data page whose stored body is handed over whole (no copy): `stored`,
    /// which is `uncompressed` bytes before compression. Pages of a chunk either all go
    /// through [`push_page`](Self::push_page) or all through this.
    pub fn push_page_owned(
        &mut self,
        first_row: u64,
        num_values: usize,
        value_encoding: i32,
        uncompressed: usize,
        stored: Vec<u8>,
    ) {
        let at = self.len();
        let mut header = Vec::with_capacity(32);
        PageHeader {
            uncompressed,
            compressed: stored.len(),
            num_values,
            encoding: value_encoding,
            dictionary: false,
        }
        .write(&mut header);
        self.record_page(
            at,
            header.len(),
            stored.len(),
            uncompressed,
            first_row,
            num_values,
            value_encoding,
        );
        self.parts.push(header);
        self.parts.push(stored);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_page(
        &mut self,
        at: usize,
        header_len: usize,
        stored: usize,
        uncompressed: usize,
        first_row: u64,
        num_values: usize,
        value_encoding: i32,
    ) {
        self.pages.push(PageLocation {
            offset: at as u64,
            size: (header_len + stored) as u32,
            first_row,
        });
        self.num_values += num_values as u64;
        self.uncompressed += (header_len + uncompressed) as u64;
        if !self.encodings.contains(&value_encoding) {
            self.encodings.push(value_encoding);
        }
    }

    /// Appends one data page. `body` is the uncompressed page body (levels and values);
    /// `compressed` the stored body when it differs.
    pub fn push_page(
        &mut self,
        first_row: u64,
        num_values: usize,
        value_encoding: i32,
        body: &[u8],
        compressed: Option<&[u8]>,
    ) {
        let stored = compressed.unwrap_or(body);
        let at = self.bytes.len();
        PageHeader {
            uncompressed: body.len(),
            compressed: stored.len(),
            num_values,
            encoding: value_encoding,
            dictionary: false,
        }
        .write(&mut self.bytes);
        let header_len = self.bytes.len() - at;
        self.bytes.extend_from_slice(stored);
        self.record_page(
            at,
            header_len,
            stored.len(),
            body.len(),
            first_row,
            num_values,
            value_encoding,
        );
    }

    /// The chunk's metadata once written at `offset` (after a dictionary page of
    /// `dictionary` bytes, `dictionary_uncompressed` before compression, when there is one).
    pub fn meta(
        &self,
        offset: u64,
        dictionary: Option<(usize, usize)>,
        stats: Option<Stats>,
    ) -> ChunkMeta {
        let dict_len = dictionary.map_or(0, |(stored, _)| stored) as u64;
        let data_offset = offset + dict_len;
        let mut encodings = vec![encoding::RLE];
        if dictionary.is_some() {
            encodings.push(encoding::PLAIN);
        }
        for &e in &self.encodings {
            if !encodings.contains(&e) {
                encodings.push(e);
            }
        }
        ChunkMeta {
            column: self.column,
            codec: self.codec,
            encodings,
            num_values: self.num_values,
            uncompressed: self.uncompressed + dictionary.map_or(0, |(_, raw)| raw) as u64,
            compressed: self.len() as u64 + dict_len,
            dictionary_offset: dictionary.map(|_| offset),
            data_offset,
            stats,
            pages: self
                .pages
                .iter()
                .map(|p| PageLocation {
                    offset: p.offset + data_offset,
                    ..*p
                })
                .collect(),
            page_stats: self.page_stats.clone(),
            offset_index: None,
            column_index: None,
        }
    }

    /// Min/max/null statistics from what [`observe`](Self::observe) saw.
    pub fn stats(&self) -> Stats {
        Stats {
            min: self.min.as_ref().map(|(_, bytes)| bytes.clone()),
            max: self.max.as_ref().map(|(_, bytes)| bytes.clone()),
            nulls: self.nulls,
        }
    }
}

/// Encodes one integer column's page body (levels, then DELTA_BINARY_PACKED values) into
/// `body`; returns the value encoding.
pub fn int_page_body<T: DeltaValue>(
    body: &mut Vec<u8>,
    values: &[T],
    levels: Option<Levels<'_>>,
) -> i32 {
    body.clear();
    if let Some(levels) = levels {
        def_levels(body, levels);
    }
    if values.is_empty() {
        // All null: PLAIN with no values (an empty DELTA header is legal too, but readers
        // differ on it).
        return encoding::PLAIN;
    }
    delta_binary_packed(body, values);
    encoding::DELTA_BINARY_PACKED
}

/// Encodes dictionary indexes as a data page body: bit width byte, then the hybrid.
pub fn dict_page_body(body: &mut Vec<u8>, indexes: &[u32], entries: u32) {
    body.clear();
    let width = bits_for(u64::from(entries.saturating_sub(1))).max(1);
    body.push(width);
    rle_hybrid(body, indexes, width);
}

/// FxHash-style hasher for address keys: one multiply per word, good enough for a table
/// whose keys are addresses seen on one node.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7C_C1_B7_27_22_0A_95);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
}

/// An address as a dictionary key: its family (0 non-IP, 4, 6) and bytes.
pub type AddrKey = (u8, u128);

/// Slots of the direct-mapped cache in front of an address dictionary.
const CACHE_SLOTS: usize = 64;

/// The dictionary of one address column in the current row group: text entries, PLAIN
/// encoded for the dictionary page, looked up through a small cache (consecutive packets
/// mostly carry a handful of addresses) before the hash map.
pub struct AddrDict {
    map: HashMap<AddrKey, u32, BuildHasherDefault<AddrHasher>>,
    cache: [(AddrKey, u32); CACHE_SLOTS],
    /// PLAIN-encoded entries.
    pub plain: Vec<u8>,
    /// Number of entries.
    pub len: u32,
    text: String,
    min: Option<String>,
    max: Option<String>,
}

/// A cache slot that matches no real key (family 255 does not exist).
const EMPTY_SLOT: (AddrKey, u32) = ((255, 0), 0);

impl Default for AddrDict {
    fn default() -> Self {
        Self {
            map: HashMap::default(),
            cache: [EMPTY_SLOT; CACHE_SLOTS],
            plain: Vec::new(),
            len: 0,
            text: String::new(),
            min: None,
            max: None,
        }
    }
}

impl AddrDict {
    /// The entry index of an address, adding it when new.
    #[inline]
    pub fn index(&mut self, l3: u8, addr: u128) -> u32 {
        let key = (l3, addr);
        let folded = (addr as u64) ^ ((addr >> 64) as u64).rotate_left(29) ^ u64::from(l3);
        let slot = (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize;
        let cached = self.cache[slot];
        if cached.0 == key {
            return cached.1;
        }
        let index = match self.map.get(&key) {
            Some(&i) => i,
            None => self.insert(key),
        };
        self.cache[slot] = (key, index);
        index
    }

    #[cold]
    fn insert(&mut self, key: AddrKey) -> u32 {
        self.text.clear();
        if let Some(ip) = crate::decode::ip_of(key.0, &key.1) {
            let _ = write!(self.text, "{ip}");
        }
        self.plain
            .extend_from_slice(&(self.text.len() as u32).to_le_bytes());
        self.plain.extend_from_slice(self.text.as_bytes());
        if self.min.as_deref().is_none_or(|m| self.text.as_str() < m) {
            self.min = Some(self.text.clone());
        }
        if self.max.as_deref().is_none_or(|m| self.text.as_str() > m) {
            self.max = Some(self.text.clone());
        }
        let index = self.len;
        self.map.insert(key, index);
        self.len += 1;
        index
    }

    /// Statistics of the chunk (text order, no nulls).
    pub fn stats(&self) -> Stats {
        Stats {
            min: self.min.clone().map(String::into_bytes),
            max: self.max.clone().map(String::into_bytes),
            nulls: 0,
        }
    }

    /// Forgets every entry (a new row group starts a new dictionary).
    pub fn clear(&mut self) {
        self.map.clear();
        self.cache = [EMPTY_SLOT; CACHE_SLOTS];
        self.plain.clear();
        self.len = 0;
        self.min = None;
        self.max = None;
    }
}
