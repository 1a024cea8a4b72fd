//! h2c upgrades (HTTP/1.1 `Upgrade: h2c` → HTTP/2 on the same connection), fed to the engine
//! as hand-made TCP segments. The live counterpart, against tshark, is in bpf-tests.

use remora_dissect::Engine;

/// A TCP/IPv4 segment between 198.18.0.1:40000 (client) and 198.18.0.2:80 (server).
fn segment(from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if from_client {
        ([198, 18, 0, 1], [198, 18, 0, 2], 40000u16, 80u16)
    } else {
        ([198, 18, 0, 2], [198, 18, 0, 1], 80, 40000)
    };
    let total = (40 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 64, 6, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `Upgrade: h2c` accepted: the HTTP/1.1 request and the HTTP/2 response of stream 1 are
/// one HTTP/2 call; the 101 is not a call. Then a second request on stream 3.
#[test]
fn h2c_upgrade_makes_the_request_stream_one() {
    let request = b"GET /up?x=1 HTTP/1.1\r\nHost: svc:80\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                    Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nAccept: */*\r\n\r\n";
    let mut response =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    response.extend(h2_frame(4, 0, 0, &[])); // server SETTINGS
    response.extend(h2_frame(1, 0x4, 1, &[0x88])); // HEADERS :status 200 (static index 8)
    response.extend(h2_frame(0, 0x1, 1, b"hello")); // DATA, END_STREAM
    let mut preface = remora_dissect::http2::PREFACE.to_vec();
    preface.extend(h2_frame(4, 0, 0, &[]));
    // Stream 3: GET (static 2), scheme http (6), path / (4), :authority "svc" (literal, index 1).
    preface.extend(h2_frame(
        1,
        0x5,
        3,
        &[0x82, 0x86, 0x84, 0x41, 3, b's', b'v', b'c'],
    ));
    let reply3 = h2_frame(1, 0x5, 3, &[0x8d]); // :status 404, END_STREAM

    let (c0, s0) = (1000u32, 5000u32);
    let mut seq = [c0 + 1, s0 + 1];
    let mut e = Engine::new();
    let mut t = 0;
    let mut push = |e: &mut Engine, p: Vec<u8>| {
        t += 1_000_000;
        e.push(t, &p, p.len() as u32);
    };
    push(&mut e, segment(true, c0, 0, 0x02, &[]));
    push(&mut e, segment(false, s0, c0 + 1, 0x12, &[]));
    push(&mut e, segment(true, seq[0], seq[1], 0x10, &[]));
    for (from_client, bytes) in [
        (true, &request[..]),
        (false, &response[..]),
        (true, &preface[..]),
        (false, &reply3[..]),
    ] {
        let i = usize::from(!from_client);
        push(
            &mut e,
            segment(from_client, seq[i], seq[1 - i], 0x18, bytes),
        );
        seq[i] += bytes.len() as u32;
    }
    let out = e.finish();
    assert_eq!(out.stats.h2c_upgrades, 1);
    let calls: Vec<_> = out
        .calls
        .iter()
        .map(|c| {
            (
                c.protocol,
                c.method.as_str(),
                c.url.as_str(),
                c.host.as_str(),
                c.status_code,
                c.has_request && c.has_response,
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("HTTP/2", "GET", "/up?x=1", "svc:80", 200, true),
            ("HTTP/2", "GET", "/", "svc", 404, true),
        ]
    );
    let first = &out.calls[0];
    assert_eq!(first.response_body_size, 5);
    assert!(
        first
            .request_headers
            .iter()
            .all(|(n, _)| n != "upgrade" && n != "http2-settings"),
        "{:?}",
        first.request_headers
    );
}

/// A server that ignores `Upgrade: h2c` answers in HTTP/1.1 and the connection stays HTTP/1.
#[test]
fn declined_h2c_upgrade_stays_http1() {
    let request = b"POST /p HTTP/1.1\r\nHost: svc\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nab";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (c0, s0) = (1000u32, 5000u32);
    let mut e = Engine::new();
    for (t, p) in [
        segment(true, c0, 0, 0x02, &[]),
        segment(false, s0, c0 + 1, 0x12, &[]),
        segment(true, c0 + 1, s0 + 1, 0x18, request),
        segment(false, s0 + 1, c0 + 1 + request.len() as u32, 0x18, response),
    ]
    .into_iter()
    .enumerate()
    {
        e.push(t as i64 * 1_000_000, &p, p.len() as u32);
    }
    let out = e.finish();
    assert_eq!(out.stats.h2c_upgrades, 0);
    assert_eq!(out.calls.len(), 1);
    assert_eq!(
        (out.calls[0].protocol, out.calls[0].status_code),
        ("HTTP", 200)
    );
}
