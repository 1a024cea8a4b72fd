//! Writing packet rows into Parquet time slices: zstd, bounded memory, atomic publication.
//!
//! Rows arrive in time order. A slice starts with its first row and closes when a row falls
//! `duration` after that, when the file reaches `max_bytes`, or when the recording's watermark
//! passes its end (so quiet periods still publish promptly). Closing = footer, fsync, rename
//! from the hidden temp name to `<start>-<end>.parquet`, fsync of the directory.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::Duration,
};

use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, Encoding, ZstdLevel},
    file::{
        metadata::SortingColumn,
        properties::{EnabledStatistics, WriterProperties},
    },
    schema::types::ColumnPath,
};

use crate::{
    decode::PacketRow,
    error::{AgentError, Result},
    schema::{PacketBuilders, packets_schema},
    store::{slice_path, sync_dir},
};

/// Rows per record batch handed to the Parquet writer.
const BATCH_ROWS: usize = 4096;
/// Payload bytes that also end a record batch early (bounds builder memory); smaller slice
/// limits lower it further so that a slice overshoots its limit by at most an eighth.
const BATCH_PAYLOAD_BYTES: usize = 4 << 20;
/// Encoded bytes after which the current row group is flushed (bounds writer memory). 4 MiB
/// rather than 16: at full payload the buffered pages were the largest live allocation after
/// the payload builder (measured RSS 134 → ~85–115 MiB with the builder reuse in schema.rs), and
/// smaller row groups also let readers skip more by time.
const ROW_GROUP_BYTES: usize = 4 << 20;

/// Integer columns written with DELTA_BINARY_PACKED instead of a dictionary.
const DELTA_COLUMNS: [&str; 12] = [
    "ts",
    "ifindex",
    "direction",
    "wire_len",
    "cgroup_id",
    "l3",
    "ip_proto",
    "src_port",
    "dst_port",
    "tcp_flags",
    "tcp_seq",
    "tcp_ack",
];

/// A slice that was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedSlice {
    /// Final path.
    pub path: PathBuf,
    /// First row's time, UTC ns.
    pub start_ns: i64,
    /// Last row's time, UTC ns.
    pub end_ns: i64,
    /// Rows in the file.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
}

struct OpenSlice {
    tmp_path: PathBuf,
    writer: ArrowWriter<File>,
    start_ns: i64,
    end_ns: i64,
    rows: u64,
}

/// Writes one kind of slice into one directory.
pub struct SliceWriter {
    dir: PathBuf,
    builders: PacketBuilders,
    open: Option<OpenSlice>,
    duration_ns: i64,
    max_bytes: u64,
    batch_payload_bytes: usize,
    props: WriterProperties,
}

impl SliceWriter {
    /// A writer for node `node` into `dir` (which must exist).
    pub fn new(dir: &Path, node: &str, duration: Duration, max_bytes: u64) -> Self {
        let col = |name: &str| ColumnPath::from(name);
        let props = WriterProperties::builder()
            // Level 1: the recorder is on the hot path; higher levels cost CPU for a few percent.
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .set_max_row_group_row_count(Some(1 << 20))
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: 0,
                descending: false,
                nulls_first: false,
            }]))
            // Min/max per row group prune as well as per page for everything but time (the
            // snapshot cut); page statistics cost a comparison per value and a page index.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_column_statistics_enabled(col("ts"), EnabledStatistics::Page)
            // Payloads are high-entropy: dictionaries and min/max only cost.
            .set_column_dictionary_enabled(col("payload"), false)
            .set_column_statistics_enabled(col("payload"), EnabledStatistics::None);
        // Numbers are delta-encoded rather than dictionary-encoded: a dictionary hashes every
        // value (the interner was the largest single cost of the writer), while runs and steady
        // steps (time, sequence numbers, one flow's ports) pack into a few bits per value
        // without hashing. Addresses keep their dictionary: text, and few distinct values.
        let props = DELTA_COLUMNS.iter().fold(props, |props, name| {
            props
                .set_column_dictionary_enabled(col(name), false)
                .set_column_encoding(col(name), Encoding::DELTA_BINARY_PACKED)
        });
        let props = props.build();
        Self {
            dir: dir.to_owned(),
            builders: PacketBuilders::new(node),
            open: None,
            duration_ns: duration.as_nanos() as i64,
            max_bytes,
            batch_payload_bytes: BATCH_PAYLOAD_BYTES.min((max_bytes / 8).max(4096) as usize),
            props,
        }
    }

    /// Appends a row; returns the slice this closed, if the row started a new one.
    ///
    /// On an error the open slice is abandoned (its temp file removed) and the next row starts
    /// a new one, so a failure costs at most one slice.
    pub fn append(&mut self, row: &PacketRow, payload: &[u8]) -> Result<Option<FinishedSlice>> {
        let result = self.try_append(row, payload);
        if result.is_err() {
            self.abandon();
        }
        result
    }

    fn try_append(&mut self, row: &PacketRow, payload: &[u8]) -> Result<Option<FinishedSlice>> {
        let mut finished = None;
        if let Some(open) = &self.open
            && row.ts_ns >= open.start_ns + self.duration_ns
        {
            finished = self.finish()?;
        }
        if self.open.is_none() {
            self.open = Some(self.create(row.ts_ns)?);
        }
        self.builders.append(row, payload);
        if let Some(open) = &mut self.open {
            open.end_ns = open.end_ns.max(row.ts_ns);
            open.rows += 1;
        }
        if self.builders.len() >= BATCH_ROWS
            || self.builders.payload_bytes() >= self.batch_payload_bytes
        {
            self.write_batch()?;
            let too_big = self.open.as_ref().is_some_and(|o| {
                (o.writer.bytes_written() + o.writer.in_progress_size()) as u64 >= self.max_bytes
            });
            if too_big {
                return Ok(self.finish()?.or(finished));
            }
        }
        Ok(finished)
    }

    /// Closes the open slice if no row can belong to it any more (`watermark_ns` is the time
    /// before which every row has been delivered).
    pub fn tick(&mut self, watermark_ns: i64) -> Result<Option<FinishedSlice>> {
        match &self.open {
            Some(open) if watermark_ns >= open.start_ns + self.duration_ns => self.finish(),
            _ => Ok(None),
        }
    }

    /// Encoded bytes buffered for the current row group (memory, not yet on disk).
    pub fn in_progress_bytes(&self) -> usize {
        self.open
            .as_ref()
            .map_or(0, |o| o.writer.in_progress_size())
    }

    /// True while a slice is being written.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Publishes the open slice, if any.
    pub fn finish(&mut self) -> Result<Option<FinishedSlice>> {
        if self.open.is_none() {
            return Ok(None);
        }
        let result = self.write_batch().and_then(|()| self.publish());
        if result.is_err() {
            self.abandon();
        }
        result
    }

    /// Drops the open slice after a failure: its temp file is removed, pending rows discarded.
    pub fn abandon(&mut self) {
        let _ = self.builders.finish();
        if let Some(open) = self.open.take() {
            drop(open.writer);
            let _ = std::fs::remove_file(&open.tmp_path);
        }
    }

    fn create(&self, start_ns: i64) -> Result<OpenSlice> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp_path = self.dir.join(format!(
            ".{start_ns}-{:08x}.parquet.tmp",
            rand::random::<u32>()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp_path)
            .map_err(|e| self.write_error(&tmp_path, e.to_string()))?;
        let writer = match ArrowWriter::try_new(file, packets_schema(), Some(self.props.clone())) {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_path);
                return Err(self.write_error(&tmp_path, e.to_string()));
            }
        };
        Ok(OpenSlice {
            tmp_path,
            writer,
            start_ns,
            end_ns: start_ns,
            rows: 0,
        })
    }

    fn write_batch(&mut self) -> Result<()> {
        if self.builders.is_empty() {
            return Ok(());
        }
        let Some(open) = &mut self.open else {
            let _ = self.builders.finish();
            return Ok(());
        };
        let tmp = open.tmp_path.clone();
        let batch = self
            .builders
            .finish()
            .map_err(|e| write_error(&tmp, e.to_string()))?;
        open.writer
            .write(&batch)
            .map_err(|e| write_error(&tmp, e.to_string()))?;
        self.builders.recycle(batch);
        if open.writer.in_progress_size() >= ROW_GROUP_BYTES {
            open.writer
                .flush()
                .map_err(|e| write_error(&tmp, e.to_string()))?;
        }
        Ok(())
    }

    fn publish(&mut self) -> Result<Option<FinishedSlice>> {
        let Some(mut open) = self.open.take() else {
            return Ok(None);
        };
        let result = seal(&mut open, &self.dir);
        drop(open.writer);
        if result.is_err() {
            // The temp file must not outlive a failed publication.
            let _ = std::fs::remove_file(&open.tmp_path);
        }
        result.map(Some)
    }

    fn write_error(&self, path: &Path, message: String) -> AgentError {
        write_error(path, message)
    }
}

/// Footer, fsync, rename to the final name, fsync of the directory.
fn seal(open: &mut OpenSlice, dir: &Path) -> Result<FinishedSlice> {
    let tmp = open.tmp_path.clone();
    let fail = |e: String| write_error(&tmp, e);
    open.writer.finish().map_err(|e| fail(e.to_string()))?;
    open.writer
        .inner()
        .sync_all()
        .map_err(|e| fail(e.to_string()))?;
    let bytes = open.writer.bytes_written() as u64;
    let path = slice_path(dir, open.start_ns, open.end_ns);
    std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
    sync_dir(dir).map_err(|e| fail(e.to_string()))?;
    Ok(FinishedSlice {
        path,
        start_ns: open.start_ns,
        end_ns: open.end_ns,
        rows: open.rows,
        bytes,
    })
}

fn write_error(path: &Path, message: String) -> AgentError {
    let hint = if message.contains("No space left") {
        "; the disk is full: free space or lower --retention-bytes, recording resumes with the next slice"
    } else {
        ""
    };
    AgentError::SliceWrite {
        path: path.to_owned(),
        message: format!("{message}{hint}"),
    }
}

impl Drop for SliceWriter {
    fn drop(&mut self) {
        // A writer dropped without finish() (a panic elsewhere) must not leave a temp file.
        self.abandon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array as _, AsArray as _};
    use arrow::datatypes::TimestampNanosecondType;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn row(ts_ns: i64) -> PacketRow {
        PacketRow {
            ts_ns,
            ifindex: 3,
            direction: 0,
            wire_len: 60,
            cgroup_id: None,
            l3: 4,
            ip_proto: 17,
            src_ip: Some("198.18.0.1".parse().unwrap()),
            dst_ip: Some("198.18.0.2".parse().unwrap()),
            src_port: Some(1),
            dst_port: Some(2),
            tcp_flags: None,
            tcp_seq: None,
            tcp_ack: None,
            payload: 0..0,
        }
    }

    fn read_ts(path: &Path) -> Vec<i64> {
        let file = File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column(0).as_primitive::<TimestampNanosecondType>();
            out.extend(ts.values().iter().copied());
            assert_eq!(batch.column(8).len(), ts.len());
        }
        out
    }

    #[test]
    fn rotates_by_time_and_publishes_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SliceWriter::new(tmp.path(), "n1", Duration::from_secs(10), 64 << 20);
        let s = 1_000_000_000_000i64;
        assert!(w.append(&row(s), b"abc").unwrap().is_none());
        assert!(w.append(&row(s + 5_000_000_000), b"def").unwrap().is_none());
        // Nothing is visible while the slice is open, only the hidden temp file.
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with('.') && names[0].ends_with(".tmp"));
        let done = w.append(&row(s + 10_000_000_000), b"ghi").unwrap().unwrap();
        assert_eq!(
            (done.start_ns, done.end_ns, done.rows),
            (s, s + 5_000_000_000, 2)
        );
        assert_eq!(read_ts(&done.path), [s, s + 5_000_000_000]);
        assert!(w.tick(s + 15_000_000_000).unwrap().is_none());
        let done = w.tick(s + 20_000_000_000).unwrap().unwrap();
        assert_eq!(read_ts(&done.path), [s + 10_000_000_000]);
        assert!(w.finish().unwrap().is_none());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn rotates_by_size() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SliceWriter::new(tmp.path(), "n1", Duration::from_secs(3600), 1 << 20);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut finished = Vec::new();
        for i in 0..4000 {
            // Incompressible payloads, so that the file really grows.
            let p: Vec<u8> = (0..1500)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Some(f) = w.append(&row(i), &p).unwrap() {
                finished.push(f);
            }
        }
        finished.extend(w.finish().unwrap());
        assert!(finished.len() >= 2, "{finished:?}");
        for f in &finished {
            assert!(
                f.bytes <= (1 << 20) + (1 << 20) / 8 + 64 * 1024,
                "slice of {} bytes",
                f.bytes
            );
        }
        assert_eq!(finished.iter().map(|f| f.rows).sum::<u64>(), 4000);
        let mut all = Vec::new();
        for f in &finished {
            all.extend(read_ts(&f.path));
        }
        assert_eq!(all, (0..4000).collect::<Vec<i64>>());
    }

    #[test]
    fn failure_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gone");
        std::fs::create_dir(&dir).unwrap();
        let mut w = SliceWriter::new(&dir, "n1", Duration::from_secs(10), 64 << 20);
        w.append(&row(1), b"x").unwrap();
        // The directory vanishes under the writer: publishing fails, nothing half-written stays.
        std::fs::remove_dir_all(&dir).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("writing slice"), "{err}");
        assert!(!dir.exists());
        // The next row starts afresh once the directory is back.
        std::fs::create_dir(&dir).unwrap();
        w.append(&row(2), b"y").unwrap();
        let done = w.finish().unwrap().unwrap();
        assert_eq!(read_ts(&done.path), [2]);
    }
}
