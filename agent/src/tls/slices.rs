//! `tls` slices: TLS plaintext chunks as Parquet files, written as the `sockets` slices are.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use arrow::{
    array::{
        ArrayRef, BinaryArray, BooleanArray, Int32Array, RecordBatch, StringArray, UInt8Array,
        UInt32Array, UInt64Array,
    },
    datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit},
};
use remora_agent_common::{TLS_TRUNCATED, TlsChunkHeader};

use crate::{clock::TaiToUtc, sockets::record::SocketIds};

/// Kind name of TLS slices.
pub const TLS_KIND: &str = "tls";

/// One chunk of plaintext, as a `tls` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRow {
    /// UTC ns when a read returned, or when a write started.
    pub ts_ns: i64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: String,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// Socket fd, when `SSL_set_fd` was seen.
    pub fd: Option<i32>,
    /// 0 read, 1 write.
    pub direction: u8,
    /// The library file the process maps.
    pub lib: String,
    /// The TLS connection within its process (keyed hash of pid and `SSL*`).
    pub conn_id: u64,
    /// The socket (same ids as the `sockets` slices' `socket_id`), when seen.
    pub socket_id: Option<u64>,
    /// Own end, when known.
    pub src: Option<SocketAddr>,
    /// Peer, when known.
    pub dst: Option<SocketAddr>,
    /// Offset of this chunk in its call.
    pub offset: u32,
    /// Bytes the call moved.
    pub call_len: u32,
    /// Bytes of the call past the last chunk were not recorded.
    pub truncated: bool,
    /// The plaintext.
    pub data: Vec<u8>,
}

/// The row of one chunk (header and its bytes).
pub fn row(
    h: &TlsChunkHeader,
    data: &[u8],
    clock: &TaiToUtc,
    ids: &SocketIds,
    lib: &str,
) -> TlsRow {
    let comm_len = h.comm.iter().position(|&b| b == 0).unwrap_or(16);
    let v4 = |a: [u8; 4], port: u16| {
        (h.family == 4).then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port))
    };
    TlsRow {
        ts_ns: clock.utc_ns(h.ts_ns),
        pid: h.pid,
        tid: h.tid,
        comm: String::from_utf8_lossy(&h.comm[..comm_len]).into_owned(),
        cgroup_id: h.cgroup_id,
        fd: (h.fd >= 0).then_some(h.fd),
        direction: h.direction,
        lib: lib.to_owned(),
        conn_id: ids.id(h.ssl ^ (u64::from(h.pid) << 48)),
        socket_id: (h.skaddr != 0).then(|| ids.id(h.skaddr)),
        src: v4(h.saddr, h.sport),
        dst: v4(h.daddr, h.dport),
        offset: h.offset,
        call_len: h.total,
        truncated: h.flags & TLS_TRUNCATED != 0,
        data: data.to_vec(),
    }
}

/// The `tls` schema (docs/capture.md lists the columns).
pub fn tls_schema() -> SchemaRef {
    let dict = || DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("node", dict(), false),
        Field::new("pid", DataType::UInt32, false),
        Field::new("tid", DataType::UInt32, false),
        Field::new("comm", DataType::Utf8, false),
        Field::new("cgroup_id", DataType::UInt64, false),
        Field::new("fd", DataType::Int32, true),
        Field::new("direction", DataType::UInt8, false),
        Field::new("lib", dict(), false),
        Field::new("conn_id", DataType::UInt64, false),
        Field::new("socket_id", DataType::UInt64, true),
        Field::new("src_ip", DataType::Utf8, true),
        Field::new("src_port", DataType::UInt16, true),
        Field::new("dst_ip", DataType::Utf8, true),
        Field::new("dst_port", DataType::UInt16, true),
        Field::new("chunk_offset", DataType::UInt32, false),
        Field::new("call_len", DataType::UInt32, false),
        Field::new("truncated", DataType::Boolean, false),
        Field::new("data", DataType::Binary, false),
    ]))
}

/// The record batch of `rows` from `node`.
pub fn batch(node: &str, rows: &[TlsRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    use crate::sockets::slices::{dict, endpoint_columns, ts_column};
    let [src_ip, src_port, dst_ip, dst_port] =
        endpoint_columns(rows.iter().map(|r| (r.src, r.dst)));
    let columns: Vec<ArrayRef> = vec![
        ts_column(rows.iter().map(|r| r.ts_ns)),
        dict(rows.iter().map(|_| Some(node))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.pid))),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.tid))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.comm))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.cgroup_id),
        )),
        Arc::new(rows.iter().map(|r| r.fd).collect::<Int32Array>()),
        Arc::new(UInt8Array::from_iter_values(
            rows.iter().map(|r| r.direction),
        )),
        dict(rows.iter().map(|r| Some(r.lib.as_str()))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.conn_id),
        )),
        Arc::new(rows.iter().map(|r| r.socket_id).collect::<UInt64Array>()),
        src_ip,
        src_port,
        dst_ip,
        dst_port,
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.offset))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.call_len),
        )),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.truncated))
                .collect::<BooleanArray>(),
        ),
        Arc::new(BinaryArray::from_iter_values(rows.iter().map(|r| &r.data))),
    ];
    RecordBatch::try_new(tls_schema(), columns)
}

/// Writes `rows` (time-ordered, not empty) as one slice in `dir`.
pub fn write_slice(dir: &Path, node: &str, rows: &[TlsRow]) -> std::io::Result<PathBuf> {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(std::io::Error::other("no rows to write"));
    };
    let batch = batch(node, rows).map_err(std::io::Error::other)?;
    crate::sockets::slices::write_batch(dir, first.ts_ns, last.ts_ns, &batch)
}
