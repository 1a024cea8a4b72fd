//! A Parquet writer for exactly one schema: the recorder's `packets` slices.
//!
//! The general-purpose path (Arrow builders, then the parquet crate's `ArrowWriter`) cost the
//! recorder four times tcpdump's CPU per small packet: every value went through a builder, a
//! level computation, a generic encoder and a statistics update, and the address columns were
//! hashed as strings per row. This writer knows its sixteen columns: a row is a few stores into
//! a [`PageRows`] (8192 rows or 1 MiB of payload); the [`RowGroupEncoder`] encodes a full page
//! column by column with encoders specialised for them (addresses are looked up as 128-bit
//! keys through a small cache and formatted once per row group; only the payload column is
//! compressed, and under [`Compression::Auto`] only where that pays, see [`compress`]); the
//! finished row group goes to a [`PacketsFile`], which lays it out and writes the footer.
//! The recorder encodes in its collector thread (the page is still in that core's cache) and
//! writes files in another, so that disk stalls never hold the rings up.
//!
//! The output is ordinary Parquet (format version 2, V1 data pages) with the Arrow schema in
//! its metadata, so arrow-rs, DataFusion and DuckDB read it like any other file; the tests
//! read it back with the parquet crate and compare every value.
//!
//! Layout: `PAR1`, row groups (each column chunk: an optional dictionary page, then data
//! pages), the column index of `ts`, the offset index of every chunk, the footer, `PAR1`.

mod column;
pub mod compress;
mod encoder;
mod encoding;
mod file;
mod format;
mod page;
mod thrift;

pub use compress::{Compression, PayloadCompressor};
pub use encoder::{EncodedRowGroup, RowGroupEncoder};
pub use file::PacketsFile;
pub use page::{PAGE_PAYLOAD_BYTES, PAGE_ROWS, PageRows};

use std::sync::OnceLock;

/// Column positions in the schema.
mod col {
    pub const TS: usize = 0;
    pub const NODE: usize = 1;
    pub const IFINDEX: usize = 2;
    pub const DIRECTION: usize = 3;
    pub const WIRE_LEN: usize = 4;
    pub const CGROUP_ID: usize = 5;
    pub const L3: usize = 6;
    pub const IP_PROTO: usize = 7;
    pub const SRC_IP: usize = 8;
    pub const DST_IP: usize = 9;
    pub const SRC_PORT: usize = 10;
    pub const DST_PORT: usize = 11;
    pub const TCP_FLAGS: usize = 12;
    pub const TCP_SEQ: usize = 13;
    pub const TCP_ACK: usize = 14;
    pub const PAYLOAD: usize = 15;
}

/// Encoded bytes after which a row group is written out (bounds the memory it holds, and lets
/// readers skip by time).
pub const ROW_GROUP_BYTES: usize = 4 << 20;
/// Rows after which a row group is written out whatever its size.
const ROW_GROUP_ROWS: u64 = 1 << 20;
/// Distinct addresses per column after which a row group is written out (a dictionary that
/// keeps growing, a scan for instance, would otherwise grow without bound).
const DICTIONARY_ENTRIES: u32 = 1 << 16;

/// The writer's name in the footer.
const CREATED_BY: &str = concat!("remora-agent version ", env!("CARGO_PKG_VERSION"));

/// The Arrow schema, IPC-encoded as Arrow readers expect it under `ARROW:schema`.
fn arrow_schema_metadata() -> &'static str {
    static ENCODED: OnceLock<String> = OnceLock::new();
    ENCODED.get_or_init(|| parquet::arrow::encode_arrow_schema(&crate::schema::packets_schema()))
}

#[cfg(test)]
mod tests;
