//! The recorder's packet slices as dissection input: every `*.parquet` under a directory (one
//! node's `packets/`, a whole `capture/`, or a snapshot), merged by `ts`.
//!
//! Each slice is sorted by `ts` (the recorder guarantees it), so a k-way merge over one record
//! batch per file yields global time order with memory bounded by the number of files, not by
//! the size of the input.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File,
    path::{Path, PathBuf},
};

use arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{TimestampNanosecondType, UInt32Type},
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::PipelineError;

/// Every `*.parquet` file below `dir` (hidden temp files excluded), sorted by path.
pub fn slice_files(dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let listing = std::fs::read_dir(&d)
            .map_err(|e| PipelineError::input(&d, format!("cannot list: {e}")))?;
        for entry in listing {
            let path = entry
                .map_err(|e| PipelineError::input(&d, format!("cannot list: {e}")))?
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Cursor {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    batch: RecordBatch,
    row: usize,
}

impl Cursor {
    fn ts(&self) -> i64 {
        self.batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>()
            .value(self.row)
    }

    /// Moves to the next row; false at the end of the file.
    fn advance(&mut self) -> Result<bool, PipelineError> {
        self.row += 1;
        while self.row >= self.batch.num_rows() {
            match self.reader.next() {
                Some(batch) => {
                    self.batch = batch.map_err(|e| PipelineError::input(&self.path, e))?;
                    self.row = 0;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

fn open(path: &Path) -> Result<Option<Cursor>, PipelineError> {
    let file =
        File::open(path).map_err(|e| PipelineError::input(path, format!("cannot open: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| PipelineError::input(path, format!("not a readable Parquet slice: {e}")))?;
    let schema = builder.parquet_schema();
    let wanted = ["ts", "payload", "wire_len"];
    let indices: Vec<usize> = wanted
        .iter()
        .map(|name| {
            schema
                .columns()
                .iter()
                .position(|c| c.name() == *name)
                .ok_or_else(|| {
                    PipelineError::input(path, format!("no `{name}` column: not a packets slice"))
                })
        })
        .collect::<Result<_, _>>()?;
    // The projection returns columns in file order: ts, wire_len, payload.
    let mask = parquet::arrow::ProjectionMask::leaves(schema, indices);
    let mut reader = builder
        .with_projection(mask)
        .with_batch_size(4096)
        .build()
        .map_err(|e| PipelineError::input(path, e))?;
    let Some(first) = reader.next() else {
        return Ok(None);
    };
    let mut cursor = Cursor {
        path: path.to_owned(),
        reader,
        batch: first.map_err(|e| PipelineError::input(path, e))?,
        row: 0,
    };
    if cursor.batch.num_rows() == 0 && !cursor.advance()? {
        return Ok(None);
    }
    Ok(Some(cursor))
}

/// Calls `f(ts_ns, payload, wire_len)` for every packet of `files` in time order.
pub fn for_each_packet(
    files: &[PathBuf],
    mut f: impl FnMut(i64, &[u8], u32),
) -> Result<u64, PipelineError> {
    let tagged: Vec<(usize, PathBuf)> = files.iter().map(|p| (0, p.clone())).collect();
    for_each_tagged_packet(&tagged, |_, ts, payload, wire_len| f(ts, payload, wire_len))
}

/// Calls `f(tag, ts_ns, payload, wire_len)` for every packet of `files` in time order, `tag`
/// being the one given with the packet's file (a node's number, for a merge across nodes).
pub fn for_each_tagged_packet(
    files: &[(usize, PathBuf)],
    mut f: impl FnMut(usize, i64, &[u8], u32),
) -> Result<u64, PipelineError> {
    let mut cursors: Vec<Cursor> = Vec::new();
    let mut tags: Vec<usize> = Vec::new();
    for (tag, path) in files {
        if let Some(c) = open(path)? {
            cursors.push(c);
            tags.push(*tag);
        }
    }
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = cursors
        .iter()
        .enumerate()
        .map(|(i, c)| Reverse((c.ts(), i)))
        .collect();
    let mut count = 0;
    while let Some(Reverse((ts, i))) = heap.pop() {
        let c = &mut cursors[i];
        let batch = &c.batch;
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| {
                PipelineError::input(&c.path, format!("no `{name}` column: not a packets slice"))
            })
        };
        let wire = column("wire_len")?.as_primitive::<UInt32Type>();
        let payload = column("payload")?.as_binary::<i32>();
        if payload.is_valid(c.row) {
            f(tags[i], ts, payload.value(c.row), wire.value(c.row));
            count += 1;
        }
        if c.advance()? {
            heap.push(Reverse((c.ts(), i)));
        }
    }
    Ok(count)
}
