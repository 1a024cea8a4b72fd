//! The shared real captures (../shared/fixtures/pcap), each with tshark's reading as a TSV:
//! every HTTP/1 request and response (and their pairing), every DNS question and answer, and
//! every TLS ClientHello and ServerHello that tshark reads, Remora reads the same. A difference
//! fails with both sides printed.

mod oracle;

use std::{collections::BTreeMap, path::PathBuf};

use remora_dissect::dissect_capture;

fn fixtures_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    assert!(
        dir.is_dir(),
        "{} is missing: the shared fixtures must sit beside the repository (../shared)",
        dir.display()
    );
    dir
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
        let tsv = std::fs::read_to_string(tsv_path).unwrap();
        if !oracle::has_rows(&name, &tsv) {
            continue;
        }
        let pcap = std::fs::read(dir.join(format!("{name}.pcap"))).unwrap();
        let out = dissect_capture(&pcap).unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = oracle::differences(&name, &tsv, &out.calls, &mut compared);
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
            .map(|(_, v)| v);
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

/// A call's `(conn_id, index)` names it (`<node>/<conn_id>/<index>` is its id in the API): no
/// two calls of a capture share one, whether they are HTTP requests on one connection or DNS
/// queries on one UDP flow.
#[test]
fn every_call_of_every_fixture_has_its_own_id() {
    let dir = fixtures_dir();
    let mut captures = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pcap") {
            continue;
        }
        let Ok(out) = dissect_capture(&std::fs::read(&path).unwrap()) else {
            continue;
        };
        let mut seen = std::collections::HashMap::new();
        for c in &out.calls {
            if let Some(other) = seen.insert((c.conn_id, c.index), c) {
                panic!(
                    "{}: two calls are {}/{}: {} {} {} and {} {} {}",
                    path.display(),
                    c.conn_id,
                    c.index,
                    other.protocol,
                    other.method,
                    other.path,
                    c.protocol,
                    c.method,
                    c.path
                );
            }
        }
        captures += 1;
    }
    assert!(captures > 10, "only {captures} captures read");
}
