//! `sockets` slices: socket events as Parquet files, one per slice period.
//!
//! Far fewer rows than packets, so the general path (Arrow builders, the parquet crate's
//! writer) is cheap enough. Files appear as the packet slices do: a hidden temp file, fsync,
//! rename to `<first>-<last>.parquet`, fsync of the directory.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow::{
    array::{
        ArrayRef, Int32Array, RecordBatch, StringArray, StringDictionaryBuilder,
        TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    },
    datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit},
};

use super::record::SocketRow;
use crate::store::slice_path;

/// Kind name of socket slices (their directory and the node API's `kind`).
pub const SOCKETS_KIND: &str = "sockets";

/// The `sockets` schema (docs/capture.md lists the columns).
pub fn sockets_schema() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("node", dict(), false),
        Field::new("event", dict(), false),
        Field::new("pid", DataType::UInt32, true),
        Field::new("tid", DataType::UInt32, true),
        Field::new("comm", DataType::Utf8, true),
        Field::new("cgroup_id", DataType::UInt64, true),
        Field::new("fd", DataType::Int32, true),
        Field::new("socket_id", DataType::UInt64, true),
        Field::new("protocol", DataType::UInt8, false),
        Field::new("src_ip", DataType::Utf8, true),
        Field::new("src_port", DataType::UInt16, true),
        Field::new("dst_ip", DataType::Utf8, true),
        Field::new("dst_port", DataType::UInt16, true),
        Field::new("old_state", dict(), true),
        Field::new("new_state", dict(), true),
    ]))
}

/// A dictionary-encoded text column (nulls where `None`).
pub(crate) fn dict<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringDictionaryBuilder::<Int32Type>::new();
    for v in values {
        match v {
            Some(v) => {
                b.append_value(v);
            }
            None => b.append_null(),
        }
    }
    Arc::new(b.finish())
}

/// The `ts` column (UTC ns).
pub(crate) fn ts_column(ts: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(ts).with_timezone("UTC"))
}

/// `src_ip`, `src_port`, `dst_ip`, `dst_port` from each row's (own, peer) ends.
pub(crate) fn endpoint_columns(
    ends: impl Iterator<Item = (Option<SocketAddr>, Option<SocketAddr>)> + Clone,
) -> [ArrayRef; 4] {
    let ip = |e: Option<SocketAddr>| e.map(|s| s.ip().to_string());
    let port = |e: Option<SocketAddr>| e.map(|s| s.port());
    [
        Arc::new(ends.clone().map(|(s, _)| ip(s)).collect::<StringArray>()),
        Arc::new(ends.clone().map(|(s, _)| port(s)).collect::<UInt16Array>()),
        Arc::new(ends.clone().map(|(_, d)| ip(d)).collect::<StringArray>()),
        Arc::new(ends.map(|(_, d)| port(d)).collect::<UInt16Array>()),
    ]
}

/// The record batch of `rows` from `node`.
pub fn batch(node: &str, rows: &[SocketRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let [src_ip, src_port, dst_ip, dst_port] =
        endpoint_columns(rows.iter().map(|r| (r.src, r.dst)));
    let columns: Vec<ArrayRef> = vec![
        ts_column(rows.iter().map(|r| r.ts_ns)),
        dict(rows.iter().map(|_| Some(node))),
        dict(rows.iter().map(|r| Some(r.event))),
        Arc::new(
            rows.iter()
                .map(|r| r.process.as_ref().map(|p| p.pid))
                .collect::<UInt32Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.process.as_ref().map(|p| p.tid))
                .collect::<UInt32Array>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.process.as_ref().map(|p| p.comm.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.cgroup_id).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| r.fd).collect::<Int32Array>()),
        Arc::new(rows.iter().map(|r| r.socket_id).collect::<UInt64Array>()),
        Arc::new(rows.iter().map(|r| r.protocol).collect::<UInt8Array>()),
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        dict(rows.iter().map(|r| r.old_state)),
        dict(rows.iter().map(|r| r.new_state)),
    ];
    RecordBatch::try_new(sockets_schema(), columns)
}

/// Writes `rows` (time-ordered, not empty) as one slice in `dir`; returns its path.
pub fn write_slice(dir: &Path, node: &str, rows: &[SocketRow]) -> std::io::Result<PathBuf> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(std::io::Error::other("no rows to write"));
    };
    let batch = batch(node, rows).map_err(std::io::Error::other)?;
    write_batch(dir, first.ts_ns, last.ts_ns, &batch)
}

/// Writes `batch` as the slice `<first_ns>-<last_ns>.parquet` in `dir` (zstd): a hidden temp
/// file, fsync, rename, fsync of the directory; the temp file is removed on failure.
pub fn write_batch(
    dir: &Path,
    first_ns: i64,
    last_ns: i64,
    batch: &RecordBatch,
) -> std::io::Result<PathBuf> {
    let tmp = dir.join(format!(".{first_ns}-{last_ns}.parquet.tmp"));
    let file = std::fs::File::create(&tmp)?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    let result = (|| {
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props))
            .map_err(std::io::Error::other)?;
        writer.write(batch).map_err(std::io::Error::other)?;
        let file = writer.into_inner().map_err(std::io::Error::other)?;
        file.sync_all()?;
        let path = slice_path(dir, first_ns, last_ns);
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
