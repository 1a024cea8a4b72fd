//! A connection's bytes into its protocol's parser, and the parsers' finished messages into
//! calls.

use super::*;

pub(super) fn on_chunk(
    l7: &mut L7,
    dir: usize,
    ports: (u16, u16),
    chunk: Chunk<'_>,
    stats: &mut Stats,
) {
    // TLS may also start later in a connection (STARTTLS, MySQL and PostgreSQL SSL requests).
    if let (L7::Unknown | L7::Other, Chunk::Data { bytes, .. }) = (&*l7, &chunk)
        && tls::is_handshake_record(bytes)
    {
        *l7 = L7::Tls(Box::new(TlsHandshake {
            collectors: Default::default(),
            client: None,
            server: None,
            emitted: false,
            decrypted: false,
        }));
    }
    if let (L7::Unknown, Chunk::Data { bytes, .. }) = (&*l7, &chunk) {
        let n = bytes.len().min(http2::PREFACE.len());
        *l7 = if bytes[..n] == http2::PREFACE[..n] {
            L7::Http2(Box::new(http2::Conn::new(dir, true)))
        } else if http2::looks_like_server_settings(bytes) {
            L7::Http2(Box::new(http2::Conn::new(1 - dir, true)))
        } else if http1::looks_like(Role::Request, bytes) {
            L7::Http1(Box::new(Http1::new(dir)))
        } else if http1::looks_like(Role::Response, bytes) {
            L7::Http1(Box::new(Http1::new(1 - dir)))
        } else if ports.0 == 53 || ports.1 == 53 {
            L7::Dns([Vec::new(), Vec::new()])
        } else {
            L7::Other
        };
    }
    match l7 {
        L7::Http1(h) => match chunk {
            Chunk::Data { ts_ns, bytes } => h.parsers[dir].data(ts_ns, bytes),
            Chunk::Gap { ts_ns, len } => h.parsers[dir].gap(ts_ns, len),
        },
        L7::Dns(bufs) => match chunk {
            Chunk::Data { bytes, .. } => bufs[dir].extend_from_slice(bytes),
            Chunk::Gap { .. } => {
                stats.dns_errors += 1;
                bufs[dir].clear();
            }
        },
        L7::Http2(h) => match chunk {
            Chunk::Data { ts_ns, bytes } => h.data(dir, ts_ns, bytes),
            Chunk::Gap { .. } => h.gap(dir),
        },
        L7::Tls(t) => {
            if let Chunk::Data { ts_ns, bytes } = chunk {
                match t.collectors[dir].data(bytes) {
                    Some(Hello::Client(info)) if t.client.is_none() => {
                        t.client = Some((dir, ts_ns, info))
                    }
                    Some(hello @ Hello::Server { .. }) if t.server.is_none() => {
                        t.server = Some((ts_ns, hello))
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Turns finished messages of `conn` into calls in `out`, which carry its handshake time
/// (and, read from plaintext, the hellos of its encrypted connection).
pub(super) fn collect(conn: &mut TcpConn, out: &mut Output, dns_pending: &mut DnsPending) {
    let mark = out.calls.len();
    collect_messages(conn, out, dns_pending);
    annotate(conn, &mut out.calls[mark..]);
}

/// Marks `calls` of `conn` with its handshake time, and when read from plaintext, with that
/// and the hellos of its encrypted connection.
pub(super) fn annotate(conn: &TcpConn, calls: &mut [Call]) {
    for call in calls {
        call.tcp_handshake_us = conn.handshake_us;
        if conn.plaintext {
            call.from_plaintext = true;
            call.tls.clone_from(&conn.tls_info);
        }
    }
}

/// Turns finished messages of `conn` into calls in `out`.
pub(super) fn collect_messages(conn: &mut TcpConn, out: &mut Output, dns_pending: &mut DnsPending) {
    let mut upgrade = None;
    match &mut conn.l7 {
        L7::Http1(h) => {
            let req_dir = h.req_dir;
            let resp_dir = 1 - req_dir;
            // Messages move once, from the parser's list to where they go; the lists
            // keep their buffers (no vector per packet).
            let [first, second] = &mut h.parsers;
            let (requests, responder) = if req_dir == 0 {
                (&mut first.messages, second)
            } else {
                (&mut second.messages, first)
            };
            for r in requests.drain(..) {
                responder.pending_requests.push_back(r.method == "HEAD");
                h.pending.push_back(r);
            }
            let mut responses = std::mem::take(&mut h.parsers[resp_dir].messages);
            let (client, server) = (conn.sides[req_dir], conn.sides[resp_dir]);
            for resp in responses.drain(..) {
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    continue; // interim (100 Continue): not a call of its own
                }
                let req = h.pending.pop_front();
                // A 101 the parser switched on (to h2c): the request continues as HTTP/2
                // stream 1, whose response makes the call, so the 101 is not a call.
                if resp.status == 101
                    && let Some(after) = h.parsers[resp_dir].take_switched()
                {
                    upgrade = Some((req.unwrap_or_default(), resp.end_ns, after));
                    break;
                }
                conn.calls += 1;
                out.calls.push(http_call(
                    conn.id,
                    conn.calls,
                    client,
                    server,
                    req,
                    Some(resp),
                ));
            }
            // The emptied list goes back with its buffer.
            let parser = &mut h.parsers[resp_dir];
            if parser.messages.is_empty() {
                parser.messages = responses;
            }
        }
        L7::Dns(bufs) => {
            for (dir, buf) in bufs.iter_mut().enumerate() {
                while buf.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if buf.len() < 2 + len {
                        break;
                    }
                    let msg: Vec<u8> = buf.drain(..2 + len).skip(2).collect();
                    let (src, dst) = (conn.sides[dir], conn.sides[1 - dir]);
                    let ts = conn.last_ns;
                    let id = conn.id;
                    let flow = DnsFlow {
                        conn_id: id,
                        ts_ns: ts,
                        src,
                        dst,
                        transport: "tcp",
                        calls: &mut conn.calls,
                    };
                    dns_message(out, dns_pending, flow, &msg);
                }
            }
        }
        // The handshake's row waits for the connection's end: if its plaintext is read by
        // then, the calls carry the hellos instead (one call, not two).
        L7::Tls(_) => {}
        L7::Http2(h) => {
            let client_dir = h.client_dir();
            let (client, server) = (conn.sides[client_dir], conn.sides[1 - client_dir]);
            for ex in h.done.drain(..) {
                conn.calls += 1;
                out.calls.push(h2_call(
                    conn.id,
                    conn.calls,
                    client,
                    server,
                    ex,
                    conn.resets > 0,
                ));
            }
        }
        _ => {}
    }
    if let Some((request, switched_ns, after)) = upgrade
        && let L7::Http1(h) = &conn.l7
    {
        let (req_dir, resp_dir) = (h.req_dir, 1 - h.req_dir);
        let start_ns = request.start_ns;
        let mut h2 = http2::Conn::upgraded(req_dir, h2_half(request), start_ns);
        h2.data(resp_dir, switched_ns, &after);
        conn.l7 = L7::Http2(Box::new(h2));
        out.stats.h2c_upgrades += 1;
        // Stream 1's response may have come in the same segment as the 101.
        collect_messages(conn, out, dns_pending);
    }
}
