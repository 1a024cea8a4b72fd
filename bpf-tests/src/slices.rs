//! Reading the agent's packet slices back with the parquet crate, row by row: independent of
//! the analyzer's reader (`remora_analyzer::pipeline::slices`) on purpose, so the tests do not
//! check the files with the code that consumes them.

use std::{fs::File, path::Path};

use arrow::{
    array::{Array, AsArray},
    datatypes::{TimestampNanosecondType, UInt8Type, UInt16Type, UInt32Type},
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// One row of a packets slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// UTC ns.
    pub ts_ns: i64,
    /// Interface index.
    pub ifindex: u32,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// L3 length on the wire.
    pub wire_len: u32,
    /// IP protocol.
    pub ip_proto: u8,
    /// Source address text ("" for non-IP).
    pub src_ip: String,
    /// Destination address text.
    pub dst_ip: String,
    /// Source port.
    pub src_port: Option<u16>,
    /// Destination port.
    pub dst_port: Option<u16>,
    /// Kept bytes from the IP header on.
    pub payload: Vec<u8>,
}

/// Reads every row of one slice file.
pub fn read_slice(path: &Path) -> Vec<Packet> {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{} is not a readable Parquet file: {e}", path.display()))
        .build()
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = Vec::new();
    for batch in reader {
        let batch =
            batch.unwrap_or_else(|e| panic!("corrupt row group in {}: {e}", path.display()));
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("column {name} missing in {}", path.display()))
                .clone()
        };
        let ts = col("ts");
        let ts = ts.as_primitive::<TimestampNanosecondType>();
        let ifindex = col("ifindex");
        let ifindex = ifindex.as_primitive::<UInt32Type>();
        let direction = col("direction");
        let direction = direction.as_primitive::<UInt8Type>();
        let wire_len = col("wire_len");
        let wire_len = wire_len.as_primitive::<UInt32Type>();
        let ip_proto = col("ip_proto");
        let ip_proto = ip_proto.as_primitive::<UInt8Type>();
        let src_ip = col("src_ip");
        let src_ip = src_ip.as_string::<i32>();
        let dst_ip = col("dst_ip");
        let dst_ip = dst_ip.as_string::<i32>();
        let src_port = col("src_port");
        let src_port = src_port.as_primitive::<UInt16Type>();
        let dst_port = col("dst_port");
        let dst_port = dst_port.as_primitive::<UInt16Type>();
        let payload = col("payload");
        let payload = payload.as_binary::<i32>();
        for i in 0..batch.num_rows() {
            out.push(Packet {
                ts_ns: ts.value(i),
                ifindex: ifindex.value(i),
                direction: direction.value(i),
                wire_len: wire_len.value(i),
                ip_proto: ip_proto.value(i),
                src_ip: src_ip.value(i).to_owned(),
                dst_ip: dst_ip.value(i).to_owned(),
                src_port: src_port.is_valid(i).then(|| src_port.value(i)),
                dst_port: dst_port.is_valid(i).then(|| dst_port.value(i)),
                payload: payload.value(i).to_vec(),
            });
        }
    }
    out
}

/// The visible (finished) slice files of a packets directory, oldest first.
pub fn slice_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "parquet")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Reads every finished slice of a packets directory, in time order.
pub fn read_all(dir: &Path) -> Vec<Packet> {
    let mut all: Vec<Packet> = slice_files(dir)
        .iter()
        .flat_map(|p| read_slice(p))
        .collect();
    all.sort_by_key(|p| p.ts_ns);
    all
}
