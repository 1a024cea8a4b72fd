//! A packet recorded on two interfaces (a router decremented its TTL in between) is one packet
//! for the recorder's slices, and two when a capture file is read as it is.

use remora_dissect::Engine;

/// A DNS query for `app.test` A from 198.18.0.1:5000, IPv4 ID 7.
fn dns_query(ttl: u8) -> Vec<u8> {
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x03app\x04test\x00\x00\x01\x00\x01");
    let total = (28 + dns.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 7, 0x40, 0, ttl, 17, 0, 0]);
    p.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
    p.extend_from_slice(&5000u16.to_be_bytes());
    p.extend_from_slice(&53u16.to_be_bytes());
    p.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&dns);
    p
}

fn queries(engine: Engine) -> (usize, u64) {
    let mut engine = engine;
    let (a, b) = (dns_query(64), dns_query(63));
    engine.push(1_000_000, &a, a.len() as u32);
    engine.push(1_020_000, &b, b.len() as u32);
    let out = engine.finish();
    let calls = out.calls.iter().filter(|c| c.protocol == "DNS").count();
    (calls, out.stats.duplicates)
}

#[test]
fn slices_count_a_packet_seen_twice_once() {
    assert_eq!(queries(Engine::new().count_copies_once()), (1, 1));
}

#[test]
fn capture_files_are_read_as_they_are() {
    assert_eq!(queries(Engine::new()), (2, 0));
}
