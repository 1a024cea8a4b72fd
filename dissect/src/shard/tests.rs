//! The router and the shards against one engine.

use super::*;
use crate::{Call, TakenRows};

#[test]
fn ranges_cover_every_shard_once() {
    for threads in [1, 2, 3, 7, 64, 100] {
        let ranges = ShardRange::split(0..SHARDS, threads);
        assert_eq!(ranges.first().map(|r| r.start), Some(0));
        assert_eq!(ranges.last().map(|r| r.end), Some(SHARDS));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    }
    // What a reader running the first 24 shards leaves to its workers.
    let ranges = ShardRange::split(24..SHARDS, 3);
    assert_eq!(ranges, [24..37, 37..50, 50..64]);
}

/// A DNS message over UDP/IPv4 between 198.18.0.1:`port` and 198.18.0.2:53 (`answer`:
/// from the server), with DNS id `id`, asking for `name` A.
fn dns(port: u16, id: u16, answer: bool, name: &str) -> Vec<u8> {
    let flags: [u8; 2] = if answer { [0x81, 0x80] } else { [0x01, 0] };
    let mut dns = id.to_be_bytes().to_vec();
    dns.extend_from_slice(&flags);
    dns.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    udp(port, answer, &dns)
}

fn udp(port: u16, answer: bool, payload: &[u8]) -> Vec<u8> {
    let (client, server) = (([198, 18, 0, 1], port), ([198, 18, 0, 2], 53));
    if answer {
        crate::recorded::udp(server, client, payload)
    } else {
        crate::recorded::udp(client, server, payload)
    }
}

#[test]
fn dns_over_one_udp_socket_spreads_over_the_shards_and_pairs() {
    let mut router = Router::new();
    let mut shards = std::collections::HashSet::new();
    for id in 0..400u16 {
        let query = dns(5353, id, false, "app.test");
        let answer = dns(5353, id, true, "app.test");
        let q = router.route(0, &query, query.len() as u32);
        let (qs, qd) = (q.packet.map(|p| p.0), q.datagram);
        let a = router.route(0, &answer, answer.len() as u32);
        assert_eq!(a.packet.map(|p| p.0), qs, "query {id} and its answer");
        // One flow, numbered by the router datagram after datagram.
        let (qd, ad) = (qd.unwrap(), a.datagram.unwrap());
        assert_eq!((qd.flow_id, ad.flow_id), (1, 1));
        assert_eq!(
            (qd.number, ad.number),
            (2 * u32::from(id) + 1, 2 * u32::from(id) + 2)
        );
        shards.insert(qs);
    }
    assert!(
        shards.len() > SHARDS / 2,
        "one socket's queries spread over {} shards",
        shards.len()
    );
}

#[test]
fn taken_lists_go_back_to_their_engines() {
    let mut sharded = Sharded::default();
    let mut taken = TakenRows::new();
    for round in 0..2u16 {
        for id in 0..200u16 {
            for answer in [false, true] {
                let packet = dns(5353, round * 1000 + id, answer, "app.test");
                sharded.push(0, &packet, packet.len() as u32);
            }
        }
        sharded.take_rows(&mut taken);
        // Every query was answered: 200 calls, from the shards their ids went to.
        assert_eq!(taken.calls_len(), 200);
        assert_eq!(taken.calls().count(), 200);
        taken.clear();
        let kept = taken.spare_lists();
        assert!(kept > SHARDS / 2, "{kept} lists kept for their engines");
        sharded.give_back(&mut taken);
        assert_eq!(taken.spare_lists(), 0, "every list went back to its engine");
    }
    let mut last = TakenRows::new();
    let stats = sharded.finish_into(&mut last);
    assert_eq!((last.calls_len(), stats.packets), (0, 800));
}

/// `packets` (time, bytes) through one engine, and through the router and every shard.
fn alone_and_sharded(packets: &[(i64, Vec<u8>)]) -> (Output, Output) {
    let mut engine = Engine::new();
    let mut sharded = Sharded::default();
    for (t, p) in packets {
        engine.push(*t, p, p.len() as u32);
        sharded.push(*t, p, p.len() as u32);
    }
    (engine.finish(), sharded.finish())
}

/// A call's id, questions and outcome.
type DnsRow = (u64, u32, Vec<String>, Option<&'static str>, u16);

/// What DNS calls say, sorted (the row order depends on the shards).
fn dns_rows(calls: Vec<Call>) -> Vec<DnsRow> {
    let mut rows: Vec<DnsRow> = calls
        .into_iter()
        .map(|c| {
            (
                c.conn_id,
                c.index,
                c.dns_questions,
                c.error_type,
                c.status_code,
            )
        })
        .collect();
    rows.sort();
    rows
}

use crate::recorded::vxlan;

/// The IPv4 packet `whole` cut into two fragments (IPv4 id 0x99), the first carrying
/// `first` bytes (a multiple of 8) of its payload.
fn fragments(whole: &[u8], first: usize) -> [Vec<u8>; 2] {
    let payload = &whole[20..];
    let piece = |data: &[u8], offset: usize, more: bool| {
        let mut p = whole[..20].to_vec();
        p[2..4].copy_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x99u16.to_be_bytes());
        let field = (u16::from(more) << 13) | (offset / 8) as u16;
        p[6..8].copy_from_slice(&field.to_be_bytes());
        p.extend_from_slice(data);
        p
    };
    [
        piece(&payload[..first], 0, true),
        piece(&payload[first..], first, false),
    ]
}

/// A pod's DNS answer fragmented inside the overlay (its second fragment first) meets its
/// query in the shards as it does in one engine.
#[test]
fn fragments_inside_a_tunnel_are_put_together_before_routing() {
    let ms = 1_000_000i64;
    let mut packets = vec![(0, vxlan(&dns(6000, 42, false, "big.app.test")))];
    let [first, second] = fragments(&dns(6000, 42, true, "big.app.test"), 16);
    packets.push((ms, vxlan(&second)));
    packets.push((2 * ms, vxlan(&first)));
    // And more queries on the flow, answered whole.
    for id in 43..50u16 {
        let t = i64::from(id) * 10 * ms;
        packets.push((t, vxlan(&dns(6000, id, false, "app.test"))));
        packets.push((t + ms, vxlan(&dns(6000, id, true, "app.test"))));
    }
    let rows = |out: Output| (dns_rows(out.calls), out.stats.reassembled);
    let (alone, shards) = alone_and_sharded(&packets);
    let (alone, shards) = (rows(alone), rows(shards));
    assert_eq!(alone.0.len(), 8);
    assert!(alone.0.iter().all(|r| r.3.is_none()), "{:?}", alone.0);
    assert_eq!(alone.1, 1);
    assert_eq!(alone, shards);
}

#[test]
fn a_tunnel_packet_from_port_53_is_not_numbered_as_dns() {
    // VXLAN (flags 0x08) to 4789 from port 53: an Ethernet frame of IPv4 type whose
    // packet is junk (version 0).
    let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    vxlan.extend_from_slice(&[2; 12]);
    vxlan.extend_from_slice(&[0x08, 0x00]);
    vxlan.extend_from_slice(&[0; 20]);
    let mut p = udp(4789, true, &vxlan);
    // `udp(_, true, _)` sends from port 53 to the given port.
    assert_eq!(&p[20..24], &[0, 53, 0x12, 0xb5]);
    let mut router = Router::new();
    assert_eq!(router.route(0, &p, p.len() as u32).datagram, None);
    // The same datagram from any other port is no DNS either; one to port 53 is.
    p[21] = 54;
    assert_eq!(router.route(0, &p, p.len() as u32).datagram, None);
    let q = dns(4000, 1, false, "app.test");
    assert!(router.route(0, &q, q.len() as u32).datagram.is_some());
}

/// The calls of one resolver socket (answered and not, an answer without its query, a
/// datagram that is no DNS message, the flow idle long enough to start over) have the same
/// ids, names and outcomes from the shards as from one engine.
#[test]
fn shards_number_dns_calls_as_one_engine_does() {
    let second = 1_000_000_000i64;
    let mut packets = Vec::new();
    for id in 0..300u16 {
        let t = i64::from(id) * second / 10;
        packets.push((t, dns(7000, id, false, &format!("n{id}.app.test"))));
        if id % 7 != 0 {
            packets.push((
                t + 1_000_000,
                dns(7000, id, true, &format!("n{id}.app.test")),
            ));
        }
        if id % 50 == 0 {
            packets.push((t + 2_000_000, dns(7000, 60_000 + id, true, "orphan.test")));
            packets.push((t + 3_000_000, udp(7000, false, &[1, 2, 3])));
        }
    }
    // A resolver socket on a tunnel's port, whose server sends one datagram the engine
    // reads as a tunnel's (and its inner packet as junk): not a DNS message, so not counted.
    let mut junk_tunnel = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    junk_tunnel.extend_from_slice(&[2; 12]);
    junk_tunnel.extend_from_slice(&[0x08, 0x00]);
    junk_tunnel.extend_from_slice(&[0; 20]);
    for id in 0..5u16 {
        let t = 40 * second + i64::from(id) * second / 10;
        packets.push((t, dns(4789, id, false, "tunnel.test")));
        packets.push((t + 1_000_000, dns(4789, id, true, "tunnel.test")));
        if id == 2 {
            packets.push((t + 2_000_000, udp(4789, true, &junk_tunnel)));
        }
    }
    // Idle for more than two minutes (a sweep in between, which another socket's query
    // brings): the socket's next query starts a new flow.
    packets.push((200 * second, dns(7001, 1, false, "tick.test")));
    let later = 300 * second;
    for id in 0..20u16 {
        let t = later + i64::from(id) * second;
        packets.push((t, dns(7000, id, false, "again.test")));
        packets.push((t + 1_000_000, dns(7000, id, true, "again.test")));
    }
    let (alone, shards) = alone_and_sharded(&packets);
    let (alone, shards) = (dns_rows(alone.calls), dns_rows(shards.calls));
    assert_eq!(alone.len(), 300 + 6 + 5 + 1 + 20);
    assert_eq!(alone, shards);
    let ids: std::collections::HashSet<_> = alone.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(ids.len(), alone.len(), "call ids are unique");
    assert_eq!(
        ids.iter().filter(|(flow, _)| *flow != 1).count(),
        5 + 1 + 20
    );
}

#[test]
fn both_directions_of_a_flow_share_a_shard() {
    let packet = |src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16| {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    };
    let mut shards = std::collections::HashSet::new();
    for port in 10_000..10_200u16 {
        let a = packet([198, 18, 0, 1], [198, 18, 0, 2], port, 80);
        let b = packet([198, 18, 0, 2], [198, 18, 0, 1], 80, port);
        let mut router = Router::new();
        let sa = router.route(0, &a, 40).packet.map(|p| p.0);
        let sb = router.route(0, &b, 40).packet.map(|p| p.0);
        assert_eq!(sa, sb);
        shards.insert(sa);
    }
    assert!(
        shards.len() > SHARDS / 2,
        "flows spread over {} shards",
        shards.len()
    );
}

/// Every frame of the shared fixtures as (time, IP bytes), each fixture 1,000 s after the
/// last, so that they do not meet.
fn fixture_packets() -> Vec<(i64, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("shared fixtures at {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    let mut packets = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let Ok(frames) = crate::capture::frames(&std::fs::read(file).unwrap()) else {
            continue;
        };
        let Some(first) = frames.first().map(|(info, _)| info.ts_ns) else {
            continue;
        };
        for (info, data) in frames {
            if let Some(l3) = crate::capture::l3_of(info.linktype, &data) {
                let t = (n as i64 + 1) * 1_000_000_000_000 + (info.ts_ns - first).max(0);
                packets.push((t, l3.to_vec()));
            }
        }
    }
    packets
}

/// Rows in a canonical order (the shards' order is their own).
fn sorted_rows(out: &Output) -> (Vec<String>, Vec<String>) {
    let mut calls: Vec<String> = out.calls.iter().map(|c| format!("{c:?}")).collect();
    let mut conns: Vec<String> = out.conns.iter().map(|c| format!("{c:?}")).collect();
    calls.sort();
    conns.sort();
    (calls, conns)
}

/// Copies on several interfaces, views on both sides of a NAT and copies inside tunnels: the
/// router that counts copies gives the shards what one engine counting copies reads, so the
/// rows (and the views they name) are the same.
#[test]
fn the_router_counts_copies_and_joins_nat_views_as_one_engine_does() {
    let plain = fixture_packets();
    assert!(plain.len() > 1000, "{} fixture packets", plain.len());
    let recorded: Vec<(i64, Vec<u8>)> = crate::recorded::around_a_nat(&plain)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    let mut engine = Engine::new().count_copies_once();
    let mut sharded = Sharded::counting_copies_once(Limits::default());
    for (t, p) in &recorded {
        engine.push(*t, p, p.len() as u32);
        sharded.push(*t, p, p.len() as u32);
    }
    let (alone, shards) = (engine.finish(), sharded.finish());
    let (calls, conns) = sorted_rows(&alone);
    assert_eq!(sorted_rows(&shards), (calls.clone(), conns));
    let stats = |o: &Output| {
        let s = &o.stats;
        (s.duplicates, s.undecodable, s.dns_errors, s.http_errors)
    };
    assert_eq!(stats(&alone), stats(&shards));
    // Not a vacuous agreement: the copies were dropped, and views were joined.
    let mut once = Engine::new();
    for (t, p) in &plain {
        once.push(*t, p, p.len() as u32);
    }
    let once = once.finish();
    assert!(
        alone.stats.duplicates as usize >= 2 * plain.len(),
        "{:?}",
        alone.stats
    );
    let translated = alone.calls.iter().filter(|c| c.nat.is_some()).count();
    assert!(
        translated * 2 > once.calls.len() && alone.calls.len() >= once.calls.len() * 9 / 10,
        "{translated} of {} calls joined across the NAT; {} calls from the plain fixtures",
        alone.calls.len(),
        once.calls.len()
    );
}

/// The same with damaged packets (bytes flipped, cut short, headers garbled): whatever the
/// router makes of them, the shards agree with one engine.
#[test]
fn damaged_recordings_give_one_engines_rows_too() {
    let recorded = crate::recorded::around_a_nat(&fixture_packets());
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..4 {
        let mut engine = Engine::new().count_copies_once();
        let mut sharded = Sharded::counting_copies_once(Limits::default());
        for (t, p, _) in &recorded {
            let mut p = p.clone();
            match next() % 10 {
                // A byte anywhere, often in the headers.
                0 | 1 => {
                    let at =
                        (next() as usize) % p.len().min(if round % 2 == 0 { 64 } else { 4096 });
                    p[at] ^= (next() as u8) | 1;
                }
                2 => p.truncate((next() as usize) % (p.len() + 1)),
                _ => {}
            }
            let wire = p.len() as u32 + (next() % 3) as u32 * 100;
            engine.push(*t, &p, wire);
            sharded.push(*t, &p, wire);
        }
        let (alone, shards) = (engine.finish(), sharded.finish());
        assert_eq!(sorted_rows(&alone), sorted_rows(&shards), "round {round}");
        assert_eq!(
            alone.stats.duplicates, shards.stats.duplicates,
            "round {round}"
        );
        assert!(!alone.calls.is_empty());
    }
}
