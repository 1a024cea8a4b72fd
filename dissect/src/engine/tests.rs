//! The engine's tests: reassembly of fragments, the limits on what it holds, and when a
//! closed connection is finished.

use super::*;

/// A DNS query over UDP/IPv4, split into two fragments out of order, is still a call.
#[test]
fn fragmented_udp_is_reassembled() {
    let mut dns = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x03app\x04test\x00\x00\x01\x00\x01");
    let mut udp = vec![0x30, 0x39, 0, 53];
    udp.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&dns);
    let ip = |payload: &[u8], off: u16, more: bool| {
        let mut p = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        let total = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let ff = (off / 8) | if more { 0x2000 } else { 0 };
        p[6..8].copy_from_slice(&ff.to_be_bytes());
        p.extend_from_slice(payload);
        p
    };
    let first = ip(&udp[..16], 0, true);
    let second = ip(&udp[16..], 16, false);
    let mut e = Engine::new();
    e.push(2, &second, second.len() as u32);
    e.push(1, &first, first.len() as u32);
    let out = e.finish();
    assert_eq!(out.stats.reassembled, 1);
    assert_eq!(out.calls.len(), 1);
    assert_eq!(out.calls[0].dns_questions, ["app.test"]);
}

fn syn(port: u16, seq: u32) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ];
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&80u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    p
}

fn data(port: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = syn(port, seq);
    p[33] = 0x18; // PSH ACK
    let total = (40 + payload.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A segment of the connection between 198.18.0.1:`port` (the client) and 198.18.0.2:80.
fn segment(to_server: bool, port: u16, seq: u32, ack: u32, flags: u8, len: usize) -> Vec<u8> {
    let mut p = data(port, seq, &vec![b'x'; len]);
    if !to_server {
        p[12..20].copy_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
        p[20..24].copy_from_slice(&[0, 80, (port >> 8) as u8, port as u8]);
    }
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[33] = flags;
    p
}

const MS: i64 = 1_000_000;

/// Pushes a closed exchange on `port` from `t0`: handshake, 100 bytes each way (the
/// server's sent twice when `lossy`), FINs both ways, the last ACK. Returns the time of the
/// last packet.
fn closed_exchange(e: &mut Engine, port: u16, t0: i64, lossy: bool) -> i64 {
    use flags::{ACK, FIN, SYN};
    let (c, s) = (1000u32, 5000u32);
    let mut packets = vec![
        (true, c, 0, SYN, 0),
        (false, s, c + 1, SYN | ACK, 0),
        (true, c + 1, s + 1, ACK, 0),
        (true, c + 1, s + 1, ACK, 100),
        (false, s + 1, c + 101, ACK, 100),
    ];
    if lossy {
        packets.push((false, s + 1, c + 101, ACK, 100));
    }
    packets.extend([
        (true, c + 101, s + 101, ACK | FIN, 0),
        (false, s + 101, c + 102, ACK | FIN, 0),
        (true, c + 102, s + 102, ACK, 0),
    ]);
    let mut t = t0;
    for (to_server, seq, ack, f, len) in packets {
        t += MS;
        let p = segment(to_server, port, seq, ack, f, len);
        e.push(t, &p, p.len() as u32);
    }
    t
}

#[test]
fn a_clean_close_frees_the_connection_after_a_second() {
    let mut e = Engine::new();
    let last = closed_exchange(&mut e, 40_000, 0, false);
    e.sweep_at(last + 900 * MS);
    assert_eq!(e.live().0, 1, "within the grace");
    e.sweep_at(last + 1100 * MS);
    assert_eq!(e.live().0, 0, "a clean close is finished after a second");
    let out = e.finish();
    assert_eq!(out.conns.len(), 1);
    assert_eq!(out.conns[0].close, "fin");
}

/// The FIN whose ACK was lost after the capture point comes again after the sender's
/// backed-off timeout: it is a retransmission of the same connection, and the server's
/// answer a duplicate ACK, as tshark reads them; not a second connection.
#[test]
fn a_lossy_close_keeps_late_retransmissions_in_its_row() {
    use flags::{ACK, FIN};
    let mut e = Engine::new();
    let last = closed_exchange(&mut e, 40_001, 0, true);
    e.sweep_at(last + 1500 * MS);
    assert_eq!(
        e.live().0,
        1,
        "a lossy close waits for late retransmissions"
    );
    for (dt, to_server, seq, ack, f) in [
        (2000, true, 1101, 5101, ACK | FIN),
        (2001, false, 5102, 1102, ACK),
    ] {
        let p = segment(to_server, 40_001, seq, ack, f, 0);
        e.push(last + dt * MS, &p, p.len() as u32);
    }
    e.sweep_at(last + 11_000 * MS);
    assert_eq!(e.live().0, 1, "the grace runs from the last packet");
    e.sweep_at(last + 12_100 * MS);
    assert_eq!(e.live().0, 0, "finished after the lossy grace");
    let out = e.finish();
    assert_eq!(out.conns.len(), 1, "{:#?}", out.conns);
    let conn = &out.conns[0];
    assert_eq!(conn.retransmissions, [1, 1], "client's FIN, server's data");
    assert_eq!(conn.dup_acks, [0, 1], "the server's answer to the late FIN");
    assert_eq!(conn.packets, [6, 5]);
}

/// One side's FIN sent twice is a half-close, not a close: the other side may still send.
#[test]
fn a_repeated_fin_from_one_side_is_not_a_close() {
    use flags::{ACK, FIN, SYN};
    let mut e = Engine::new();
    let mut t = 0;
    for (to_server, seq, ack, f) in [
        (true, 1000, 0, SYN),
        (false, 5000, 1001, SYN | ACK),
        (true, 1001, 5001, ACK | FIN),
        (true, 1001, 5001, ACK | FIN),
    ] {
        t += MS;
        let p = segment(to_server, 40_002, seq, ack, f, 0);
        e.push(t, &p, p.len() as u32);
    }
    e.sweep_at(t + 5000 * MS);
    assert_eq!(
        e.live().0,
        1,
        "a half-closed connection waits for the idle timeout"
    );
    let out = e.finish();
    assert_eq!(out.conns[0].close, "half_closed");
}

#[test]
fn connection_count_and_buffered_bytes_stay_bounded() {
    let mut e = Engine::with_limits(Limits {
        max_conns: 100,
        max_buffered: 64 << 10,
    });
    // 1000 connections, each holding 4 KiB behind a hole that is never filled.
    for i in 0..1000u16 {
        let ts = i64::from(i) * 1_000_000;
        let port = 10_000 + i;
        let s = syn(port, 1000);
        e.push(ts, &s, s.len() as u32);
        let d = data(port, 1100, &[b'x'; 4096]);
        e.push(ts, &d, d.len() as u32);
        let (conns, _) = e.live();
        assert!(conns <= 100, "{conns} live connections");
        let held: usize = e.tcp.values().map(TcpConn::buffered).sum();
        assert_eq!(held, e.held, "the running total follows the connections");
        assert!(held <= 64 << 10, "{held} bytes held");
    }
    let out = e.finish();
    assert!(out.stats.evicted_conns >= 900, "{:?}", out.stats);
    assert_eq!(out.conns.len(), 1000, "every connection still gets its row");
}
