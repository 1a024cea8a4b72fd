//! The writer's files read back with the parquet crate: every value, the Arrow schema, the
//! statistics and the page index, over rows that reach every encoding branch.

use std::sync::Arc;

use arrow::{
    array::{
        Array, ArrayRef, BinaryArray, DictionaryArray, Int32Array, RecordBatch, StringArray,
        TimestampNanosecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
    },
    compute::{cast, concat_batches},
    datatypes::{DataType, Int32Type},
};
use bytes::Bytes;
use parquet::{
    arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
    file::{
        metadata::{PageIndexPolicy, ParquetMetaData},
        page_index::column_index::ColumnIndexMetaData,
        statistics::Statistics,
    },
};

use super::*;
use crate::{
    decode::{PacketBatch, PacketRow},
    parse::{Headers, Transport},
    schema::packets_schema,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Rows mixing IPv4/IPv6/non-IP, TCP/UDP/neither, cgroups or none, runs and noise, with
/// payloads from empty to 64 KB; `ts` mostly rising, with some late rows.
fn rows(n: usize, seed: u64) -> PacketBatch {
    let mut rng = Rng(seed | 1);
    let mut batch = PacketBatch::default();
    let mut ts = 1_796_000_000_000_000_000i64;
    let flows: Vec<Headers> = (0..40)
        .map(|i| {
            let mut h = Headers::default();
            match i % 5 {
                0..=2 => {
                    h.l3 = 4;
                    h.src_ip = u128::from(u32::from_le_bytes([198, 18, (i % 3) as u8, i as u8]));
                    h.dst_ip = u128::from(u32::from_le_bytes([198, 19, 0, (i * 7) as u8]));
                }
                3 => {
                    h.l3 = 6;
                    h.src_ip = u128::from_le_bytes([
                        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8,
                    ]);
                    h.dst_ip =
                        u128::from_le_bytes([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
                }
                _ => {}
            }
            h.ip_proto = [6, 17, 1, 58][i % 4];
            h.transport = match (h.l3, h.ip_proto) {
                (0, _) => Transport::None,
                (_, 6) => Transport::Tcp,
                (_, 17) => Transport::Udp,
                _ => Transport::None,
            };
            if h.transport != Transport::None {
                h.src_port = (i as u16).wrapping_mul(997).wrapping_add(1024);
                h.dst_port = [80, 443, 53, 65535][i % 4];
            }
            if h.transport == Transport::Tcp {
                h.tcp_seq = (u32::MAX - 5000).wrapping_add(i as u32 * 1000); // wraps within a flow
                h.tcp_ack = i as u32 * 31;
            }
            h
        })
        .collect();
    let mut flow = 0usize;
    for i in 0..n {
        if rng.below(10) == 0 {
            flow = rng.below(flows.len() as u64) as usize;
        }
        let mut headers = flows[flow];
        if headers.transport == Transport::Tcp {
            headers.tcp_seq = headers.tcp_seq.wrapping_add(i as u32 * 1448);
            headers.tcp_flags = [0x10, 0x18, 0x02, 0x11][rng.below(4) as usize];
        }
        ts += rng.below(20_000) as i64;
        let late = rng.below(500) == 0;
        let mut row = PacketRow::new(
            if late { ts - 1_000_000 } else { ts },
            [1, 2, 7, u32::MAX][rng.below(4) as usize],
            rng.below(70_000) as u32,
        );
        row.direction = rng.below(2) as u8;
        row.cgroup_id = if rng.below(3) == 0 {
            0
        } else {
            [1, 4242, u64::MAX][rng.below(3) as usize]
        };
        row.headers = headers;
        let len = match rng.below(100) {
            0 => 0,
            1 => 64_986,
            2..=20 => rng.below(4096) as usize,
            _ => 40 + rng.below(200) as usize,
        };
        let payload: Vec<u8> = (0..len).map(|j| (j as u64 * 31 + i as u64) as u8).collect();
        batch.push(row, &payload);
    }
    batch
}

fn write(batch: &PacketBatch, compression: Compression) -> Vec<u8> {
    let compressor = PayloadCompressor::new(compression).unwrap();
    let mut encoder = RowGroupEncoder::new(compressor, ROW_GROUP_BYTES);
    let mut file = PacketsFile::new(Vec::new(), "node-a").unwrap();
    let mut page = PageRows::new();
    let mut encode = |page: &mut PageRows, encoder: &mut RowGroupEncoder, last: bool| {
        if (encoder.encode_page(page).unwrap() || last)
            && let Some(group) = encoder.take()
        {
            file.write_row_group(&group).unwrap();
            encoder.recycle(group);
        }
        page.clear();
    };
    for row in &batch.rows {
        page.push(row, batch.payload_of(row));
        if page.is_full() {
            encode(&mut page, &mut encoder, false);
        }
    }
    encode(&mut page, &mut encoder, true);
    assert_eq!(file.rows(), batch.rows.len() as u64);
    let (size, out) = file.finish().unwrap();
    assert_eq!(size as usize, out.len());
    out
}

fn addr_text(l3: u8, addr: &u128) -> String {
    crate::decode::ip_of(l3, addr)
        .map(|ip| ip.to_string())
        .unwrap_or_default()
}

/// The rows as Arrow arrays, built directly from the rows (not through the writer).
fn expected(batch: &PacketBatch) -> RecordBatch {
    let r = &batch.rows;
    let opt_u16 = |f: &dyn Fn(&PacketRow) -> Option<u16>| -> ArrayRef {
        Arc::new(r.iter().map(f).collect::<UInt16Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampNanosecondArray::from(r.iter().map(|x| x.ts_ns).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(
            DictionaryArray::<Int32Type>::try_new(
                Int32Array::from(vec![0; r.len()]),
                Arc::new(StringArray::from(vec!["node-a"])),
            )
            .unwrap(),
        ),
        Arc::new(r.iter().map(|x| x.ifindex).collect::<UInt32Array>()),
        Arc::new(r.iter().map(|x| x.direction).collect::<UInt8Array>()),
        Arc::new(r.iter().map(|x| x.wire_len).collect::<UInt32Array>()),
        Arc::new(r.iter().map(|x| x.cgroup()).collect::<UInt64Array>()),
        Arc::new(r.iter().map(|x| x.headers.l3).collect::<UInt8Array>()),
        Arc::new(r.iter().map(|x| x.headers.ip_proto).collect::<UInt8Array>()),
        Arc::new(
            r.iter()
                .map(|x| Some(addr_text(x.headers.l3, &x.headers.src_ip)))
                .collect::<StringArray>(),
        ),
        Arc::new(
            r.iter()
                .map(|x| Some(addr_text(x.headers.l3, &x.headers.dst_ip)))
                .collect::<StringArray>(),
        ),
        opt_u16(&|x| x.ports().map(|p| p.0)),
        opt_u16(&|x| x.ports().map(|p| p.1)),
        Arc::new(
            r.iter()
                .map(|x| x.tcp().map(|t| t.0))
                .collect::<UInt8Array>(),
        ),
        Arc::new(
            r.iter()
                .map(|x| x.tcp().map(|t| t.1))
                .collect::<UInt32Array>(),
        ),
        Arc::new(
            r.iter()
                .map(|x| x.tcp().map(|t| t.2))
                .collect::<UInt32Array>(),
        ),
        Arc::new(
            r.iter()
                .map(|x| Some(batch.payload_of(x)))
                .collect::<BinaryArray>(),
        ),
    ];
    RecordBatch::try_new(packets_schema(), columns).unwrap()
}

fn read(file: &[u8]) -> (RecordBatch, Arc<ParquetMetaData>) {
    let options = ArrowReaderOptions::new()
        .with_column_index_policy(PageIndexPolicy::Optional)
        .with_offset_index_policy(PageIndexPolicy::Required);
    let builder =
        ParquetRecordBatchReaderBuilder::try_new_with_options(Bytes::from(file.to_vec()), options)
            .unwrap();
    let metadata = builder.metadata().clone();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .with_batch_size(3000)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (concat_batches(&schema, &batches).unwrap(), metadata)
}

/// Compares column by column (string columns as plain text: readers may choose views).
fn assert_same(got: &RecordBatch, want: &RecordBatch) {
    assert_eq!(got.schema(), want.schema(), "Arrow schema");
    assert_eq!(got.num_rows(), want.num_rows());
    for (i, field) in want.schema().fields().iter().enumerate() {
        let (g, w) = (got.column(i), want.column(i));
        let (g, w) = if matches!(field.data_type(), DataType::Utf8) {
            (
                cast(g, &DataType::Utf8).unwrap(),
                cast(w, &DataType::Utf8).unwrap(),
            )
        } else {
            (g.clone(), w.clone())
        };
        if g.as_ref() != w.as_ref() {
            let first = (0..w.len())
                .find(|&r| g.slice(r, 1) != w.slice(r, 1))
                .unwrap_or(0);
            panic!(
                "column {} differs first at row {first}: got {:?}, want {:?}",
                field.name(),
                g.slice(first, 1),
                w.slice(first, 1)
            );
        }
    }
}

#[test]
fn every_value_reads_back_as_written() {
    for (n, compression) in [
        (1, Compression::Zstd(1)),
        (7, Compression::None),
        (8191, Compression::Zstd(1)),
        (8193, Compression::None),
        (50_000, Compression::Zstd(-3)),
        (30_000, Compression::Auto),
    ] {
        let batch = rows(n, n as u64);
        let file = write(&batch, compression);
        let (got, _) = read(&file);
        assert_same(&got, &expected(&batch));
    }
}

#[test]
fn row_groups_split_by_size_and_carry_statistics() {
    let batch = rows(120_000, 3);
    let file = write(&batch, Compression::None);
    let (got, meta) = read(&file);
    assert_same(&got, &expected(&batch));
    assert!(
        meta.num_row_groups() > 1,
        "{} row groups",
        meta.num_row_groups()
    );
    let mut offset = 0usize;
    for group in meta.row_groups() {
        let rows = &batch.rows[offset..offset + group.num_rows() as usize];
        offset += group.num_rows() as usize;
        // u32 columns compare unsigned: u32::MAX is the max, not -1.
        match group.column(2).statistics() {
            Some(Statistics::Int32(s)) => {
                let want_max = rows.iter().map(|r| r.ifindex).max().unwrap();
                let want_min = rows.iter().map(|r| r.ifindex).min().unwrap();
                assert_eq!(*s.max_opt().unwrap() as u32, want_max);
                assert_eq!(*s.min_opt().unwrap() as u32, want_min);
            }
            other => panic!("ifindex statistics: {other:?}"),
        }
        match group.column(5).statistics() {
            Some(Statistics::Int64(s)) => {
                let nulls = rows.iter().filter(|r| r.cgroup_id == 0).count() as u64;
                assert_eq!(s.null_count_opt(), Some(nulls));
                assert_eq!(*s.max_opt().unwrap() as u64, u64::MAX);
            }
            other => panic!("cgroup statistics: {other:?}"),
        }
        match group.column(8).statistics() {
            Some(Statistics::ByteArray(s)) => {
                let texts: Vec<String> = rows
                    .iter()
                    .map(|r| addr_text(r.headers.l3, &r.headers.src_ip))
                    .collect();
                let min = texts.iter().min().unwrap().as_bytes();
                assert_eq!(s.min_opt().unwrap().data(), min);
            }
            other => panic!("src_ip statistics: {other:?}"),
        }
        assert!(
            group.column(15).statistics().is_none(),
            "no payload statistics"
        );
    }
    assert_eq!(offset, batch.rows.len());
}

#[test]
fn the_ts_page_index_bounds_every_page() {
    let batch = rows(40_000, 11);
    let file = write(&batch, Compression::Zstd(1));
    let (got, meta) = read(&file);
    let column_index = meta.column_index().expect("column index");
    let offset_index = meta.offset_index().expect("offset index");
    let ts = got
        .column(0)
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .unwrap();
    let mut row_base = 0usize;
    for (g, group) in meta.row_groups().iter().enumerate() {
        let ColumnIndexMetaData::INT64(index) = &column_index[g][0] else {
            panic!("ts column index: {:?}", column_index[g][0]);
        };
        let pages = &offset_index[g][0].page_locations;
        assert_eq!(pages.len(), index.min_values().len());
        for (p, page) in pages.iter().enumerate() {
            let start = row_base + page.first_row_index as usize;
            let end = pages
                .get(p + 1)
                .map_or(row_base + group.num_rows() as usize, |n| {
                    row_base + n.first_row_index as usize
                });
            let values = &ts.values()[start..end];
            assert_eq!(index.min_value(p).copied(), values.iter().min().copied());
            assert_eq!(index.max_value(p).copied(), values.iter().max().copied());
        }
        // Every chunk has an offset index whose pages lie inside the file.
        for chunk in &offset_index[g] {
            for page in &chunk.page_locations {
                assert!(
                    (page.offset + i64::from(page.compressed_page_size)) as usize <= file.len()
                );
            }
        }
        row_base += group.num_rows() as usize;
    }
}

#[test]
fn many_distinct_addresses_close_row_groups_early() {
    let mut batch = PacketBatch::default();
    for i in 0..150_000u32 {
        let mut row = PacketRow::new(i64::from(i), 1, 40);
        row.headers.l3 = 4;
        row.headers.src_ip = u128::from(u32::from_le_bytes(i.to_be_bytes()));
        row.headers.dst_ip = u128::from(u32::from_le_bytes([10, 0, 0, 1]));
        batch.push(row, &[]);
    }
    let file = write(&batch, Compression::None);
    let (got, meta) = read(&file);
    assert_same(&got, &expected(&batch));
    assert!(meta.num_row_groups() >= 2);
}

#[test]
fn compression_makes_repetitive_payloads_small() {
    let mut batch = PacketBatch::default();
    for i in 0..20_000 {
        batch.push(PacketRow::new(i, 1, 1000), &[0x42; 1000]);
    }
    let plain = write(&batch, Compression::None);
    let zstd = write(&batch, Compression::Zstd(1));
    assert!(plain.len() > 20_000_000);
    assert!(
        zstd.len() < plain.len() / 50,
        "{} vs {}",
        zstd.len(),
        plain.len()
    );
    assert_same(&read(&zstd).0, &expected(&batch));
}

/// Ring samples (event header + frame) of assorted packets, some mutated or cut.
fn samples(n: usize, seed: u64) -> Vec<Vec<u8>> {
    use etherparse::PacketBuilder;
    let mut rng = Rng(seed | 1);
    let mut out = Vec::new();
    for i in 0..n {
        let mut frame = Vec::new();
        let payload: Vec<u8> = (0..rng.below(300))
            .map(|j| (i + j as usize) as u8)
            .collect();
        let (a, b) = ([198, 18, 0, (i % 7) as u8], [198, 18, 1, (i % 5) as u8]);
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6]);
        match rng.below(4) {
            0 => builder
                .ipv4(a, b, 64)
                .tcp(1000 + (i % 9) as u16, 80, i as u32 * 1448, 65535)
                .ack(7)
                .write(&mut frame, &payload),
            1 => builder
                .ipv4(a, b, 64)
                .udp(53, 5353)
                .write(&mut frame, &payload),
            2 => builder
                .ipv6([0x20; 16], [0xfe; 16], 64)
                .tcp(443, 50000, 1, 2)
                .syn()
                .write(&mut frame, &payload),
            _ => builder
                .ipv4(a, b, 64)
                .icmpv4_echo_request(1, i as u16)
                .write(&mut frame, &payload),
        }
        .unwrap();
        if rng.below(10) == 0 {
            let at = rng.below(frame.len() as u64) as usize;
            frame[at] ^= rng.next() as u8;
        }
        let cap = if rng.below(8) == 0 {
            rng.below(frame.len() as u64) as usize
        } else {
            frame.len()
        };
        let mut sample = Vec::new();
        sample.extend_from_slice(&(1_796_000_000_000_000_000u64 + i as u64 * 1000).to_ne_bytes());
        sample.extend_from_slice(&(if i % 3 == 0 { 0u64 } else { 77 }).to_ne_bytes());
        sample.extend_from_slice(&1u32.to_ne_bytes());
        sample.extend_from_slice(&(frame.len() as u32).to_ne_bytes());
        sample.extend_from_slice(&(cap as u32).to_ne_bytes());
        sample.extend_from_slice(&[0x08, 0x00, (i % 2) as u8, 0]);
        sample.extend_from_slice(&frame[..cap]);
        out.push(sample);
    }
    out
}

#[test]
fn the_collector_path_writes_what_the_row_path_writes() {
    let decoder = crate::decode::Decoder {
        clock: crate::clock::TaiToUtc::with_offset_ns(0),
        snaplen: 4096,
        l2_len: [(1, 14)].into_iter().collect(),
    };
    let samples = samples(20_000, 5);
    // The row path: decode into rows (parse() into a Headers struct), then push them.
    let mut rows = PacketBatch::default();
    for s in &samples {
        let (row, payload) = decoder.decode(s).unwrap();
        rows.push(row, payload);
    }
    let by_rows = write(&rows, Compression::None);
    // The collector's path: split, then parse straight into the page's columns.
    let compressor = PayloadCompressor::new(Compression::None).unwrap();
    let mut encoder = RowGroupEncoder::new(compressor, ROW_GROUP_BYTES);
    let mut file = PacketsFile::new(Vec::new(), "node-a").unwrap();
    let mut page = PageRows::new();
    for s in &samples {
        let (meta, payload) = decoder.split(s).unwrap();
        page.push_packet(&meta, payload);
        if page.is_full() {
            if encoder.encode_page(&mut page).unwrap() {
                let group = encoder.take().unwrap();
                file.write_row_group(&group).unwrap();
            }
            page.clear();
        }
    }
    encoder.encode_page(&mut page).unwrap();
    file.write_row_group(&encoder.take().unwrap()).unwrap();
    let (_, by_columns) = file.finish().unwrap();
    assert!(by_rows == by_columns, "the two paths wrote different files");
    assert_same(&read(&by_columns).0, &expected(&rows));
}

/// The footer says a row group is sorted by `ts` only when it is: rows that arrive late
/// (older than one already written) make it say nothing.
#[test]
fn sorted_by_ts_is_declared_only_when_true() {
    let sorting = |file: &[u8]| -> Vec<bool> {
        read(file)
            .1
            .row_groups()
            .iter()
            .map(|g| {
                g.sorting_columns()
                    .is_some_and(|s| s.len() == 1 && s[0].column_idx == 0 && !s[0].descending)
            })
            .collect()
    };
    let mut in_order = PacketBatch::default();
    let mut with_late = PacketBatch::default();
    for i in 0..1000i64 {
        let ts = 1_796_000_000_000_000_000 + i * 1000;
        in_order.push(PacketRow::new(ts, 1, 60), &[0u8; 20]);
        // Row 700 arrives 5 ms late: older than the 699 before it.
        let late = if i == 700 { ts - 5_000_000 } else { ts };
        with_late.push(PacketRow::new(late, 1, 60), &[0u8; 20]);
    }
    let sorted = sorting(&write(&in_order, Compression::None));
    assert!(
        !sorted.is_empty() && sorted.iter().all(|s| *s),
        "{sorted:?}"
    );
    let late = sorting(&write(&with_late, Compression::None));
    assert_eq!(late, vec![false], "the row group with the late row");
    // And every row is still there, as written.
    assert_eq!(
        read(&write(&with_late, Compression::None)).0.num_rows(),
        1000
    );
}
