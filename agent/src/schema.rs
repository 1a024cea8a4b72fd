//! The Arrow schema of the `packets` slices (docs/capture.md lists the columns).
//!
//! The slices are written by [`crate::packets_parquet`], which embeds this schema in each file
//! so that Arrow readers see exactly these types (the node column as a dictionary, `ts` in
//! UTC); its tests check that what they read back is this schema.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Kind name of packet slices (their directory and the node API's `kind`).
pub const PACKETS_KIND: &str = "packets";

/// The `packets` schema. Column names are the contract with the analyzer; see docs/capture.md.
pub fn packets_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "node",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("ifindex", DataType::UInt32, false),
        Field::new("direction", DataType::UInt8, false),
        Field::new("wire_len", DataType::UInt32, false),
        Field::new("cgroup_id", DataType::UInt64, true),
        Field::new("l3", DataType::UInt8, false),
        Field::new("ip_proto", DataType::UInt8, false),
        Field::new("src_ip", DataType::Utf8, false),
        Field::new("dst_ip", DataType::Utf8, false),
        Field::new("src_port", DataType::UInt16, true),
        Field::new("dst_port", DataType::UInt16, true),
        Field::new("tcp_flags", DataType::UInt8, true),
        Field::new("tcp_seq", DataType::UInt32, true),
        Field::new("tcp_ack", DataType::UInt32, true),
        Field::new("payload", DataType::Binary, false),
    ]))
}
