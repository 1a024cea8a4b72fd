//! A table's Parquet file: written batch by batch into a temp file, published atomically, with
//! the layout its definition asks for. (The recorder's `packets` slices have their own writer,
//! `remora_agent::writer` and `packets_parquet`: one fixed schema, encoded straight from the
//! rings at a fraction of this path's cost per row.)

use std::{fs::File, path::Path};

use arrow::{
    array::{Array, RecordBatch},
    datatypes::SchemaRef,
};
use parquet::{
    arrow::{
        ArrowWriter, add_encoded_arrow_schema_to_metadata,
        arrow_writer::{
            ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriterOptions, compute_leaves,
        },
    },
    basic::{Compression, ZstdLevel},
    errors::ParquetError,
    file::{
        properties::{EnabledStatistics, WriterProperties},
        writer::SerializedFileWriter,
    },
    schema::types::ColumnPath,
};

use crate::{
    Table,
    byte_array::{ByteArrayColumn, Rows},
    column::{Encoding, Kind},
    number::{NumberColumn, Numbers},
    page::PageCompressor,
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
/// - no dictionary for [`Encoding::Unique`] columns (a map's values, for maps); a map's keys
///   always have one;
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
        .set_compression(compression());
    for c in table.columns() {
        // A map's leaves are `<name>.entries.keys` and `<name>.entries.values`.
        let map_leaf = |leaf: &str| {
            ColumnPath::new(vec![
                c.name.to_owned(),
                "entries".to_owned(),
                leaf.to_owned(),
            ])
        };
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

/// zstd's level for every page: its fastest (level 1) compresses these columns within a few
/// per cent of level 3.
const ZSTD_LEVEL: i32 = 1;

fn compression() -> Compression {
    Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default())
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
///
/// Text and bytes (flat, or in a list or map of text) are encoded by `ByteArrayColumn` (see
/// `byte_array.rs` for why), numbers and times by `NumberColumn` (`number.rs`), flags by
/// arrow-rs's column writers. Row groups are cut every [`ROW_GROUP_ROWS`] rows whatever the
/// batches (arrow-rs still ends its pages where a batch ends; ours are cut by rows).
pub struct TableWriter {
    table: Table,
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    open: Option<Box<Open>>,
    /// The temp file may exist and is not renamed into place: dropping the writer removes it.
    unpublished: bool,
    /// The temp file is whole and synced ([`TableWriter::close`]).
    closed: bool,
}

/// An open file and its open row group.
struct Open {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    /// How each field of the write schema is written.
    routes: Vec<Route>,
    /// The open row group's writers, by leaf.
    group: Option<Vec<Leaf>>,
    group_rows: usize,
    groups: usize,
    /// What the columns of ours make their pages with.
    compressor: PageCompressor,
}

/// How a field of the write schema is written.
enum Route {
    /// By a [`ByteArrayColumn`] per leaf (a map has two); its leaves, and whether each starts
    /// with a dictionary.
    Ours(std::ops::Range<usize>, Vec<bool>),
    /// By a [`NumberColumn`]: its leaf, and whether it starts with a dictionary.
    Number(usize, bool),
    /// By arrow-rs (flags); its leaves.
    Arrow(std::ops::Range<usize>),
}

/// The writer of one leaf of the open row group (boxed: both are large, arrow-rs's ~1.5 KB, and
/// a row group makes a hundred or so).
enum Leaf {
    /// arrow-rs's.
    Arrow(Box<ArrowColumnWriter>),
    /// Ours, for text and bytes.
    Ours(Box<ByteArrayColumn>),
    /// Ours, for numbers and times.
    Number(Box<NumberColumn>),
}

impl TableWriter {
    /// A writer of `table` into `path` (nothing is created until the first batch).
    pub fn new(table: Table, path: &Path) -> Self {
        Self {
            table,
            path: path.to_owned(),
            tmp: path.with_extension("parquet.tmp"),
            open: None,
            unpublished: false,
            closed: false,
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> WriteError {
        WriteError::Write {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn open(&mut self) -> Result<&mut Open, WriteError> {
        let open = match self.open.take() {
            Some(open) => open,
            None => {
                self.unpublished = true;
                Box::new(Open::create(self.table, &self.tmp).map_err(|e| self.fail(e))?)
            }
        };
        Ok(self.open.insert(open))
    }

    /// Appends a batch of the table, in its [`Table::write_schema`].
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        if self.closed {
            return Err(self.fail("a batch after the file was closed"));
        }
        let result = self.open()?.write(batch);
        result.map_err(|e| self.fail(e))
    }

    /// Closes, fsyncs and renames into place; a table with no rows is written empty. If any
    /// of that fails (a full disk shows here: the last pages and the footer are written on
    /// close), the temp file is removed, as when the writer is dropped unfinished.
    pub fn finish(mut self) -> Result<(), WriteError> {
        self.close()?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.fail(e))?;
        self.unpublished = false;
        Ok(())
    }

    /// Closes the temp file and fsyncs it without putting it in place, so that tables that
    /// appear together or not at all can be closed first (at once, on several threads) and
    /// renamed only once every one is whole; [`finish`](Self::finish) then only renames.
    /// Dropped after this, the writer removes the file; a write after it is an error.
    pub fn close(&mut self) -> Result<(), WriteError> {
        if self.closed {
            return Ok(());
        }
        self.open()?;
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let file = open.finish().map_err(|e| self.fail(e))?;
        file.sync_all().map_err(|e| self.fail(e))?;
        self.closed = true;
        Ok(())
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        self.open = None;
        if self.unpublished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Open {
    fn create(table: Table, tmp: &Path) -> Result<Self, ParquetError> {
        let file = File::create(tmp)?;
        // Batches come in the table's write schema (dictionary text as plain text); the file
        // says what readers get, the table's schema: same Parquet types either way.
        let mut props = properties(table);
        add_encoded_arrow_schema_to_metadata(&table.schema(), &mut props);
        let options = ArrowWriterOptions::new()
            .with_properties(props)
            .with_skip_arrow_metadata(true);
        let (file, factory) =
            ArrowWriter::try_new_with_options(file, table.write_schema(), options)?
                .into_serialized_writer()?;
        let routes = routes(&table.write_schema(), &file);
        let compressor = PageCompressor::new(ZSTD_LEVEL)?;
        Ok(Self {
            file,
            factory,
            routes,
            group: None,
            group_rows: 0,
            groups: 0,
            compressor,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let mut at = 0;
        while at < batch.num_rows() {
            let take = (batch.num_rows() - at).min(ROW_GROUP_ROWS - self.group_rows);
            self.write_to_group(&batch.slice(at, take))?;
            at += take;
            self.group_rows += take;
            if self.group_rows == ROW_GROUP_ROWS {
                self.close_group()?;
            }
        }
        Ok(())
    }

    /// Writers for row group `self.groups`: arrow-rs's for every leaf (its factory makes them
    /// all), ours in place of those of the text, bytes, number and time leaves.
    fn new_group(&self) -> Result<Vec<Leaf>, ParquetError> {
        let leaves = self.file.schema_descr().columns();
        let mut group: Vec<Leaf> = self
            .factory
            .create_column_writers(self.groups)?
            .into_iter()
            .map(|w| Leaf::Arrow(Box::new(w)))
            .collect();
        for route in &self.routes {
            match route {
                Route::Ours(range, dictionary) => {
                    for (leaf, &dictionary) in range.clone().zip(dictionary) {
                        group[leaf] = Leaf::Ours(Box::new(ByteArrayColumn::new(
                            leaves[leaf].clone(),
                            dictionary,
                            DATA_PAGE_BYTES,
                        )));
                    }
                }
                &Route::Number(leaf, dictionary) => {
                    group[leaf] = Leaf::Number(Box::new(NumberColumn::new(
                        leaves[leaf].clone(),
                        dictionary,
                        DATA_PAGE_BYTES,
                    )?));
                }
                Route::Arrow(_) => {}
            }
        }
        Ok(group)
    }

    fn write_to_group(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let group = match self.group.take() {
            Some(group) => group,
            None => self.new_group()?,
        };
        let group = self.group.insert(group);
        let fields = batch.schema_ref().fields().clone();
        for ((route, column), field) in self.routes.iter().zip(batch.columns()).zip(fields.iter()) {
            match route {
                Route::Ours(leaves, _) => {
                    let rows = Rows::of_column(column.as_ref()).ok_or_else(|| {
                        ParquetError::General(format!(
                            "column {}: {} is not text, bytes, or a list or map of text",
                            field.name(),
                            column.data_type()
                        ))
                    })?;
                    if rows.len() != leaves.len() {
                        return Err(wrong_writer(field.name()));
                    }
                    for (leaf, rows) in leaves.clone().zip(rows) {
                        match &mut group[leaf] {
                            Leaf::Ours(w) => w.write(rows, &mut self.compressor)?,
                            _ => return Err(wrong_writer(field.name())),
                        }
                    }
                }
                &Route::Number(leaf, _) => {
                    let (values, nulls) = Numbers::of_column(column.as_ref()).ok_or_else(|| {
                        ParquetError::General(format!(
                            "column {}: {} is not a number or a time",
                            field.name(),
                            column.data_type()
                        ))
                    })?;
                    match &mut group[leaf] {
                        Leaf::Number(w) => w.write(values, nulls, &mut self.compressor)?,
                        _ => return Err(wrong_writer(field.name())),
                    }
                }
                Route::Arrow(leaves) => {
                    let arrays = compute_leaves(field, column)?;
                    for (leaf, array) in leaves.clone().zip(arrays) {
                        match &mut group[leaf] {
                            Leaf::Arrow(w) => w.write(&array)?,
                            _ => return Err(wrong_writer(field.name())),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), ParquetError> {
        let Some(group) = self.group.take() else {
            return Ok(());
        };
        let mut row_group = self.file.next_row_group()?;
        for leaf in group {
            // Ours hand over their chunk's bytes; arrow-rs's append themselves.
            let (bytes, close) = match leaf {
                Leaf::Ours(d) => d.close(&mut self.compressor)?,
                Leaf::Number(n) => n.close(&mut self.compressor)?,
                Leaf::Arrow(a) => {
                    a.close()?.append_to_row_group(&mut row_group)?;
                    continue;
                }
            };
            row_group.append_column(&bytes, close)?;
        }
        row_group.close()?;
        self.groups += 1;
        self.group_rows = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<File, ParquetError> {
        self.close_group()?;
        self.file.into_inner()
    }
}

/// A field's leaf has the other kind of writer than its route says (a bug, not bad input).
fn wrong_writer(field: &str) -> ParquetError {
    ParquetError::General(format!("column {field}: its leaf has the wrong writer"))
}

/// How each field of `schema` is written to `file`: text and bytes, flat or in a list or map
/// of text, by a [`ByteArrayColumn`] per leaf, numbers and times by a [`NumberColumn`], the
/// rest (flags) by arrow-rs.
fn routes(schema: &SchemaRef, file: &SerializedFileWriter<File>) -> Vec<Route> {
    let leaves = file.schema_descr().columns();
    let props = file.properties();
    let mut next = 0;
    schema
        .fields()
        .iter()
        .map(|field| {
            let from = next;
            while next < leaves.len() && leaves[next].path().parts()[0] == *field.name() {
                next += 1;
            }
            let ours = Rows::leaves(field.data_type()) == Some(next - from);
            if Numbers::handles(field.data_type()) && next - from == 1 {
                Route::Number(from, props.dictionary_enabled(leaves[from].path()))
            } else if ours {
                let dictionary = (from..next)
                    .map(|leaf| props.dictionary_enabled(leaves[leaf].path()))
                    .collect();
                Route::Ours(from..next, dictionary)
            } else {
                Route::Arrow(from..next)
            }
        })
        .collect()
}
