//! A column chunk of numbers or times (a flat `INT32` or `INT64` leaf), encoded here rather than
//! by arrow-rs.
//!
//! arrow-rs's column writer costs ~25 ns a value here (50 for `timestamp`) because its work is
//! per call, and a dissection hands it an epoch's few hundred rows at a time: it computes
//! levels, slices the array into mini-batches and checks its page limits for every column of
//! every batch (docs/dissection.md, "What each column of `calls` costs"). This encoder takes a
//! batch's values in one loop: the previous row's value is checked before the dictionary is
//! (ports, sizes and statuses repeat over runs of rows), and each page's min and max are kept
//! as it fills. It writes what arrow-rs writes with page statistics on: a PLAIN dictionary page
//! then RLE_DICTIONARY data pages, falling back to PLAIN once the dictionary passes
//! [`DICTIONARY_PAGE_BYTES`] (or PLAIN from the start without a dictionary), V1 pages,
//! zstd-compressed, the chunk's min/max/null-count statistics, a column index (each page's
//! min and max, for page pruning) and an offset index. Pages end between rows, at
//! [`PAGE_ROWS`] rows or once PLAIN values reach the data page size, so the chunk does not
//! depend on how rows were split into batches.
//!
//! Unsigned columns (`UInt16`, `UInt32` as `INT32`, `UInt64` as `INT64`) compare as unsigned,
//! as their logical type says: a `UInt64` past `i64::MAX` is stored with the sign bit set and
//! still sorts last.

use arrow::{
    array::{Array, AsArray as _},
    buffer::NullBuffer,
    datatypes::{DataType, Int64Type, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type},
};
use bytes::Bytes;
use hashbrown::HashTable;
use parquet::{
    basic::{BoundaryOrder, SortOrder, Type as PhysicalType},
    column::writer::ColumnCloseResult,
    errors::ParquetError,
    file::{
        metadata::ColumnIndexBuilder,
        statistics::{Statistics, ValueStatistics},
    },
    schema::types::ColumnDescPtr,
};

use crate::{
    byte_array::{DICTIONARY_PAGE_BYTES, PAGE_ROWS},
    page::{self, Closed, Dictionary, PageCompressor, put_hybrid},
};

/// The values of one batch's column, as the leaf's physical type holds them.
#[derive(Clone, Copy)]
pub(crate) enum Numbers<'a> {
    /// `UInt16` (an `INT32` leaf).
    U16(&'a [u16]),
    /// `UInt32` (an `INT32` leaf).
    U32(&'a [u32]),
    /// `UInt64` (an `INT64` leaf).
    U64(&'a [u64]),
    /// `Int64` or `Timestamp(ns)` (an `INT64` leaf).
    I64(&'a [i64]),
}

impl<'a> Numbers<'a> {
    /// Whether a column of `data_type` is written by [`NumberColumn`].
    pub(crate) fn handles(data_type: &DataType) -> bool {
        matches!(
            data_type,
            DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Int64
                | DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, _)
        )
    }

    /// The values of `column` and its nulls (when it has any), if [`Self::handles`] its type.
    pub(crate) fn of_column(column: &'a dyn Array) -> Option<(Self, Option<&'a NullBuffer>)> {
        let values = match column.data_type() {
            DataType::UInt16 => Self::U16(column.as_primitive::<UInt16Type>().values()),
            DataType::UInt32 => Self::U32(column.as_primitive::<UInt32Type>().values()),
            DataType::UInt64 => Self::U64(column.as_primitive::<UInt64Type>().values()),
            DataType::Int64 => Self::I64(column.as_primitive::<Int64Type>().values()),
            DataType::Timestamp(arrow::datatypes::TimeUnit::Nanosecond, _) => {
                Self::I64(column.as_primitive::<TimestampNanosecondType>().values())
            }
            _ => return None,
        };
        Some((values, column.nulls().filter(|n| n.null_count() > 0)))
    }

    fn len(&self) -> usize {
        match self {
            Self::U16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
        }
    }

    /// Bytes each value takes in the leaf's physical type.
    fn width(&self) -> usize {
        match self {
            Self::U16(_) | Self::U32(_) => 4,
            Self::U64(_) | Self::I64(_) => 8,
        }
    }
}

/// A value as its physical type's bits, zero-extended to 64.
trait Raw: Copy {
    fn raw(self) -> u64;
}

impl Raw for u16 {
    fn raw(self) -> u64 {
        u64::from(self)
    }
}

impl Raw for u32 {
    fn raw(self) -> u64 {
        u64::from(self)
    }
}

impl Raw for u64 {
    fn raw(self) -> u64 {
        self
    }
}

impl Raw for i64 {
    fn raw(self) -> u64 {
        self as u64
    }
}

/// The min and max of a page or a chunk, as sort keys (see [`NumberColumn::sort_key`]).
#[derive(Clone, Copy)]
struct Bounds {
    min: u64,
    max: u64,
}

impl Bounds {
    const EMPTY: Self = Self {
        min: u64::MAX,
        max: 0,
    };

    fn is_empty(&self) -> bool {
        self.min > self.max
    }

    fn add(&mut self, key: u64) {
        self.min = self.min.min(key);
        self.max = self.max.max(key);
    }

    fn join(&mut self, other: Self) {
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// One closed page's entry in the column index.
struct PageIndex {
    nulls: usize,
    bounds: Bounds,
}

/// One column chunk of numbers or times, being encoded.
pub(crate) struct NumberColumn {
    descr: ColumnDescPtr,
    /// Bytes a value takes: 4 (`INT32`) or 8 (`INT64`).
    width: usize,
    /// XORed into a value's bits to make a key that sorts as the column does: the width's sign
    /// bit for signed columns, nothing for unsigned ones.
    sign_flip: u64,
    /// The leaf may be null (definition levels of one bit).
    optional: bool,
    /// Bytes of a PLAIN data page after which it is closed.
    page_bytes: usize,
    /// The dictionary: keys found by value, and the values in key order.
    index: HashTable<u32>,
    dictionary: Vec<u64>,
    /// The previous non-null value and its key: most rows repeat it.
    last: Option<(u64, u32)>,
    /// Without a dictionary, or past [`DICTIONARY_PAGE_BYTES`]: new pages are PLAIN.
    plain_only: bool,
    /// The open page: its keys, or its PLAIN values once `plain_only`; its definition levels
    /// when the leaf is optional; its rows, nulls and bounds.
    keys: Vec<u32>,
    plain: Vec<u8>,
    levels: Vec<u32>,
    page_rows: usize,
    page_nulls: usize,
    page_bounds: Bounds,
    /// The closed pages, in order, and their column index entries.
    pages: Vec<Closed>,
    page_index: Vec<PageIndex>,
    rows: u64,
    nulls: u64,
}

impl NumberColumn {
    /// An empty chunk of the flat leaf `descr` (`INT32` or `INT64`), with a dictionary while it
    /// pays when `dictionary`.
    pub(crate) fn new(
        descr: ColumnDescPtr,
        dictionary: bool,
        page_bytes: usize,
    ) -> Result<Self, ParquetError> {
        let width = match descr.physical_type() {
            PhysicalType::INT32 => 4,
            PhysicalType::INT64 => 8,
            other => {
                return Err(ParquetError::General(format!(
                    "column {}: {other} is not a number this writer encodes",
                    descr.path()
                )));
            }
        };
        if descr.max_rep_level() > 0 || descr.max_def_level() > 1 {
            return Err(ParquetError::General(format!(
                "column {}: numbers are written here only as flat columns",
                descr.path()
            )));
        }
        let sign_flip = match descr.sort_order() {
            SortOrder::SIGNED => 1u64 << (width * 8 - 1),
            _ => 0,
        };
        Ok(Self {
            width,
            sign_flip,
            optional: descr.max_def_level() == 1,
            descr,
            page_bytes,
            index: HashTable::new(),
            dictionary: Vec::new(),
            last: None,
            plain_only: !dictionary,
            keys: Vec::new(),
            plain: Vec::new(),
            levels: Vec::new(),
            page_rows: 0,
            page_nulls: 0,
            page_bounds: Bounds::EMPTY,
            pages: Vec::new(),
            page_index: Vec::new(),
            rows: 0,
            nulls: 0,
        })
    }

    /// A key that orders values as the column's sort order does.
    fn sort_key(&self, raw: u64) -> u64 {
        raw ^ self.sign_flip
    }

    fn dictionary_full(&self) -> bool {
        !self.plain_only && self.dictionary.len() * self.width > DICTIONARY_PAGE_BYTES
    }

    /// Rows the open page takes before it is full.
    fn room(&self) -> usize {
        let rows = PAGE_ROWS - self.page_rows;
        if self.plain_only {
            // Nulls take no bytes, so this only bounds the rows; the page is also checked
            // by its bytes after each run.
            let bytes = self.page_bytes.saturating_sub(self.plain.len());
            rows.min(bytes.div_ceil(self.width).max(1))
        } else {
            rows
        }
    }

    /// Appends a batch's values (`nulls` marks the null ones); pages that fill up are
    /// compressed.
    pub(crate) fn write(
        &mut self,
        values: Numbers<'_>,
        nulls: Option<&NullBuffer>,
        compressor: &mut PageCompressor,
    ) -> Result<(), ParquetError> {
        if values.width() != self.width {
            return Err(ParquetError::General(format!(
                "column {}: {}-byte values for a {}-byte column",
                self.descr.path(),
                values.width(),
                self.width
            )));
        }
        if nulls.is_some() && !self.optional {
            return Err(ParquetError::General(format!(
                "column {}: nulls in a column that cannot hold them",
                self.descr.path()
            )));
        }
        let len = values.len();
        let mut row = 0;
        while row < len {
            let to = len.min(row + self.room());
            let taken = match values {
                Numbers::U16(v) => self.push(v, nulls, row, to),
                Numbers::U32(v) => self.push(v, nulls, row, to),
                Numbers::U64(v) => self.push(v, nulls, row, to),
                Numbers::I64(v) => self.push(v, nulls, row, to),
            };
            self.page_rows += taken;
            row += taken;
            let full = self.page_rows == PAGE_ROWS || self.plain.len() >= self.page_bytes;
            let overflow = self.dictionary_full();
            if full || overflow {
                self.close_page(compressor)?;
            }
            if overflow {
                self.plain_only = true;
            }
        }
        Ok(())
    }

    /// Adds rows `from..to` to the open page and says how many it took: fewer when the
    /// dictionary passes its limit (at a row, whatever the batches).
    fn push<T: Raw>(
        &mut self,
        values: &[T],
        nulls: Option<&NullBuffer>,
        from: usize,
        to: usize,
    ) -> usize {
        if let Some(nulls) = nulls {
            for (row, value) in values.iter().enumerate().take(to).skip(from) {
                if nulls.is_null(row) {
                    self.levels.push(0);
                    self.page_nulls += 1;
                } else {
                    self.levels.push(1);
                    if self.push_value(value.raw()) {
                        return row + 1 - from;
                    }
                }
            }
            return to - from;
        }
        if self.optional {
            self.levels.resize(self.levels.len() + (to - from), 1);
        }
        if self.plain_only {
            let flip = self.sign_flip;
            let mut bounds = self.page_bounds;
            let values = &values[from..to];
            // A fixed-size copy per value (a store), not a call to `memcpy` of a length known
            // only at run time.
            self.plain.reserve(values.len() * self.width);
            if self.width == 4 {
                for v in values {
                    let raw = v.raw();
                    bounds.add(raw ^ flip);
                    self.plain.extend_from_slice(&(raw as u32).to_le_bytes());
                }
            } else {
                for v in values {
                    let raw = v.raw();
                    bounds.add(raw ^ flip);
                    self.plain.extend_from_slice(&raw.to_le_bytes());
                }
            }
            self.page_bounds = bounds;
            return to - from;
        }
        // The common case, kept in locals: the value is the previous row's.
        let values = &values[from..to];
        self.keys.reserve(values.len());
        let flip = self.sign_flip;
        let mut bounds = self.page_bounds;
        let mut last = self.last;
        let mut taken = values.len();
        for (row, v) in values.iter().enumerate() {
            let raw = v.raw();
            bounds.add(raw ^ flip);
            match last {
                Some((previous, key)) if previous == raw => self.keys.push(key),
                _ => {
                    let key = self.intern(raw);
                    last = Some((raw, key));
                    self.keys.push(key);
                    if self.dictionary_full() {
                        taken = row + 1;
                        break;
                    }
                }
            }
        }
        self.page_bounds = bounds;
        self.last = last;
        taken
    }

    /// Adds one non-null value; true when the dictionary has just passed its limit.
    #[inline]
    fn push_value(&mut self, raw: u64) -> bool {
        self.page_bounds.add(self.sort_key(raw));
        if self.plain_only {
            if self.width == 4 {
                self.plain.extend_from_slice(&(raw as u32).to_le_bytes());
            } else {
                self.plain.extend_from_slice(&raw.to_le_bytes());
            }
            return false;
        }
        let key = match self.last {
            Some((last, key)) if last == raw => key,
            _ => {
                let key = self.intern(raw);
                self.last = Some((raw, key));
                key
            }
        };
        self.keys.push(key);
        self.dictionary_full()
    }

    /// The key of `raw`, added to the dictionary if new.
    fn intern(&mut self, raw: u64) -> u32 {
        let Self {
            index, dictionary, ..
        } = self;
        let hashed = hash(raw);
        if let Some(&key) = index.find(hashed, |&k| dictionary[k as usize] == raw) {
            return key;
        }
        let key = dictionary.len() as u32;
        dictionary.push(raw);
        index.insert_unique(hashed, key, |&k| hash(dictionary[k as usize]));
        key
    }

    fn close_page(&mut self, compressor: &mut PageCompressor) -> Result<(), ParquetError> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.page_rows);
        let nulls = std::mem::take(&mut self.page_nulls);
        let bounds = std::mem::replace(&mut self.page_bounds, Bounds::EMPTY);
        self.rows += rows as u64;
        self.nulls += nulls as u64;
        self.page_index.push(PageIndex { nulls, bounds });
        compressor.scratch.clear();
        if self.optional {
            put_hybrid(&self.levels, 1, &mut compressor.scratch);
            self.levels.clear();
        }
        // A page that passed the dictionary's limit is still keys: `plain_only` is set after
        // it closes.
        let page = page::finish_page(
            compressor,
            &mut self.keys,
            &mut self.plain,
            (!self.plain_only).then_some(self.dictionary.len()),
            rows,
            rows,
        )?;
        self.pages.push(page);
        Ok(())
    }

    /// A sort key back as the physical value's little-endian bytes.
    fn bytes_of(&self, key: u64) -> Vec<u8> {
        (key ^ self.sign_flip).to_le_bytes()[..self.width].to_vec()
    }

    /// The chunk's statistics: min, max (when any value is not null) and nulls.
    fn statistics(&self, bounds: Bounds) -> Statistics {
        let raw = (!bounds.is_empty())
            .then_some((bounds.min ^ self.sign_flip, bounds.max ^ self.sign_flip));
        let signed = self.sign_flip != 0;
        if self.width == 4 {
            typed_statistics(raw, |r| r as u32 as i32, self.nulls, signed).into()
        } else {
            typed_statistics(raw, |r| r as i64, self.nulls, signed).into()
        }
    }

    /// Closes the chunk: its bytes (dictionary page first, offsets from 0) and what the row
    /// group writer needs to place them.
    pub(crate) fn close(
        mut self,
        compressor: &mut PageCompressor,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.close_page(compressor)?;
        let dictionary = (!self.dictionary.is_empty()).then(|| {
            let mut plain = Vec::with_capacity(self.dictionary.len() * self.width);
            for raw in &self.dictionary {
                plain.extend_from_slice(&raw.to_le_bytes()[..self.width]);
            }
            Dictionary {
                plain,
                entries: self.dictionary.len(),
            }
        });
        let pages = std::mem::take(&mut self.pages);
        let chunk = page::assemble(dictionary, pages, &mut compressor.zstd)?;

        let mut column_index = ColumnIndexBuilder::new(self.descr.physical_type());
        let (mut ascending, mut descending) = (true, true);
        let mut previous: Option<Bounds> = None;
        let mut chunk_bounds = Bounds::EMPTY;
        for page in &self.page_index {
            if page.bounds.is_empty() {
                column_index.append(true, Vec::new(), Vec::new(), page.nulls as i64);
                continue;
            }
            if let Some(last) = previous {
                ascending &= last.min <= page.bounds.min && last.max <= page.bounds.max;
                descending &= last.min >= page.bounds.min && last.max >= page.bounds.max;
            }
            previous = Some(page.bounds);
            chunk_bounds.join(page.bounds);
            column_index.append(
                false,
                self.bytes_of(page.bounds.min),
                self.bytes_of(page.bounds.max),
                page.nulls as i64,
            );
        }
        column_index.set_boundary_order(match (ascending, descending) {
            (true, _) => BoundaryOrder::ASCENDING,
            (false, true) => BoundaryOrder::DESCENDING,
            (false, false) => BoundaryOrder::UNORDERED,
        });

        let statistics = self.statistics(chunk_bounds);
        chunk.close(
            self.descr.clone(),
            compressor.codec,
            self.rows,
            self.rows,
            Some(statistics),
            Some(column_index.build()?),
        )
    }
}

/// Statistics of min and max `raw` (physical bits) as the physical type `T`, with `nulls`; the
/// deprecated min/max fields only for signed columns, as arrow-rs writes them.
fn typed_statistics<T>(
    raw: Option<(u64, u64)>,
    value: fn(u64) -> T,
    nulls: u64,
    signed: bool,
) -> ValueStatistics<T> {
    ValueStatistics::new(
        raw.map(|r| value(r.0)),
        raw.map(|r| value(r.1)),
        None,
        Some(nulls),
        false,
    )
    .with_backwards_compatible_min_max(signed)
}

/// A folded multiply: both halves of the 128-bit product, so that every bit of the value
/// reaches the low bits (the bucket) and the high ones (the tag) alike; sizes that are
/// multiples of 1,024 differ only in high bits.
fn hash(raw: u64) -> u64 {
    let product = u128::from(raw) * 0x9E37_79B9_7F4A_7C15;
    (product as u64) ^ ((product >> 64) as u64)
}

#[cfg(test)]
mod tests;
