//! TLS plaintext (what uprobes on `SSL_write`/`SSL_read` read) dissected as the connection's
//! bytes: the packets of a real TLS handshake (a shared fixture), then the plaintext of an
//! HTTP/1 exchange and of HTTP/2 on the same 4-tuple. The HTTP calls carry the hellos and are
//! the only calls: the handshake is no call of its own once its plaintext is read. The live
//! counterpart (curl and Python against openssl s_server and nginx) is in bpf-tests.

use std::{net::IpAddr, path::PathBuf};

use remora_dissect::{Endpoint, Engine, capture::CaptureReader, feed_frame};

fn handshake_packets(engine: &mut Engine) -> i64 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/pcap/https-generalizedtime.pcap");
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = CaptureReader::new(&file[..]).expect("a capture");
    let mut last = 0;
    while let Some((info, data)) = reader.next_frame().expect("frames") {
        last = info.ts_ns;
        feed_frame(engine, info, data);
    }
    last
}

fn ep(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ip: IpAddr::from(ip),
        port,
    }
}

#[test]
fn plaintext_calls_carry_the_hellos_and_replace_the_handshake_call() {
    let (client, server) = (ep([10, 0, 0, 1], 3627), ep([10, 0, 0, 2], 443));
    let mut engine = Engine::new();
    let t = handshake_packets(&mut engine);
    // Both ends' uprobes: the client's process writes the request and reads the response.
    engine.push_plaintext(
        t + 1_000,
        client,
        server,
        true,
        b"GET /inbox HTTP/1.1\r\nHost: mail.yandex.com\r\n\r\n",
    );
    engine.push_plaintext(
        t + 9_000,
        client,
        server,
        false,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    );
    let out = engine.finish();
    assert_eq!(out.calls.len(), 1, "{:#?}", out.calls);
    let call = &out.calls[0];
    assert_eq!(
        (call.protocol, call.method.as_str(), call.path.as_str()),
        ("HTTP", "GET", "/inbox")
    );
    assert_eq!(
        (call.src, call.dst, call.status_code),
        (client, server, 200)
    );
    assert!(call.from_plaintext);
    assert_eq!(call.elapsed_us, Some(8));
    let tls = call.tls.as_ref().expect("the hellos");
    assert_eq!(tls.sni, "mail.yandex.com");
    assert_eq!(
        out.conns.len(),
        1,
        "the packets' connection only: {:#?}",
        out.conns
    );
    assert_eq!(
        out.conns[0].conn_id, call.conn_id,
        "the call belongs to that connection"
    );
}

#[test]
fn without_plaintext_the_handshake_is_a_call_and_a_server_side_stream_reads_the_same() {
    let mut engine = Engine::new();
    handshake_packets(&mut engine);
    let out = engine.finish();
    assert_eq!(out.calls.iter().filter(|c| c.protocol == "TLS").count(), 1);

    // The server's uprobes: it reads the request and writes the response; its local end is
    // the server's address. No packets at all (another node recorded them, or none did).
    let (client, server) = (ep([198, 18, 0, 1], 40000), ep([198, 18, 0, 2], 8443));
    let mut engine = Engine::new();
    let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
    // HEADERS on stream 1: :method GET (index 2), :path / (4), :scheme https (7), END_STREAM|END_HEADERS.
    preface.extend_from_slice(&[0, 0, 3, 1, 5, 0, 0, 0, 1, 0x82, 0x84, 0x87]);
    engine.push_plaintext(10, server, client, false, &preface);
    let mut reply = vec![0, 0, 0, 4, 0, 0, 0, 0, 0];
    // HEADERS :status 200 (index 8), END_STREAM|END_HEADERS.
    reply.extend_from_slice(&[0, 0, 1, 1, 5, 0, 0, 0, 1, 0x88]);
    engine.push_plaintext(20, server, client, true, &reply);
    let out = engine.finish();
    assert_eq!(out.calls.len(), 1, "{:#?}", out.calls);
    let call = &out.calls[0];
    assert_eq!(
        (call.protocol, call.src, call.dst, call.status_code),
        ("HTTP/2", client, server, 200)
    );
    assert!(call.from_plaintext && call.tls.is_none());
    assert!(out.conns.is_empty(), "no packets, no connection row");
}
