//! Turning finished messages into `calls` rows: HTTP/1 request/response pairs, HTTP/2 and gRPC
//! streams, DNS queries with their answers, TLS hellos.

use rustc_hash::FxHashMap as HashMap;

use crate::{
    call::{Call, Endpoint, correlate},
    dns,
    flow::{FlowKey, key},
    http1::{self, Message},
    http2,
    output::Output,
    tls::{Hello, TlsHandshake, TlsInfo},
};

/// One `TLS` call from the hellos seen so far; `None` until there is something to report
/// (both hellos, or at the end any one).
pub(crate) fn tls_call(
    conn_id: u64,
    sides: [Endpoint; 2],
    t: &mut TlsHandshake,
    at_end: bool,
) -> Option<Call> {
    if t.emitted || (!at_end && (t.client.is_none() || t.server.is_none())) {
        return None;
    }
    if t.client.is_none() && t.server.is_none() {
        return None;
    }
    t.emitted = true;
    let client_dir = t.client.as_ref().map_or(1, |(d, _, _)| *d);
    let mut call = Call::new("TLS", sides[client_dir], sides[1 - client_dir]);
    call.conn_id = conn_id;
    let info = tls_info(t).unwrap_or_default();
    if let Some((_, ts, _)) = &t.client {
        call.timestamp_ns = *ts;
        call.has_request = true;
    }
    if let Some((ts, _)) = &t.server {
        call.has_response = true;
        match &t.client {
            Some((_, start, _)) => call.elapsed_us = Some((ts - start) / 1000),
            None => call.timestamp_ns = *ts,
        }
    }
    if !(call.has_request && call.has_response) {
        call.error_type = Some("pair_not_found");
    }
    call.path = info.sni.clone();
    call.tls = Some(Box::new(info));
    Some(call)
}

/// What the hellos seen so far said (`tlsx_*`), for the calls read from the connection's
/// plaintext.
pub(crate) fn tls_info(t: &TlsHandshake) -> Option<TlsInfo> {
    if t.client.is_none() && t.server.is_none() {
        return None;
    }
    let mut info = t
        .client
        .as_ref()
        .map(|(_, _, ch)| ch.clone())
        .unwrap_or_default();
    if let Some((
        _,
        Hello::Server {
            version,
            supported,
            alpn,
            cipher,
        },
    )) = &t.server
    {
        info.server_version = Some(*version);
        info.server_supported_version = *supported;
        info.server_alpn = alpn.clone();
        info.cipher = Some(*cipher);
    }
    Some(info)
}

pub(crate) fn http_call(
    conn_id: u64,
    index: u32,
    client: Endpoint,
    server: Endpoint,
    req: Option<Message>,
    resp: Option<Message>,
) -> Call {
    let mut call = Call::new("HTTP", client, server);
    call.conn_id = conn_id;
    call.index = index;
    call.has_request = req.is_some();
    call.has_response = resp.is_some();
    let req_start = req.as_ref().map(|r| r.start_ns);
    if let Some(mut req) = req {
        call.timestamp_ns = req.start_ns;
        call.path = req.target.split('?').next().unwrap_or("").to_owned();
        call.host = req.header("host").unwrap_or("").to_owned();
        call.request_body = http1::decoded_preview(&mut req);
        call.request_body_size = req.body_size;
        call.request_headers_size = req.head_size;
        call.method = req.method;
        call.url = req.target;
        call.http_version = req.version;
        call.request_headers = req.headers;
        correlate(&mut call);
    }
    if let Some(mut resp) = resp {
        if let Some(start) = req_start {
            call.elapsed_us = Some((resp.end_ns - start) / 1000);
        } else {
            call.timestamp_ns = resp.start_ns;
            call.http_version = resp.version;
            call.error_type = Some("pair_not_found");
        }
        call.status_code = resp.status;
        call.response_body = http1::decoded_preview(&mut resp);
        call.response_headers = resp.headers;
        call.response_body_size = resp.body_size;
        call.response_headers_size = resp.head_size;
    }
    call
}

/// A call from one HTTP/2 stream (`gRPC` when its content type says so).
/// The HTTP/2 request half of an HTTP/1.1 request that upgraded its connection to h2c: the
/// request line and `Host` become pseudo-headers, names are lower-cased as HPACK sends them,
/// and the hop-by-hop headers of the upgrade itself are left out.
pub(crate) fn h2_half(req: Message) -> http2::Half {
    const HOP_BY_HOP: [&str; 6] = [
        "connection",
        "upgrade",
        "http2-settings",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
    ];
    let mut headers = crate::Headers::with_capacity(req.headers.len() + 4, req.headers.text_len());
    headers.push(":method", &req.method);
    headers.push(":scheme", "http");
    headers.push(":path", &req.target);
    if let Some(host) = req.header("host") {
        headers.push(":authority", host);
    }
    for (name, value) in &req.headers {
        let name = name.to_ascii_lowercase();
        if name != "host" && !HOP_BY_HOP.contains(&name.as_str()) {
            headers.push(&name, value);
        }
    }
    http2::Half {
        headers,
        trailers: crate::Headers::new(),
        body_size: req.body_size,
        body_preview: req.body_preview,
        head_size: req.head_size,
        ended: true,
        seen: true,
    }
}

pub(crate) fn h2_call(
    conn_id: u64,
    index: u32,
    client: Endpoint,
    server: Endpoint,
    ex: http2::Exchange,
    conn_reset: bool,
) -> Call {
    let grpc = ex
        .request
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let mut call = Call::new(if grpc { "gRPC" } else { "HTTP/2" }, client, server);
    call.conn_id = conn_id;
    call.index = index;
    call.timestamp_ns = ex.start_ns;
    call.http_version = "HTTP/2";
    call.has_request = ex.request.seen;
    call.has_response = ex.response.seen;
    call.method = ex.request.header(":method").unwrap_or("").to_owned();
    call.url = ex.request.header(":path").unwrap_or("").to_owned();
    call.path = call.url.split('?').next().unwrap_or("").to_owned();
    call.host = ex.request.header(":authority").unwrap_or("").to_owned();
    call.status_code = ex
        .response
        .header(":status")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    call.request_headers = ex.request.headers.clone();
    call.response_headers = ex.response.headers.clone();
    call.response_headers.extend(&ex.response.trailers);
    call.request_body = ex.request.body_preview.clone();
    call.response_body = ex.response.body_preview.clone();
    call.request_body_size = ex.request.body_size;
    call.response_body_size = ex.response.body_size;
    call.request_headers_size = ex.request.head_size;
    call.response_headers_size = ex.response.head_size;
    if grpc {
        call.grpc_method = call.path.clone();
        call.grpc_status = ex
            .response
            .header("grpc-status")
            .and_then(|s| s.parse().ok());
    }
    correlate(&mut call);
    if call.has_request && call.has_response {
        call.elapsed_us = Some((ex.end_ns - ex.start_ns) / 1000);
    }
    if ex.reset || !(ex.response.ended) {
        call.error_type = Some(if ex.reset || conn_reset {
            "tcp_reset"
        } else {
            "pair_not_found"
        });
    }
    call
}

/// A DNS call with the questions of `msg`, from `client` to `server`.
fn dns_call(
    msg: &dns::Message,
    conn_id: u64,
    ts_ns: i64,
    client: Endpoint,
    server: Endpoint,
    transport: &'static str,
) -> Call {
    let mut call = Call::new("DNS", client, server);
    call.transport = transport;
    call.conn_id = conn_id;
    call.timestamp_ns = ts_ns;
    call.method = match msg.opcode {
        0 => "QUERY".into(),
        5 => "UPDATE".into(),
        n => format!("OPCODE{n}"),
    };
    call.dns_questions = msg.questions.iter().map(|q| q.name.clone()).collect();
    call.dns_question_types = msg
        .questions
        .iter()
        .map(|q| dns::type_name(q.qtype))
        .collect();
    call.path = call.dns_questions.first().cloned().unwrap_or_default();
    call.url = call.path.clone();
    call
}

/// Where a DNS message travelled: its flow, direction, time and transport, and the flow's
/// count of calls, which numbers a new call (`index`, so that `<node>/<conn_id>/<index>` is
/// unique: a UDP flow carries many queries).
pub(crate) struct DnsFlow<'c> {
    pub(crate) conn_id: u64,
    pub(crate) ts_ns: i64,
    pub(crate) src: Endpoint,
    pub(crate) dst: Endpoint,
    pub(crate) transport: &'static str,
    pub(crate) calls: &'c mut u32,
}

pub(crate) fn dns_message(
    out: &mut Output,
    // Boxed: a query waits in the map, and a `Call` is large (640 bytes) to move in, out,
    // and again into the rows.
    pending: &mut HashMap<(FlowKey, u16), (Box<Call>, i64)>,
    flow: DnsFlow<'_>,
    data: &[u8],
) {
    let DnsFlow {
        conn_id,
        ts_ns,
        src,
        dst,
        transport,
        calls,
    } = flow;
    let Some(msg) = dns::parse(data) else {
        out.stats.dns_errors += 1;
        return;
    };
    let k = (key(src, dst), msg.id);
    if !msg.response {
        let mut call = Box::new(dns_call(&msg, conn_id, ts_ns, src, dst, transport));
        *calls += 1;
        call.index = *calls;
        call.has_request = true;
        // A repeated query id before its answer: the earlier query stays unanswered.
        if let Some((mut old, _)) = pending.insert(k, (call, ts_ns)) {
            old.error_type = Some("pair_not_found");
            out.calls.push(*old);
        }
        return;
    }
    let mut call = match pending.remove(&k) {
        Some((mut call, start)) => {
            call.elapsed_us = Some((ts_ns - start) / 1000);
            call
        }
        None => {
            // An answer whose query was not seen: the client is its destination.
            let mut call = Box::new(dns_call(&msg, conn_id, ts_ns, dst, src, transport));
            *calls += 1;
            call.index = *calls;
            call.error_type = Some("pair_not_found");
            call
        }
    };
    call.has_response = true;
    call.status_code = u16::from(msg.rcode);
    call.dns_answers = msg
        .answers
        .into_iter()
        .filter(|a| !a.data.is_empty())
        .map(|a| a.data)
        .collect();
    out.calls.push(*call);
}
