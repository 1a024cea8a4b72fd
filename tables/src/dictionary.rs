//! A text column chunk with a Parquet dictionary, encoded here rather than by arrow-rs.
//!
//! arrow-rs interns every value of a dictionary column through a hash table, row by row
//! (`DictEncoder`), even when the value is the previous row's: with ~30 such columns in
//! `calls` (node, attribution, protocol, method, ...), most constant over long runs of rows,
//! that was a tenth of a one-core dissection (docs/dissection.md). This encoder checks the
//! previous row's value first and interns only on a change, then writes what arrow-rs writes:
//! a PLAIN dictionary page, then V1 data pages of RLE_DICTIONARY keys, falling back to PLAIN
//! pages once the dictionary passes [`DICTIONARY_PAGE_BYTES`], zstd-compressed, with an offset
//! index. The chunk is handed to the file writer whole
//! (`SerializedRowGroupWriter::append_column`), in the table's column order.
//!
//! Pages hold [`PAGE_ROWS`] rows (fewer at the end of a row group, or once plain values reach
//! the data page size), so these chunks do not depend on how rows were split into batches.

use arrow::array::{Array, StringArray};
use bytes::Bytes;
use hashbrown::HashTable;
use parquet::{
    basic::{Compression, Encoding},
    column::{
        page::{CompressedPage, Page, PageWriter},
        writer::ColumnCloseResult,
    },
    errors::ParquetError,
    file::{
        metadata::{ColumnChunkMetaData, OffsetIndexBuilder},
        writer::{SerializedPageWriter, TrackedWrite},
    },
    schema::types::ColumnDescPtr,
};

use crate::hybrid;

/// Rows per data page: arrow-rs's default page row limit, so that readers skip by the offset
/// index as finely as in the other columns.
pub const PAGE_ROWS: usize = 20_000;

/// Bytes of dictionary (PLAIN-encoded) after which the rest of the chunk is written PLAIN:
/// arrow-rs's default, for columns whose values stop repeating (paths with ids, say).
pub const DICTIONARY_PAGE_BYTES: usize = 1 << 20;

/// One column chunk of text with a dictionary, being encoded.
pub(crate) struct DictionaryColumn {
    descr: ColumnDescPtr,
    nullable: bool,
    /// Bytes of a PLAIN data page after which it is closed.
    page_bytes: usize,
    compression: Compression,
    /// The dictionary: keys found by value.
    index: HashTable<u32>,
    /// Dictionary values back to back, and where each ends.
    values: Vec<u8>,
    ends: Vec<u32>,
    /// The previous non-null row's key: most rows repeat it.
    last: Option<u32>,
    /// Past [`DICTIONARY_PAGE_BYTES`]: new pages are PLAIN.
    plain_only: bool,
    /// The open page: its keys, or its PLAIN values once `plain_only`, its definition levels
    /// when the column is nullable, and its rows.
    keys: Vec<u32>,
    plain: Vec<u8>,
    levels: Vec<u32>,
    page_rows: usize,
    /// The closed pages, in order.
    pages: Vec<Closed>,
    rows: u64,
    /// Where a page is put together before it is compressed.
    scratch: Vec<u8>,
}

/// A closed data page.
enum Closed {
    /// Encoded and compressed (its value count is its rows: no field is repeated).
    Page(CompressedPage),
    /// Only nulls: encoded when the chunk closes, as a dictionary page if the chunk has one.
    Nulls(usize),
}

impl DictionaryColumn {
    /// An empty chunk of the column `descr` (a text leaf, not repeated).
    pub(crate) fn new(descr: ColumnDescPtr, page_bytes: usize, compression: Compression) -> Self {
        Self {
            nullable: descr.max_def_level() > 0,
            descr,
            page_bytes,
            compression,
            index: HashTable::new(),
            values: Vec::new(),
            ends: Vec::new(),
            last: None,
            plain_only: false,
            keys: Vec::new(),
            plain: Vec::new(),
            levels: Vec::new(),
            page_rows: 0,
            pages: Vec::new(),
            rows: 0,
            scratch: Vec::new(),
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

    /// Appends the rows of `array`; pages that fill up are compressed with `zstd`.
    pub(crate) fn write(
        &mut self,
        array: &StringArray,
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<(), ParquetError> {
        let mut row = 0;
        while row < array.len() {
            let to = array.len().min(row + (PAGE_ROWS - self.page_rows));
            let taken = self.push_rows(array, row, to);
            self.page_rows += taken;
            row += taken;
            let full = self.page_rows == PAGE_ROWS || self.plain.len() >= self.page_bytes;
            let overflow = !self.plain_only && self.dictionary_bytes() > DICTIONARY_PAGE_BYTES;
            if full || overflow {
                self.close_page(zstd)?;
            }
            if overflow {
                self.plain_only = true;
            }
        }
        Ok(())
    }

    /// Adds rows `from..to` of `array` to the open page, and says how many it took: fewer
    /// when a PLAIN page fills up or the dictionary passes its limit (which happens at a row,
    /// whatever the batches, so the chunk does not depend on them).
    fn push_rows(&mut self, array: &StringArray, from: usize, to: usize) -> usize {
        let offsets = array.value_offsets();
        let data = array.value_data();
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        // The previous row's value, as bytes of this array once a row of it is read: most
        // rows are compared with it and nothing else.
        let carried = self
            .last
            .map(|k| self.value(k).to_vec())
            .unwrap_or_default();
        let mut last_key = self.last.unwrap_or(u32::MAX);
        let mut last: &[u8] = &carried;
        for row in from..to {
            if let Some(nulls) = nulls
                && nulls.is_null(row)
            {
                self.levels.push(0);
                continue;
            }
            if self.nullable {
                self.levels.push(1);
            }
            let value = &data[offsets[row] as usize..offsets[row + 1] as usize];
            if self.plain_only {
                self.plain
                    .extend_from_slice(&(value.len() as u32).to_le_bytes());
                self.plain.extend_from_slice(value);
                if self.plain.len() >= self.page_bytes {
                    return row + 1 - from;
                }
                continue;
            }
            if last_key == u32::MAX || !same(value, last) {
                last_key = self.intern(value);
                last = value;
                self.last = Some(last_key);
                if self.dictionary_bytes() > DICTIONARY_PAGE_BYTES {
                    self.keys.push(last_key);
                    return row + 1 - from;
                }
            }
            self.keys.push(last_key);
        }
        to - from
    }

    fn close_page(&mut self, zstd: &mut zstd::bulk::Compressor<'_>) -> Result<(), ParquetError> {
        if self.page_rows == 0 {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.page_rows);
        self.rows += rows as u64;
        if self.keys.is_empty() && self.plain.is_empty() {
            self.levels.clear();
            self.pages.push(Closed::Nulls(rows));
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        self.put_levels(&mut buf);
        let encoding = if self.plain_only {
            buf.extend_from_slice(&self.plain);
            self.plain.clear();
            Encoding::PLAIN
        } else {
            let bits = hybrid::key_bits(self.ends.len());
            buf.push(bits);
            hybrid::encode(&self.keys, bits, &mut buf);
            self.keys.clear();
            Encoding::RLE_DICTIONARY
        };
        let page = data_page(&buf, rows, encoding, zstd)?;
        self.scratch = buf;
        self.pages.push(Closed::Page(page));
        Ok(())
    }

    /// A V1 page's definition levels (length first), for a nullable column; takes them.
    fn put_levels(&mut self, buf: &mut Vec<u8>) {
        if !self.nullable {
            return;
        }
        let at = buf.len();
        buf.extend_from_slice(&[0; 4]);
        hybrid::encode(&self.levels, 1, buf);
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.levels.clear();
    }

    /// Closes the chunk: its bytes (dictionary page first, offsets from 0) and what the row
    /// group writer needs to place them.
    pub(crate) fn close(
        mut self,
        zstd: &mut zstd::bulk::Compressor<'_>,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        self.close_page(zstd)?;
        let has_dictionary = !self.ends.is_empty();
        let mut sink = TrackedWrite::new(Vec::new());
        let mut pages = SerializedPageWriter::new(&mut sink);
        let mut compressed = 0i64;
        let mut uncompressed = 0i64;
        let mut dictionary_at = None;
        let mut encodings = vec![Encoding::RLE];
        if has_dictionary {
            let mut buf = Vec::with_capacity(self.dictionary_bytes());
            for key in 0..self.ends.len() as u32 {
                let value = self.value(key);
                buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                buf.extend_from_slice(value);
            }
            let page = Page::DictionaryPage {
                buf: compress(&buf, zstd)?,
                num_values: self.ends.len() as u32,
                encoding: Encoding::PLAIN,
                is_sorted: false,
            };
            let spec = pages.write_page(CompressedPage::new(page, buf.len()))?;
            dictionary_at = Some(spec.offset as i64);
            compressed += spec.compressed_size as i64;
            uncompressed += spec.uncompressed_size as i64;
            encodings.extend([Encoding::PLAIN, Encoding::RLE_DICTIONARY]);
        }
        let mut offsets = OffsetIndexBuilder::new();
        let mut first_data_page = None;
        let mut scratch = std::mem::take(&mut self.scratch);
        for closed in std::mem::take(&mut self.pages) {
            let (page, rows) = match closed {
                Closed::Page(page) => {
                    let rows = page.num_values() as usize;
                    (page, rows)
                }
                Closed::Nulls(rows) => {
                    // Levels all 0, and no values: keys of the chunk's dictionary if it has one.
                    scratch.clear();
                    self.levels.resize(rows, 0);
                    self.put_levels(&mut scratch);
                    let encoding = if has_dictionary {
                        scratch.push(hybrid::key_bits(self.ends.len()));
                        Encoding::RLE_DICTIONARY
                    } else {
                        Encoding::PLAIN
                    };
                    (data_page(&scratch, rows, encoding, zstd)?, rows)
                }
            };
            if page.encoding() == Encoding::PLAIN && !encodings.contains(&Encoding::PLAIN) {
                encodings.push(Encoding::PLAIN);
            }
            let spec = pages.write_page(page)?;
            first_data_page.get_or_insert(spec.offset as i64);
            compressed += spec.compressed_size as i64;
            uncompressed += spec.uncompressed_size as i64;
            offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offsets.append_row_count(rows as i64);
        }
        pages.close()?;
        let bytes = Bytes::from(sink.into_inner()?);
        let metadata = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(self.compression)
            .set_encodings(encodings)
            .set_num_values(self.rows as i64)
            .set_total_compressed_size(compressed)
            .set_total_uncompressed_size(uncompressed)
            .set_dictionary_page_offset(dictionary_at)
            .set_data_page_offset(first_data_page.unwrap_or(0))
            .build()?;
        let close = ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: self.rows,
            metadata,
            bloom_filter: None,
            column_index: None,
            offset_index: Some(offsets.build()),
        };
        Ok((bytes, close))
    }
}

fn data_page(
    buf: &[u8],
    rows: usize,
    encoding: Encoding,
    zstd: &mut zstd::bulk::Compressor<'_>,
) -> Result<CompressedPage, ParquetError> {
    let page = Page::DataPage {
        buf: compress(buf, zstd)?,
        num_values: rows as u32,
        encoding,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    };
    Ok(CompressedPage::new(page, buf.len()))
}

fn compress(buf: &[u8], zstd: &mut zstd::bulk::Compressor<'_>) -> Result<Bytes, ParquetError> {
    zstd.compress(buf)
        .map(Bytes::from)
        .map_err(|e| ParquetError::External(Box::new(e)))
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

/// Equal values; empty ones without `memcmp`, which takes a slow path on the dangling pointer
/// of an empty buffer (docs/dissection.md, "Parquet's share, column by column").
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}
