//! A table's Parquet file: written batch by batch into a temp file, published atomically, with
//! the layout its definition asks for. (The recorder's `packets` slices have their own writer,
//! `remora_agent::writer` and `packets_parquet`: one fixed schema, encoded straight from the
//! rings at a fraction of this path's cost per row.)

use std::{fs::File, path::Path};

use arrow::array::RecordBatch;
use parquet::{
    arrow::{ArrowWriter, add_encoded_arrow_schema_to_metadata, arrow_writer::ArrowWriterOptions},
    basic::{Compression, ZstdLevel},
    file::properties::{EnabledStatistics, WriterProperties},
    schema::types::ColumnPath,
};

use crate::{
    Table,
    column::{Encoding, Kind},
};

/// Writing a table failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Building the Arrow batch failed.
    #[error("building rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing the Parquet file failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The Parquet layout of `table`'s files, from its columns:
///
/// - no dictionary for [`Encoding::Unique`] columns (a map's values, for maps), nor for any
///   map's keys;
/// - min/max statistics per page only for numbers, times and flags: those are what time
///   windows and `status >= 500`-style filters prune with. Min/max of text, bodies, lists and
///   maps prune next to nothing (rows are in time order, not sorted by any text) and cost a
///   whole-value comparison per row: ~15% of a dissection for bodies and maps;
/// - zstd level 1;
/// - data pages of [`DATA_PAGE_BYTES`];
/// - row groups of at most [`ROW_GROUP_ROWS`] rows: the writer holds the open row group's
///   encoded pages in memory, and it holds every closed row group's metadata (the footer)
///   until the file ends. Too large a group and the open one is a capture's worth of rows;
///   too small and the footer grows with the capture instead (see the constant).
pub fn properties(table: Table) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()));
    for c in table.columns() {
        // A map's leaves are `<name>.entries.keys` and `<name>.entries.values`.
        let map_leaf = |leaf: &str| {
            ColumnPath::new(vec![
                c.name.to_owned(),
                "entries".to_owned(),
                leaf.to_owned(),
            ])
        };
        if c.kind == Kind::Utf8Map {
            // Header names repeat, but interning each of them (millions per capture, a map
            // has several entries per row) cost more than the dictionary saves: plain names
            // compress as well under zstd, and a map's keys are plain text in Arrow anyway.
            props = props.set_column_dictionary_enabled(map_leaf("keys"), false);
        }
        if c.encoding == Encoding::Unique {
            let leaf = match c.kind {
                Kind::Utf8Map => map_leaf("values"),
                _ => ColumnPath::new(vec![c.name.to_owned()]),
            };
            props = props.set_column_dictionary_enabled(leaf, false);
        }
        if c.kind.is_primitive() {
            props = props.set_column_statistics_enabled(
                ColumnPath::new(vec![c.name.to_owned()]),
                EnabledStatistics::Page,
            );
        }
    }
    props.build()
}

/// Bytes of encoded values a column's data page holds before it is compressed and closed.
///
/// Each column writer fills its page in a buffer that grows by doubling and starts again
/// empty for the next page: at the crate's default (1 MiB) the two tables' columns held ~15 MiB
/// of such buffers at once (heaptrack) and took fresh memory for each new one. At 128 KiB
/// `remora dissect` peaked 27–30 MiB lower on one and on two threads, as fast, with files 3%
/// larger (zstd sees less of a column at once); readers skip by page statistics more finely.
pub const DATA_PAGE_BYTES: usize = 128 << 10;

/// Rows per row group of `calls` and `conns`.
///
/// The writer keeps ~1.5 KB of metadata per column chunk until the footer is written: with
/// 65,536 rows that was ~100 KB per row group of both tables, ~35 MiB of resident memory by the
/// end of a 10 GiB capture (20 M calls), growing with the capture. At 262,144 rows it is a
/// quarter of that, while the open row group's encoder state stays at 15–17 MiB for `calls`
/// (`ArrowWriter::memory_size`, the same at either size: mostly page buffers and dictionaries).
/// The crate's default (a million rows) held a whole capture's calls in memory.
pub const ROW_GROUP_ROWS: usize = 262_144;

/// A table's Parquet file written batch by batch into a temp file and published atomically by
/// [`TableWriter::finish`] (fsync, then rename); dropped unfinished, it leaves nothing behind.
pub struct TableWriter {
    table: Table,
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl TableWriter {
    /// A writer of `table` into `path` (nothing is created until the first batch).
    pub fn new(table: Table, path: &Path) -> Self {
        Self {
            table,
            path: path.to_owned(),
            tmp: path.with_extension("parquet.tmp"),
            writer: None,
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> WriteError {
        WriteError::Write {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn open(&mut self) -> Result<(), WriteError> {
        if self.writer.is_none() {
            let file = File::create(&self.tmp).map_err(|e| self.fail(e))?;
            // Batches come in the table's write schema (dictionary text as plain text); the
            // file says what readers get, the table's schema: same Parquet types either way.
            let mut props = properties(self.table);
            add_encoded_arrow_schema_to_metadata(&self.table.schema(), &mut props);
            let options = ArrowWriterOptions::new()
                .with_properties(props)
                .with_skip_arrow_metadata(true);
            let writer =
                ArrowWriter::try_new_with_options(file, self.table.write_schema(), options)
                    .map_err(|e| self.fail(e))?;
            self.writer = Some(writer);
        }
        Ok(())
    }

    /// Appends a batch of the table, in its [`Table::write_schema`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        self.open()?;
        let result = match &mut self.writer {
            Some(w) => w.write(batch).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        result.map_err(|e| self.fail(e))
    }

    /// Closes, fsyncs and renames into place; a table with no rows is written empty.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.open()?;
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let file = w.into_inner().map_err(|e| self.fail(e))?;
        file.sync_all().map_err(|e| self.fail(e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.fail(e))
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
