//! The `calls` and `conns` tables as Arrow batches and atomic Parquet files.
//!
//! Column names are the KFL names with dots flattened (`src.ip` → `src_ip`); the KFL catalog
//! maps one to the other. Headers are `map<utf8, utf8>`, DNS and ALPN lists `list<utf8>`.

use std::{fs::File, path::Path, sync::Arc};

use arrow::{
    array::{
        ArrayRef, BinaryBuilder, Int64Builder, ListBuilder, MapBuilder, RecordBatch, StringBuilder,
        TimestampNanosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
    },
    error::ArrowError,
};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::WriterProperties,
};
use remora_dissect::{Call, Conn};

/// Errors of writing dissection results.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    /// Building the Arrow batch failed.
    #[error("building rows: {0}")]
    Arrow(#[from] ArrowError),
    /// Writing the Parquet file failed.
    #[error("writing {path}: {message}")]
    Write {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    MapBuilder::new(None, StringBuilder::new(), StringBuilder::new())
}

fn push_map(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    items: &[(String, String)],
    scratch: &mut String,
) -> Result<(), ArrowError> {
    for (k, v) in items {
        // HTTP/1 names arrive in any case, HPACK ones in lower case: store them lower case
        // (KFL looks headers up by lower-case name), without an allocation per name.
        if k.bytes().any(|c| c.is_ascii_uppercase()) {
            scratch.clear();
            scratch.push_str(k);
            scratch.make_ascii_lowercase();
            b.keys().append_value(&*scratch);
        } else {
            b.keys().append_value(k);
        }
        b.values().append_value(v);
    }
    b.append(true)
}

fn push_list(b: &mut ListBuilder<StringBuilder>, items: &[String]) {
    for i in items {
        b.values().append_value(i);
    }
    b.append(true);
}

/// The `calls` rows of one dissection as a record batch.
pub fn calls_batch(node: &str, source: &str, calls: &[Call]) -> Result<RecordBatch, ArrowError> {
    let mut id = StringBuilder::new();
    let mut ts = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut elapsed = Int64Builder::new();
    let mut node_b = StringBuilder::new();
    let mut conn_id = UInt64Builder::new();
    let mut index = UInt32Builder::new();
    let mut protocol = StringBuilder::new();
    let mut capture_source = StringBuilder::new();
    let (mut src_ip, mut dst_ip) = (StringBuilder::new(), StringBuilder::new());
    let (mut src_port, mut dst_port) = (UInt16Builder::new(), UInt16Builder::new());
    let (mut method, mut url, mut path, mut host, mut version) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut status = UInt16Builder::new();
    let (mut req_h, mut resp_h) = (map_builder(), map_builder());
    let (mut req_body, mut resp_body) = (BinaryBuilder::new(), BinaryBuilder::new());
    let (mut req_bs, mut resp_bs, mut req_hs, mut resp_hs) = (
        UInt64Builder::new(),
        UInt64Builder::new(),
        UInt64Builder::new(),
        UInt64Builder::new(),
    );
    let mut dns_q = ListBuilder::new(StringBuilder::new());
    let mut dns_a = ListBuilder::new(StringBuilder::new());
    let mut dns_t = ListBuilder::new(StringBuilder::new());
    let (mut sni, mut alpn, mut tls_version) = (
        StringBuilder::new(),
        ListBuilder::new(StringBuilder::new()),
        StringBuilder::new(),
    );
    let (mut grpc_method, mut grpc_status) = (StringBuilder::new(), Int64Builder::new());
    let (mut corr, mut trace, mut error) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
    );
    let mut key_scratch = String::new();
    let mut line = String::new();
    for c in calls {
        use std::fmt::Write as _;
        line.clear();
        let _ = write!(line, "{node}/{}/{}", c.conn_id, c.index);
        id.append_value(&line);
        ts.append_value(c.timestamp_ns);
        elapsed.append_option(c.elapsed_us);
        node_b.append_value(node);
        conn_id.append_value(c.conn_id);
        index.append_value(c.index);
        protocol.append_value(c.protocol);
        capture_source.append_value(source);
        line.clear();
        let _ = write!(line, "{}", c.src.ip);
        src_ip.append_value(&line);
        src_port.append_value(c.src.port);
        line.clear();
        let _ = write!(line, "{}", c.dst.ip);
        dst_ip.append_value(&line);
        dst_port.append_value(c.dst.port);
        method.append_value(&c.method);
        url.append_value(&c.url);
        path.append_value(&c.path);
        host.append_value(&c.host);
        version.append_value(&c.http_version);
        status.append_value(c.status_code);
        push_map(&mut req_h, &c.request_headers, &mut key_scratch)?;
        push_map(&mut resp_h, &c.response_headers, &mut key_scratch)?;
        req_body.append_value(&c.request_body);
        resp_body.append_value(&c.response_body);
        req_bs.append_value(c.request_body_size);
        resp_bs.append_value(c.response_body_size);
        req_hs.append_value(c.request_headers_size);
        resp_hs.append_value(c.response_headers_size);
        push_list(&mut dns_q, &c.dns_questions);
        push_list(&mut dns_a, &c.dns_answers);
        push_list(&mut dns_t, &c.dns_question_types);
        match &c.tls {
            Some(t) => {
                sni.append_value(&t.sni);
                push_list(&mut alpn, &t.alpn);
                tls_version.append_value(t.version_name());
            }
            None => {
                sni.append_value("");
                push_list(&mut alpn, &[]);
                tls_version.append_value("");
            }
        }
        grpc_method.append_value(&c.grpc_method);
        grpc_status.append_option(c.grpc_status.map(i64::from));
        corr.append_value(&c.correlation_id);
        trace.append_value(&c.trace_id);
        error.append_option(c.error_type);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(id.finish())),
        ("timestamp", Arc::new(ts.finish())),
        ("elapsed_time", Arc::new(elapsed.finish())),
        ("node", Arc::new(node_b.finish())),
        ("conn_id", Arc::new(conn_id.finish())),
        ("index", Arc::new(index.finish())),
        ("protocol", Arc::new(protocol.finish())),
        ("capture_source", Arc::new(capture_source.finish())),
        ("src_ip", Arc::new(src_ip.finish())),
        ("src_port", Arc::new(src_port.finish())),
        ("dst_ip", Arc::new(dst_ip.finish())),
        ("dst_port", Arc::new(dst_port.finish())),
        ("method", Arc::new(method.finish())),
        ("url", Arc::new(url.finish())),
        ("path", Arc::new(path.finish())),
        ("host", Arc::new(host.finish())),
        ("http_version", Arc::new(version.finish())),
        ("status_code", Arc::new(status.finish())),
        ("request_headers", Arc::new(req_h.finish())),
        ("response_headers", Arc::new(resp_h.finish())),
        ("request_body", Arc::new(req_body.finish())),
        ("response_body", Arc::new(resp_body.finish())),
        ("request_body_size", Arc::new(req_bs.finish())),
        ("response_body_size", Arc::new(resp_bs.finish())),
        ("request_headers_size", Arc::new(req_hs.finish())),
        ("response_headers_size", Arc::new(resp_hs.finish())),
        ("dns_questions", Arc::new(dns_q.finish())),
        ("dns_answers", Arc::new(dns_a.finish())),
        ("dns_question_types", Arc::new(dns_t.finish())),
        ("grpc_method", Arc::new(grpc_method.finish())),
        ("grpc_status", Arc::new(grpc_status.finish())),
        ("tlsx_sni", Arc::new(sni.finish())),
        ("tlsx_alpn", Arc::new(alpn.finish())),
        ("tlsx_version", Arc::new(tls_version.finish())),
        ("correlation_id", Arc::new(corr.finish())),
        ("trace_id", Arc::new(trace.finish())),
        ("error_type", Arc::new(error.finish())),
    ];
    RecordBatch::try_from_iter(columns)
}

/// The `conns` rows as a record batch.
pub fn conns_batch(node: &str, conns: &[Conn]) -> Result<RecordBatch, ArrowError> {
    let mut conn_id = UInt64Builder::new();
    let mut node_b = StringBuilder::new();
    let (mut src_ip, mut dst_ip) = (StringBuilder::new(), StringBuilder::new());
    let (mut src_port, mut dst_port) = (UInt16Builder::new(), UInt16Builder::new());
    let mut first = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut last = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut handshake = Int64Builder::new();
    let mut counts: Vec<UInt64Builder> = (0..6).map(|_| UInt64Builder::new()).collect();
    let (mut fins, mut resets) = (UInt32Builder::new(), UInt32Builder::new());
    let (mut rst_by, mut l7) = (StringBuilder::new(), StringBuilder::new());
    for c in conns {
        conn_id.append_value(c.conn_id);
        node_b.append_value(node);
        src_ip.append_value(c.src.ip.to_string());
        src_port.append_value(c.src.port);
        dst_ip.append_value(c.dst.ip.to_string());
        dst_port.append_value(c.dst.port);
        first.append_value(c.first_ns);
        last.append_value(c.last_ns);
        handshake.append_option(c.handshake_us);
        for (b, v) in counts.iter_mut().zip([
            c.packets[0],
            c.packets[1],
            c.bytes[0],
            c.bytes[1],
            c.retransmissions[0],
            c.retransmissions[1],
        ]) {
            b.append_value(v);
        }
        fins.append_value(c.fins);
        resets.append_value(c.resets);
        rst_by.append_option(c.rst_by);
        l7.append_value(c.l7);
    }
    let names = [
        "packets_c2s",
        "packets_s2c",
        "bytes_c2s",
        "bytes_s2c",
        "retransmissions_c2s",
        "retransmissions_s2c",
    ];
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("conn_id", Arc::new(conn_id.finish())),
        ("node", Arc::new(node_b.finish())),
        ("src_ip", Arc::new(src_ip.finish())),
        ("src_port", Arc::new(src_port.finish())),
        ("dst_ip", Arc::new(dst_ip.finish())),
        ("dst_port", Arc::new(dst_port.finish())),
        ("first_ts", Arc::new(first.finish())),
        ("last_ts", Arc::new(last.finish())),
        ("handshake_us", Arc::new(handshake.finish())),
    ];
    for (name, mut b) in names.into_iter().zip(counts) {
        columns.push((name, Arc::new(b.finish())));
    }
    columns.push(("fins", Arc::new(fins.finish())));
    columns.push(("resets", Arc::new(resets.finish())));
    columns.push(("rst_by", Arc::new(rst_by.finish())));
    columns.push(("l7", Arc::new(l7.finish())));
    RecordBatch::try_from_iter(columns)
}

/// A Parquet table written batch by batch into a temp file and published atomically by
/// [`TableWriter::finish`]; dropped unfinished, it leaves nothing behind.
pub struct TableWriter {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    writer: Option<ArrowWriter<File>>,
}

impl TableWriter {
    /// A writer for `path` (nothing is created until the first batch).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            tmp: path.with_extension("parquet.tmp"),
            writer: None,
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> RowsError {
        RowsError::Write {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), RowsError> {
        if self.writer.is_none() {
            let file = File::create(&self.tmp).map_err(|e| self.fail(e))?;
            // Columns unique per row (ids, times, sizes, bodies) gain nothing from dictionaries.
            let plain = [
                "id",
                "timestamp",
                "elapsed_time",
                "conn_id",
                "index",
                "request_body",
                "response_body",
                "first_ts",
                "last_ts",
            ];
            let props = plain
                .into_iter()
                .fold(WriterProperties::builder(), |p, c| {
                    p.set_column_dictionary_enabled(
                        parquet::schema::types::ColumnPath::from(c),
                        false,
                    )
                })
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
                .build();
            let w = ArrowWriter::try_new(file, batch.schema(), Some(props))
                .map_err(|e| self.fail(e))?;
            self.writer = Some(w);
        }
        let result = match &mut self.writer {
            Some(w) => w.write(batch).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        result.map_err(|e| self.fail(e))
    }

    /// Closes, fsyncs and renames into place; `empty` gives the schema when nothing was written.
    pub fn finish(mut self, empty: &RecordBatch) -> Result<(), RowsError> {
        if self.writer.is_none() {
            self.write(empty)?;
        }
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let file = w.into_inner().map_err(|e| self.fail(e))?;
        file.sync_all().map_err(|e| self.fail(e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.fail(e))
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
