//! Turning one raw perf sample (a [`PacketEventHeader`] plus frame bytes) into a packet row.
//!
//! The link-layer header is removed here so that `payload` always starts at the IP header, and
//! the IP/TCP/UDP header fields are parsed once (with etherparse, tolerant of the snaplen cut)
//! so that snapshot cuts and PCAP filters can prune on columns without touching payloads.

use std::{collections::HashMap, net::IpAddr, ops::Range};

use agent_common::{PACKET_EVENT_HEADER_BYTES, PacketEventHeader};
use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

use crate::clock::TaiToUtc;

/// One recorded packet, its payload held in the batch that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRow {
    /// Wall-clock time in nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    /// Interface index.
    pub ifindex: u32,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// Length of the packet from the IP header on, as it was on the wire (before the snaplen cut).
    pub wire_len: u32,
    /// cgroup v2 id of the local sending socket, when there is one.
    pub cgroup_id: Option<u64>,
    /// 4, 6, or 0 for non-IP frames (ARP and the like).
    pub l3: u8,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, ...); 0 for non-IP.
    pub ip_proto: u8,
    /// Source address; `None` for non-IP.
    pub src_ip: Option<IpAddr>,
    /// Destination address; `None` for non-IP.
    pub dst_ip: Option<IpAddr>,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...).
    pub tcp_flags: Option<u8>,
    /// TCP sequence number.
    pub tcp_seq: Option<u32>,
    /// TCP acknowledgment number.
    pub tcp_ack: Option<u32>,
    /// Where the kept bytes (IP header onwards, cut at snaplen) sit in the batch's payload buffer.
    pub payload: Range<u32>,
}

/// Rows decoded from one CPU's ring in one drain, in ring order.
#[derive(Debug, Default)]
pub struct PacketBatch {
    /// The rows.
    pub rows: Vec<PacketRow>,
    /// Concatenated payload bytes the rows point into.
    pub payload: Vec<u8>,
}

/// Spent batches kept for reuse, so that the MiB-sized payload buffers are not allocated and
/// freed hundreds of times a second (which fragments the heap and grows RSS).
#[derive(Clone, Default)]
pub struct BatchPool {
    spare: std::sync::Arc<std::sync::Mutex<Vec<PacketBatch>>>,
}

/// Batches the pool keeps at most.
const POOL_SIZE: usize = 8;

impl BatchPool {
    /// An empty batch, reusing a spent one's buffers when there is one.
    pub fn take(&self) -> PacketBatch {
        self.spare
            .lock()
            .ok()
            .and_then(|mut spare| spare.pop())
            .unwrap_or_default()
    }

    /// Returns a spent batch.
    pub fn give(&self, mut batch: PacketBatch) {
        batch.rows.clear();
        batch.payload.clear();
        if let Ok(mut spare) = self.spare.lock()
            && spare.len() < POOL_SIZE
        {
            spare.push(batch);
        }
    }
}

impl PacketBatch {
    /// The kept bytes of one row.
    pub fn payload_of(&self, row: &PacketRow) -> &[u8] {
        &self.payload[row.payload.start as usize..row.payload.end as usize]
    }
}

/// Why a sample could not be decoded (counted, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the event header.
    ShortHeader,
    /// The header promises more bytes than the sample holds.
    ShortFrame,
}

/// Everything decoding needs besides the sample: the clock offset, the snaplen and each
/// interface's link-header length.
#[derive(Clone, Debug)]
pub struct Decoder {
    /// TAI → UTC conversion.
    pub clock: TaiToUtc,
    /// Bytes kept from the IP header on.
    pub snaplen: u32,
    /// Link-header length per interface index; unknown interfaces are assumed Ethernet.
    pub l2_len: HashMap<u32, usize>,
}

impl Decoder {
    /// Decodes one sample (as the ring delivered it, trailing padding allowed) into `batch`.
    pub fn decode_into(&self, sample: &[u8], batch: &mut PacketBatch) -> Result<(), DecodeError> {
        let header_bytes = sample
            .get(..PACKET_EVENT_HEADER_BYTES)
            .ok_or(DecodeError::ShortHeader)?;
        let header = read_header(header_bytes);
        let frame = sample
            .get(PACKET_EVENT_HEADER_BYTES..PACKET_EVENT_HEADER_BYTES + header.cap_len as usize)
            .ok_or(DecodeError::ShortFrame)?;

        let mut l2 = self.l2_len.get(&header.ifindex).copied().unwrap_or(14);
        if l2 == 14 {
            // 802.1Q / 802.1ad tags that were not offloaded sit between the MACs and the type.
            while matches!(frame.get(l2 - 2..l2), Some([0x81, 0x00] | [0x88, 0xa8])) {
                l2 += 4;
            }
        }
        let l3 = frame.get(l2..).unwrap_or(&[]);
        let l3 = &l3[..l3.len().min(self.snaplen as usize)];
        let wire_len = header.frame_len.saturating_sub(l2 as u32);

        let start = batch.payload.len() as u32;
        batch.payload.extend_from_slice(l3);
        let end = batch.payload.len() as u32;

        let mut row = PacketRow {
            ts_ns: self.clock.utc_ns(header.ts_ns),
            ifindex: header.ifindex,
            direction: header.direction,
            wire_len,
            cgroup_id: (header.cgroup_id != 0).then_some(header.cgroup_id),
            l3: 0,
            ip_proto: 0,
            src_ip: None,
            dst_ip: None,
            src_port: None,
            dst_port: None,
            tcp_flags: None,
            tcp_seq: None,
            tcp_ack: None,
            payload: start..end,
        };
        parse_headers(l3, &mut row);
        batch.rows.push(row);
        Ok(())
    }
}

fn read_header(bytes: &[u8]) -> PacketEventHeader {
    let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
    PacketEventHeader {
        ts_ns: u64_at(0),
        cgroup_id: u64_at(8),
        ifindex: u32_at(16),
        frame_len: u32_at(20),
        cap_len: u32_at(24),
        protocol: u16::from_ne_bytes([bytes[28], bytes[29]]),
        direction: bytes[30],
        reserved: bytes[31],
    }
}

/// Fills the L3/L4 columns from the (possibly truncated) IP packet.
fn parse_headers(l3: &[u8], row: &mut PacketRow) {
    let Ok(packet) = LaxSlicedPacket::from_ip(l3) else {
        return;
    };
    match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            row.l3 = 4;
            row.ip_proto = h.protocol().0;
            row.src_ip = Some(IpAddr::V4(h.source_addr()));
            row.dst_ip = Some(IpAddr::V4(h.destination_addr()));
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            row.l3 = 6;
            row.ip_proto = ip.payload().ip_number.0;
            row.src_ip = Some(IpAddr::V6(h.source_addr()));
            row.dst_ip = Some(IpAddr::V6(h.destination_addr()));
        }
        _ => return,
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            row.src_port = Some(tcp.source_port());
            row.dst_port = Some(tcp.destination_port());
            row.tcp_seq = Some(tcp.sequence_number());
            row.tcp_ack = Some(tcp.acknowledgment_number());
            row.tcp_flags = tcp.slice().get(13).copied();
        }
        Some(TransportSlice::Udp(udp)) => {
            row.src_port = Some(udp.source_port());
            row.dst_port = Some(udp.destination_port());
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn sample(header: PacketEventHeader, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&header.ts_ns.to_ne_bytes());
        out.extend_from_slice(&header.cgroup_id.to_ne_bytes());
        out.extend_from_slice(&header.ifindex.to_ne_bytes());
        out.extend_from_slice(&header.frame_len.to_ne_bytes());
        out.extend_from_slice(&header.cap_len.to_ne_bytes());
        out.extend_from_slice(&header.protocol.to_ne_bytes());
        out.push(header.direction);
        out.push(0);
        out.extend_from_slice(frame);
        out.extend_from_slice(&[0; 4]); // ring padding
        out
    }

    fn decoder(snaplen: u32) -> Decoder {
        Decoder {
            clock: TaiToUtc::with_offset_ns(37_000_000_000),
            snaplen,
            l2_len: HashMap::from([(1, 14), (5, 0)]),
        }
    }

    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .ack(77);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        frame
    }

    #[test]
    fn decodes_tcp_over_ethernet() {
        let frame = tcp_frame(b"GET / HTTP/1.1\r\n\r\n");
        let header = PacketEventHeader {
            ts_ns: 40_000_000_123,
            cgroup_id: 0,
            ifindex: 1,
            frame_len: frame.len() as u32,
            cap_len: frame.len() as u32,
            protocol: 0x0008,
            direction: 1,
            reserved: 0,
        };
        let mut batch = PacketBatch::default();
        decoder(4096)
            .decode_into(&sample(header, &frame), &mut batch)
            .unwrap();
        let row = &batch.rows[0];
        assert_eq!(row.ts_ns, 3_000_000_123);
        assert_eq!(row.l3, 4);
        assert_eq!(row.ip_proto, 6);
        assert_eq!(row.src_ip, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(row.dst_port, Some(80));
        assert_eq!(row.tcp_seq, Some(1000));
        assert_eq!(row.tcp_ack, Some(77));
        assert_eq!(row.tcp_flags, Some(0x12));
        assert_eq!(row.cgroup_id, None);
        assert_eq!(row.wire_len as usize, frame.len() - 14);
        assert_eq!(batch.payload_of(row), &frame[14..]);
    }

    #[test]
    fn cuts_at_snaplen_and_keeps_header_fields() {
        let frame = tcp_frame(&[b'x'; 1000]);
        let header = PacketEventHeader {
            ts_ns: 1,
            cgroup_id: 42,
            ifindex: 1,
            frame_len: frame.len() as u32,
            cap_len: 200, // the kernel appended only 200 bytes
            protocol: 0x0008,
            direction: 0,
            reserved: 0,
        };
        let mut batch = PacketBatch::default();
        decoder(100)
            .decode_into(&sample(header, &frame[..200]), &mut batch)
            .unwrap();
        let row = &batch.rows[0];
        assert_eq!(batch.payload_of(row).len(), 100);
        assert_eq!(row.wire_len as usize, frame.len() - 14);
        assert_eq!(row.src_port, Some(40000));
        assert_eq!(row.cgroup_id, Some(42));
    }

    #[test]
    fn l3_device_and_garbage() {
        let frame = tcp_frame(b"hi");
        let ip_only = &frame[14..];
        let header = PacketEventHeader {
            ts_ns: 1,
            ifindex: 5,
            frame_len: ip_only.len() as u32,
            cap_len: ip_only.len() as u32,
            ..Default::default()
        };
        let mut batch = PacketBatch::default();
        let d = decoder(4096);
        d.decode_into(&sample(header, ip_only), &mut batch).unwrap();
        assert_eq!(batch.rows[0].l3, 4);
        // Garbage after an Ethernet header: kept as a non-IP row.
        let header = PacketEventHeader {
            ifindex: 1,
            frame_len: 20,
            cap_len: 20,
            ..Default::default()
        };
        d.decode_into(&sample(header, &[0xEE; 20]), &mut batch)
            .unwrap();
        assert_eq!(batch.rows[1].l3, 0);
        assert_eq!(batch.payload_of(&batch.rows[1]).len(), 6);
        // Lies about its length.
        let header = PacketEventHeader {
            cap_len: 5000,
            ..header
        };
        assert_eq!(
            d.decode_into(&sample(header, &[0; 20]), &mut batch),
            Err(DecodeError::ShortFrame)
        );
        assert_eq!(
            d.decode_into(&[0; 8], &mut batch),
            Err(DecodeError::ShortHeader)
        );
    }
}
