//! The `calls` and `conns` tables as Arrow batches and atomic Parquet files.
//!
//! Column names are the KFL names with dots flattened (`src.ip` → `src_ip`); the KFL catalog
//! maps one to the other. Headers are `map<utf8, utf8>`, DNS and ALPN lists `list<utf8>`.

use std::{fs::File, path::Path, sync::Arc};

use arrow::{
    array::{
        Array as _, ArrayRef, AsArray as _, BinaryBuilder, BooleanBuilder, DictionaryArray,
        Int32Array, Int64Builder, ListBuilder, MapBuilder, RecordBatch, StringBuilder,
        TimestampNanosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
    },
    compute::cast,
    datatypes::{DataType, Int32Type},
    error::ArrowError,
};
use parquet::{
    arrow::ArrowWriter,
    basic::{Compression, ZstdLevel},
    file::properties::{EnabledStatistics, WriterProperties},
};
use remora_dissect::{Call, Conn, Endpoint};

/// Who an address was at a point in time: pod, service, process. Empty fields are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Service name.
    pub service_name: String,
    /// Service namespace.
    pub service_namespace: String,
    /// Process name (comm).
    pub process: String,
    /// Process id, 0 when unknown.
    pub pid: u32,
}

impl Peer {
    /// The best single name: pod, else service, else process.
    pub fn name(&self) -> &str {
        [&self.pod_name, &self.service_name, &self.process]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("", |s| s.as_str())
    }

    /// The pod's namespace, else the service's.
    pub fn namespace(&self) -> &str {
        if self.pod_namespace.is_empty() {
            &self.service_namespace
        } else {
            &self.pod_namespace
        }
    }
}

/// Resolves endpoints to workloads when rows are written (issue: Kubernetes attribution).
pub trait Resolve {
    /// The peer at `endpoint` at `ts_ns`, when known.
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer>;

    /// Every address this source knows now, for freezing into a snapshot
    /// (`workloads.parquet`); a source that cannot list them returns none.
    fn records(&self) -> Vec<(std::net::IpAddr, Peer)> {
        Vec::new()
    }
}

/// Knows no workloads: every attribution column stays empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWorkloads;

impl Resolve for NoWorkloads {
    fn resolve(&self, _endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
        None
    }
}

/// The attribution columns of one side (`src_` or `dst_`).
struct PeerColumns {
    pod_name: StringBuilder,
    pod_namespace: StringBuilder,
    service_name: StringBuilder,
    service_namespace: StringBuilder,
    name: StringBuilder,
    namespace: StringBuilder,
    process: StringBuilder,
    pid: UInt32Builder,
}

impl PeerColumns {
    fn new() -> Self {
        Self {
            pod_name: StringBuilder::new(),
            pod_namespace: StringBuilder::new(),
            service_name: StringBuilder::new(),
            service_namespace: StringBuilder::new(),
            name: StringBuilder::new(),
            namespace: StringBuilder::new(),
            process: StringBuilder::new(),
            pid: UInt32Builder::new(),
        }
    }

    fn push(&mut self, peer: Option<&Peer>) {
        let empty = Peer::default();
        let p = peer.unwrap_or(&empty);
        self.pod_name.append_value(&p.pod_name);
        self.pod_namespace.append_value(&p.pod_namespace);
        self.service_name.append_value(&p.service_name);
        self.service_namespace.append_value(&p.service_namespace);
        self.name.append_value(p.name());
        self.namespace.append_value(p.namespace());
        self.process.append_value(&p.process);
        self.pid.append_value(p.pid);
    }

    fn finish(mut self, side: &str, columns: &mut Vec<(String, ArrayRef)>) {
        let mut add = |n: &str, a: ArrayRef| columns.push((format!("{side}_{n}"), a));
        add("pod_name", Arc::new(self.pod_name.finish()));
        add("pod_namespace", Arc::new(self.pod_namespace.finish()));
        add("service_name", Arc::new(self.service_name.finish()));
        add(
            "service_namespace",
            Arc::new(self.service_namespace.finish()),
        );
        add("name", Arc::new(self.name.finish()));
        add("namespace", Arc::new(self.namespace.finish()));
        add("process", Arc::new(self.process.finish()));
        add("pid", Arc::new(self.pid.finish()));
    }
}

/// Query parameters of a request target, percent-decoded.
fn push_query(
    b: &mut MapBuilder<StringBuilder, StringBuilder>,
    url: &str,
) -> Result<(), ArrowError> {
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
    }
    b.append(true)
}

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

/// Writes a call's `id`, `<node>/<conn_id>/<index>`, into `out` (cleared first). The API's
/// pages find calls again by this text (api/page.rs), so there is one place that makes it.
pub fn write_call_id(out: &mut String, node: &str, conn_id: u64, index: u32) {
    use std::fmt::Write as _;
    out.clear();
    let _ = write!(out, "{node}/{conn_id}/{index}");
}

/// An address's text, formatted once for a run of rows with the same address (calls of one
/// client or server come in runs; formatting was ~3% of a dissection).
#[derive(Default)]
struct IpText {
    ip: Option<std::net::IpAddr>,
    text: String,
}

impl IpText {
    fn of(&mut self, ip: std::net::IpAddr) -> &str {
        if self.ip != Some(ip) {
            use std::fmt::Write as _;
            self.text.clear();
            let _ = write!(self.text, "{ip}");
            self.ip = Some(ip);
        }
        &self.text
    }
}

/// The `calls` rows of one dissection as a record batch, attributed by `workloads`.
pub fn calls_batch(
    node: &str,
    source: &str,
    calls: &[Call],
    workloads: &dyn Resolve,
) -> Result<RecordBatch, ArrowError> {
    let n = calls.len();
    // Sized up front: growing by doubling copies every buffer several times per batch.
    let mut id = StringBuilder::with_capacity(n, n * (node.len() + 12));
    let mut ts = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut elapsed = Int64Builder::with_capacity(n);
    let mut node_b = StringBuilder::with_capacity(n, n * node.len());
    let mut conn_id = UInt64Builder::with_capacity(n);
    let mut index = UInt32Builder::with_capacity(n);
    let mut protocol = StringBuilder::new();
    let mut capture_source = StringBuilder::new();
    let mut transport = StringBuilder::new();
    let (mut src_peer, mut dst_peer) = (PeerColumns::new(), PeerColumns::new());
    let mut query = map_builder();
    let mut handshake = Int64Builder::new();
    let (mut has_req, mut has_resp) = (BooleanBuilder::new(), BooleanBuilder::new());
    let (mut src_ip, mut dst_ip) = (
        StringBuilder::with_capacity(n, n * 12),
        StringBuilder::with_capacity(n, n * 12),
    );
    let (mut src_port, mut dst_port) = (
        UInt16Builder::with_capacity(n),
        UInt16Builder::with_capacity(n),
    );
    let mut ip_text = [IpText::default(), IpText::default()];
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
        StringBuilder::new(),
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
        write_call_id(&mut line, node, c.conn_id, c.index);
        id.append_value(&line);
        ts.append_value(c.timestamp_ns);
        elapsed.append_option(c.elapsed_us);
        node_b.append_value(node);
        conn_id.append_value(c.conn_id);
        index.append_value(c.index);
        protocol.append_value(c.protocol);
        capture_source.append_value(source);
        transport.append_value(c.transport);
        src_peer.push(workloads.resolve(&c.src, c.timestamp_ns));
        dst_peer.push(workloads.resolve(&c.dst, c.timestamp_ns));
        push_query(&mut query, &c.url)?;
        handshake.append_option(c.tcp_handshake_us);
        has_req.append_value(c.has_request);
        has_resp.append_value(c.has_response);
        src_ip.append_value(ip_text[0].of(c.src.ip));
        src_port.append_value(c.src.port);
        dst_ip.append_value(ip_text[1].of(c.dst.ip));
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
                alpn.append_value(t.alpn.join(","));
                tls_version.append_value(t.version_name());
            }
            None => {
                sni.append_value("");
                alpn.append_value("");
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
        ("transport", Arc::new(transport.finish())),
        ("capture_source", Arc::new(capture_source.finish())),
        ("src_ip", Arc::new(src_ip.finish())),
        ("src_port", Arc::new(src_port.finish())),
        ("dst_ip", Arc::new(dst_ip.finish())),
        ("dst_port", Arc::new(dst_port.finish())),
        ("method", Arc::new(method.finish())),
        ("url", Arc::new(url.finish())),
        ("path", Arc::new(path.finish())),
        ("host", Arc::new(host.finish())),
        ("query_string", Arc::new(query.finish())),
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
        ("tcp_handshake_us", Arc::new(handshake.finish())),
        ("has_request", Arc::new(has_req.finish())),
        ("has_response", Arc::new(has_resp.finish())),
    ];
    let mut columns: Vec<(String, ArrayRef)> = columns
        .into_iter()
        .map(|(n, a)| (n.to_owned(), a))
        .collect();
    // Attribution columns after the addresses they describe, as DESIGN §4 lists them.
    let at = columns
        .iter()
        .position(|(n, _)| n == "src_port")
        .map_or(0, |i| i + 1);
    let mut src_cols = Vec::new();
    src_peer.finish("src", &mut src_cols);
    columns.splice(at..at, src_cols);
    let at = columns
        .iter()
        .position(|(n, _)| n == "dst_port")
        .map_or(0, |i| i + 1);
    let mut dst_cols = Vec::new();
    dst_peer.finish("dst", &mut dst_cols);
    columns.splice(at..at, dst_cols);
    for (name, array) in &mut columns {
        if is_dictionary_column(name) {
            *array = dictionary_of(array)?;
        }
    }
    RecordBatch::try_from_iter(columns)
}

/// `array` (text) as `Dictionary(Int32, Utf8)`. Rows come in runs of the same value (one
/// node, one protocol, empty attribution): a value equal to the previous row's reuses its key
/// without hashing (arrow's cast to a dictionary hashes every row).
fn dictionary_of(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let text = cast(array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut keys = Vec::with_capacity(text.len());
    let mut values = StringBuilder::new();
    let mut known: std::collections::HashMap<&str, i32> = std::collections::HashMap::new();
    let mut last: Option<(&str, i32)> = None;
    for i in 0..text.len() {
        if text.is_null(i) {
            keys.push(0);
            continue;
        }
        let value = text.value(i);
        let key = match last {
            Some((previous, key)) if previous == value => key,
            _ => {
                let next = i32::try_from(known.len())
                    .map_err(|_| ArrowError::ComputeError("too many distinct values".into()))?;
                let key = *known.entry(value).or_insert_with(|| {
                    values.append_value(value);
                    next
                });
                last = Some((value, key));
                key
            }
        };
        keys.push(key);
    }
    let keys = Int32Array::new(keys.into(), text.nulls().cloned());
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys,
        Arc::new(values.finish()),
    )?))
}

/// `calls` columns stored with an Arrow dictionary type (the Parquet pages are dictionary
/// encoded either way; the Arrow type in the file's schema decides what readers get). These hold
/// few distinct values, and DataFusion evaluates `==`, `contains`, `startsWith` and regexes on a
/// dictionary array once per distinct value instead of once per row: on the 10M-call benchmark
/// `src.pod contains "frontend"` went from 0.063 s to 0.011 s and `dst.svc == "frontend"` from
/// 0.032 s to 0.011 s. `path` is among them because it is the most filtered column; a path with
/// IDs in it has many values, which Parquet then stores plainly, and reading such pages into a
/// dictionary costs a hash per row (still correct, a little slower than plain strings).
pub fn is_dictionary_column(name: &str) -> bool {
    const PLAIN_NAMES: [&str; 13] = [
        "node",
        "protocol",
        "transport",
        "capture_source",
        "src_ip",
        "dst_ip",
        "method",
        "path",
        "host",
        "http_version",
        "grpc_method",
        "tlsx_version",
        "error_type",
    ];
    const PEER_SUFFIXES: [&str; 7] = [
        "_pod_name",
        "_pod_namespace",
        "_service_name",
        "_service_namespace",
        "_name",
        "_namespace",
        "_process",
    ];
    PLAIN_NAMES.contains(&name)
        || ((name.starts_with("src_") || name.starts_with("dst_"))
            && PEER_SUFFIXES.iter().any(|s| name.ends_with(s)))
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
    let mut ip_text = [IpText::default(), IpText::default()];
    for c in conns {
        conn_id.append_value(c.conn_id);
        node_b.append_value(node);
        src_ip.append_value(ip_text[0].of(c.src.ip));
        src_port.append_value(c.src.port);
        dst_ip.append_value(ip_text[1].of(c.dst.ip));
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
            // Min/max statistics only for numbers, times and flags: those are what time windows
            // and `status >= 500`-style filters prune row groups and pages with. Min/max of text,
            // bodies, lists and maps prune next to nothing (rows are in time order, not sorted
            // by any text; KFL tests text with equality across many values, contains, map
            // lookups and regexes) and cost a whole-value comparison per row: ~15% of a
            // dissection for bodies and maps, a few % more for the remaining text columns.
            let with_stats: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .filter(|f| f.data_type().is_primitive() || f.data_type() == &DataType::Boolean)
                .map(|f| f.name().clone())
                .collect();
            let column = |c: &str| {
                parquet::schema::types::ColumnPath::new(c.split('.').map(String::from).collect())
            };
            // Values that rarely repeat within a row group: interning them costs more than the
            // dictionary saves after zstd.
            let high_cardinality = [
                "url",
                "request_headers.entries.values",
                "response_headers.entries.values",
                "query_string.entries.values",
            ];
            let props = plain
                .into_iter()
                .chain(high_cardinality)
                .fold(WriterProperties::builder(), |p, c| {
                    p.set_column_dictionary_enabled(column(c), false)
                });
            let props = with_stats
                .iter()
                .fold(
                    props.set_statistics_enabled(EnabledStatistics::None),
                    |p, c| p.set_column_statistics_enabled(column(c), EnabledStatistics::Page),
                )
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

#[cfg(test)]
mod tests {
    use remora_kfl::{FieldType, Table};

    use super::*;

    fn fits(ty: FieldType, dt: &DataType) -> bool {
        match ty {
            FieldType::Bool => dt == &DataType::Boolean,
            FieldType::Int => dt.is_integer(),
            FieldType::String => {
                dt == &DataType::Utf8
                    || matches!(dt, DataType::Dictionary(k, v)
                        if **k == DataType::Int32 && **v == DataType::Utf8)
            }
            FieldType::Bytes => dt == &DataType::Binary,
            FieldType::Timestamp => {
                matches!(dt, DataType::Timestamp(_, Some(tz)) if tz.as_ref() == "UTC")
            }
            FieldType::StringList => {
                matches!(dt, DataType::List(f) if f.data_type() == &DataType::Utf8)
            }
            FieldType::StringMap => matches!(dt, DataType::Map(..)),
        }
    }

    #[test]
    fn dictionary_of_keeps_values_nulls_and_order() {
        let input: ArrayRef = Arc::new(arrow::array::StringArray::from(vec![
            Some("a"),
            Some("a"),
            None,
            Some("b"),
            Some("a"),
            Some(""),
            Some(""),
            Some("b"),
        ]));
        let dict = dictionary_of(&input).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            dict.data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        );
        let dict_values = dict.as_dictionary::<Int32Type>().values().len();
        assert_eq!(dict_values, 3, "a, b and the empty string once each");
        let back = cast(&dict, &DataType::Utf8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.as_string::<i32>(), input.as_string::<i32>());
    }

    /// The KFL catalog and the files we write must agree on every stored column.
    #[test]
    fn every_catalog_column_is_written_with_its_type() {
        for (table, batch) in [
            (Table::Calls, calls_batch("n", "ebpf", &[], &NoWorkloads)),
            (Table::Conns, conns_batch("n", &[])),
        ] {
            let schema = batch.map(|b| b.schema()).unwrap_or_else(|e| panic!("{e}"));
            for f in table.fields() {
                let Some(column) = f.column() else { continue };
                let field = schema.field_with_name(column).unwrap_or_else(|_| {
                    panic!("{} has no column {column} for {}", table.name(), f.name)
                });
                assert!(
                    fits(f.ty, field.data_type()),
                    "{}.{column} is {}, the catalog says {}",
                    table.name(),
                    field.data_type(),
                    f.ty.name()
                );
            }
            // And nothing is written that KFL cannot name.
            for field in schema.fields() {
                assert!(
                    table
                        .fields()
                        .iter()
                        .any(|f| f.column() == Some(field.name().as_str())),
                    "{}.{} is not in the KFL catalog",
                    table.name(),
                    field.name()
                );
            }
        }
    }
}
