//! Number and time columns of ours, checked against arrow-rs: the same values read back, the
//! same chunk statistics as arrow-rs writes for the same rows, a column index that says each
//! page's true min and max, and chunks that do not depend on how rows came in batches.

use std::sync::Arc;

use arrow::{
    array::{
        Array, ArrayRef, AsArray as _, Int64Array, RecordBatch, TimestampNanosecondArray,
        UInt16Array, UInt32Array, UInt64Array,
    },
    datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit},
};
use bytes::Bytes;
use parquet::{
    arrow::{
        ArrowSchemaConverter, ArrowWriter,
        arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder},
    },
    basic::{BoundaryOrder, Compression, Encoding, ZstdLevel},
    file::{
        metadata::{PageIndexPolicy, ParquetMetaData},
        page_index::column_index::ColumnIndexMetaData,
        properties::{EnabledStatistics, WriterProperties},
        writer::SerializedFileWriter,
    },
};

use super::{NumberColumn, Numbers};
use crate::{byte_array::PAGE_ROWS, page::PageCompressor, tests::random};

const PAGE_BYTES: usize = 128 << 10;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("port", DataType::UInt16, false),
        Field::new("pid", DataType::UInt32, false),
        Field::new("size", DataType::UInt64, false),
        Field::new("grpc_status", DataType::Int64, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("never", DataType::Int64, true),
        Field::new("conn_id", DataType::UInt64, false),
    ]))
}

/// `rows` rows: ports and statuses in runs from small sets, pids and sizes across their whole
/// unsigned range (past the signed maximum, where a signed comparison would sort them first),
/// signed statuses with nulls, times that rise with jitter, a column of nulls only, and ids
/// that are all different (enough of them to pass the dictionary's limit).
fn batch(rows: usize, next: &mut impl FnMut(u64) -> u64) -> RecordBatch {
    let mut port = Vec::with_capacity(rows);
    let mut pid = Vec::with_capacity(rows);
    let mut size = Vec::with_capacity(rows);
    let mut status = Vec::with_capacity(rows);
    let mut time = Vec::with_capacity(rows);
    let (mut p, mut t) = (80u16, 1_700_000_000_000_000_000i64);
    for _ in 0..rows {
        if next(6) == 0 {
            p = [80, 443, 8080, 53, 65535, 0][next(6) as usize];
        }
        port.push(p);
        pid.push(match next(4) {
            0 => u32::MAX - next(3) as u32,
            1 => (1 << 31) + next(100) as u32,
            _ => next(1_000) as u32,
        });
        size.push(match next(5) {
            0 => u64::MAX - next(2),
            1 => (1 << 63) + next(10),
            2 => next(1 << 40) << 10,
            _ => next(2_000),
        });
        status.push(match next(5) {
            0 => None,
            1 => Some(-(next(3) as i64) - 1),
            2 => Some(i64::MIN + next(2) as i64),
            _ => Some(next(17) as i64),
        });
        t += next(1_000_000) as i64 - 1_000;
        time.push(t);
    }
    let conn_id: Vec<u64> = (0..rows as u64).map(|i| i * 7_919 % 1_000_003).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt16Array::from(port)),
        Arc::new(UInt32Array::from(pid)),
        Arc::new(UInt64Array::from(size)),
        Arc::new(Int64Array::from(status)),
        Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![None::<i64>; rows])),
        Arc::new(UInt64Array::from(conn_id)),
    ];
    RecordBatch::try_new(schema(), columns).unwrap_or_else(|e| panic!("{e}"))
}

fn properties() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_else(|e| panic!("{e}")));
    WriterProperties::builder()
        .set_compression(zstd)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_size_limit(PAGE_BYTES)
        .build()
}

/// `all` written by our columns: row groups of `group_rows`, each in batches of sizes from
/// `split`.
fn ours(all: &RecordBatch, group_rows: usize, mut split: impl FnMut() -> usize) -> Bytes {
    let schema = all.schema();
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(&schema)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut writer = SerializedFileWriter::new(
        Vec::new(),
        parquet_schema.root_schema_ptr(),
        Arc::new(properties()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let leaves = parquet_schema.columns().to_vec();
    let mut compressor = PageCompressor::new(1).unwrap_or_else(|e| panic!("{e}"));
    let mut start = 0;
    while start < all.num_rows() {
        let group_end = (start + group_rows).min(all.num_rows());
        let mut columns: Vec<NumberColumn> = leaves
            .iter()
            .map(|leaf| {
                NumberColumn::new(leaf.clone(), true, PAGE_BYTES).unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let mut at = start;
        while at < group_end {
            let end = (at + split()).min(group_end);
            let slice = all.slice(at, end - at);
            for (column, array) in columns.iter_mut().zip(slice.columns()) {
                let (values, nulls) =
                    Numbers::of_column(array.as_ref()).unwrap_or_else(|| panic!("not a number"));
                column
                    .write(values, nulls, &mut compressor)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            at = end;
        }
        let mut group = writer.next_row_group().unwrap_or_else(|e| panic!("{e}"));
        for column in columns {
            let (bytes, close) = column
                .close(&mut compressor)
                .unwrap_or_else(|e| panic!("{e}"));
            group
                .append_column(&bytes, close)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        group.close().unwrap_or_else(|e| panic!("{e}"));
        start = group_end;
    }
    Bytes::from(writer.into_inner().unwrap_or_else(|e| panic!("{e}")))
}

/// `all` written by arrow-rs, with the same row groups.
fn arrow_rs(all: &RecordBatch, group_rows: usize) -> Bytes {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).unwrap_or_else(|e| panic!("{e}")),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), all.schema(), Some(props))
        .unwrap_or_else(|e| panic!("{e}"));
    writer.write(all).unwrap_or_else(|e| panic!("{e}"));
    Bytes::from(writer.into_inner().unwrap_or_else(|e| panic!("{e}")))
}

fn read(file: &Bytes) -> (RecordBatch, Arc<ParquetMetaData>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
        file.clone(),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let metadata = builder.metadata().clone();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder
        .with_batch_size(7_777)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let all = arrow::compute::concat_batches(&schema, &batches).unwrap_or_else(|e| panic!("{e}"));
    (all, metadata)
}

/// The values of `column` rows `from..to` as `i128` in the column's order (every type here
/// fits), and how many are null.
fn range(column: &dyn Array, from: usize, to: usize) -> (Vec<i128>, usize) {
    let slice = column.slice(from, to - from);
    let values: Vec<Option<i128>> = match slice.data_type() {
        DataType::UInt16 => slice
            .as_primitive::<arrow::datatypes::UInt16Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::UInt32 => slice
            .as_primitive::<arrow::datatypes::UInt32Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::UInt64 => slice
            .as_primitive::<arrow::datatypes::UInt64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Int64 => slice
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        DataType::Timestamp(..) => slice
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .iter()
            .map(|v| v.map(i128::from))
            .collect(),
        other => panic!("{other}"),
    };
    let nulls = values.iter().filter(|v| v.is_none()).count();
    (values.into_iter().flatten().collect(), nulls)
}

/// A column index's min and max of page `page` as `i128`, read as the column's type.
fn page_bounds(
    index: &ColumnIndexMetaData,
    page: usize,
    data_type: &DataType,
) -> Option<(i128, i128)> {
    let unsigned = matches!(
        data_type,
        DataType::UInt16 | DataType::UInt32 | DataType::UInt64
    );
    match index {
        ColumnIndexMetaData::INT32(i) => {
            let (min, max) = (i.min_value(page)?, i.max_value(page)?);
            Some(if unsigned {
                (i128::from(*min as u32), i128::from(*max as u32))
            } else {
                (i128::from(*min), i128::from(*max))
            })
        }
        ColumnIndexMetaData::INT64(i) => {
            let (min, max) = (i.min_value(page)?, i.max_value(page)?);
            Some(if unsigned {
                (i128::from(*min as u64), i128::from(*max as u64))
            } else {
                (i128::from(*min), i128::from(*max))
            })
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn numbers_read_back_with_arrow_rs_statistics_and_true_page_bounds() {
    let mut next = random(0x2545_f491_4f6c_dd1d);
    let rows = 3 * PAGE_ROWS + 57_321;
    let all = batch(rows, &mut next);
    let group_rows = 70_000;
    let file = ours(&all, group_rows, || 1 + next(900) as usize);
    let (back, metadata) = read(&file);
    assert_eq!(back.num_rows(), rows);
    for (i, field) in all.schema().fields().iter().enumerate() {
        assert_eq!(
            all.column(i).to_data(),
            back.column(i).to_data(),
            "{}",
            field.name()
        );
    }

    // Chunk statistics: what arrow-rs writes for the same row groups.
    let (_, reference) = read(&arrow_rs(&all, group_rows));
    assert_eq!(metadata.num_row_groups(), reference.num_row_groups());
    for (group, (ours, theirs)) in metadata
        .row_groups()
        .iter()
        .zip(reference.row_groups())
        .enumerate()
    {
        for (ours, theirs) in ours.columns().iter().zip(theirs.columns()) {
            let path = ours.column_path().string();
            let (a, b) = (ours.statistics(), theirs.statistics());
            let (Some(a), Some(b)) = (a, b) else {
                panic!("{path} in group {group}: statistics {a:?} and {b:?}");
            };
            assert_eq!(
                a.min_bytes_opt(),
                b.min_bytes_opt(),
                "{path} min, group {group}"
            );
            assert_eq!(
                a.max_bytes_opt(),
                b.max_bytes_opt(),
                "{path} max, group {group}"
            );
            assert_eq!(
                a.null_count_opt(),
                b.null_count_opt(),
                "{path} nulls, group {group}"
            );
            assert_eq!(
                a.is_min_max_backwards_compatible(),
                b.is_min_max_backwards_compatible(),
                "{path}: the deprecated min/max fields are for signed columns only"
            );
        }
    }

    // The column and offset indexes: each page's true bounds, nulls and order.
    let column_index = metadata
        .column_index()
        .unwrap_or_else(|| panic!("no column index"));
    let offset_index = metadata
        .offset_index()
        .unwrap_or_else(|| panic!("no offset index"));
    let mut group_start = 0;
    for (group, row_group) in metadata.row_groups().iter().enumerate() {
        for (i, field) in all.schema().fields().iter().enumerate() {
            let index = &column_index[group][i];
            let locations = offset_index[group][i].page_locations();
            let mut page_bounds_seen = Vec::new();
            for (page, location) in locations.iter().enumerate() {
                let from = group_start + location.first_row_index as usize;
                let to = locations
                    .get(page + 1)
                    .map_or(group_start + row_group.num_rows() as usize, |l| {
                        group_start + l.first_row_index as usize
                    });
                let (values, nulls) = range(all.column(i).as_ref(), from, to);
                let want = values
                    .iter()
                    .min()
                    .zip(values.iter().max())
                    .map(|(a, b)| (*a, *b));
                assert_eq!(
                    page_bounds(index, page, field.data_type()),
                    want,
                    "{} group {group} page {page}",
                    field.name()
                );
                let null_count = match index {
                    ColumnIndexMetaData::INT32(x) => x.null_count(page),
                    ColumnIndexMetaData::INT64(x) => x.null_count(page),
                    _ => None,
                };
                assert_eq!(null_count, Some(nulls as i64), "{} nulls", field.name());
                page_bounds_seen.extend(want);
            }
            let ascending = page_bounds_seen
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
            let order = index.get_boundary_order();
            if ascending {
                assert_eq!(order, Some(BoundaryOrder::ASCENDING), "{}", field.name());
            } else {
                assert_ne!(order, Some(BoundaryOrder::ASCENDING), "{}", field.name());
            }
        }
        group_start += row_group.num_rows() as usize;
    }

    // Dictionaries where values repeat, PLAIN where they pass the dictionary's limit.
    let encodings = |name: &str| -> Vec<Encoding> {
        let i = all
            .schema()
            .index_of(name)
            .unwrap_or_else(|e| panic!("{e}"));
        metadata.row_group(0).column(i).encodings().collect()
    };
    assert!(encodings("port").contains(&Encoding::RLE_DICTIONARY));
    assert!(!encodings("port").contains(&Encoding::PLAIN_DICTIONARY));
    assert!(
        encodings("conn_id").contains(&Encoding::PLAIN),
        "70,000 distinct ids pass the 1 MiB dictionary"
    );
}

#[test]
fn chunks_do_not_depend_on_the_batches() {
    let mut next = random(0x1234_5678_9abc_def1);
    let all = batch(2 * PAGE_ROWS + 1_111, &mut next);
    let whole = ours(&all, usize::MAX, || usize::MAX);
    let mut sizes = random(7);
    let split = ours(&all, usize::MAX, || 1 + sizes(3_000) as usize);
    let ones = ours(&all.slice(0, 5_000), usize::MAX, || 1);
    assert_eq!(whole, split);
    assert_eq!(ours(&all.slice(0, 5_000), usize::MAX, || 5_000), ones);
}

#[test]
fn a_batch_of_the_wrong_width_or_with_unexpected_nulls_is_an_error() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("port", DataType::UInt16, false),
        Field::new("size", DataType::UInt64, false),
    ]));
    let leaves = ArrowSchemaConverter::new()
        .convert(&schema)
        .unwrap_or_else(|e| panic!("{e}"))
        .columns()
        .to_vec();
    let mut compressor = PageCompressor::new(1).unwrap_or_else(|e| panic!("{e}"));
    let mut port =
        NumberColumn::new(leaves[0].clone(), true, PAGE_BYTES).unwrap_or_else(|e| panic!("{e}"));
    let wide = UInt64Array::from(vec![1u64, 2]);
    let (values, nulls) = Numbers::of_column(&wide).unwrap_or_else(|| panic!("a number"));
    assert!(port.write(values, nulls, &mut compressor).is_err());
    let mut size =
        NumberColumn::new(leaves[1].clone(), true, PAGE_BYTES).unwrap_or_else(|e| panic!("{e}"));
    let with_null = UInt64Array::from(vec![Some(1u64), None]);
    let (values, nulls) = Numbers::of_column(&with_null).unwrap_or_else(|| panic!("a number"));
    assert!(size.write(values, nulls, &mut compressor).is_err());
}
