//! A column chunk of text or bytes (a flat column, or the leaf of a list or map), encoded here
//! rather than by arrow-rs.
//!
//! arrow-rs interns every value of a dictionary column through a hash table, row by row
//! (`DictEncoder`), even when the value is the previous row's: with ~30 such columns in
//! `calls` (node, attribution, protocol, method, ...), most constant over long runs of rows,
//! that was a tenth of a one-core dissection (docs/dissection.md). This encoder checks the
//! previous row's value first (in a list or map, the previous row's value at the same place:
//! header names and most of their values repeat row after row in the same order) and interns
//! only on a change, then writes what arrow-rs writes: a PLAIN dictionary page, then V1 data
//! pages of RLE_DICTIONARY keys, falling back to PLAIN pages once the dictionary passes
//! [`DICTIONARY_PAGE_BYTES`], zstd-compressed, with an offset index. Columns without a
//! dictionary (ids, URLs, bodies) are PLAIN from the start: arrow-rs grew each page's buffer
//! by doubling and its compressor's output too, copying bodies and header maps three times
//! over. The chunk is handed to the file writer whole (`SerializedRowGroupWriter::append_column`),
//! in the table's column order.
//!
//! Pages hold [`PAGE_ROWS`] rows (fewer at the end of a row group, or once plain values reach
//! the data page size or a page's list items reach [`PAGE_VALUES`]); they end between rows, so
//! these chunks do not depend on how rows were split into batches.

use arrow::{
    array::{Array, AsArray as _, GenericByteArray, StringArray},
    buffer::NullBuffer,
    datatypes::{ByteArrayType, DataType},
};
use bytes::Bytes;
use hashbrown::HashTable;
use parquet::{
    column::writer::ColumnCloseResult, errors::ParquetError, schema::types::ColumnDescPtr,
};

use crate::{
    hybrid,
    page::{self, Closed, Dictionary, PageCompressor, put_hybrid},
};

/// Rows per data page: arrow-rs's default page row limit, so that readers skip by the offset
/// index as finely as in the other columns.
pub const PAGE_ROWS: usize = 20_000;

/// Values (list items or map entries, with their levels) after which a page of a list or map
/// leaf is closed at the end of the row, whatever its row count: a page's keys and levels are
/// held as words until it closes (12 bytes a value), and responses of a dozen headers made
/// 240,000 of them per page of 20,000 rows, 3 MiB per leaf.
pub const PAGE_VALUES: usize = 1 << 15;

/// Bytes of dictionary (PLAIN-encoded) after which the rest of the chunk is written PLAIN:
/// arrow-rs's default, for columns whose values stop repeating (paths with ids, say).
pub const DICTIONARY_PAGE_BYTES: usize = 1 << 20;

/// No key: a null item, in [`ByteArrayColumn`]'s previous row.
const NO_KEY: u32 = u32::MAX;

/// The values of one leaf in a batch, as Arrow lays out text and bytes.
#[derive(Clone, Copy)]
pub(crate) struct Values<'a> {
    /// Where each value starts, and where the last ends, in `data`.
    offsets: &'a [i32],
    data: &'a [u8],
    /// Which values are null, when any is.
    nulls: Option<&'a NullBuffer>,
}

impl<'a> Values<'a> {
    /// The values of a text or bytes array.
    fn of<T: ByteArrayType<Offset = i32>>(array: &'a GenericByteArray<T>) -> Self {
        Self {
            offsets: array.value_offsets(),
            data: array.value_data(),
            nulls: array.nulls().filter(|n| n.null_count() > 0),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(i))
    }

    fn get(&self, i: usize) -> &'a [u8] {
        &self.data[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// A batch's rows of one leaf.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// One value per row.
    Flat(Values<'a>),
    /// Per row, a run of `values` (a list's items, or a map's keys or values): row `r` holds
    /// `values` `ends[r]..ends[r + 1]`, or is null when `nulls` says so.
    Nested {
        ends: &'a [i32],
        nulls: Option<&'a NullBuffer>,
        values: Values<'a>,
    },
}

impl<'a> Rows<'a> {
    /// The leaves a column of `data_type` has when its columns are ours: one for text, bytes
    /// or a list of text, two (keys, values) for a map of text; `None` for any other type.
    pub(crate) fn leaves(data_type: &DataType) -> Option<usize> {
        match data_type {
            DataType::Utf8 | DataType::Binary => Some(1),
            DataType::List(item) if *item.data_type() == DataType::Utf8 => Some(1),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv)
                    if kv.len() == 2 && kv.iter().all(|f| *f.data_type() == DataType::Utf8) =>
                {
                    Some(2)
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// The rows of each leaf of `column`, in the order of [`Rows::leaves`]; `None` when its
    /// type is not one of ours.
    pub(crate) fn of_column(column: &'a dyn Array) -> Option<Vec<Self>> {
        Self::leaves(column.data_type())?;
        let nested = |ends: &'a [i32], nulls: Option<&'a NullBuffer>, values: &'a StringArray| {
            Self::Nested {
                ends,
                nulls: nulls.filter(|n| n.null_count() > 0),
                values: Values::of(values),
            }
        };
        Some(match column.data_type() {
            DataType::Utf8 => vec![Self::Flat(Values::of(column.as_string_opt::<i32>()?))],
            DataType::Binary => vec![Self::Flat(Values::of(column.as_binary_opt::<i32>()?))],
            DataType::List(_) => {
                let list = column.as_list_opt::<i32>()?;
                let items = list.values().as_string_opt::<i32>()?;
                vec![nested(list.value_offsets(), list.nulls(), items)]
            }
            _ => {
                let map = column.as_map_opt()?;
                let (keys, values) = (
                    map.keys().as_string_opt::<i32>()?,
                    map.values().as_string_opt::<i32>()?,
                );
                vec![
                    nested(map.value_offsets(), map.nulls(), keys),
                    nested(map.value_offsets(), map.nulls(), values),
                ]
            }
        })
    }

    fn len(&self) -> usize {
        match self {
            Self::Flat(values) => values.offsets.len().saturating_sub(1),
            Self::Nested { ends, .. } => ends.len().saturating_sub(1),
        }
    }
}

/// One column chunk of text or bytes, being encoded.
pub(crate) struct ByteArrayColumn {
    descr: ColumnDescPtr,
    /// Definition levels: the highest (a value is there), and the bits each takes.
    max_def: u32,
    def_bits: u8,
    /// The leaf itself may be null (its items, in a list or map).
    leaf_optional: bool,
    /// In a list or map (one level of repetition).
    nested: bool,
    /// Bytes of a PLAIN data page after which it is closed.
    page_bytes: usize,
    /// The dictionary: keys found by value.
    index: HashTable<u32>,
    /// Dictionary values back to back, and where each ends.
    values: Vec<u8>,
    ends: Vec<u32>,
    /// The previous non-null row's key: most rows repeat it.
    last: Option<u32>,
    /// In a list or map, the previous row's keys ([`NO_KEY`] for a null item), and the row's
    /// being collected.
    last_row: Vec<u32>,
    this_row: Vec<u32>,
    /// Without a dictionary, or past [`DICTIONARY_PAGE_BYTES`]: new pages are PLAIN.
    plain_only: bool,
    /// The open page: its keys, or its PLAIN values once `plain_only`, its definition and
    /// repetition levels when the column has them, its rows and its values (levels).
    keys: Vec<u32>,
    plain: Vec<u8>,
    levels: Vec<u32>,
    repetitions: Vec<u32>,
    page_rows: usize,
    page_values: usize,
    /// The closed pages, in order.
    pages: Vec<Closed>,
    rows: u64,
    values_written: u64,
}

impl ByteArrayColumn {
    /// An empty chunk of the leaf `descr` (text or bytes, flat or in a list or map), with a
    /// dictionary while it pays when `dictionary`.
    pub(crate) fn new(descr: ColumnDescPtr, dictionary: bool, page_bytes: usize) -> Self {
        let max_def = u32::try_from(descr.max_def_level()).unwrap_or(0);
        Self {
            max_def,
            def_bits: hybrid::key_bits(max_def as usize + 1),
            leaf_optional: descr.self_type().is_optional(),
            nested: descr.max_rep_level() > 0,
            descr,
            page_bytes,
            index: HashTable::new(),
            values: Vec::new(),
            ends: Vec::new(),
            last: None,
            last_row: Vec::new(),
            this_row: Vec::new(),
            plain_only: !dictionary,
            keys: Vec::new(),
            plain: Vec::new(),
            levels: Vec::new(),
            repetitions: Vec::new(),
            page_rows: 0,
            page_values: 0,
            pages: Vec::new(),
            rows: 0,
            values_written: 0,
        }
    }

    fn value(&self, key: u32) -> &[u8] {
        value_of(&self.values, &self.ends, key)
    }

    /// The key of `value`, added to the dictionary if new.
    fn intern(&mut self, value: &[u8]) -> u32 {
        let Self {
            index,
            values,
            ends,
            ..
        } = self;
        let hash = hash(value);
        if let Some(&key) = index.find(hash, |&k| same(value_of(values, ends, k), value)) {
            return key;
        }
        let key = ends.len() as u32;
        values.extend_from_slice(value);
        ends.push(values.len() as u32);
        index.insert_unique(hash, key, |&k| hash_of(values, ends, k));
        key
    }

    /// Bytes of the dictionary page, PLAIN-encoded.
    fn dictionary_bytes(&self) -> usize {
        self.values.len() + 4 * self.ends.len()
    }

    fn dictionary_full(&self) -> bool {
        !self.plain_only && self.dictionary_bytes() > DICTIONARY_PAGE_BYTES
    }

    /// Appends `rows`; pages that fill up are compressed.
    pub(crate) fn write(
        &mut self,
        rows: Rows<'_>,
        compressor: &mut PageCompressor,
    ) -> Result<(), ParquetError> {
        if matches!(rows, Rows::Nested { .. }) != self.nested {
            return Err(ParquetError::General(format!(
                "column {}: rows {} a list or map, the leaf {}",
                self.descr.path(),
                if self.nested { "not in" } else { "in" },
                if self.nested { "is in one" } else { "is not" },
            )));
        }
        let len = rows.len();
        let mut row = 0;
        while row < len {
            let to = len.min(row + (PAGE_ROWS - self.page_rows));
            let taken = match rows {
                Rows::Flat(values) => self.push_flat(values, row, to),
                Rows::Nested {
                    ends,
                    nulls,
                    values,
                } => self.push_nested(ends, nulls, values, row, to),
            };
            self.page_rows += taken;
            row += taken;
            let full = self.page_rows == PAGE_ROWS
                || self.plain.len() >= self.page_bytes
                || self.page_values >= PAGE_VALUES;
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

    /// Adds rows `from..to` of a flat column to the open page, and says how many it took:
    /// fewer when a PLAIN page fills up or the dictionary passes its limit (which happens at a
    /// row, whatever the batches, so the chunk does not depend on them).
    fn push_flat(&mut self, array: Values<'_>, from: usize, to: usize) -> usize {
        let nullable = self.max_def > 0;
        if to > from && array.nulls.is_none() && array.offsets[from] == array.offsets[to] {
            return self.push_empty_values(to - from);
        }
        // The previous row's value, as bytes of this array once a row of it is read: most
        // rows are compared with it and nothing else.
        let carried = self
            .last
            .map(|k| self.value(k).to_vec())
            .unwrap_or_default();
        let mut last_key = self.last.unwrap_or(NO_KEY);
        let mut last: &[u8] = &carried;
        for row in from..to {
            self.page_values += 1;
            if array.is_null(row) {
                self.levels.push(0);
                continue;
            }
            if nullable {
                self.levels.push(1);
            }
            let value = array.get(row);
            if self.plain_only {
                put_plain(&mut self.plain, value);
                if self.plain.len() >= self.page_bytes {
                    return row + 1 - from;
                }
                continue;
            }
            if last_key == NO_KEY || !same(value, last) {
                last_key = self.intern(value);
                last = value;
                self.last = Some(last_key);
                if self.dictionary_full() {
                    self.keys.push(last_key);
                    return row + 1 - from;
                }
            }
            self.keys.push(last_key);
        }
        to - from
    }

    /// Adds `n` empty values of a flat column (a run of rows [`Self::push_flat`] would take
    /// one by one, to the same effect), and says how many it took.
    fn push_empty_values(&mut self, n: usize) -> usize {
        let taken = if self.plain_only {
            // Each is its 4-byte length; the page closes once it reaches its bytes.
            let room = self
                .page_bytes
                .saturating_sub(self.plain.len())
                .div_ceil(4)
                .max(1);
            let taken = n.min(room);
            self.plain.resize(self.plain.len() + 4 * taken, 0);
            taken
        } else {
            let key = match self.last {
                Some(key) if self.value(key).is_empty() => key,
                _ => {
                    let key = self.intern(b"");
                    self.last = Some(key);
                    key
                }
            };
            let taken = if self.dictionary_full() { 1 } else { n };
            self.keys.resize(self.keys.len() + taken, key);
            taken
        };
        if self.max_def > 0 {
            self.levels.resize(self.levels.len() + taken, 1);
        }
        self.page_values += taken;
        taken
    }

    /// Adds rows `from..to` of a list or map leaf to the open page, and says how many it took
    /// (fewer as [`Self::push_flat`] says, and when the page's values reach [`PAGE_VALUES`]).
    ///
    /// Levels, for a leaf under one repeated group: repetition 0 at a row's first value and 1
    /// at the others; definition `max_def` for a value, one less for a null item, and for a
    /// row without items one less again (two less for a null row).
    fn push_nested(
        &mut self,
        ends: &[i32],
        row_nulls: Option<&NullBuffer>,
        items: Values<'_>,
        from: usize,
        to: usize,
    ) -> usize {
        let item_null_def = self.max_def.saturating_sub(1);
        let empty_def = item_null_def.saturating_sub(u32::from(self.leaf_optional));
        if to > from && row_nulls.is_none() && ends[from] == ends[to] {
            // Only empty rows (the DNS lists of HTTP calls): what the loop below does for
            // each, at once.
            let room = if self.plain.len() >= self.page_bytes || self.dictionary_full() {
                1
            } else {
                PAGE_VALUES.saturating_sub(self.page_values).max(1)
            };
            let taken = (to - from).min(room);
            self.repetitions.resize(self.repetitions.len() + taken, 0);
            self.levels.resize(self.levels.len() + taken, empty_def);
            self.page_values += taken;
            self.last_row.clear();
            return taken;
        }
        // The previous row of this batch, when its keys are `last_row`: a row whose items are
        // the same bytes (header names, most of the time) takes its keys whole.
        let mut previous: Option<(usize, usize)> = None;
        for row in from..to {
            let (start, end) = (ends[row] as usize, ends[row + 1] as usize);
            let null = row_nulls.is_some_and(|n| n.is_null(row));
            if let Some((p_start, p_end)) = previous
                && !null
                && !self.plain_only
                && items.nulls.is_none()
                && same_items(&items, (p_start, p_end), (start, end))
            {
                self.repetitions.push(0);
                self.repetitions
                    .resize(self.repetitions.len() + end - start - 1, 1);
                self.levels
                    .resize(self.levels.len() + end - start, self.max_def);
                self.keys.extend_from_slice(&self.last_row);
                self.page_values += end - start;
                previous = Some((start, end));
                if self.plain.len() >= self.page_bytes || self.page_values >= PAGE_VALUES {
                    return row + 1 - from;
                }
                continue;
            }
            previous = None;
            // A null row may still span items (Arrow allows it): they are not its values.
            if start == end || null {
                self.repetitions.push(0);
                self.levels.push(if null {
                    empty_def.saturating_sub(1)
                } else {
                    empty_def
                });
                self.page_values += 1;
                self.last_row.clear();
            } else {
                self.this_row.clear();
                for (at, item) in (start..end).enumerate() {
                    self.repetitions.push(u32::from(at > 0));
                    if items.is_null(item) {
                        self.levels.push(item_null_def);
                        self.this_row.push(NO_KEY);
                        continue;
                    }
                    self.levels.push(self.max_def);
                    let value = items.get(item);
                    if self.plain_only {
                        put_plain(&mut self.plain, value);
                        continue;
                    }
                    let key = match self.last_row.get(at) {
                        Some(&k) if k != NO_KEY && same(self.value(k), value) => k,
                        _ => self.intern(value),
                    };
                    self.keys.push(key);
                    self.this_row.push(key);
                }
                std::mem::swap(&mut self.last_row, &mut self.this_row);
                self.page_values += end - start;
                if !self.plain_only {
                    previous = Some((start, end));
                }
            }
            if self.plain.len() >= self.page_bytes
                || self.page_values >= PAGE_VALUES
                || self.dictionary_full()
            {
                return row + 1 - from;
            }
        }
        to - from
    }

    fn close_page(&mut self, compressor: &mut PageCompressor) -> Result<(), ParquetError> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.page_rows);
        let values = std::mem::take(&mut self.page_values);
        self.rows += rows as u64;
        self.values_written += values as u64;
        compressor.scratch.clear();
        self.put_levels(&mut compressor.scratch);
        let page = page::finish_page(
            compressor,
            &mut self.keys,
            &mut self.plain,
            (!self.plain_only).then_some(self.ends.len()),
            rows,
            values,
        )?;
        self.pages.push(page);
        Ok(())
    }

    /// A V1 page's repetition then definition levels (each length first), for the levels
    /// the column has; takes them.
    fn put_levels(&mut self, buf: &mut Vec<u8>) {
        if self.nested {
            put_hybrid(&self.repetitions, 1, buf);
            self.repetitions.clear();
        }
        if self.max_def > 0 {
            put_hybrid(&self.levels, self.def_bits, buf);
            self.levels.clear();
        }
    }

    /// Closes the chunk: its bytes (dictionary page first, offsets from 0) and what the row
    /// group writer needs to place them.
    pub(crate) fn close(
        mut self,
        compressor: &mut PageCompressor,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.close_page(compressor)?;
        let dictionary = (!self.ends.is_empty()).then(|| {
            let mut plain = Vec::with_capacity(self.dictionary_bytes());
            for key in 0..self.ends.len() as u32 {
                put_plain(&mut plain, self.value(key));
            }
            Dictionary {
                plain,
                entries: self.ends.len(),
            }
        });
        let pages = std::mem::take(&mut self.pages);
        let chunk = page::assemble(dictionary, pages, &mut compressor.zstd)?;
        chunk.close(
            self.descr.clone(),
            compressor.codec,
            self.rows,
            self.values_written,
            None,
            None,
        )
    }
}

/// Appends a PLAIN byte array: its length, then its bytes.
fn put_plain(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn value_of<'v>(values: &'v [u8], ends: &[u32], key: u32) -> &'v [u8] {
    let k = key as usize;
    let start = if k == 0 { 0 } else { ends[k - 1] as usize };
    &values[start..ends[k] as usize]
}

fn hash_of(values: &[u8], ends: &[u32], key: u32) -> u64 {
    hash(value_of(values, ends, key))
}

fn hash(value: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<rustc_hash::FxHasher>::default().hash_one(value)
}

/// Equal values. Short ones (most header names and values) by a word or two of loads, not a
/// call to `memcmp` (2% of a dissection); empty ones never reach `memcmp`, which takes a slow
/// path on the dangling pointer of an empty buffer (docs/dissection.md, "Parquet's share,
/// column by column").
fn same(a: &[u8], b: &[u8]) -> bool {
    fn word(v: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&v[at..at + 8]);
        u64::from_ne_bytes(w)
    }
    fn half(v: &[u8], at: usize) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&v[at..at + 4]);
        u32::from_ne_bytes(w)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a == b,
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

/// Items `a` and `b` (ranges of `items`) hold the same values: as many, of the same lengths,
/// with the same bytes.
fn same_items(items: &Values<'_>, a: (usize, usize), b: (usize, usize)) -> bool {
    let n = a.1 - a.0;
    if n != b.1 - b.0 || n == 0 {
        return false;
    }
    let (oa, ob) = (&items.offsets[a.0..=a.1], &items.offsets[b.0..=b.1]);
    let (ba, bb) = (oa[0], ob[0]);
    oa.iter().zip(ob).all(|(x, y)| x - ba == y - bb)
        && same(
            &items.data[ba as usize..oa[n] as usize],
            &items.data[bb as usize..ob[n] as usize],
        )
}

#[cfg(test)]
mod tests;
