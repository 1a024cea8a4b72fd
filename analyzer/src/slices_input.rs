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

use anyhow::Context as _;
use arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{TimestampNanosecondType, UInt32Type},
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

/// Every `*.parquet` file below `dir` (hidden temp files excluded), sorted by path.
pub fn slice_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let path = entry?.path();
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
    fn advance(&mut self) -> anyhow::Result<bool> {
        self.row += 1;
        while self.row >= self.batch.num_rows() {
            match self.reader.next() {
                Some(batch) => {
                    self.batch = batch?;
                    self.row = 0;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

fn open(path: &Path) -> anyhow::Result<Option<Cursor>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet slice", path.display()))?;
    let schema = builder.parquet_schema();
    let wanted = ["ts", "payload", "wire_len"];
    let indices: Vec<usize> = wanted
        .iter()
        .map(|name| {
            schema
                .columns()
                .iter()
                .position(|c| c.name() == *name)
                .with_context(|| {
                    format!(
                        "{} has no `{name}` column: not a packets slice",
                        path.display()
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    // The projection returns columns in file order: ts, wire_len, payload.
    let mask = parquet::arrow::ProjectionMask::leaves(schema, indices);
    let mut reader = builder
        .with_projection(mask)
        .with_batch_size(4096)
        .build()?;
    let Some(first) = reader.next() else {
        return Ok(None);
    };
    let mut cursor = Cursor {
        reader,
        batch: first?,
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
) -> anyhow::Result<u64> {
    let mut cursors: Vec<Cursor> = Vec::new();
    for path in files {
        if let Some(c) = open(path)? {
            cursors.push(c);
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
        let wire = batch
            .column_by_name("wire_len")
            .context("wire_len column")?
            .as_primitive::<UInt32Type>();
        let payload = batch
            .column_by_name("payload")
            .context("payload column")?
            .as_binary::<i32>();
        if payload.is_valid(c.row) {
            f(ts, payload.value(c.row), wire.value(c.row));
            count += 1;
        }
        if c.advance()? {
            heap.push(Reverse((c.ts(), i)));
        }
    }
    Ok(count)
}
