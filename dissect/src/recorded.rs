//! Traffic as the recorder records it around a Service, made from plain packets: for the tests
//! and benchmarks of what counts copies once ([`crate::Engine::count_copies_once`],
//! [`crate::Router::counting_copies_once`]) when no cluster is at hand.
//!
//! Every flow's server is taken to be a Service whose backend pod is on another node, reached
//! through kube-proxy's DNAT on the client's node and a VXLAN overlay between the nodes:
//! - the client's node (0) records each packet on the client pod's veth as the client sees it
//!   (the Service's address), again on a bridge (TTL one lower), and on the uplink inside VXLAN
//!   as the backend sees it (the pod's address, after DNAT);
//! - the server's node (1) records the same VXLAN packet on its uplink, and the pod's view on
//!   the pod's veth.
//!
//! Requests reach the client's node first, replies the server's. IPv6 packets and packets of no
//! recognised server are only copied on the bridge.

/// A packet (time, IP bytes) and the node that recorded it (0: the client's, 1: the server's).
pub type RecordedPacket = (i64, Vec<u8>, usize);

/// Where the pod behind a Service is: another address in 198.18.200.0/24, another port.
fn pod(service: ([u8; 4], u16)) -> ([u8; 4], u16) {
    let (ip, port) = service;
    ([198, 18, 200, ip[3]], port.wrapping_add(1000))
}

/// How far apart the copies of one packet are recorded.
const HOP_NS: i64 = 10_000;

/// `packets` (time, IP bytes), in time order, as two nodes record them around a Service (see
/// the module's docs), in time order.
pub fn around_a_nat(packets: &[(i64, Vec<u8>)]) -> Vec<RecordedPacket> {
    // Servers: whoever received a SYN without ACK, and DNS's port.
    let mut servers = std::collections::HashSet::new();
    for (_, p) in packets {
        let ihl = usize::from(p.first().map_or(0, |b| b & 0x0f)) * 4;
        let syn_only = p.get(9) == Some(&6) && p.get(ihl + 13).is_some_and(|f| f & 0x12 == 0x02);
        if let Some(dst) = endpoint_at(p, DST).filter(|d| syn_only || d.1 == 53) {
            servers.insert(dst);
        }
    }
    let mut out = Vec::new();
    for (t, p) in packets {
        let t = *t;
        let mut bridged = p.clone();
        match p.first().map(|b| b >> 4) {
            Some(4) if bridged.len() > 8 => bridged[8] = bridged[8].wrapping_sub(1),
            Some(6) if bridged.len() > 7 => bridged[7] = bridged[7].wrapping_sub(1),
            _ => {}
        }
        let to_server = endpoint_at(p, DST).is_some_and(|d| servers.contains(&d));
        let from_server = endpoint_at(p, SRC).is_some_and(|s| servers.contains(&s));
        let pod_view = match (to_server, from_server) {
            (true, _) => translated(p, DST),
            (_, true) => translated(p, SRC),
            _ => None,
        };
        let Some(pod_view) = pod_view else {
            out.push((t, p.clone(), 0));
            out.push((t + HOP_NS, bridged, 0));
            continue;
        };
        let tunnelled = vxlan(&pod_view);
        if to_server {
            // Client pod, bridge, DNAT, uplink; then the server's uplink and pod.
            out.push((t, p.clone(), 0));
            out.push((t + HOP_NS, bridged, 0));
            out.push((t + 2 * HOP_NS, tunnelled.clone(), 0));
            out.push((t + 3 * HOP_NS, tunnelled, 1));
            out.push((t + 4 * HOP_NS, pod_view, 1));
        } else {
            // The reply: server pod, uplink; the client's uplink, un-DNAT, bridge, pod.
            out.push((t - 4 * HOP_NS, pod_view, 1));
            out.push((t - 3 * HOP_NS, tunnelled.clone(), 1));
            out.push((t - 2 * HOP_NS, tunnelled, 0));
            out.push((t - HOP_NS, bridged, 0));
            out.push((t, p.clone(), 0));
        }
    }
    out.sort_by_key(|(t, ..)| *t);
    out
}

/// Offsets of the IPv4 source and destination addresses.
const SRC: usize = 12;
const DST: usize = 16;

/// The IPv4 TCP or UDP endpoint at `at` ([`SRC`] or [`DST`]) of `p`.
fn endpoint_at(p: &[u8], at: usize) -> Option<([u8; 4], u16)> {
    if p.first()? >> 4 != 4 || !matches!(p.get(9)?, 6 | 17) {
        return None;
    }
    let port_at = port_offset(p, at)?;
    Some((
        p.get(at..at + 4)?.try_into().ok()?,
        u16::from_be_bytes([*p.get(port_at)?, *p.get(port_at + 1)?]),
    ))
}

fn port_offset(p: &[u8], at: usize) -> Option<usize> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    Some(ihl + if at == SRC { 0 } else { 2 })
}

/// `p` with its endpoint at `at` moved to the pod behind it.
fn translated(p: &[u8], at: usize) -> Option<Vec<u8>> {
    let (ip, port) = pod(endpoint_at(p, at)?);
    let port_at = port_offset(p, at)?;
    let mut copy = p.to_vec();
    copy.get_mut(at..at + 4)?.copy_from_slice(&ip);
    copy.get_mut(port_at..port_at + 2)?
        .copy_from_slice(&port.to_be_bytes());
    Some(copy)
}

/// `inner` inside VXLAN between the two nodes (198.19.0.1 → 198.19.0.2:4789).
pub fn vxlan(inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
    payload.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
    payload.extend_from_slice(inner);
    udp(([198, 19, 0, 1], 50_000), ([198, 19, 0, 2], 4789), &payload)
}

/// An IPv4 UDP datagram from `src` to `dst` (address, port) carrying `payload`: TTL 64, don't
/// fragment, IPv4 ID and checksums 0.
pub fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.0);
    p.extend_from_slice(&dst.0);
    p.extend_from_slice(&src.1.to_be_bytes());
    p.extend_from_slice(&dst.1.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}
