//! The recorder's packet slices as dissection input: every `*.parquet` under a directory (one
//! node's `packets/`, a whole `capture/`, or a snapshot), merged by `ts`.
//!
//! Slices are in `ts` order except for rows that reached the recorder late (another CPU's
//! ring, by a few milliseconds; the footer then does not declare the row group sorted), so a
//! k-way merge over one record batch per file yields time order up to those rows, which come
//! where they were written (reassembly orders segments by sequence number, not by time). A file is opened only when the merge reaches its
//! first packet (the `ts` minimum in its footer) and closed at its end, so memory is bounded by
//! the files that overlap in time (about one per node), not by the number of files or the size
//! of the input: a 10 GiB export holds as much as a 100 MiB one.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    fs::File,
    path::{Path, PathBuf},
};

use arrow::{
    array::{Array, AsArray, RecordBatch},
    datatypes::{TimestampNanosecondType, UInt32Type, UInt64Type},
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use super::PipelineError;

/// Every `*.parquet` packet slice below `dir` (hidden temp files, and the directories of the
/// other kinds of slices, excluded), sorted by path.
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
                if name != super::processes::SOCKETS_DIR && name != super::plaintext::TLS_DIR {
                    stack.push(path);
                }
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
    /// Positions of `wire_len`, `payload` and (when the slice has it) `cgroup_id` in each
    /// batch, found once per file rather than by name for every packet.
    wire: usize,
    payload: usize,
    cgroup: Option<usize>,
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
    let mut indices: Vec<usize> = wanted
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
    // The sending socket's cgroup, when the slice has it (slices of imported captures too).
    indices.extend(
        schema
            .columns()
            .iter()
            .position(|c| c.name() == "cgroup_id"),
    );
    // The projection returns columns in file order: ts, (cgroup_id,) wire_len, payload.
    let mask = parquet::arrow::ProjectionMask::leaves(schema, indices);
    let mut reader = builder
        .with_projection(mask)
        .with_batch_size(4096)
        .build()
        .map_err(|e| PipelineError::input(path, e))?;
    let Some(first) = reader.next() else {
        return Ok(None);
    };
    let batch = first.map_err(|e| PipelineError::input(path, e))?;
    let position = |name: &str| batch.schema().index_of(name).ok();
    let missing =
        |name: &str| PipelineError::input(path, format!("no `{name}` column: not a packets slice"));
    let wire = position("wire_len").ok_or_else(|| missing("wire_len"))?;
    let payload = position("payload").ok_or_else(|| missing("payload"))?;
    let cgroup = position("cgroup_id");
    let mut cursor = Cursor {
        path: path.to_owned(),
        reader,
        batch,
        row: 0,
        wire,
        payload,
        cgroup,
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

/// The earliest `ts` of a slice, from its footer's statistics; `i64::MIN` (open it at once)
/// when the footer has none.
fn first_ts(path: &Path) -> Result<i64, PipelineError> {
    use parquet::file::{
        reader::{FileReader as _, SerializedFileReader},
        statistics::Statistics,
    };
    let file =
        File::open(path).map_err(|e| PipelineError::input(path, format!("cannot open: {e}")))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| PipelineError::input(path, format!("not a readable Parquet slice: {e}")))?;
    let mut first = i64::MAX;
    for group in reader.metadata().row_groups() {
        let Some(ts) = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "ts")
        else {
            return Ok(i64::MIN);
        };
        match ts.statistics() {
            Some(Statistics::Int64(s)) if s.min_opt().is_some() => {
                first = first.min(s.min_opt().copied().unwrap_or(i64::MIN));
            }
            _ if group.num_rows() == 0 => {}
            _ => return Ok(i64::MIN),
        }
    }
    Ok(first)
}

/// Calls `f(tag, ts_ns, payload, wire_len)` for every packet of `files` in time order, `tag`
/// being the one given with the packet's file (a node's number, for a merge across nodes).
/// Packets with the same time come in the order of their files in `files`.
pub fn for_each_tagged_packet(
    files: &[(usize, PathBuf)],
    mut f: impl FnMut(usize, i64, &[u8], u32),
) -> Result<u64, PipelineError> {
    for_each_packet_of_socket(files, |tag, ts, payload, wire_len, _| {
        f(tag, ts, payload, wire_len)
    })
}

/// [`for_each_tagged_packet`], with the cgroup id of the local socket that sent the packet
/// (0 when none: received packets, forwarded ones, slices without the column).
pub fn for_each_packet_of_socket(
    files: &[(usize, PathBuf)],
    mut f: impl FnMut(usize, i64, &[u8], u32, u64),
) -> Result<u64, PipelineError> {
    // Files not opened yet, the earliest last.
    let mut pending: Vec<(i64, usize)> = Vec::with_capacity(files.len());
    for (i, (_, path)) in files.iter().enumerate() {
        pending.push((first_ts(path)?, i));
    }
    pending.sort_unstable_by(|a, b| b.cmp(a));
    let mut cursors: Vec<Option<Cursor>> = files.iter().map(|_| None).collect();
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut count = 0;
    loop {
        // Open every file that may hold a packet at or before the next one out of the heap.
        while let Some(&(first, i)) = pending.last() {
            if heap.peek().is_some_and(|Reverse((next, _))| first > *next) {
                break;
            }
            pending.pop();
            if let Some(c) = open(&files[i].1)? {
                heap.push(Reverse((c.ts(), i)));
                cursors[i] = Some(c);
            }
        }
        let Some(Reverse((ts, i))) = heap.pop() else {
            break;
        };
        let Some(c) = cursors[i].as_mut() else {
            continue;
        };
        let batch = &c.batch;
        let wire = batch.column(c.wire).as_primitive::<UInt32Type>();
        let payload = batch.column(c.payload).as_binary::<i32>();
        if payload.is_valid(c.row) {
            let cgroup = c
                .cgroup
                .and_then(|at| batch.column(at).as_primitive_opt::<UInt64Type>())
                .filter(|col| col.is_valid(c.row))
                .map_or(0, |col| col.value(c.row));
            f(
                files[i].0,
                ts,
                payload.value(c.row),
                wire.value(c.row),
                cgroup,
            );
            count += 1;
        }
        if c.advance()? {
            heap.push(Reverse((c.ts(), i)));
        } else {
            cursors[i] = None; // its last batch is freed now, not at the end of the merge
        }
    }
    Ok(count)
}
