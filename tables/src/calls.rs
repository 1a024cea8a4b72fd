//! The `calls` table: one row per API call, from the engine's [`Call`] and who each side was.
//!
//! Column names are the KFL names with dots flattened (`src.ip` → `src_ip`). Headers are
//! `map<utf8, utf8>` with lower-case names, DNS lists `list<utf8>`; attribution columns follow
//! the address they describe.

use remora_dissect::Call;

use crate::{
    Peer, Table,
    column::{Column, Encoding, Get, MapEntries},
};

/// One row of `calls`: a call and what the writer adds to it.
pub struct CallRow<'a> {
    /// The call.
    pub call: &'a Call,
    /// The node whose recording it came from.
    pub node: &'a str,
    /// `ebpf` (packets) or `ebpf_tls` (TLS plaintext); `pcap` for capture files.
    pub capture_source: &'a str,
    /// Who the client was.
    pub src: &'a Peer,
    /// Who the server was.
    pub dst: &'a Peer,
}

/// Writes a call's `id`, `<node>/<conn_id>/<index>`, into `out` (cleared first). The API's
/// pages find calls again by this text, so this is the one place that makes it. The numbers
/// go through `itoa`: the id is made for every row, and `write!` through the formatting
/// machinery cost more than the rest of the column.
pub fn write_call_id(out: &mut String, node: &str, conn_id: u64, index: u32) {
    let mut digits = itoa::Buffer::new();
    out.clear();
    out.push_str(node);
    out.push('/');
    out.push_str(digits.format(conn_id));
    out.push('/');
    out.push_str(digits.format(index));
}

/// Query parameters of a request target, percent-decoded.
fn query_string(url: &str, entries: &mut MapEntries<'_>) {
    if let Some((_, query)) = url.split_once('?') {
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            entries.insert(&k, &v);
        }
    }
}

fn alpn(r: &CallRow<'_>, out: &mut String) {
    if let Some(t) = &r.call.tls {
        for (i, p) in t.alpn.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(p);
        }
    }
}

const HTTPISH: &str = "HTTP, HTTP/2, gRPC";
const HTTP_DNS: &str = "HTTP, HTTP/2, gRPC, DNS";

use Encoding::{Default as Plain, Dictionary as Dict, Unique};
use Get::{
    Binary, Bool, Headers, Int64, Ip, List, Map, OptStr, Str, Text, Timestamp, UInt16, UInt32,
    UInt64,
};

/// The columns of `calls`, in file order.
#[rustfmt::skip]
pub fn columns<'a>() -> Vec<Column<CallRow<'a>>> {
    vec![
        Column::new("id", "id", Text(|r, out| write_call_id(out, r.node, r.call.conn_id, r.call.index)), Unique, "all", "Row id, `<node>/<conn_id>/<index>`; what `get_api_call` takes.", r#"id == "node-1/12/0""#),
        Column::new("timestamp", "timestamp", Timestamp(|r| r.call.timestamp_ns), Unique, "all", "Request start (response start for an unpaired response), UTC.", r#"timestamp > now() - duration("5m")"#),
        Column::new("elapsed_time", "elapsed_time", Int64(|r| r.call.elapsed_us), Unique, "all", "Latency in microseconds, request start → response end; 0 when unpaired.", "elapsed_time > 5000000"),
        Column::new("node", "node", Str(|r| r.node), Dict, "all", "Node whose recording the call came from.", r#"node == "worker-1""#),
        Column::new("conn_id", "conn_id", UInt64(|r| r.call.conn_id), Unique, "all", "Connection (or UDP flow) id within the dissection: the number of its first packet's frame; joins `conns`.", "conn_id == 12"),
        Column::new("index", "index", UInt32(|r| r.call.index), Unique, "all", "Number of the call in its connection, from 1 (0 for a TLS handshake); over UDP, the number of the datagram that started the call on its flow, from 1. With `node` and `conn_id` it names the call.", "index > 0"),
        Column::new("protocol", "protocol", Str(|r| r.call.protocol), Dict, "all", "`HTTP`, `HTTP/2`, `gRPC`, `DNS`, `TLS` (handshakes), ...", r#"protocol == "HTTP/2""#),
        Column::new("transport", "transport", Str(|r| r.call.transport), Dict, "all", "`tcp` or `udp`.", r#"transport == "udp""#),
        Column::new("capture_source", "capture_source", Str(|r| if r.call.from_plaintext { "ebpf_tls" } else { r.capture_source }), Dict, "all", "`ebpf` (packets from TC hooks) or `ebpf_tls` (TLS plaintext from uprobes).", r#"capture_source == "ebpf_tls""#),
        Column::new("src.ip", "src_ip", Ip(|r| r.call.src.ip), Dict, "all", "Client address.", r#"src.ip == "198.18.0.1""#),
        Column::new("src.port", "src_port", UInt16(|r| r.call.src.port), Plain, "all", "Client port.", "src.port >= 32768"),
        Column::new("src.pod.name", "src_pod_name", Str(|r| &r.src.pod_name), Dict, "all", "Client pod; empty when the address is no pod's.", r#"src.pod.name.startsWith("frontend-")"#),
        Column::new("src.pod.namespace", "src_pod_namespace", Str(|r| &r.src.pod_namespace), Dict, "all", "Client pod's namespace.", r#"src.pod.namespace == "shop""#),
        Column::new("src.service.name", "src_service_name", Str(|r| &r.src.service_name), Dict, "all", "Client service.", r#"src.service.name == "frontend""#),
        Column::new("src.service.namespace", "src_service_namespace", Str(|r| &r.src.service_namespace), Dict, "all", "Client service's namespace.", r#"src.service.namespace == "shop""#),
        Column::new("src.name", "src_name", Str(|r| r.src.name()), Dict, "all", "Client's best name: pod, else service, else process.", r#"src.name == "frontend""#),
        Column::new("src.namespace", "src_namespace", Str(|r| r.src.namespace()), Dict, "all", "Client namespace: pod's, else service's.", r#"src.namespace != dst.namespace"#),
        Column::new("src.node.name", "src_node_name", Str(|r| &r.src.node), Dict, "all", "Node of the client pod, or the node whose own address it is.", r#"src.node.name == "node-a""#),
        Column::new("src.process", "src_process", Str(|r| &r.src.process), Dict, "all", "Client process name (comm) when the socket hooks saw it.", r#"src.process == "curl""#),
        Column::new("src.pid", "src_pid", UInt32(|r| r.src.pid), Plain, "all", "Client process id when known.", "src.pid == 4242"),
        Column::new("dst.ip", "dst_ip", Ip(|r| r.call.dst.ip), Dict, "all", "Server address.", r#"dst.ip == "198.18.0.2""#),
        Column::new("dst.port", "dst_port", UInt16(|r| r.call.dst.port), Plain, "all", "Server port.", "dst.port == 8080"),
        Column::new("dst.pod.name", "dst_pod_name", Str(|r| &r.dst.pod_name), Dict, "all", "Server pod.", r#"dst.pod.name == "checkout-0""#),
        Column::new("dst.pod.namespace", "dst_pod_namespace", Str(|r| &r.dst.pod_namespace), Dict, "all", "Server pod's namespace.", r#"dst.pod.namespace == "production""#),
        Column::new("dst.service.name", "dst_service_name", Str(|r| &r.dst.service_name), Dict, "all", "Server service.", r#"dst.service.name == "checkout""#),
        Column::new("dst.service.namespace", "dst_service_namespace", Str(|r| &r.dst.service_namespace), Dict, "all", "Server service's namespace.", r#"dst.service.namespace == "shop""#),
        Column::new("dst.name", "dst_name", Str(|r| r.dst.name()), Dict, "all", "Server's best name: pod, else service, else process.", r#"dst.name == "checkout""#),
        Column::new("dst.namespace", "dst_namespace", Str(|r| r.dst.namespace()), Dict, "all", "Server namespace: pod's, else service's.", r#"dst.namespace == "shop""#),
        Column::new("dst.node.name", "dst_node_name", Str(|r| &r.dst.node), Dict, "all", "Node of the server pod, or the node whose own address it is.", r#"dst.node.name != src.node.name"#),
        Column::new("dst.process", "dst_process", Str(|r| &r.dst.process), Dict, "all", "Server process name (comm) when known.", r#"dst.process == "nginx""#),
        Column::new("dst.pid", "dst_pid", UInt32(|r| r.dst.pid), Plain, "all", "Server process id when known.", "dst.pid == 1"),
        Column::new("method", "method", Str(|r| &r.call.method), Dict, HTTP_DNS, "HTTP method (`POST` for gRPC); DNS opcode (`QUERY`).", r#"method == "GET""#),
        Column::new("url", "url", Str(|r| &r.call.url), Unique, HTTP_DNS, "Request target as sent, path and query (DNS: the first question).", r#"url.matches(".*/api/v[0-9]+/.*")"#),
        // `path` is a dictionary because it is the most filtered column; a path with IDs in it
        // has many values, which Parquet then stores plainly (correct, a little slower).
        Column::new("path", "path", Str(|r| &r.call.path), Dict, HTTP_DNS, "Path without the query (DNS: the first question).", r#"path == "/api/v1/checkout""#),
        Column::new("host", "host", Str(|r| &r.call.host), Dict, HTTPISH, "`Host` header or `:authority`.", r#"host == "shop.example""#),
        Column::new("query_string", "query_string", Map(|r, e| query_string(&r.call.url, e)), Unique, HTTPISH, "Query parameters, decoded.", r#"query_string["page"] == "2""#),
        Column::new("http_version", "http_version", Str(|r| r.call.http_version), Dict, HTTPISH, "`HTTP/1.0`, `HTTP/1.1`, `HTTP/2`.", r#"http_version == "HTTP/1.0""#),
        Column::new("status_code", "status_code", UInt16(|r| r.call.status_code), Plain, HTTP_DNS, "HTTP status; DNS rcode; 0 when there is no response.", "status_code >= 500"),
        Column::new("request.headers", "request_headers", Headers(|r| &r.call.request_headers), Plain, HTTPISH, "Request header fields; names in lower case.", r#"request.headers["content-type"] == "application/json""#),
        Column::new("response.headers", "response_headers", Headers(|r| &r.call.response_headers), Plain, HTTPISH, "Response header fields (and trailers); names in lower case.", r#""set-cookie" in response.headers"#),
        Column::new("request_body", "request_body", Binary(|r| &r.call.request_body), Unique, HTTPISH, "Request body preview (decoded when gzip/deflate), at most 64 KiB.", "size(request_body) > 0"),
        Column::new("response_body", "response_body", Binary(|r| &r.call.response_body), Unique, HTTPISH, "Response body preview, at most 64 KiB.", "size(response_body) == 0"),
        Column::new("request_body_size", "request_body_size", UInt64(|r| r.call.request_body_size), Plain, HTTPISH, "Request body bytes on the wire.", "request_body_size > 1048576"),
        Column::new("response_body_size", "response_body_size", UInt64(|r| r.call.response_body_size), Plain, HTTPISH, "Response body bytes on the wire.", "response_body_size > 1048576"),
        Column::new("request_headers_size", "request_headers_size", UInt64(|r| r.call.request_headers_size), Plain, HTTPISH, "Request head bytes (HTTP/2: the HPACK block).", "request_headers_size > 8192"),
        Column::new("response_headers_size", "response_headers_size", UInt64(|r| r.call.response_headers_size), Plain, HTTPISH, "Response head bytes.", "response_headers_size > 8192"),
        Column::new("dns_questions", "dns_questions", List(|r| &r.call.dns_questions), Plain, "DNS", "Question names.", r#"dns && "google.com" in dns_questions"#),
        Column::new("dns_answers", "dns_answers", List(|r| &r.call.dns_answers), Plain, "DNS", "Answer data: addresses, names.", r#""198.18.0.53" in dns_answers"#),
        Column::new("dns_question_types", "dns_question_types", List(|r| &r.call.dns_question_types), Plain, "DNS", "Question types: `A`, `AAAA`, `CNAME`, `MX`, ...", r#""AAAA" in dns_question_types"#),
        Column::new("grpc_method", "grpc_method", Str(|r| &r.call.grpc_method), Dict, "gRPC", "`/package.Service/Method`.", r#"grpc_method.endsWith("/Charge")"#),
        Column::new("grpc_status", "grpc_status", Int64(|r| r.call.grpc_status.map(i64::from)), Plain, "gRPC", "`grpc-status` from the trailers; 0 (OK) when absent.", "grpc && grpc_status != 0"),
        Column::new("tlsx_sni", "tlsx_sni", Str(|r| r.call.tls.as_ref().map_or("", |t| &t.sni)), Plain, "TLS", "Server name from the ClientHello.", r#"tlsx && tlsx_sni.endsWith(".example")"#),
        Column::new("tlsx_alpn", "tlsx_alpn", Text(alpn), Plain, "TLS", "ALPN protocols offered (ClientHello) or chosen (ServerHello), comma-separated.", r#"tlsx_alpn.contains("h2")"#),
        Column::new("tlsx_version", "tlsx_version", Str(|r| r.call.tls.as_ref().map_or("", |t| t.version_name())), Dict, "TLS", "Negotiated version, `TLS 1.2`, `TLS 1.3`, ...", r#"tlsx_version == "TLS 1.2""#),
        Column::new("correlation_id", "correlation_id", Str(|r| &r.call.correlation_id), Unique, HTTPISH, "First of x-request-id, x-correlation-id, traceparent, x-b3-traceid, x-amzn-trace-id, grpc-trace-bin.", r#"correlation_id != """#),
        Column::new("trace_id", "trace_id", Str(|r| &r.call.trace_id), Unique, HTTPISH, "W3C or B3 trace id, when present.", r#"trace_id == "4bf92f3577b34da6a3ce929d0e0e4736""#),
        Column::new("error_type", "error_type", OptStr(|r| r.call.error_type), Dict, "all", "`pair_not_found`, `tcp_reset`, `timeout`, `parse_error`; empty when the call is whole.", r#"error_type == "pair_not_found""#),
        Column::new("tcp_handshake_us", "tcp_handshake_us", Int64(|r| r.call.tcp_handshake_us), Plain, "HTTP, HTTP/2, gRPC, TLS", "The connection's SYN → SYN-ACK → ACK time, µs; 0 when not seen.", "tcp_handshake_us > 100000"),
        Column::new("has_request", "has_request", Bool(|r| r.call.has_request), Plain, "all", "The request half was seen.", "!has_request"),
        Column::new("has_response", "has_response", Bool(|r| r.call.has_response), Plain, "all", "The response half was seen.", "has_request && !has_response"),
    ]
}

/// The `calls` rows of one batch, gathered and then written as a record batch.
pub struct Rows<'a> {
    node: &'a str,
    capture_source: &'a str,
    rows: Vec<CallRow<'a>>,
}

impl<'a> Rows<'a> {
    /// Rows from `node`'s recording, read from `capture_source`.
    pub fn new(node: &'a str, capture_source: &'a str) -> Self {
        Self {
            node,
            capture_source,
            rows: Vec::new(),
        }
    }

    /// Makes room for `more` rows (a batch's rows are known before they are added).
    pub fn reserve(&mut self, more: usize) {
        self.rows.reserve(more);
    }

    /// Adds `call`, with who each side was (`None`: unknown).
    pub fn push(&mut self, call: &'a Call, src: Option<&'a Peer>, dst: Option<&'a Peer>) {
        self.rows.push(CallRow {
            call,
            node: self.node,
            capture_source: self.capture_source,
            src: src.unwrap_or(&crate::peer::UNKNOWN),
            dst: dst.unwrap_or(&crate::peer::UNKNOWN),
        });
    }

    /// The record batch of every row added.
    pub fn finish(self) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
        crate::batch::record_batch(&columns(), Table::Calls.write_schema(), &self.rows)
    }
}
