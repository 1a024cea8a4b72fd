//! The definitions are consistent, and rows written through them read back as written.

use std::{collections::HashSet, net::IpAddr};

use arrow::{
    array::{Array, AsArray, RecordBatch},
    compute::cast,
    datatypes::{DataType, UInt16Type, UInt32Type},
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use remora_dissect::{Call, Conn, Endpoint, tls::TlsInfo};

use crate::{Peer, Table, TableWriter, calls, conns, workloads};

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        port,
    }
}

#[test]
fn every_column_is_named_once_and_after_its_kfl_name() {
    for table in Table::ALL {
        let mut names = HashSet::new();
        let mut kfl = HashSet::new();
        for c in table.columns() {
            assert!(names.insert(c.name), "{}.{} twice", table.name(), c.name);
            assert!(
                kfl.insert(c.kfl),
                "KFL name {} twice in {}",
                c.kfl,
                table.name()
            );
            assert_eq!(
                c.kfl.replace('.', "_"),
                c.name,
                "{}.{}: a column is named after its KFL field with dots flattened",
                table.name(),
                c.name
            );
            assert!(
                !c.doc.description.is_empty() && !c.doc.example.is_empty(),
                "{}.{} has no docs",
                table.name(),
                c.name
            );
        }
        assert_eq!(table.schema().fields().len(), table.columns().len());
    }
}

#[test]
fn dictionary_encoding_is_for_text_only() {
    for table in Table::ALL {
        for c in table.columns() {
            if c.encoding == crate::Encoding::Dictionary {
                assert_eq!(c.kind, crate::Kind::Utf8, "{}.{}", table.name(), c.name);
            }
        }
    }
}

fn sample_calls() -> Vec<Call> {
    let mut a = Call::new("HTTP", ep("198.18.0.1", 40000), ep("198.18.0.2", 80));
    a.timestamp_ns = 1_795_514_400_000_000_000;
    a.elapsed_us = Some(1500);
    a.conn_id = 7;
    a.index = 1;
    a.method = "GET".into();
    a.url = "/api/v1/items?page=2&q=a%20b#frag".into();
    a.path = "/api/v1/items".into();
    a.status_code = 503;
    a.request_headers = [("X-Request-ID", "r-1")].into_iter().collect();
    a.response_headers = [("content-type", "text/plain")].into_iter().collect();
    a.request_body = b"hello".to_vec();
    a.has_request = true;
    a.has_response = true;
    let mut b = Call::new("TLS", ep("2001:db8::1", 50000), ep("198.18.0.2", 443));
    b.timestamp_ns = a.timestamp_ns + 1;
    b.error_type = Some("pair_not_found");
    b.tls = Some(Box::new(TlsInfo {
        sni: "shop.example".into(),
        alpn: vec!["h2".into(), "http/1.1".into()],
        ..TlsInfo::default()
    }));
    let mut c = Call::new("DNS", ep("198.18.0.1", 5353), ep("198.18.0.53", 53));
    c.transport = "udp";
    c.dns_questions = vec!["app.test".into()];
    c.dns_answers = vec!["198.18.0.50".into()];
    vec![a, b, c]
}

fn text(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let column = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"));
    let column = cast(column, &DataType::Utf8).unwrap_or_else(|e| panic!("{name}: {e}"));
    let column = column.as_string::<i32>();
    (0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i).to_owned()))
        .collect()
}

fn read_back(path: &std::path::Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{e}"))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|b| b.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .unwrap_or_else(|| panic!("no batch"));
    arrow::compute::concat_batches(&schema, &batches).unwrap_or_else(|e| panic!("{e}"))
}

/// The `calls` batch of `calls`, both sides unknown.
fn unattributed_batch(calls: &[Call]) -> RecordBatch {
    let mut rows = calls::Rows::new("node-1", "ebpf");
    for c in calls {
        rows.push(c, None, None);
    }
    rows.finish().unwrap_or_else(|e| panic!("{e}"))
}

/// `batch` written as `calls.parquet` in a new temp directory (kept alive by the caller).
fn write_calls(batch: &RecordBatch) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("calls.parquet");
    let mut w = TableWriter::new(Table::Calls, &path);
    w.write(batch).unwrap_or_else(|e| panic!("{e}"));
    w.finish().unwrap_or_else(|e| panic!("{e}"));
    (dir, path)
}

#[test]
fn calls_round_trip_through_parquet() {
    let calls = sample_calls();
    let frontend = Peer {
        pod_name: "frontend-1".into(),
        pod_namespace: "shop".into(),
        service_name: "frontend".into(),
        ..Peer::default()
    };
    let mut rows = calls::Rows::new("node-1", "ebpf");
    rows.push(&calls[0], Some(&frontend), None);
    rows.push(&calls[1], None, None);
    rows.push(&calls[2], Some(&frontend), None);
    let batch = rows.finish().unwrap_or_else(|e| panic!("{e}"));
    let (_dir, path) = write_calls(&batch);
    let back = read_back(&path);
    assert_eq!(
        back.schema(),
        Table::Calls.schema(),
        "the file's schema is the table's"
    );
    assert_eq!(back.num_rows(), 3);
    let some = |v: &[&str]| v.iter().map(|s| Some((*s).to_owned())).collect::<Vec<_>>();
    assert_eq!(
        text(&back, "id"),
        some(&["node-1/7/1", "node-1/0/0", "node-1/0/0"])
    );
    assert_eq!(
        text(&back, "src_ip"),
        some(&["198.18.0.1", "2001:db8::1", "198.18.0.1"])
    );
    assert_eq!(
        text(&back, "src_name"),
        some(&["frontend-1", "", "frontend-1"])
    );
    assert_eq!(text(&back, "src_namespace"), some(&["shop", "", "shop"]));
    assert_eq!(text(&back, "tlsx_alpn"), some(&["", "h2,http/1.1", ""]));
    assert_eq!(text(&back, "tlsx_sni"), some(&["", "shop.example", ""]));
    assert_eq!(
        text(&back, "error_type"),
        vec![None, Some("pair_not_found".to_owned()), None]
    );
    let status = back
        .column_by_name("status_code")
        .map(|c| c.as_primitive::<UInt16Type>().values().to_vec());
    assert_eq!(status, Some(vec![503, 0, 0]));
    let elapsed = back.column_by_name("elapsed_time").map(|c| c.null_count());
    assert_eq!(elapsed, Some(2), "unpaired calls have no latency");
    // Maps: header names lower-cased, query parameters decoded, the fragment left out.
    let headers = back
        .column_by_name("request_headers")
        .map(|c| c.as_map().value(0))
        .unwrap_or_else(|| panic!("request_headers"));
    assert_eq!(
        headers.column(0).as_string::<i32>().value(0),
        "x-request-id"
    );
    let query = back
        .column_by_name("query_string")
        .map(|c| c.as_map().value(0))
        .unwrap_or_else(|| panic!("query_string"));
    let values: Vec<&str> = (0..query.len())
        .map(|i| query.column(1).as_string::<i32>().value(i))
        .collect();
    assert_eq!(values, ["2", "a b"]);
    let questions = back.column_by_name("dns_questions").map(|c| {
        c.as_list::<i32>()
            .value(2)
            .as_string::<i32>()
            .value(0)
            .to_owned()
    });
    assert_eq!(questions.as_deref(), Some("app.test"));
}

#[test]
fn dictionary_pages_only_where_values_repeat() {
    let (_dir, path) = write_calls(&unattributed_batch(&sample_calls()));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file)
        .unwrap_or_else(|e| panic!("{e}"));
    let group = parquet::file::reader::FileReader::metadata(&reader).row_group(0);
    let dictionary = |leaf: &str| {
        let chunk = group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == leaf)
            .unwrap_or_else(|| panic!("no leaf {leaf}"));
        chunk.dictionary_page_offset().is_some()
    };
    for leaf in [
        "node",
        "path",
        "src_pod_name",
        "tlsx_sni",
        "request_headers.entries.keys",
        "request_headers.entries.values",
        "response_headers.entries.keys",
        "query_string.entries.keys",
        "dns_questions.list.item",
    ] {
        assert!(dictionary(leaf), "{leaf} repeats: a dictionary page");
    }
    for leaf in [
        "id",
        "url",
        "correlation_id",
        "trace_id",
        "query_string.entries.values",
        "request_body",
    ] {
        assert!(!dictionary(leaf), "{leaf}: no dictionary page");
    }
}

#[test]
fn a_column_of_empty_strings_has_an_allocation() {
    let mut call = Call::new("HTTP", ep("198.18.0.1", 40000), ep("198.18.0.2", 80));
    call.method = "GET".into();
    let batch = unattributed_batch(&[call.clone(), call]);
    for name in ["correlation_id", "trace_id", "tlsx_sni"] {
        let column = batch
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let values = column.as_string::<i32>().values();
        assert!(values.is_empty(), "{name} holds only empty strings");
        assert!(
            values.capacity() > 0,
            "{name}: empty values must still point into an allocation"
        );
    }
}

#[test]
fn conns_and_workloads_round_trip() {
    let conn = Conn {
        conn_id: 3,
        src: ep("198.18.0.1", 40000),
        dst: ep("198.18.0.2", 80),
        first_ns: 10,
        last_ns: 20,
        handshake_us: None,
        packets: [3, 2],
        bytes: [100, 200],
        retransmissions: [1, 0],
        out_of_order: [0, 1],
        lost_segments: [0, 0],
        zero_windows: [0, 2],
        dup_acks: [3, 0],
        data_rtt_us: Some(250),
        fins: 2,
        resets: 0,
        rst_by: None,
        rst_ns: None,
        close: "fin",
        l7: "HTTP",
        nat: None,
    };
    let batch = conns::batch("node-1", &[conn]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(batch.schema(), Table::Conns.write_schema());
    assert_eq!(text(&batch, "dst_ip"), vec![Some("198.18.0.2".to_owned())]);
    assert_eq!(text(&batch, "rst_by"), vec![None]);

    let records = vec![workloads::WorkloadRecord {
        ip: "198.18.0.9".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        from_ns: 5,
        to_ns: None,
        kind: "host".into(),
        peer: Peer {
            process: "nginx".into(),
            pid: 42,
            ..Peer::default()
        },
        labels: vec![("app".into(), "web".into())],
        pod_uid: String::new(),
    }];
    let batch = workloads::batch(&records).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(batch.schema(), Table::Workloads.write_schema());
    assert_eq!(text(&batch, "ip"), vec![Some("198.18.0.9".to_owned())]);
    assert_eq!(text(&batch, "kind"), vec![Some("host".to_owned())]);
    let pid = batch
        .column_by_name("pid")
        .map(|c| c.as_primitive::<UInt32Type>().value(0));
    assert_eq!(pid, Some(42));
}

#[test]
fn a_writer_that_fails_to_publish_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("conns.parquet");
    // A non-empty directory where the file should go: the rename fails.
    std::fs::create_dir_all(path.join("in-the-way")).unwrap_or_else(|e| panic!("{e}"));
    let mut w = TableWriter::new(Table::Conns, &path);
    let batch = conns::batch("n", &[]).unwrap_or_else(|e| panic!("{e}"));
    w.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    let err = w.finish().map(|()| "published").unwrap_err();
    assert!(err.to_string().contains("conns.parquet"), "{err}");
    assert_eq!(files_in(dir.path()), ["conns.parquet"]);
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_closed_writer_is_published_by_finish_and_removed_when_dropped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let batch = unattributed_batch(&sample_calls());
    let mut kept = TableWriter::new(Table::Calls, &dir.path().join("kept.parquet"));
    let mut dropped = TableWriter::new(Table::Calls, &dir.path().join("dropped.parquet"));
    for w in [&mut kept, &mut dropped] {
        w.write(&batch).unwrap_or_else(|e| panic!("{e}"));
        w.close().unwrap_or_else(|e| panic!("{e}"));
        assert!(w.write(&batch).is_err(), "a write after close");
    }
    let names = || files_in(dir.path());
    assert_eq!(
        names(),
        ["dropped.parquet.tmp", "kept.parquet.tmp"],
        "closed, not in place"
    );
    drop(dropped);
    kept.finish().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(names(), ["kept.parquet"]);
    assert_eq!(
        read_back(&dir.path().join("kept.parquet")).num_rows(),
        batch.num_rows()
    );
}

#[test]
fn an_unfinished_writer_leaves_nothing_and_an_empty_table_is_readable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("conns.parquet");
    {
        let mut w = TableWriter::new(Table::Conns, &path);
        let batch = conns::batch("n", &[]).unwrap_or_else(|e| panic!("{e}"));
        w.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).map(|d| d.count()).ok(),
        Some(0)
    );
    TableWriter::new(Table::Conns, &path)
        .finish()
        .unwrap_or_else(|e| panic!("{e}"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}"));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(reader.schema(), &Table::Conns.schema());
}

#[test]
fn call_ids_are_node_conn_and_index_in_decimal() {
    let mut id = String::from("left over");
    for (conn, index) in [
        (0, 0),
        (7, 1),
        (10, 99),
        (u64::MAX, u32::MAX),
        (1_000_000, 10),
    ] {
        crate::calls::write_call_id(&mut id, "node-1", conn, index);
        assert_eq!(id, format!("node-1/{conn}/{index}"));
    }
}

/// Row `i` of the long table below: `path` unique for the first 80,000 rows (past the 1 MiB
/// dictionary), then one of three; `method` constant for runs of 5,000; `error_type` null for
/// the first 45,000 rows (whole pages of nulls), then set on every third row; `host` empty.
fn long_call(i: usize) -> Call {
    let mut c = Call::new("HTTP", ep("198.18.0.1", 40000), ep("198.18.0.2", 80));
    c.conn_id = i as u64;
    c.method = if (i / 5_000).is_multiple_of(2) {
        "GET"
    } else {
        "POST"
    }
    .into();
    c.path = if i < 80_000 {
        format!("/api/v1/items/{i:08}")
    } else {
        ["/a", "/b", ""][i % 3].into()
    };
    c.error_type = (i >= 45_000 && i.is_multiple_of(3)).then_some("timeout");
    c
}

/// The first `rows` rows of [`long_call`] written in batches of `batch_rows`; the file's bytes.
fn write_long(path: &std::path::Path, rows: usize, batch_rows: usize) -> Vec<u8> {
    let mut w = TableWriter::new(Table::Calls, path);
    let mut start = 0;
    while start < rows {
        let end = (start + batch_rows).min(rows);
        let calls: Vec<Call> = (start..end).map(long_call).collect();
        w.write(&unattributed_batch(&calls))
            .unwrap_or_else(|e| panic!("{e}"));
        start = end;
    }
    w.finish().unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn dictionary_columns_read_back_across_pages_row_groups_and_fallback() {
    use parquet::{basic::Encoding, file::reader::FileReader};

    use crate::writer::ROW_GROUP_ROWS;
    let rows = ROW_GROUP_ROWS + 30_001;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let one = write_long(&dir.path().join("one.parquet"), rows, rows);
    let many = write_long(&dir.path().join("calls.parquet"), rows, 7_777);
    // Pages of the dictionary columns are cut by rows, not by batches (arrow-rs cuts the
    // others' pages where a batch ends, so the files as a whole differ).
    let chunks = |bytes: Vec<u8>| {
        let bytes = bytes::Bytes::from(bytes);
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        for rg in reader.metadata().row_groups() {
            for c in rg.columns() {
                let name = c.column_path().string();
                if ["path", "method", "error_type", "host", "node"].contains(&name.as_str()) {
                    let (start, len) = c.byte_range();
                    out.push((name, bytes.slice(start as usize..(start + len) as usize)));
                }
            }
        }
        out
    };
    assert_eq!(
        chunks(one),
        chunks(many),
        "dictionary column chunks depend on batches"
    );

    let path = dir.path().join("calls.parquet");
    let back = read_back(&path);
    assert_eq!(back.num_rows(), rows);
    let expected: Vec<Call> = (0..rows).map(long_call).collect();
    let path_values = text(&back, "path");
    let methods = text(&back, "method");
    let errors = text(&back, "error_type");
    let hosts = text(&back, "host");
    let nodes = text(&back, "node");
    for (i, c) in expected.iter().enumerate() {
        assert_eq!(
            path_values[i].as_deref(),
            Some(c.path.as_str()),
            "path, row {i}"
        );
        assert_eq!(
            methods[i].as_deref(),
            Some(c.method.as_str()),
            "method, row {i}"
        );
        assert_eq!(errors[i].as_deref(), c.error_type, "error_type, row {i}");
        assert_eq!(hosts[i].as_deref(), Some(""), "host, row {i}");
        assert_eq!(nodes[i].as_deref(), Some("node-1"), "node, row {i}");
    }
    // Numbers (written by arrow-rs, batch by batch): every row's, in order, in the row group
    // its text is in.
    let conn_ids = back
        .column_by_name("conn_id")
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::UInt64Array>())
        .unwrap_or_else(|| panic!("no conn_id"));
    assert!(
        conn_ids.values().iter().copied().eq(0..rows as u64),
        "conn_id out of place"
    );

    // The layout: two row groups; `path` falls back to plain pages in the first (its
    // dictionary passes 1 MiB) but not in the second; the offset index has every page.
    let reader = parquet::file::serialized_reader::SerializedFileReader::try_from(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 2);
    assert_eq!(meta.row_group(0).num_rows(), ROW_GROUP_ROWS as i64);
    assert_eq!(meta.row_group(1).num_rows(), 30_001);
    let column = |group: usize, name: &str| {
        let rg = meta.row_group(group);
        (0..rg.num_columns())
            .map(|i| rg.column(i))
            .find(|c| c.column_path().string() == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    };
    let path0 = column(0, "path");
    assert!(path0.dictionary_page_offset().is_some());
    let encodings: Vec<Encoding> = path0.encodings().collect();
    assert!(
        encodings.contains(&Encoding::PLAIN) && encodings.contains(&Encoding::RLE_DICTIONARY),
        "{encodings:?}"
    );
    // The numbers' statistics, which time windows prune with, are each group's own.
    for (group, (min, max)) in [
        (0, (0, ROW_GROUP_ROWS - 1)),
        (1, (ROW_GROUP_ROWS, rows - 1)),
    ] {
        match column(group, "conn_id").statistics() {
            Some(parquet::file::statistics::Statistics::Int64(s)) => assert_eq!(
                (s.min_opt().copied(), s.max_opt().copied()),
                (Some(min as i64), Some(max as i64)),
                "group {group}"
            ),
            other => panic!("conn_id statistics in group {group}: {other:?}"),
        }
    }
    let method1 = column(1, "method");
    assert!(method1.dictionary_page_offset().is_some());
    assert!(
        method1.compressed_size() < 1_000,
        "a near-constant column is small"
    );
    let with_index = parquet::file::serialized_reader::SerializedFileReader::new_with_options(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
        parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_page_index()
            .build(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let offsets = with_index
        .metadata()
        .offset_index()
        .unwrap_or_else(|| panic!("no offset index"));
    let path_leaf = Table::Calls
        .columns()
        .iter()
        .position(|c| c.name == "path")
        .unwrap_or(0);
    let pages = &offsets[0][path_leaf].page_locations;
    // Dictionary pages up to the row where the dictionary passed 1 MiB, then plain pages
    // of at most `PAGE_ROWS` rows (or 128 KiB of values).
    assert!(
        pages.len() > crate::writer::ROW_GROUP_ROWS / crate::byte_array::PAGE_ROWS,
        "{} pages of `path` in the first group",
        pages.len()
    );
    assert!(
        pages
            .windows(2)
            .all(|p| p[0].first_row_index < p[1].first_row_index),
        "{pages:?}"
    );
}

/// Rows from a small random generator: text columns with few and with many distinct values,
/// runs and changes, nulls in runs and alone, long values (past the dictionary's limit);
/// written in batches of random sizes, read back equal.
#[test]
fn random_dictionary_text_reads_back_whatever_the_batches() {
    let mut next = random(0x2545_f491_4f6c_dd1d);
    let rows = 70_000;
    let mut calls = Vec::with_capacity(rows);
    let (mut method, mut error) = (String::from("GET"), None);
    for i in 0..rows {
        let mut c = Call::new("HTTP", ep("198.18.0.1", 40000), ep("198.18.0.2", 80));
        c.conn_id = i as u64;
        if next(50) == 0 {
            method = ["GET", "POST", "", "PUT", "DELETE"][next(5) as usize].to_owned();
        }
        c.method = method.clone();
        c.path = match next(10) {
            0 => format!("/x/{}", next(1_000_000)),
            // Long and mostly distinct: the dictionary passes 1 MiB, and plain pages fill by size.
            1 => format!("{}{}", "é/ü/🦀".repeat(next(400) as usize), next(1_000)),
            _ => format!("/p{}", next(8)),
        };
        c.host = if next(3) == 0 {
            format!("h{}", next(40_000))
        } else {
            String::new()
        };
        if next(100) == 0 {
            error = [None, Some("timeout"), Some("tcp_reset")][next(3) as usize];
        }
        c.error_type = if next(20) == 0 {
            Some("parse_error")
        } else {
            error
        };
        calls.push(c);
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("calls.parquet");
    let mut w = TableWriter::new(Table::Calls, &path);
    let mut start = 0;
    while start < rows {
        let end = (start + 1 + next(9_000) as usize).min(rows);
        w.write(&unattributed_batch(&calls[start..end]))
            .unwrap_or_else(|e| panic!("{e}"));
        start = end;
    }
    w.finish().unwrap_or_else(|e| panic!("{e}"));
    let back = read_back(&path);
    let (methods, paths, hosts, errors) = (
        text(&back, "method"),
        text(&back, "path"),
        text(&back, "host"),
        text(&back, "error_type"),
    );
    assert_eq!(back.num_rows(), rows);
    for (i, c) in calls.iter().enumerate() {
        assert_eq!(
            methods[i].as_deref(),
            Some(c.method.as_str()),
            "method, row {i}"
        );
        assert_eq!(paths[i].as_deref(), Some(c.path.as_str()), "path, row {i}");
        assert_eq!(hosts[i].as_deref(), Some(c.host.as_str()), "host, row {i}");
        assert_eq!(errors[i].as_deref(), c.error_type, "error_type, row {i}");
    }
    let reader = parquet::file::serialized_reader::SerializedFileReader::try_from(
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let group = parquet::file::reader::FileReader::metadata(&reader).row_group(0);
    let path_chunk = group
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "path")
        .unwrap_or_else(|| panic!("no path"));
    assert!(
        path_chunk
            .encodings()
            .any(|e| e == parquet::basic::Encoding::PLAIN),
        "the long paths pass the dictionary's limit"
    );
}

/// A small deterministic generator (xorshift64): each call gives a number below its argument.
pub(crate) fn random(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |below| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below.max(1)
    }
}
