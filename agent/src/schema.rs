//! The Arrow schema of the `packets` slices (DESIGN §2) and the builders that fill it.

use std::{fmt::Write as _, sync::Arc};

use arrow::array::ArrayBuilder as _;

use arrow::{
    array::{
        ArrayRef, AsArray as _, BinaryArray, DictionaryArray, Int32Array, PrimitiveBuilder,
        RecordBatch, StringArray, StringBuilder, TimestampNanosecondBuilder,
    },
    buffer::{Buffer, OffsetBuffer, ScalarBuffer},
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
    /// Payload bytes and offsets, kept as plain vectors so that their (MiB-sized) allocations can
    /// be taken back from a written batch and reused: allocating and freeing them for every
    /// batch fragments the heap and was the largest part of the recorder's RSS at full payload.
    payload_values: Vec<u8>,
    payload_offsets: Vec<i32>,
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
            payload_values: Vec::new(),
            payload_offsets: vec![0],
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
        self.payload_values.extend_from_slice(payload);
        // Batches end at a few MiB of payload (slice.rs), far below i32::MAX.
        self.payload_offsets
            .push(i32::try_from(self.payload_values.len()).unwrap_or(i32::MAX));
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
        self.payload_values.len()
    }

    /// Takes back the payload buffers of a batch made by [`finish`](Self::finish) once it has
    /// been written, so the next batch reuses them. Does nothing if something else still holds
    /// the batch's columns.
    pub fn recycle(&mut self, batch: RecordBatch) {
        let Some(column) = batch.column_by_name("payload") else {
            return;
        };
        let Some(array) = column.as_binary_opt::<i32>() else {
            return;
        };
        let values = array.values().clone();
        let offsets = array.offsets().clone().into_inner().into_inner();
        drop(batch);
        if self.payload_values.capacity() == 0
            && let Ok(mut values) = values.into_vec::<u8>()
        {
            values.clear();
            self.payload_values = values;
        }
        if self.payload_offsets.capacity() <= 1
            && let Ok(mut offsets) = offsets.into_vec::<i32>()
        {
            offsets.clear();
            offsets.push(0);
            self.payload_offsets = offsets;
        }
    }

    /// Takes the pending rows as a record batch and empties the builders.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = self.len();
        let offsets = std::mem::replace(&mut self.payload_offsets, vec![0]);
        let values = std::mem::take(&mut self.payload_values);
        let payload = BinaryArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            None,
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts_ns: i64, len: u32) -> PacketRow {
        PacketRow {
            ts_ns,
            ifindex: 1,
            direction: 0,
            wire_len: len,
            cgroup_id: None,
            l3: 4,
            ip_proto: 17,
            src_ip: Some([198, 18, 0, 1].into()),
            dst_ip: Some([198, 18, 0, 2].into()),
            src_port: Some(1),
            dst_port: Some(2),
            tcp_flags: None,
            tcp_seq: None,
            tcp_ack: None,
            payload: 0..len,
        }
    }

    fn payloads(batch: &RecordBatch) -> Vec<Vec<u8>> {
        let col = batch.column_by_name("payload").expect("payload column");
        col.as_binary::<i32>()
            .iter()
            .map(|v| v.unwrap_or_default().to_vec())
            .collect()
    }

    #[test]
    fn recycled_payload_buffers_are_reused_and_the_next_batch_is_intact() {
        let mut builders = PacketBuilders::new("n1");
        builders.append(&row(1, 3), b"abc");
        builders.append(&row(2, 2), b"de");
        let first = builders.finish().expect("first batch");
        assert_eq!(payloads(&first), vec![b"abc".to_vec(), b"de".to_vec()]);
        let values_ptr = first
            .column_by_name("payload")
            .map(|c| c.as_binary::<i32>().values().as_ptr());
        builders.recycle(first);
        assert!(builders.is_empty());
        assert_eq!(builders.payload_bytes(), 0);

        builders.append(&row(3, 4), b"wxyz");
        let second = builders.finish().expect("second batch");
        assert_eq!(payloads(&second), vec![b"wxyz".to_vec()]);
        let reused = second
            .column_by_name("payload")
            .map(|c| c.as_binary::<i32>().values().as_ptr());
        assert_eq!(values_ptr, reused, "the payload allocation was not reused");
    }

    #[test]
    fn a_batch_still_shared_elsewhere_is_not_taken_back() {
        let mut builders = PacketBuilders::new("n1");
        builders.append(&row(1, 3), b"abc");
        let batch = builders.finish().expect("batch");
        let kept = batch.clone();
        builders.recycle(batch);
        builders.append(&row(2, 2), b"zz");
        let next = builders.finish().expect("next batch");
        assert_eq!(payloads(&kept), vec![b"abc".to_vec()]);
        assert_eq!(payloads(&next), vec![b"zz".to_vec()]);
    }
}
