//! Columns of ours written into a file of their own and read back by arrow-rs: flat text and
//! bytes, lists and maps of text, each nullable at every level, across pages, row groups,
//! batch splits and the dictionary's fallback.

use std::sync::Arc;

use arrow::{
    array::{
        Array, ArrayRef, AsArray as _, BinaryBuilder, ListBuilder, MapBuilder, RecordBatch,
        StringBuilder,
    },
    datatypes::{DataType, Field, Schema},
};
use parquet::{
    arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata, arrow_reader},
    basic::{Compression, Encoding, ZstdLevel},
    file::{
        properties::WriterProperties,
        reader::FileReader,
        serialized_reader::{ReadOptionsBuilder, SerializedFileReader},
        writer::SerializedFileWriter,
    },
};

use super::{ByteArrayColumn, PAGE_ROWS, PAGE_VALUES, PageCompressor, Rows};
use crate::{column::utf8_map_type, tests::random};

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("map", utf8_map_type(), true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("bytes", DataType::Binary, true),
        Field::new("text", DataType::Utf8, false),
        Field::new("plain_map", utf8_map_type(), false),
        Field::new("plain_text", DataType::Utf8, false),
    ]))
}

/// `rows` rows: header-like maps (names in a stable order, values repeating or not, some null,
/// long ones past the dictionary's limit), empty and null maps and lists, bytes that are not
/// UTF-8; and runs of thousands of rows where every column is empty (the columns of a protocol
/// absent for a while), which whole batches fall into.
fn batch(rows: usize, next: &mut impl FnMut(u64) -> u64) -> RecordBatch {
    const NAMES: [&str; 12] = [
        "host",
        "user-agent",
        "accept",
        "content-type",
        "content-length",
        "date",
        "server",
        "x-request-id",
        "cache-control",
        "set-cookie",
        "vary",
        "",
    ];
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut plain_map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    let mut list = ListBuilder::new(StringBuilder::new());
    let mut bytes = BinaryBuilder::new();
    let mut text = StringBuilder::new();
    let mut plain_text = StringBuilder::new();
    let mut fields = 12;
    let mut quiet = 0;
    for _ in 0..rows {
        if quiet == 0 && next(15_000) == 0 {
            quiet = 2_000 + next(8_000);
        }
        if quiet > 0 {
            quiet -= 1;
            map.append(true).unwrap_or_else(|e| panic!("{e}"));
            plain_map.append(true).unwrap_or_else(|e| panic!("{e}"));
            list.append(true);
            bytes.append_value([]);
            text.append_value("");
            plain_text.append_value("");
            continue;
        }
        if next(200) == 0 {
            fields = [0, 3, 9, 12, 12][next(5) as usize];
        }
        for (nullable, m) in [(true, &mut map), (false, &mut plain_map)] {
            match next(40) {
                0 if nullable => m.append(false).unwrap_or_else(|e| panic!("{e}")),
                1 => m.append(true).unwrap_or_else(|e| panic!("{e}")),
                _ => {
                    for name in &NAMES[..fields] {
                        m.keys().append_value(name);
                        match next(12) {
                            0 => m.values().append_null(),
                            1 => m.values().append_value(format!(
                                "{}-{}",
                                "ü".repeat(next(300) as usize),
                                next(1 << 40)
                            )),
                            2 => m.values().append_value(next(100_000).to_string()),
                            _ => m.values().append_value(format!("{name}={}", next(3))),
                        }
                    }
                    m.append(true).unwrap_or_else(|e| panic!("{e}"));
                }
            }
        }
        match next(10) {
            0 => list.append(false),
            1 => list.append(true),
            _ => {
                for _ in 0..=next(4) {
                    match next(8) {
                        0 => list.values().append_null(),
                        1 => list.values().append_value(""),
                        _ => list.values().append_value(format!("q{}.example", next(20))),
                    }
                }
                list.append(true);
            }
        }
        match next(6) {
            0 => bytes.append_null(),
            1 => bytes.append_value([]),
            _ => {
                let body: Vec<u8> = (0..next(3000)).map(|_| next(256) as u8).collect();
                bytes.append_value(body);
            }
        }
        text.append_value(["GET", "POST", "GET", "POST", ""][next(5) as usize]);
        plain_text.append_value(match next(3) {
            0 => String::new(),
            _ => format!("id-{}", next(1 << 30)),
        });
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(map.finish()),
        Arc::new(list.finish()),
        Arc::new(bytes.finish()),
        Arc::new(text.finish()),
        Arc::new(plain_map.finish()),
        Arc::new(plain_text.finish()),
    ];
    RecordBatch::try_new(schema(), columns).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn lists_maps_and_bytes_read_back_across_pages_groups_batches_and_fallback() {
    let mut next = random(0x9e37_79b9_7f4a_7c15);
    let rows = 3 * PAGE_ROWS + 4_321;
    let all = batch(rows, &mut next);
    let schema = schema();
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(&schema)
        .unwrap_or_else(|e| panic!("{e}"));
    let compression = Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_else(|e| panic!("{e}")));
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("t.parquet");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), Arc::new(props))
            .unwrap_or_else(|e| panic!("{e}"));
    let leaves = parquet_schema.columns().to_vec();
    let mut compressor = PageCompressor::new(1).unwrap_or_else(|e| panic!("{e}"));
    // Row groups of uneven sizes, each written in batches of random sizes; the plain map
    // has no dictionary.
    let mut start = 0;
    while start < rows {
        let group_end = (start + 20_000 + next(40_000) as usize).min(rows);
        let mut columns: Vec<ByteArrayColumn> = leaves
            .iter()
            .map(|leaf| {
                let dictionary = !leaf.path().parts()[0].starts_with("plain_");
                ByteArrayColumn::new(leaf.clone(), dictionary, 128 << 10)
            })
            .collect();
        let mut at = start;
        while at < group_end {
            let end = (at + 1 + next(7_000) as usize).min(group_end);
            let slice = all.slice(at, end - at);
            let rows: Vec<Rows<'_>> = slice
                .columns()
                .iter()
                .flat_map(|c| Rows::of_column(c.as_ref()).unwrap_or_else(|| panic!("not ours")))
                .collect();
            assert_eq!(rows.len(), columns.len());
            for (column, rows) in columns.iter_mut().zip(rows) {
                column
                    .write(rows, &mut compressor)
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
    writer.close().unwrap_or_else(|e| panic!("{e}"));

    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let reader = arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_batch_size(9_999)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let back = arrow::compute::concat_batches(&schema, &batches).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back.num_rows(), rows);
    for (i, field) in schema.fields().iter().enumerate() {
        let (want, got) = (all.column(i), back.column(i));
        for row in 0..rows {
            assert_eq!(
                want.slice(row, 1).to_data(),
                got.slice(row, 1).to_data(),
                "{}, row {row}",
                field.name()
            );
        }
    }

    // The file is what the layout says: a dictionary that falls back in the map's values,
    // none in the plain map, pages cut by values as well as rows, and readers skip by pages.
    let reader = SerializedFileReader::new_with_options(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
        ReadOptionsBuilder::new().with_page_index().build(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let metadata = reader.metadata();
    let chunk = |name: &str| {
        metadata
            .row_group(0)
            .columns()
            .iter()
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    let values = chunk("map.entries.values");
    assert!(values.dictionary_page_offset().is_some());
    assert!(
        values.encodings().any(|e| e == Encoding::PLAIN),
        "past the limit"
    );
    assert!(chunk("map.entries.keys").dictionary_page_offset().is_some());
    assert!(
        chunk("plain_map.entries.keys")
            .dictionary_page_offset()
            .is_none()
    );
    let offsets = metadata
        .offset_index()
        .unwrap_or_else(|| panic!("no offset index"));
    let pages = offsets[0][0].page_locations();
    let first_page_rows = pages.get(1).map_or(0, |p| p.first_row_index);
    assert!(
        first_page_rows > 0 && (first_page_rows as usize) < PAGE_ROWS,
        "the first page of keys ends before {PAGE_ROWS} rows (at {first_page_rows}): cut at {PAGE_VALUES} values"
    );
    let groups = metadata.num_row_groups();
    assert!(groups > 1, "{groups} row groups");
    let rows_in_pages: i64 = (0..groups)
        .map(|g| {
            let pages = offsets[g][0].page_locations();
            let group_rows = metadata.row_group(g).num_rows();
            pages
                .windows(2)
                .map(|w| w[1].first_row_index - w[0].first_row_index)
                .sum::<i64>()
                + group_rows
                - pages.last().map_or(0, |p| p.first_row_index)
        })
        .sum();
    assert_eq!(rows_in_pages, rows as i64);
}

/// Arrow lets a null list span items; they are not the row's values, and a row equal to the
/// previous one's bytes but null stays null.
#[test]
fn a_null_row_spanning_items_is_null() {
    use arrow::{
        array::{ListArray, StringArray},
        buffer::{NullBuffer, OffsetBuffer},
    };
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let items = StringArray::from(vec!["a", "b", "a", "b", "c"]);
    let list = ListArray::new(
        item.clone(),
        OffsetBuffer::new(vec![0, 2, 4, 5].into()),
        Arc::new(items),
        Some(NullBuffer::from(vec![true, false, true])),
    );
    let schema = Arc::new(Schema::new(vec![Field::new(
        "l",
        DataType::List(item),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(list)])
        .unwrap_or_else(|e| panic!("{e}"));
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(&schema)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut props = WriterProperties::builder().build();
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("l.parquet");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), Arc::new(props))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut compressor = PageCompressor::new(1).unwrap_or_else(|e| panic!("{e}"));
    let mut column = ByteArrayColumn::new(parquet_schema.column(0), true, 128 << 10);
    for rows in Rows::of_column(batch.column(0).as_ref()).unwrap_or_else(|| panic!("not ours")) {
        column
            .write(rows, &mut compressor)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let mut group = writer.next_row_group().unwrap_or_else(|e| panic!("{e}"));
    let (bytes, close) = column
        .close(&mut compressor)
        .unwrap_or_else(|e| panic!("{e}"));
    group
        .append_column(&bytes, close)
        .unwrap_or_else(|e| panic!("{e}"));
    group.close().unwrap_or_else(|e| panic!("{e}"));
    writer.close().unwrap_or_else(|e| panic!("{e}"));
    let back: Vec<RecordBatch> = arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .build()
    .unwrap_or_else(|e| panic!("{e}"))
    .collect::<Result<_, _>>()
    .unwrap_or_else(|e| panic!("{e}"));
    let list = back[0].column(0).as_list::<i32>();
    assert_eq!(list.len(), 3);
    assert!(list.is_valid(0) && list.is_null(1) && list.is_valid(2));
    let texts = |row: usize| -> Vec<String> {
        let v = list.value(row);
        let v = v.as_string::<i32>();
        (0..v.len()).map(|i| v.value(i).to_owned()).collect()
    };
    assert_eq!(texts(0), ["a", "b"]);
    assert_eq!(texts(2), ["c"]);
}

/// A batch of empty values after a value that is not: they are empty, in a dictionary column
/// and in a plain one, and so is a batch of empty lists after a full one.
#[test]
fn empty_values_after_others_are_empty() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Utf8, false),
        Field::new("plain_text", DataType::Utf8, true),
        Field::new(
            "list",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]));
    let batch_of = |value: &str, rows: usize| {
        let mut text = StringBuilder::new();
        let mut plain_text = StringBuilder::new();
        let mut list = ListBuilder::new(StringBuilder::new());
        for _ in 0..rows {
            text.append_value(value);
            plain_text.append_value(value);
            if !value.is_empty() {
                list.values().append_value(value);
            }
            list.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(text.finish()),
            Arc::new(plain_text.finish()),
            Arc::new(list.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns).unwrap_or_else(|e| panic!("{e}"))
    };
    let batches = [batch_of("GET", 3), batch_of("", 5), batch_of("POST", 1)];
    let back = write_and_read(&schema, &batches, |name| name != "plain_text");
    let want = arrow::compute::concat_batches(&schema, &batches).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, want);
}

/// `batches` written by our columns into one row group (with a dictionary where `dictionary`
/// says, by top-level name) and read back by arrow-rs.
fn write_and_read(
    schema: &Arc<Schema>,
    batches: &[RecordBatch],
    dictionary: impl Fn(&str) -> bool,
) -> RecordBatch {
    let parquet_schema = ArrowSchemaConverter::new()
        .convert(schema)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut props = WriterProperties::builder().build();
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("t.parquet");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), Arc::new(props))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut compressor = PageCompressor::new(1).unwrap_or_else(|e| panic!("{e}"));
    let mut columns: Vec<ByteArrayColumn> = parquet_schema
        .columns()
        .iter()
        .map(|leaf| {
            ByteArrayColumn::new(leaf.clone(), dictionary(&leaf.path().parts()[0]), 1 << 17)
        })
        .collect();
    for batch in batches {
        let rows: Vec<Rows<'_>> = batch
            .columns()
            .iter()
            .flat_map(|c| Rows::of_column(c.as_ref()).unwrap_or_else(|| panic!("not ours")))
            .collect();
        for (column, rows) in columns.iter_mut().zip(rows) {
            column
                .write(rows, &mut compressor)
                .unwrap_or_else(|e| panic!("{e}"));
        }
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
    writer.close().unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let batches: Vec<RecordBatch> = arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    arrow::compute::concat_batches(schema, &batches).unwrap_or_else(|e| panic!("{e}"))
}
