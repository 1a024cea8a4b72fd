//! A call to a Service's ClusterIP, recorded before and after kube-proxy's DNAT (the client
//! pod's veth, then the server pod's), is one call that names both views. The live counterpart
//! (nftables DNAT between network namespaces, recorded by the agent) is in bpf-tests.

use std::net::IpAddr;

use remora_dissect::{Endpoint, Engine, Output};

const ACK: u8 = 0x10;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

fn ep(ip: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        ip: IpAddr::from(ip),
        port,
    }
}

/// A TCP/IPv4 segment; `ip_id` is what the sender chose and NAT keeps; `tcp` is
/// (seq, ack, flags).
fn segment(
    (src, dst): (Endpoint, Endpoint),
    ip_id: u16,
    ttl: u8,
    (seq, ack, flags): (u32, u32, u8),
    payload: &[u8],
) -> Vec<u8> {
    let total = (40 + payload.len()) as u16;
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ip_id.to_be_bytes());
    p.extend_from_slice(&[0x40, 0, ttl, 6, 0x11, 0x22]);
    for e in [src, dst] {
        if let IpAddr::V4(ip) = e.ip {
            p.extend_from_slice(&ip.octets());
        }
    }
    p.extend_from_slice(&src.port.to_be_bytes());
    p.extend_from_slice(&dst.port.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    // The transport checksum differs between the views, as NAT recomputes it.
    let checksum = (u16::from(ttl) << 8) | u16::from(dst.port as u8);
    p.extend_from_slice(&[0x50, flags, 0xff, 0xff]);
    p.extend_from_slice(&checksum.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

const CLIENT: ([u8; 4], u16) = ([198, 18, 1, 2], 40000);
const SERVICE: ([u8; 4], u16) = ([198, 19, 0, 10], 80);
const POD: ([u8; 4], u16) = ([198, 18, 3, 2], 8080);

/// One HTTP exchange as both views record it: client → server packets are seen before DNAT
/// first, server → client packets after it first. `skip` leaves out the listed copies (index
/// of the packet, view) as a lossy interface would.
fn recorded(engine: Engine, skip: &[(usize, &str)]) -> Output {
    let (client, service, pod) = (
        ep(CLIENT.0, CLIENT.1),
        ep(SERVICE.0, SERVICE.1),
        ep(POD.0, POD.1),
    );
    let request = b"GET /cart HTTP/1.1\r\nHost: checkout\r\n\r\n";
    let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let (c, s) = (1000u32, 5000u32);
    let rq = request.len() as u32;
    let rs = response.len() as u32;
    // (from client, seq, ack, flags, payload)
    let exchange: [(bool, u32, u32, u8, &[u8]); 7] = [
        (true, c, 0, SYN, b""),
        (false, s, c + 1, SYN | ACK, b""),
        (true, c + 1, s + 1, ACK, b""),
        (true, c + 1, s + 1, PSH | ACK, request),
        (false, s + 1, c + 1 + rq, PSH | ACK, response),
        (true, c + 1 + rq, s + 1 + rs, FIN | ACK, b""),
        (false, s + 1 + rs, c + 2 + rq, FIN | ACK, b""),
    ];
    let mut engine = engine;
    let mut ts = 1_700_000_000_000_000_000i64;
    for (i, (from_client, seq, ack, flags, payload)) in exchange.into_iter().enumerate() {
        let id = 100 + i as u16;
        let pre = if from_client {
            segment((client, service), id, 64, (seq, ack, flags), payload)
        } else {
            segment((service, client), id, 63, (seq, ack, flags), payload)
        };
        let post = if from_client {
            segment((client, pod), id, 63, (seq, ack, flags), payload)
        } else {
            segment((pod, client), id, 64, (seq, ack, flags), payload)
        };
        let order = if from_client {
            [("pre", pre), ("post", post)]
        } else {
            [("post", post), ("pre", pre)]
        };
        for (view, packet) in order {
            ts += 20_000;
            if !skip.contains(&(i, view)) {
                engine.push(ts, &packet, packet.len() as u32);
            }
        }
    }
    engine.finish()
}

#[test]
fn both_views_of_a_dnat_connection_are_one_call_naming_the_backend() {
    let out = recorded(Engine::new().count_copies_once(), &[]);
    assert_eq!(out.calls.len(), 1, "{:#?}", out.calls);
    assert_eq!(out.conns.len(), 1, "{:#?}", out.conns);
    let call = &out.calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str(), call.status_code),
        ("GET", "/cart", 200)
    );
    assert_eq!(call.src, ep(CLIENT.0, CLIENT.1));
    assert_eq!(
        call.dst,
        ep(SERVICE.0, SERVICE.1),
        "the view recorded first"
    );
    let nat = call.nat.expect("the other view");
    assert_eq!(
        (nat.src, nat.dst),
        (ep(CLIENT.0, CLIENT.1), ep(POD.0, POD.1))
    );
    assert_eq!(out.conns[0].nat, Some(nat));
    assert_eq!(out.conns[0].close, "fin");
    assert_eq!(
        out.conns[0].retransmissions,
        [0, 0],
        "copies are not retransmissions"
    );
    assert_eq!(out.stats.duplicates, 7);
}

#[test]
fn a_copy_missing_on_one_side_is_filled_from_the_other() {
    // The request is lost before DNAT and the response after it: each survives in one view.
    let out = recorded(
        Engine::new().count_copies_once(),
        &[(3, "pre"), (4, "post")],
    );
    assert_eq!(out.calls.len(), 1, "{:#?}", out.calls);
    let call = &out.calls[0];
    assert_eq!(
        (call.path.as_str(), call.status_code, call.error_type),
        ("/cart", 200, None)
    );
    assert_eq!(out.conns[0].lost_segments, [0, 0]);
}

#[test]
fn a_capture_file_is_read_as_it_is() {
    // As tshark: without the recorder's copies-once mode, the two views are two connections.
    let out = recorded(Engine::new(), &[]);
    assert_eq!(out.calls.len(), 2);
    assert!(out.calls.iter().all(|c| c.nat.is_none()));
}
