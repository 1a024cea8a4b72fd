//! The Parquet metadata of a packets file: its fixed schema, page headers, column chunk and
//! row group metadata, the page index and the footer, as `parquet.thrift` defines them.

use super::thrift::{Elem, Writer};

/// `Type`: physical types used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Physical {
    /// INT32 (u8, u16, u32 columns).
    Int32 = 1,
    /// INT64 (timestamps, u64).
    Int64 = 2,
    /// BYTE_ARRAY (text and payloads).
    ByteArray = 6,
}

/// `Encoding` values used here.
pub mod encoding {
    /// PLAIN.
    pub const PLAIN: i32 = 0;
    /// RLE (definition levels).
    pub const RLE: i32 = 3;
    /// DELTA_BINARY_PACKED.
    pub const DELTA_BINARY_PACKED: i32 = 5;
    /// RLE_DICTIONARY (data pages of dictionary-encoded columns).
    pub const RLE_DICTIONARY: i32 = 8;
}

/// `CompressionCodec` values used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// No compression.
    Uncompressed = 0,
    /// Zstandard.
    Zstd = 6,
}

/// Logical type of a column (with its legacy `ConvertedType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logical {
    /// Timestamp, nanoseconds, adjusted to UTC.
    TimestampNanosUtc,
    /// UTF-8 text.
    String,
    /// Unsigned integer of this many bits.
    Unsigned(u8),
    /// Plain bytes.
    Bytes,
}

/// One leaf column of the schema.
#[derive(Clone, Copy, Debug)]
pub struct ColumnSpec {
    /// Column name (and path).
    pub name: &'static str,
    /// Physical type.
    pub physical: Physical,
    /// Whether the column may hold nulls.
    pub nullable: bool,
    /// Logical type.
    pub logical: Logical,
}

const fn col(
    name: &'static str,
    physical: Physical,
    nullable: bool,
    logical: Logical,
) -> ColumnSpec {
    ColumnSpec {
        name,
        physical,
        nullable,
        logical,
    }
}

/// The `packets` columns in file order (docs/capture.md; `schema::packets_schema` is the same
/// schema in Arrow terms and must stay in step, which a test checks).
pub const COLUMNS: [ColumnSpec; 16] = [
    col("ts", Physical::Int64, false, Logical::TimestampNanosUtc),
    col("node", Physical::ByteArray, false, Logical::String),
    col("ifindex", Physical::Int32, false, Logical::Unsigned(32)),
    col("direction", Physical::Int32, false, Logical::Unsigned(8)),
    col("wire_len", Physical::Int32, false, Logical::Unsigned(32)),
    col("cgroup_id", Physical::Int64, true, Logical::Unsigned(64)),
    col("l3", Physical::Int32, false, Logical::Unsigned(8)),
    col("ip_proto", Physical::Int32, false, Logical::Unsigned(8)),
    col("src_ip", Physical::ByteArray, false, Logical::String),
    col("dst_ip", Physical::ByteArray, false, Logical::String),
    col("src_port", Physical::Int32, true, Logical::Unsigned(16)),
    col("dst_port", Physical::Int32, true, Logical::Unsigned(16)),
    col("tcp_flags", Physical::Int32, true, Logical::Unsigned(8)),
    col("tcp_seq", Physical::Int32, true, Logical::Unsigned(32)),
    col("tcp_ack", Physical::Int32, true, Logical::Unsigned(32)),
    col("payload", Physical::ByteArray, false, Logical::Bytes),
];

/// Writes the schema list of `FileMetaData` (field 2): the root, then the leaves.
fn write_schema(w: &mut Writer<'_>) {
    w.list(2, Elem::Struct, COLUMNS.len() + 1);
    w.elem_struct()
        .binary(4, b"arrow_schema")
        .i32(5, COLUMNS.len() as i32)
        .end();
    for c in &COLUMNS {
        w.elem_struct()
            .i32(1, c.physical as i32)
            .i32(3, i32::from(c.nullable)) // REQUIRED 0, OPTIONAL 1
            .binary(4, c.name.as_bytes());
        match c.logical {
            Logical::TimestampNanosUtc => {
                // LogicalType.TIMESTAMP { isAdjustedToUTC: true, unit: NANOS }
                w.begin(10)
                    .begin(8)
                    .bool(1, true)
                    .begin(2)
                    .begin(3)
                    .end()
                    .end()
                    .end()
                    .end();
            }
            Logical::String => {
                w.i32(6, 0); // ConvertedType.UTF8
                w.begin(10).begin(1).end().end(); // LogicalType.STRING
            }
            Logical::Unsigned(bits) => {
                let converted = match bits {
                    8 => 11,  // UINT_8
                    16 => 12, // UINT_16
                    32 => 13, // UINT_32
                    _ => 14,  // UINT_64
                };
                w.i32(6, converted);
                // LogicalType.INTEGER { bitWidth, isSigned: false }
                w.begin(10)
                    .begin(10)
                    .i8(1, bits as i8)
                    .bool(2, false)
                    .end()
                    .end();
            }
            Logical::Bytes => {}
        }
        w.end();
    }
}

/// A data page (V1) or dictionary page header.
#[derive(Clone, Copy, Debug)]
pub struct PageHeader {
    /// Bytes of the page body before compression.
    pub uncompressed: usize,
    /// Bytes of the page body as stored.
    pub compressed: usize,
    /// Values in the page, nulls included.
    pub num_values: usize,
    /// Value encoding.
    pub encoding: i32,
    /// True for a dictionary page.
    pub dictionary: bool,
}

impl PageHeader {
    /// Appends the header.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.i32(1, if self.dictionary { 2 } else { 0 }) // DICTIONARY_PAGE / DATA_PAGE
            .i32(2, self.uncompressed as i32)
            .i32(3, self.compressed as i32);
        if self.dictionary {
            w.begin(7)
                .i32(1, self.num_values as i32)
                .i32(2, encoding::PLAIN)
                .end();
        } else {
            w.begin(5)
                .i32(1, self.num_values as i32)
                .i32(2, self.encoding)
                .i32(3, encoding::RLE)
                .i32(4, encoding::RLE)
                .end();
        }
        w.finish();
    }
}

/// Column chunk statistics: min and max in the column's order, PLAIN-encoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Smallest value (none when every value is null).
    pub min: Option<Vec<u8>>,
    /// Largest value.
    pub max: Option<Vec<u8>>,
    /// Nulls in the chunk.
    pub nulls: u64,
}

/// Where one data page sits (the offset index).
#[derive(Clone, Copy, Debug)]
pub struct PageLocation {
    /// File offset of the page header.
    pub offset: u64,
    /// Header plus body bytes.
    pub size: u32,
    /// Index of the page's first row within its row group.
    pub first_row: u64,
}

/// Metadata of one written column chunk.
#[derive(Clone, Debug)]
pub struct ChunkMeta {
    /// The column's position in [`COLUMNS`].
    pub column: usize,
    /// Codec of every page of the chunk.
    pub codec: Codec,
    /// Encodings used by the chunk's pages (and its level encoding).
    pub encodings: Vec<i32>,
    /// Values including nulls.
    pub num_values: u64,
    /// Header and body bytes before compression.
    pub uncompressed: u64,
    /// Header and body bytes as stored.
    pub compressed: u64,
    /// Offset of the dictionary page, if any.
    pub dictionary_offset: Option<u64>,
    /// Offset of the first data page.
    pub data_offset: u64,
    /// Min/max/null count, when kept for this column.
    pub stats: Option<Stats>,
    /// Data page locations (offset index).
    pub pages: Vec<PageLocation>,
    /// Min and max per data page (column index), when kept for this column.
    pub page_stats: Option<Vec<(Vec<u8>, Vec<u8>)>>,
    /// Where the offset index and column index were written (offset, length).
    pub offset_index: Option<(u64, u32)>,
    /// As above, for the column index.
    pub column_index: Option<(u64, u32)>,
}

/// Metadata of one written row group.
#[derive(Clone, Debug)]
pub struct RowGroupMeta {
    /// Its column chunks, in schema order.
    pub chunks: Vec<ChunkMeta>,
    /// Rows.
    pub rows: u64,
    /// File offset of its first page.
    pub offset: u64,
    /// Its rows are in `ts` order.
    pub sorted: bool,
}

fn write_stats(w: &mut Writer<'_>, id: i16, s: &Stats) {
    w.begin(id).i64(3, s.nulls as i64);
    if let (Some(min), Some(max)) = (&s.min, &s.max) {
        w.binary(5, max).binary(6, min).bool(7, true).bool(8, true);
    }
    w.end();
}

fn write_chunk(w: &mut Writer<'_>, c: &ChunkMeta) {
    let spec = &COLUMNS[c.column];
    let start = c.dictionary_offset.unwrap_or(c.data_offset);
    w.elem_struct().i64(2, start as i64);
    w.begin(3)
        .i32(1, spec.physical as i32)
        .list(2, Elem::I32, c.encodings.len());
    for &e in &c.encodings {
        w.elem_i32(e);
    }
    w.list(3, Elem::Binary, 1)
        .elem_binary(spec.name.as_bytes())
        .i32(4, c.codec as i32)
        .i64(5, c.num_values as i64)
        .i64(6, c.uncompressed as i64)
        .i64(7, c.compressed as i64)
        .i64(9, c.data_offset as i64);
    if let Some(offset) = c.dictionary_offset {
        w.i64(11, offset as i64);
    }
    if let Some(stats) = &c.stats {
        write_stats(w, 12, stats);
    }
    w.end(); // ColumnMetaData
    if let Some((offset, len)) = c.offset_index {
        w.i64(4, offset as i64).i32(5, len as i32);
    }
    if let Some((offset, len)) = c.column_index {
        w.i64(6, offset as i64).i32(7, len as i32);
    }
    w.end(); // ColumnChunk
}

/// Appends the offset index of a chunk.
pub fn write_offset_index(out: &mut Vec<u8>, pages: &[PageLocation]) {
    let mut w = Writer::new(out);
    w.list(1, Elem::Struct, pages.len());
    for p in pages {
        w.elem_struct()
            .i64(1, p.offset as i64)
            .i32(2, p.size as i32)
            .i64(3, p.first_row as i64)
            .end();
    }
    w.finish();
}

/// Appends the column index of a chunk whose pages have no nulls.
pub fn write_column_index(out: &mut Vec<u8>, pages: &[(Vec<u8>, Vec<u8>)], ascending: bool) {
    let mut w = Writer::new(out);
    w.list(1, Elem::Bool, pages.len());
    for _ in pages {
        w.elem_bool(false);
    }
    w.list(2, Elem::Binary, pages.len());
    for (min, _) in pages {
        w.elem_binary(min);
    }
    w.list(3, Elem::Binary, pages.len());
    for (_, max) in pages {
        w.elem_binary(max);
    }
    w.i32(4, if ascending { 1 } else { 0 }); // BoundaryOrder
    w.list(5, Elem::I64, pages.len());
    for _ in pages {
        w.elem_i64(0);
    }
    w.finish();
}

/// Appends the footer's `FileMetaData`.
pub fn write_file_metadata(
    out: &mut Vec<u8>,
    row_groups: &[RowGroupMeta],
    key_values: &[(&str, &str)],
    created_by: &str,
) {
    let mut w = Writer::new(out);
    w.i32(1, 2);
    write_schema(&mut w);
    w.i64(3, row_groups.iter().map(|g| g.rows as i64).sum());
    w.list(4, Elem::Struct, row_groups.len());
    for (ordinal, g) in row_groups.iter().enumerate() {
        w.elem_struct().list(1, Elem::Struct, g.chunks.len());
        for c in &g.chunks {
            write_chunk(&mut w, c);
        }
        let uncompressed: u64 = g.chunks.iter().map(|c| c.uncompressed).sum();
        let compressed: u64 = g.chunks.iter().map(|c| c.compressed).sum();
        w.i64(2, uncompressed as i64).i64(3, g.rows as i64);
        // Sorted by ts (column 0), ascending, nulls last: only when it is true. Rows that
        // arrive late (another CPU's ring, a slow reader) are written as they come.
        if g.sorted {
            w.list(4, Elem::Struct, 1)
                .elem_struct()
                .i32(1, 0)
                .bool(2, false)
                .bool(3, false)
                .end();
        }
        w.i64(5, g.offset as i64)
            .i64(6, compressed as i64)
            .i16(7, ordinal as i16);
        w.end();
    }
    w.list(5, Elem::Struct, key_values.len());
    for (k, v) in key_values {
        w.elem_struct()
            .binary(1, k.as_bytes())
            .binary(2, v.as_bytes())
            .end();
    }
    w.binary(6, created_by.as_bytes());
    // Every column is ordered by its type (which makes min/max trustworthy to readers).
    w.list(7, Elem::Struct, COLUMNS.len());
    for _ in &COLUMNS {
        w.elem_struct().begin(1).end().end();
    }
    w.finish();
}
