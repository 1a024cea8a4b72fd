//! Comparison of Remora's calls with tshark's reading of the same capture (the TSV format of
//! `../shared/fixtures/tshark_oracle.py`). Shared by the fixture test and the live-traffic test
//! in bpf-tests (which includes this file by path).

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;

use remora_dissect::{Call, dns::type_name};

/// Kinds of messages compared.
pub const KINDS: [&str; 9] = [
    "http.request",
    "http.response",
    "http.pair",
    "dns.query",
    "dns.response",
    "tls.client_hello",
    "tls.server_hello",
    "http2.request",
    "http2.response",
];

/// Differences between tshark's rows and Remora's calls, one line per kind; also counts the
/// rows compared into `compared`.
pub fn differences(
    name: &str,
    tsv: &str,
    calls: &[Call],
    compared: &mut BTreeMap<&'static str, usize>,
) -> Vec<String> {
    let expected = oracle(name, tsv);
    let got = ours(calls);
    let mut diff = Vec::new();
    for kind in KINDS {
        let e = expected.get(kind).cloned().unwrap_or_default();
        let g = got.get(kind).cloned().unwrap_or_default();
        *compared.entry(kind).or_default() += e.len();
        if e != g {
            diff.push(format!("  {kind}:\n    tshark: {e:?}\n    remora: {g:?}"));
        }
    }
    diff
}

/// True when tshark read any message of the compared kinds.
pub fn has_rows(name: &str, tsv: &str) -> bool {
    !oracle(name, tsv).is_empty()
}

/// Where tshark 4.0.17 is wrong, checked by hand: (fixture, frame, column, corrected value, why).
const TSHARK_ERRATA: &[(&str, &str, &str, &str, &str)] = &[(
    "arkime_synthetic",
    "904",
    "tls_sup_versions",
    "",
    "the ServerHello's supported_versions extension is empty; tshark reads the next extension's \
     type (0x002c) as a version and flags its own 'Dissector processed too much data'",
)];

/// tshark's rows of one kind, as comparable strings.
pub fn oracle(name: &str, tsv: &str) -> BTreeMap<&'static str, Vec<String>> {
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split('\t').collect();
    let col = |row: &[&str], column: &str| -> String {
        let frame = header
            .iter()
            .position(|h| *h == "frame")
            .and_then(|i| row.get(i));
        if let Some((.., fixed, _)) = TSHARK_ERRATA
            .iter()
            .find(|(f, fr, c, ..)| *f == name && Some(fr) == frame && *c == column)
        {
            return (*fixed).to_owned();
        }
        header
            .iter()
            .position(|h| *h == column)
            .and_then(|i| row.get(i))
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    // Pairs: each final response with the request tshark links it to (http.request_in). tshark
    // links an interim 1xx response to the request and leaves the final one unlinked; per
    // RFC 9110 the request's pair is the final response, so the link moves on to it.
    // h2c upgrades: tshark reads the `Upgrade: h2c` request as HTTP/1 with the 101 as its
    // response, and stream 1's answer as HTTP/2 HEADERS without a request. Remora makes the
    // upgrade request the request of stream 1 (one HTTP/2 call, docs/dissection.md), so here
    // that request counts as an HTTP/2 request and the 101 as no message.
    let h2_streams: std::collections::BTreeSet<String> = rows
        .iter()
        .filter(|r| col(r, "kind").starts_with("http2."))
        .map(|r| col(r, "stream"))
        .collect();
    let switches: Vec<(String, String)> = rows
        .iter()
        .filter(|r| {
            col(r, "kind") == "http.response"
                && col(r, "status") == "101"
                && h2_streams.contains(&col(r, "stream"))
        })
        .map(|r| (col(r, "frame"), col(r, "req_frame")))
        .collect();
    let is_switch = |row: &[&str]| {
        col(row, "kind") == "http.response"
            && col(row, "status") == "101"
            && switches.iter().any(|(f, _)| *f == col(row, "frame"))
    };
    let is_upgrade_request = |row: &[&str]| {
        col(row, "kind") == "http.request"
            && switches.iter().any(|(_, req)| *req == col(row, "frame"))
    };
    let mut interim_link: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows {
        if col(row, "kind") != "http.response" || is_switch(row) {
            continue;
        }
        let status: u16 = col(row, "status").parse().unwrap_or(0);
        let stream = col(row, "stream");
        if (100..200).contains(&status) && status != 101 {
            interim_link.insert(stream, col(row, "req_frame"));
            continue;
        }
        let mut req_frame = col(row, "req_frame");
        if req_frame.is_empty() {
            req_frame = interim_link.remove(&stream).unwrap_or_default();
        }
        if let Some(req) = rows.iter().find(|r| {
            col(r, "kind") == "http.request"
                && col(r, "frame") == req_frame
                && !req_frame.is_empty()
        }) {
            out.entry("http.pair").or_default().push(format!(
                "{} {} -> {status}",
                col(req, "method"),
                col(req, "uri")
            ));
        }
    }
    for row in rows {
        let row = row.as_slice();
        let kind = col(row, "kind");
        if is_switch(row) {
            continue;
        }
        let (key, value) = match kind.as_str() {
            "http.request" => (
                if is_upgrade_request(row) {
                    "http2.request"
                } else {
                    "http.request"
                },
                format!(
                    "{} {} host={}",
                    col(row, "method"),
                    col(row, "uri"),
                    col(row, "host")
                ),
            ),
            "http.response" => {
                let status: u16 = col(row, "status").parse().unwrap_or(0);
                if (100..200).contains(&status) && status != 101 {
                    continue; // interim responses are not calls
                }
                ("http.response", status.to_string())
            }
            "dns.query" => (
                "dns.query",
                format!(
                    "{} {}",
                    col(row, "dns_qname"),
                    qtype(&col(row, "dns_qtype"))
                ),
            ),
            "dns.response" => {
                let mut a: Vec<String> = col(row, "dns_a")
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                a.sort();
                (
                    "dns.response",
                    format!(
                        "{} {} rcode={} a={}",
                        col(row, "dns_qname"),
                        qtype(&col(row, "dns_qtype")),
                        col(row, "dns_rcode"),
                        a.join(",")
                    ),
                )
            }
            "http2.headers" | "http2.push_promise" if !col(row, "method").is_empty() => (
                "http2.request",
                format!(
                    "{} {} host={}",
                    col(row, "method"),
                    col(row, "uri"),
                    col(row, "host")
                ),
            ),
            "http2.headers" if !col(row, "status").is_empty() => {
                ("http2.response", col(row, "status"))
            }
            "tls.client_hello" => (
                "tls.client_hello",
                format!(
                    "ver={} sup={} sni={} alpn={}",
                    col(row, "tls_version"),
                    col(row, "tls_sup_versions"),
                    col(row, "tls_sni"),
                    col(row, "tls_alpn")
                ),
            ),
            "tls.server_hello" => (
                "tls.server_hello",
                format!(
                    "ver={} sup={} alpn={} cipher={}",
                    col(row, "tls_version"),
                    col(row, "tls_sup_versions"),
                    col(row, "tls_alpn"),
                    col(row, "tls_cipher")
                ),
            ),
            _ => continue,
        };
        out.entry(key).or_default().push(value);
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

fn qtype(n: &str) -> String {
    n.parse::<u16>().map(type_name).unwrap_or_default()
}

pub fn ours(calls: &[Call]) -> BTreeMap<&'static str, Vec<String>> {
    let mut out: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for c in calls {
        match c.protocol {
            "HTTP" => {
                if c.has_request {
                    out.entry("http.request")
                        .or_default()
                        .push(format!("{} {} host={}", c.method, c.url, c.host));
                }
                if c.has_response {
                    out.entry("http.response")
                        .or_default()
                        .push(c.status_code.to_string());
                }
                if c.has_request && c.has_response {
                    out.entry("http.pair")
                        .or_default()
                        .push(format!("{} {} -> {}", c.method, c.url, c.status_code));
                }
            }
            "HTTP/2" | "gRPC" => {
                if c.has_request {
                    out.entry("http2.request")
                        .or_default()
                        .push(format!("{} {} host={}", c.method, c.url, c.host));
                }
                if c.has_response {
                    out.entry("http2.response")
                        .or_default()
                        .push(c.status_code.to_string());
                }
            }
            "TLS" => {
                let Some(t) = &c.tls else { continue };
                let hex = |v: u16| format!("0x{v:04x}");
                if c.has_request {
                    out.entry("tls.client_hello").or_default().push(format!(
                        "ver={} sup={} sni={} alpn={}",
                        hex(t.client_version),
                        t.supported_versions
                            .iter()
                            .map(|v| hex(*v))
                            .collect::<Vec<_>>()
                            .join(","),
                        t.sni,
                        t.alpn.join(",")
                    ));
                }
                if c.has_response {
                    out.entry("tls.server_hello").or_default().push(format!(
                        "ver={} sup={} alpn={} cipher={}",
                        t.server_version.map(hex).unwrap_or_default(),
                        t.server_supported_version.map(hex).unwrap_or_default(),
                        t.server_alpn.clone().unwrap_or_default(),
                        t.cipher.map(hex).unwrap_or_default()
                    ));
                }
            }
            "DNS" => {
                let q = format!(
                    "{} {}",
                    c.dns_questions.first().cloned().unwrap_or_default(),
                    c.dns_question_types.first().cloned().unwrap_or_default()
                );
                if c.has_request {
                    out.entry("dns.query").or_default().push(q.clone());
                }
                if c.has_response {
                    let mut a: Vec<String> = c
                        .dns_answers
                        .iter()
                        .filter(|d| d.parse::<std::net::Ipv4Addr>().is_ok())
                        .cloned()
                        .collect();
                    a.sort();
                    out.entry("dns.response").or_default().push(format!(
                        "{q} rcode={} a={}",
                        c.status_code,
                        a.join(",")
                    ));
                }
            }
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}
