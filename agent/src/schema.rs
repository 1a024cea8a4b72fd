//! The Arrow schema of the `packets` slices (DESIGN §2) and the builders that fill it.

use std::{fmt::Write as _, sync::Arc};

use arrow::array::ArrayBuilder as _;

use arrow::{
    array::{
        ArrayRef, BinaryBuilder, DictionaryArray, Int32Array, PrimitiveBuilder, RecordBatch,
        StringArray, StringBuilder, TimestampNanosecondBuilder,
    },
    datatypes::{
        DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit, UInt8Type, UInt16Type, UInt32Type,
        UInt64Type,
    },
    error::ArrowError,
};

use crate::decode::PacketRow;

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

/// Column builders for one record batch of packet rows.
pub struct PacketBuilders {
    schema: SchemaRef,
    node: String,
    ts: TimestampNanosecondBuilder,
    last_ips: [(Option<std::net::IpAddr>, String); 2],
    ifindex: PrimitiveBuilder<UInt32Type>,
    direction: PrimitiveBuilder<UInt8Type>,
    wire_len: PrimitiveBuilder<UInt32Type>,
    cgroup_id: PrimitiveBuilder<UInt64Type>,
    l3: PrimitiveBuilder<UInt8Type>,
    ip_proto: PrimitiveBuilder<UInt8Type>,
    src_ip: StringBuilder,
    dst_ip: StringBuilder,
    src_port: PrimitiveBuilder<UInt16Type>,
    dst_port: PrimitiveBuilder<UInt16Type>,
    tcp_flags: PrimitiveBuilder<UInt8Type>,
    tcp_seq: PrimitiveBuilder<UInt32Type>,
    tcp_ack: PrimitiveBuilder<UInt32Type>,
    payload: BinaryBuilder,
    payload_bytes: usize,
}

impl PacketBuilders {
    /// Empty builders for rows of node `node`.
    pub fn new(node: &str) -> Self {
        Self {
            schema: packets_schema(),
            node: node.to_owned(),
            ts: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            last_ips: Default::default(),
            ifindex: PrimitiveBuilder::new(),
            direction: PrimitiveBuilder::new(),
            wire_len: PrimitiveBuilder::new(),
            cgroup_id: PrimitiveBuilder::new(),
            l3: PrimitiveBuilder::new(),
            ip_proto: PrimitiveBuilder::new(),
            src_ip: StringBuilder::new(),
            dst_ip: StringBuilder::new(),
            src_port: PrimitiveBuilder::new(),
            dst_port: PrimitiveBuilder::new(),
            tcp_flags: PrimitiveBuilder::new(),
            tcp_seq: PrimitiveBuilder::new(),
            tcp_ack: PrimitiveBuilder::new(),
            payload: BinaryBuilder::new(),
            payload_bytes: 0,
        }
    }

    /// Appends one row and its kept bytes.
    pub fn append(&mut self, row: &PacketRow, payload: &[u8]) {
        self.ts.append_value(row.ts_ns);
        self.ifindex.append_value(row.ifindex);
        self.direction.append_value(row.direction);
        self.wire_len.append_value(row.wire_len);
        self.cgroup_id.append_option(row.cgroup_id);
        self.l3.append_value(row.l3);
        self.ip_proto.append_value(row.ip_proto);
        // Consecutive packets mostly share addresses: format each address once per run.
        for (i, ip, builder) in [
            (0, row.src_ip, &mut self.src_ip),
            (1, row.dst_ip, &mut self.dst_ip),
        ] {
            let (last, text) = &mut self.last_ips[i];
            if *last != ip || text.is_empty() {
                text.clear();
                if let Some(ip) = ip {
                    let _ = write!(text, "{ip}");
                }
                *last = ip;
            }
            builder.append_value(text.as_str());
        }
        self.src_port.append_option(row.src_port);
        self.dst_port.append_option(row.dst_port);
        self.tcp_flags.append_option(row.tcp_flags);
        self.tcp_seq.append_option(row.tcp_seq);
        self.tcp_ack.append_option(row.tcp_ack);
        self.payload.append_value(payload);
        self.payload_bytes += payload.len();
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes pending (the bulk of the memory the builders hold).
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// Takes the pending rows as a record batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        // The next batch will be about as large: allocate its payload buffer once, not by doubling.
        let next_payload = BinaryBuilder::with_capacity(self.len(), self.payload_bytes);
        let payload = std::mem::replace(&mut self.payload, next_payload).finish();
        self.payload_bytes = 0;
        let rows = self.len();
        // Every row of a slice has the same node: one dictionary entry, all keys 0.
        let node: DictionaryArray<Int32Type> = DictionaryArray::try_new(
            Int32Array::from(vec![0; rows]),
            Arc::new(StringArray::from(vec![self.node.as_str()])),
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(node),
            Arc::new(self.ifindex.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.wire_len.finish()),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.l3.finish()),
            Arc::new(self.ip_proto.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.dst_ip.finish()),
            Arc::new(self.src_port.finish()),
            Arc::new(self.dst_port.finish()),
            Arc::new(self.tcp_flags.finish()),
            Arc::new(self.tcp_seq.finish()),
            Arc::new(self.tcp_ack.finish()),
            Arc::new(payload),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}
