//! What the column chunks encoded here share: compressing pages, laying a chunk out (dictionary
//! page first, then its data pages, with an offset index), and the levels of a V1 page.

use bytes::Bytes;
use parquet::{
    basic::{Compression, Encoding, ZstdLevel},
    column::{
        page::{CompressedPage, Page, PageWriter as _},
        writer::ColumnCloseResult,
    },
    errors::ParquetError,
    file::{
        metadata::{ColumnChunkMetaData, OffsetIndexBuilder},
        page_index::{column_index::ColumnIndexMetaData, offset_index::OffsetIndexMetaData},
        statistics::Statistics,
        writer::{SerializedPageWriter, TrackedWrite},
    },
    schema::types::ColumnDescPtr,
};

use crate::hybrid;

/// What every column of a file shares to make its pages: one zstd context, and the buffer a
/// page is put together in before it is compressed (one per column held up to a page each,
/// ~128 KiB for the PLAIN columns).
pub(crate) struct PageCompressor {
    pub(crate) zstd: Zstd,
    /// What the chunks' metadata says their pages are compressed with.
    pub(crate) codec: Compression,
    pub(crate) scratch: Vec<u8>,
}

impl PageCompressor {
    /// A compressor at zstd `level`.
    pub(crate) fn new(level: i32) -> Result<Self, ParquetError> {
        Ok(Self {
            zstd: Zstd {
                context: zstd::bulk::Compressor::new(level)
                    .map_err(|e| ParquetError::External(Box::new(e)))?,
                out: Vec::new(),
            },
            codec: Compression::ZSTD(ZstdLevel::try_new(level)?),
            scratch: Vec::new(),
        })
    }
}

/// A zstd context and the buffer it compresses into.
pub(crate) struct Zstd {
    context: zstd::bulk::Compressor<'static>,
    /// Room for the largest page's worst case, reused.
    out: Vec<u8>,
}

impl Zstd {
    /// `buf` compressed, in an allocation of its own size. Compressed straight into a fresh
    /// buffer, a page kept zstd's worst case for its input (about the page uncompressed) until
    /// its row group was written: 26–34 MB of a dissection's live heap at its peak, for pages
    /// that zstd had made a tenth of that (heaptrack; docs/dissection.md, "Pages held at their
    /// compressed size").
    fn compress(&mut self, buf: &[u8]) -> Result<Bytes, ParquetError> {
        self.out.clear();
        self.out.reserve(zstd::zstd_safe::compress_bound(buf.len()));
        self.context
            .compress_to_buffer(buf, &mut self.out)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        Ok(Bytes::copy_from_slice(&self.out))
    }
}

/// A closed data page.
pub(crate) enum Closed {
    /// Encoded and compressed, and its rows.
    Page(CompressedPage, usize),
    /// Without values (nulls, empty lists): its levels, encoded, and its rows and values.
    /// Made a page when the chunk closes, a dictionary page's if the chunk has one.
    Levels {
        levels: Vec<u8>,
        rows: usize,
        values: usize,
    },
}

/// A chunk's dictionary, for [`assemble`]: its values PLAIN-encoded, and how many.
pub(crate) struct Dictionary {
    pub(crate) plain: Vec<u8>,
    pub(crate) entries: usize,
}

/// A chunk laid out: its bytes (offsets from 0) and what its metadata needs from them.
pub(crate) struct Assembled {
    bytes: Bytes,
    encodings: Vec<Encoding>,
    compressed: i64,
    uncompressed: i64,
    dictionary_at: Option<i64>,
    first_data_page: i64,
    offset_index: OffsetIndexMetaData,
}

/// Lays out a chunk: the dictionary page (when there is one), then `pages` in order; pages of
/// levels alone become pages of the chunk's encoding (no values either way).
pub(crate) fn assemble(
    dictionary: Option<Dictionary>,
    pages: Vec<Closed>,
    zstd: &mut Zstd,
) -> Result<Assembled, ParquetError> {
    let mut sink = TrackedWrite::new(Vec::new());
    let mut writer = SerializedPageWriter::new(&mut sink);
    let (mut compressed, mut uncompressed) = (0i64, 0i64);
    let mut dictionary_at = None;
    let mut encodings = vec![Encoding::RLE];
    let key_bits = dictionary.as_ref().map(|d| hybrid::key_bits(d.entries));
    if let Some(dictionary) = dictionary {
        let page = Page::DictionaryPage {
            buf: zstd.compress(&dictionary.plain)?,
            num_values: dictionary.entries as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let spec = writer.write_page(CompressedPage::new(page, dictionary.plain.len()))?;
        dictionary_at = Some(spec.offset as i64);
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        encodings.extend([Encoding::PLAIN, Encoding::RLE_DICTIONARY]);
    }
    let mut offsets = OffsetIndexBuilder::new();
    let mut first_data_page = None;
    for closed in pages {
        let (page, rows) = match closed {
            Closed::Page(page, rows) => (page, rows),
            Closed::Levels {
                mut levels,
                rows,
                values,
            } => {
                let encoding = match key_bits {
                    Some(bits) => {
                        levels.push(bits);
                        Encoding::RLE_DICTIONARY
                    }
                    None => Encoding::PLAIN,
                };
                (data_page(&levels, values, encoding, zstd)?, rows)
            }
        };
        if page.encoding() == Encoding::PLAIN && !encodings.contains(&Encoding::PLAIN) {
            encodings.push(Encoding::PLAIN);
        }
        let spec = writer.write_page(page)?;
        first_data_page.get_or_insert(spec.offset as i64);
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        offsets.append_row_count(rows as i64);
    }
    writer.close()?;
    Ok(Assembled {
        bytes: Bytes::from(sink.into_inner()?),
        encodings,
        compressed,
        uncompressed,
        dictionary_at,
        first_data_page: first_data_page.unwrap_or(0),
        offset_index: offsets.build(),
    })
}

impl Assembled {
    /// The chunk's bytes and what the row group writer needs to place them: the metadata of
    /// `descr`'s chunk of `rows` rows and `values` values (levels included), compressed with
    /// `codec`, with `statistics` and a `column_index` where the column has them.
    pub(crate) fn close(
        self,
        descr: ColumnDescPtr,
        codec: Compression,
        rows: u64,
        values: u64,
        statistics: Option<Statistics>,
        column_index: Option<ColumnIndexMetaData>,
    ) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
        let mut metadata = ColumnChunkMetaData::builder(descr)
            .set_compression(codec)
            .set_encodings(self.encodings)
            .set_num_values(values as i64)
            .set_total_compressed_size(self.compressed)
            .set_total_uncompressed_size(self.uncompressed)
            .set_dictionary_page_offset(self.dictionary_at)
            .set_data_page_offset(self.first_data_page);
        if let Some(statistics) = statistics {
            metadata = metadata.set_statistics(statistics);
        }
        let close = ColumnCloseResult {
            bytes_written: self.bytes.len() as u64,
            rows_written: rows,
            metadata: metadata.build()?,
            bloom_filter: None,
            column_index,
            offset_index: Some(self.offset_index),
        };
        Ok((self.bytes, close))
    }
}

/// Closes a page whose levels are in `compressor.scratch`: its values, taken from `keys` (with
/// `dictionary`, the entries the chunk's dictionary has) or else from `plain`, go after the
/// levels and the page is compressed; a page without values keeps its levels for
/// [`assemble`] to finish.
pub(crate) fn finish_page(
    compressor: &mut PageCompressor,
    keys: &mut Vec<u32>,
    plain: &mut Vec<u8>,
    dictionary: Option<usize>,
    rows: usize,
    values: usize,
) -> Result<Closed, ParquetError> {
    let PageCompressor {
        zstd, scratch: buf, ..
    } = compressor;
    if keys.is_empty() && plain.is_empty() {
        return Ok(Closed::Levels {
            levels: buf.clone(),
            rows,
            values,
        });
    }
    let encoding = match dictionary {
        Some(entries) => {
            let bits = hybrid::key_bits(entries);
            buf.push(bits);
            hybrid::encode(keys, bits, buf);
            keys.clear();
            Encoding::RLE_DICTIONARY
        }
        None => {
            buf.extend_from_slice(plain);
            plain.clear();
            Encoding::PLAIN
        }
    };
    Ok(Closed::Page(data_page(buf, values, encoding, zstd)?, rows))
}

/// Appends levels as a V1 page holds them: their encoded length, then the hybrid encoding.
pub(crate) fn put_hybrid(levels: &[u32], bits: u8, buf: &mut Vec<u8>) {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    hybrid::encode(levels, bits, buf);
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// A V1 data page of `values` values (levels included), compressed.
fn data_page(
    buf: &[u8],
    values: usize,
    encoding: Encoding,
    zstd: &mut Zstd,
) -> Result<CompressedPage, ParquetError> {
    let page = Page::DataPage {
        buf: zstd.compress(buf)?,
        num_values: values as u32,
        encoding,
        def_level_encoding: Encoding::RLE,
        rep_level_encoding: Encoding::RLE,
        statistics: None,
    };
    Ok(CompressedPage::new(page, buf.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_compress_whole_whatever_came_before() {
        let mut zstd = PageCompressor::new(1)
            .unwrap_or_else(|e| panic!("{e}"))
            .zstd;
        let mut next = crate::tests::random(7);
        let large: Vec<u8> = (0..300_000)
            .map(|i| (i % 251) as u8 ^ next(3) as u8)
            .collect();
        let noise: Vec<u8> = (0..5_000).map(|_| next(256) as u8).collect();
        // Large, then small, then incompressible, then empty: the buffer is reused, the output
        // never carries a previous page's bytes.
        for input in [&large[..], b"abcabcabc", &noise[..], b"", &large[..1000]] {
            let out = zstd.compress(input).unwrap_or_else(|e| panic!("{e}"));
            let back =
                zstd::bulk::decompress(&out, input.len().max(1)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, input);
        }
    }
}
