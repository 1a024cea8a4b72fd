//! IPv4/IPv6, TCP and UDP headers of a packet that may be cut at snaplen. Lengths on the wire
//! come from the headers (or the recorded wire length for BIG TCP), so that bytes the capture
//! cut are known as a count even though they are missing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The network layer of a packet.
#[derive(Debug, Clone)]
pub struct Ip<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol number.
    pub proto: u8,
    /// Captured transport bytes.
    pub payload: &'a [u8],
    /// Transport length on the wire (≥ `payload.len()` when the capture cut the packet).
    pub payload_wire_len: u32,
    /// Set for a fragment of a larger datagram.
    pub fragment: Option<Fragment>,
}

/// Tunnels inside tunnels followed at most this deep by dissection (the engine, and the router
/// that must read packets as the engine does): bounded, so crafted nesting cannot recurse deeply.
pub const MAX_TUNNEL_DEPTH: u8 = 3;

impl<'a> Ip<'a> {
    /// The packet a tunnel carries ([`decapsulate`]) and its length on the wire; `None` when
    /// this packet is not a tunnel's.
    pub fn tunnelled(&self) -> Option<(&'a [u8], u32)> {
        let inner = decapsulate(self.proto, self.payload)?;
        let wire = self
            .payload_wire_len
            .saturating_sub((self.payload.len() - inner.len()) as u32);
        Some((inner, wire))
    }
}

/// Where a fragment belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Identification (IPv4: 16 bits; IPv6: 32 bits).
    pub id: u32,
    /// Byte offset of this fragment's payload in the datagram.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// Parses an IP packet; `wire_len` is its length on the wire from the IP header on.
pub fn ip(l3: &[u8], wire_len: u32) -> Option<Ip<'_>> {
    match l3.first()? >> 4 {
        4 => {
            let ihl = usize::from(l3.first()? & 0x0F) * 4;
            if ihl < 20 || l3.len() < ihl {
                return None;
            }
            let total = u32::from(u16::from_be_bytes([l3[2], l3[3]]));
            // Total length 0: an IPv4 BIG TCP super-packet; its length is the recorded one.
            let total = if total == 0 { wire_len } else { total };
            let flags_frag = u16::from_be_bytes([l3[6], l3[7]]);
            let end = (total as usize).min(l3.len()).max(ihl);
            Some(Ip {
                src: IpAddr::V4(Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15])),
                dst: IpAddr::V4(Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19])),
                proto: l3[9],
                payload: &l3[ihl..end],
                payload_wire_len: total.saturating_sub(ihl as u32),
                fragment: (flags_frag & 0x3FFF != 0).then(|| Fragment {
                    id: u32::from(u16::from_be_bytes([l3[4], l3[5]])),
                    offset: u32::from(flags_frag & 0x1FFF) * 8,
                    more: flags_frag & 0x2000 != 0,
                }),
            })
        }
        6 => {
            if l3.len() < 40 {
                return None;
            }
            let plen = u32::from(u16::from_be_bytes([l3[4], l3[5]]));
            let plen = if plen == 0 {
                wire_len.saturating_sub(40)
            } else {
                plen
            };
            let src: [u8; 16] = l3[8..24].try_into().ok()?;
            let dst: [u8; 16] = l3[24..40].try_into().ok()?;
            // Walk the common extension headers to the transport header.
            let (mut next, mut at) = (l3[6], 40usize);
            let mut fragment = None;
            while matches!(next, 0 | 43 | 44 | 60) {
                let h = l3.get(at..at + 8)?;
                if next == 44 {
                    let off = u16::from_be_bytes([h[2], h[3]]);
                    fragment = Some(Fragment {
                        id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                        offset: u32::from(off >> 3) * 8,
                        more: off & 1 != 0,
                    });
                }
                let len = if next == 44 {
                    8
                } else {
                    (usize::from(h[1]) + 1) * 8
                };
                next = h[0];
                at += len;
            }
            let end = (40 + plen as usize).min(l3.len()).max(at.min(l3.len()));
            Some(Ip {
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                proto: next,
                payload: l3.get(at..end)?,
                payload_wire_len: (plen + 40).saturating_sub(at as u32),
                fragment,
            })
        }
        _ => None,
    }
}

/// A TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Tcp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flags byte.
    pub flags: u8,
    /// Receive window as sent (not scaled).
    pub window: u16,
    /// Captured payload.
    pub payload: &'a [u8],
    /// Payload length on the wire.
    pub payload_wire_len: u32,
}

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Parses a TCP header; `wire_len` is the transport length on the wire.
pub fn tcp(seg: &[u8], wire_len: u32) -> Option<Tcp<'_>> {
    let off = usize::from(seg.get(12)? >> 4) * 4;
    if off < 20 || seg.len() < 20 {
        return None;
    }
    let u32_at = |i: usize| u32::from_be_bytes([seg[i], seg[i + 1], seg[i + 2], seg[i + 3]]);
    Some(Tcp {
        src_port: u16::from_be_bytes([seg[0], seg[1]]),
        dst_port: u16::from_be_bytes([seg[2], seg[3]]),
        seq: u32_at(4),
        ack: u32_at(8),
        flags: seg[13],
        window: u16::from_be_bytes([seg[14], seg[15]]),
        payload: seg.get(off..).unwrap_or(&[]),
        payload_wire_len: wire_len.saturating_sub(off as u32),
    })
}

/// A UDP datagram: (source port, destination port, payload).
pub fn udp(seg: &[u8]) -> Option<(u16, u16, &[u8])> {
    let h = seg.get(..8)?;
    let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let end = if len >= 8 {
        len.min(seg.len())
    } else {
        seg.len()
    };
    Some((
        u16::from_be_bytes([h[0], h[1]]),
        u16::from_be_bytes([h[2], h[3]]),
        &seg[8..end],
    ))
}

/// The inner IP packet of a tunnel: IP-in-IP (4, 41), GRE (47), or UDP to the VXLAN (4789,
/// 8472), VXLAN-GPE (4790) or Geneve (6081) ports. `None` when the payload is not a tunnel.
pub fn decapsulate(proto: u8, payload: &[u8]) -> Option<&[u8]> {
    match proto {
        4 | 41 => Some(payload),
        47 => {
            let flags = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
            let ptype = u16::from_be_bytes([*payload.get(2)?, *payload.get(3)?]);
            // Optional checksum, key and sequence fields follow the 4-byte header.
            let len = 4 + 4 * usize::from(
                (flags & 0x8000 != 0) as u8
                    + (flags & 0x2000 != 0) as u8
                    + (flags & 0x1000 != 0) as u8,
            );
            inner(ptype, payload.get(len..)?)
        }
        17 => {
            // Tunnel endpoints normally use the port as destination; replies in some setups
            // (and synthetic captures) come from it. The inner packet must still parse.
            let (sport, dport, data) = udp(payload)?;
            const TUNNEL_PORTS: [u16; 4] = [4789, 8472, 4790, 6081];
            let port = if TUNNEL_PORTS.contains(&dport) {
                dport
            } else {
                sport
            };
            match port {
                4789 | 8472 if data.first()? & 0x08 != 0 => inner(0x6558, data.get(8..)?),
                4790 => {
                    let next = match data.get(3)? {
                        1 => 0x0800,
                        2 => 0x86DD,
                        3 => 0x6558,
                        _ => return None,
                    };
                    inner(next, data.get(8..)?)
                }
                6081 => {
                    let opts = usize::from(data.first()? & 0x3F) * 4;
                    let ptype = u16::from_be_bytes([*data.get(2)?, *data.get(3)?]);
                    inner(ptype, data.get(8 + opts..)?)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The IP packet behind an EtherType: IPv4/IPv6 directly, or inside an Ethernet frame (0x6558,
/// transparent Ethernet bridging) with optional VLAN tags.
fn inner(ethertype: u16, data: &[u8]) -> Option<&[u8]> {
    match ethertype {
        0x0800 | 0x86DD => Some(data),
        0x6558 => crate::capture::l3_of(1, data),
        _ => None,
    }
}
