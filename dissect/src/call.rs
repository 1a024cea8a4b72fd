//! The rows the engine produces: `calls` (one per request/response pair, or an unpaired half)
//! and `conns` (one per TCP connection). How they are stored is `remora-tables`'s business.

use std::net::IpAddr;

/// One side of a call or connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address.
    pub ip: IpAddr,
    /// Port (0 for protocols without ports).
    pub port: u16,
}

/// The addresses of the same traffic on the other side of an address translation (a Service's
/// ClusterIP rewritten to a backend pod, a source masqueraded as the node): `src` and `dst`
/// correspond to the row's `src` and `dst`. The row's own ends are the view recorded first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    /// What the row's `src` was on the other side.
    pub src: Endpoint,
    /// What the row's `dst` was on the other side.
    pub dst: Endpoint,
}

/// One API call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Request start (or the response's, when unpaired), ns since the epoch.
    pub timestamp_ns: i64,
    /// Request start → response end, µs; `None` when unpaired.
    pub elapsed_us: Option<i64>,
    /// Connection (or UDP flow) id within this dissection: the number of its first frame.
    pub conn_id: u64,
    /// Position of the call in its connection.
    pub index: u32,
    /// `HTTP`, `DNS`, ...
    pub protocol: &'static str,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    /// Client.
    pub src: Endpoint,
    /// Server.
    pub dst: Endpoint,
    /// HTTP method, or `QUERY`/`UPDATE`/... for DNS.
    pub method: String,
    /// Request target as sent.
    pub url: String,
    /// Path part of the target (DNS: the first question's name).
    pub path: String,
    /// Host header.
    pub host: String,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2`, or empty (one of a few: no allocation per call).
    pub http_version: &'static str,
    /// HTTP status, or the DNS rcode; 0 when there is no response.
    pub status_code: u16,
    /// Request header fields.
    pub request_headers: crate::Headers,
    /// Response header fields (and trailers, after them).
    pub response_headers: crate::Headers,
    /// Request body preview.
    pub request_body: Vec<u8>,
    /// Response body preview.
    pub response_body: Vec<u8>,
    /// Request body size on the wire (after chunk framing).
    pub request_body_size: u64,
    /// Response body size.
    pub response_body_size: u64,
    /// Request head size.
    pub request_headers_size: u64,
    /// Response head size.
    pub response_headers_size: u64,
    /// DNS question names.
    pub dns_questions: Vec<String>,
    /// DNS question types (`A`, `AAAA`, ...).
    pub dns_question_types: Vec<String>,
    /// DNS answer data (addresses, names).
    pub dns_answers: Vec<String>,
    /// The first correlation header found (x-request-id, x-correlation-id, traceparent, ...).
    pub correlation_id: String,
    /// W3C or B3 trace id when present.
    pub trace_id: String,
    /// `pair_not_found`, `tcp_reset`, `parse_error`, or `None`.
    pub error_type: Option<&'static str>,
    /// gRPC method (`/package.Service/Method`).
    pub grpc_method: String,
    /// gRPC status from the trailers.
    pub grpc_status: Option<u32>,
    /// TLS hellos (`tlsx_*` fields), for protocol `TLS`.
    pub tls: Option<Box<crate::tls::TlsInfo>>,
    /// The connection's SYN → SYN-ACK → ACK time, µs, when it was seen (TCP only).
    pub tcp_handshake_us: Option<i64>,
    /// The request half was seen.
    pub has_request: bool,
    /// The response half was seen.
    pub has_response: bool,
    /// The flow's other view across a NAT, when both were recorded.
    pub nat: Option<Translated>,
    /// Read from TLS plaintext (uprobes on the TLS library), not from packets.
    pub from_plaintext: bool,
}

impl Call {
    /// An empty call of `protocol` between two endpoints.
    pub fn new(protocol: &'static str, src: Endpoint, dst: Endpoint) -> Self {
        Self {
            timestamp_ns: 0,
            elapsed_us: None,
            conn_id: 0,
            index: 0,
            protocol,
            transport: "tcp",
            src,
            dst,
            method: String::new(),
            url: String::new(),
            path: String::new(),
            host: String::new(),
            http_version: "",
            status_code: 0,
            request_headers: crate::Headers::new(),
            response_headers: crate::Headers::new(),
            request_body: Vec::new(),
            response_body: Vec::new(),
            request_body_size: 0,
            response_body_size: 0,
            request_headers_size: 0,
            response_headers_size: 0,
            dns_questions: Vec::new(),
            dns_question_types: Vec::new(),
            dns_answers: Vec::new(),
            correlation_id: String::new(),
            trace_id: String::new(),
            error_type: None,
            grpc_method: String::new(),
            grpc_status: None,
            tls: None,
            tcp_handshake_us: None,
            has_request: false,
            has_response: false,
            nat: None,
            from_plaintext: false,
        }
    }
}

/// One TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// Connection id within this dissection: the number of its first frame.
    pub conn_id: u64,
    /// Client (sender of the SYN, or of the requests).
    pub src: Endpoint,
    /// Server.
    pub dst: Endpoint,
    /// First packet, ns.
    pub first_ns: i64,
    /// Last packet, ns.
    pub last_ns: i64,
    /// SYN → SYN-ACK → ACK, µs, when the handshake was seen.
    pub handshake_us: Option<i64>,
    /// Packets client → server, server → client.
    pub packets: [u64; 2],
    /// Payload bytes on the wire each way.
    pub bytes: [u64; 2],
    /// Retransmitted segments each way, fast and spurious ones included (as tshark's
    /// `tcp.analysis.retransmission`, `fast_retransmission`, `spurious_retransmission`).
    pub retransmissions: [u64; 2],
    /// Out-of-order segments each way (`tcp.analysis.out_of_order`).
    pub out_of_order: [u64; 2],
    /// Segments after a hole never filled each way (`tcp.analysis.lost_segment`).
    pub lost_segments: [u64; 2],
    /// Zero-window advertisements each way (`tcp.analysis.zero_window`).
    pub zero_windows: [u64; 2],
    /// Duplicate ACKs each way (`tcp.analysis.duplicate_ack`).
    pub dup_acks: [u64; 2],
    /// Mean time from a data segment to the ACK covering it, µs (`tcp.analysis.ack_rtt`).
    pub data_rtt_us: Option<i64>,
    /// FIN segments seen.
    pub fins: u32,
    /// RST segments seen.
    pub resets: u32,
    /// `client` or `server` for the first RST.
    pub rst_by: Option<&'static str>,
    /// When the first RST was seen, ns.
    pub rst_ns: Option<i64>,
    /// How it ended: `fin` (both sides), `half_closed` (one FIN), `rst`, `timeout` (silent
    /// past the idle timeout), `open` (still going at the end of the input), `evicted`
    /// (finished early by the engine's memory limits).
    pub close: &'static str,
    /// Application protocol detected (`HTTP`, `DNS`, or empty).
    pub l7: &'static str,
    /// The connection's other view across a NAT, when both were recorded.
    pub nat: Option<Translated>,
}

/// Correlation headers, in order of preference.
const CORRELATION: [&str; 6] = [
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "x-b3-traceid",
    "x-amzn-trace-id",
    "grpc-trace-bin",
];

/// Fills `correlation_id` and `trace_id` from request headers.
pub fn correlate(call: &mut Call) {
    // One pass over the fields (this runs for every HTTP call): the first value of each
    // correlation header, by name in any case.
    let mut found: [Option<&str>; CORRELATION.len()] = [None; CORRELATION.len()];
    for (name, value) in &call.request_headers {
        for (slot, wanted) in found.iter_mut().zip(CORRELATION) {
            if slot.is_none() && name.len() == wanted.len() && name.eq_ignore_ascii_case(wanted) {
                *slot = Some(value);
            }
        }
    }
    let first = |name: &str| {
        let at = CORRELATION.iter().position(|c| *c == name)?;
        found[at]
    };
    let correlation = found.iter().find_map(|v| *v).map(str::to_owned);
    let trace = match (first("traceparent"), first("x-b3-traceid")) {
        (Some(traceparent), _) => Some(traceparent.split('-').nth(1).unwrap_or("").to_owned()),
        (None, Some(b3)) => Some(b3.to_owned()),
        (None, None) => None,
    };
    if let Some(v) = correlation {
        call.correlation_id = v;
    }
    if let Some(t) = trace {
        call.trace_id = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_with(headers: &[(&str, &str)]) -> Call {
        let end = Endpoint {
            ip: IpAddr::from([198, 18, 0, 1]),
            port: 80,
        };
        let mut call = Call::new("HTTP", end, end);
        call.request_headers = headers.iter().copied().collect();
        correlate(&mut call);
        call
    }

    #[test]
    fn correlation_prefers_the_first_header_of_the_list_and_reads_trace_ids() {
        let c = call_with(&[
            (
                "TraceParent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("X-Correlation-Id", "corr-1"),
            ("x-request-id", "req-1"),
            ("x-request-id", "req-2"),
        ]);
        assert_eq!(
            c.correlation_id, "req-1",
            "x-request-id first, its first value"
        );
        assert_eq!(c.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

        let c = call_with(&[("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7")]);
        assert_eq!(c.correlation_id, "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(c.trace_id, "80f198ee56343ba864fe8b2a57d3eff7");

        let c = call_with(&[("x-request", "no"), ("accept", "*/*")]);
        assert_eq!((c.correlation_id.as_str(), c.trace_id.as_str()), ("", ""));
    }
}
