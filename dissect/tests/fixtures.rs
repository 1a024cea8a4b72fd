//! The shared real captures (../shared/fixtures/pcap), each with tshark's reading as a TSV:
//! every HTTP/1 request and response (and their pairing), every DNS question and answer, and
//! every TLS ClientHello and ServerHello that tshark reads, Remora reads the same. A difference
//! fails with both sides printed.

use std::{collections::BTreeMap, path::PathBuf};

use remora_dissect::{Call, dissect_capture, dns::type_name};

fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    assert!(
        dir.is_dir(),
        "{} is missing: the shared fixtures must sit beside the repository (../shared)",
        dir.display()
    );
    dir
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
fn oracle(name: &str, tsv: &str) -> BTreeMap<&'static str, Vec<String>> {
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
    let mut interim_link: BTreeMap<String, String> = BTreeMap::new();
    for row in &rows {
        if col(row, "kind") != "http.response" {
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
        let (key, value) = match kind.as_str() {
            "http.request" => (
                "http.request",
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

fn ours(calls: &[Call]) -> BTreeMap<&'static str, Vec<String>> {
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

/// Captures whose HTTP/1 or DNS messages Remora does not yet read like tshark, each with the
/// reason. This list must only shrink; an entry that starts passing fails the test so that it
/// is removed.
const KNOWN_GAPS: &[(&str, &str)] = &[];

#[test]
fn http1_and_dns_agree_with_tshark_on_every_fixture() {
    let dir = fixtures_dir();
    let mut checked = 0;
    let mut compared: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for tsv_path in entries
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".tshark.tsv"))
    {
        let name = tsv_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".tshark.tsv", "");
        let expected = oracle(&name, &std::fs::read_to_string(tsv_path).unwrap());
        if expected.is_empty() {
            continue;
        }
        let pcap = std::fs::read(dir.join(format!("{name}.pcap"))).unwrap();
        let out = dissect_capture(&pcap).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = ours(&out.calls);
        let mut diff = Vec::new();
        for kind in [
            "http.request",
            "http.response",
            "http.pair",
            "dns.query",
            "dns.response",
            "tls.client_hello",
            "tls.server_hello",
            "http2.request",
            "http2.response",
        ] {
            let e = expected.get(kind).cloned().unwrap_or_default();
            let g = got.get(kind).cloned().unwrap_or_default();
            *compared.entry(kind).or_default() += e.len();
            if e != g {
                diff.push(format!("  {kind}:\n    tshark: {e:?}\n    remora: {g:?}"));
            }
        }
        checked += 1;
        let known = KNOWN_GAPS.iter().any(|(n, _)| *n == name);
        match (diff.is_empty(), known) {
            (true, true) => failures.push(format!("{name}: now agrees; remove it from KNOWN_GAPS")),
            (false, false) => failures.push(format!("{name}:\n{}", diff.join("\n"))),
            _ => {}
        }
    }
    assert!(
        checked >= 24,
        "only {checked} fixtures had HTTP/1 or DNS rows"
    );
    eprintln!("rows compared with tshark: {compared:?}");
    // The comparison is not vacuous: these are the fixtures' message counts (README).
    for (kind, at_least) in [
        ("http.request", 61),
        ("http.pair", 30),
        ("dns.query", 35),
        ("dns.response", 29),
        ("tls.client_hello", 20),
        ("tls.server_hello", 20),
        ("http2.request", 2),
        ("http2.response", 2),
    ] {
        assert!(
            compared.get(kind).copied().unwrap_or(0) >= at_least,
            "only {:?} {kind} rows compared",
            compared.get(kind)
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} fixtures differ from tshark:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gzip_and_chunked_bodies_are_decoded_for_the_preview() {
    for name in ["http-content-gzip", "http-syn-ack", "http-xff"] {
        let pcap = std::fs::read(fixtures_dir().join(format!("{name}.pcap"))).unwrap();
        let out = dissect_capture(&pcap).unwrap();
        let call = out
            .calls
            .iter()
            .find(|c| c.has_response)
            .unwrap_or_else(|| panic!("{name}: no response"));
        let coding = call
            .response_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, v)| v.as_str());
        assert_eq!(
            coding,
            Some("gzip"),
            "{name}: fixture should be gzip-encoded"
        );
        // gzip bytes start 1f 8b and are mostly unprintable; the decoded preview is text.
        let body = &call.response_body;
        let printable = body
            .iter()
            .filter(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
            .count();
        assert!(
            body.len() > 100 && printable * 100 >= body.len() * 99,
            "{name}: the preview is not decoded text: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
    }
}
