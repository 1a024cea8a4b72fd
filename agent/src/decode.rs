//! Turning one raw perf sample (a [`PacketEventHeader`] plus frame bytes) into a packet row.
//!
//! The link-layer header is removed here so that `payload` always starts at the IP header, and
//! the IP/TCP/UDP header fields are read once ([`crate::parse`], tolerant of the snaplen cut)
//! so that snapshot cuts and PCAP filters can prune on columns without touching payloads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use remora_agent_common::{PACKET_EVENT_HEADER_BYTES, PacketEventHeader};

use crate::{
    clock::TaiToUtc,
    parse::{Headers, Transport, parse},
};

/// One recorded packet, its payload held in the batch that owns it.
///
/// Plain data with no heap parts, for tools and tests that handle rows one by one (the
/// recorder itself parses samples straight into its pages, see [`PacketMeta`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRow {
    /// Wall-clock time in nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    /// cgroup v2 id of the local sending socket; 0 when there is none (usual on ingress).
    pub cgroup_id: u64,
    /// Interface index.
    pub ifindex: u32,
    /// Length of the packet from the IP header on, as it was on the wire (before the snaplen cut).
    pub wire_len: u32,
    /// Where the kept bytes (IP header onwards, cut at snaplen) start in the batch's payload.
    pub payload_start: u32,
    /// How many bytes were kept.
    pub payload_len: u32,
    /// 0 ingress, 1 egress.
    pub direction: u8,
    /// The IP and TCP/UDP header fields.
    pub headers: Headers,
}

impl PacketRow {
    /// A row with only its time, interface and length set (tests and synthetic input).
    pub fn new(ts_ns: i64, ifindex: u32, wire_len: u32) -> Self {
        Self {
            ts_ns,
            cgroup_id: 0,
            ifindex,
            wire_len,
            payload_start: 0,
            payload_len: 0,
            direction: 0,
            headers: Headers::default(),
        }
    }

    /// The cgroup id, when there is one.
    pub fn cgroup(&self) -> Option<u64> {
        (self.cgroup_id != 0).then_some(self.cgroup_id)
    }

    /// Source address; `None` for non-IP.
    pub fn src_ip(&self) -> Option<IpAddr> {
        ip_of(self.headers.l3, &self.headers.src_ip)
    }

    /// Destination address; `None` for non-IP.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        ip_of(self.headers.l3, &self.headers.dst_ip)
    }

    /// TCP/UDP ports (source, destination).
    pub fn ports(&self) -> Option<(u16, u16)> {
        (self.headers.transport != Transport::None)
            .then_some((self.headers.src_port, self.headers.dst_port))
    }

    /// TCP flags, sequence and acknowledgment numbers.
    pub fn tcp(&self) -> Option<(u8, u32, u32)> {
        (self.headers.transport == Transport::Tcp).then_some((
            self.headers.tcp_flags,
            self.headers.tcp_seq,
            self.headers.tcp_ack,
        ))
    }
}

/// The address a header sink's `u128` stands for (its little-endian bytes).
pub fn ip_of(l3: u8, addr: &u128) -> Option<IpAddr> {
    let bytes = addr.to_le_bytes();
    match l3 {
        4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

/// What the event header says about a packet (everything but the header fields of the
/// packet itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    /// Wall-clock time in nanoseconds since the Unix epoch (UTC).
    pub ts_ns: i64,
    /// cgroup v2 id of the local sending socket; 0 when there is none.
    pub cgroup_id: u64,
    /// Interface index.
    pub ifindex: u32,
    /// Length from the IP header on, before the snaplen cut.
    pub wire_len: u32,
    /// 0 ingress, 1 egress.
    pub direction: u8,
}

/// Rows decoded from one CPU's ring in one drain, in ring order.
#[derive(Debug, Default)]
pub struct PacketBatch {
    /// The rows.
    pub rows: Vec<PacketRow>,
    /// Concatenated payload bytes the rows point into.
    pub payload: Vec<u8>,
}

impl PacketBatch {
    /// The kept bytes of one row.
    pub fn payload_of(&self, row: &PacketRow) -> &[u8] {
        let start = row.payload_start as usize;
        &self.payload[start..start + row.payload_len as usize]
    }

    /// Appends a row and its kept bytes (tests and synthetic input).
    pub fn push(&mut self, mut row: PacketRow, payload: &[u8]) {
        row.payload_start = self.payload.len() as u32;
        row.payload_len = payload.len() as u32;
        self.payload.extend_from_slice(payload);
        self.rows.push(row);
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

/// Link-header length of each interface, looked up once per packet.
///
/// A table indexed by ifindex rather than a hash map: the lookup is on the hot path, and
/// interface indexes are small, dense numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkHeaders {
    /// Link-header length + 1 per ifindex; 0 = unknown (assumed Ethernet).
    by_ifindex: Vec<u8>,
}

/// Interface indexes above this are looked up as unknown (Ethernet) rather than grow the table.
const MAX_TABLE_IFINDEX: u32 = 1 << 20;

impl LinkHeaders {
    /// Sets the link-header length of one interface.
    pub fn set(&mut self, ifindex: u32, len: u8) {
        if ifindex >= MAX_TABLE_IFINDEX {
            return;
        }
        let at = ifindex as usize;
        if self.by_ifindex.len() <= at {
            self.by_ifindex.resize(at + 1, 0);
        }
        self.by_ifindex[at] = len.saturating_add(1);
    }

    /// The link-header length of `ifindex`; 14 (Ethernet) when unknown.
    pub fn get(&self, ifindex: u32) -> usize {
        match self.by_ifindex.get(ifindex as usize) {
            Some(&n) if n > 0 => usize::from(n - 1),
            _ => 14,
        }
    }
}

impl FromIterator<(u32, usize)> for LinkHeaders {
    fn from_iter<I: IntoIterator<Item = (u32, usize)>>(iter: I) -> Self {
        let mut table = Self::default();
        for (ifindex, len) in iter {
            table.set(ifindex, len.min(254) as u8);
        }
        table
    }
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
    pub l2_len: LinkHeaders,
}

impl Decoder {
    /// Splits one sample (as the ring delivered it, trailing padding allowed) into what its
    /// event header says and the kept bytes (from the IP header on, cut at the snaplen),
    /// which borrow the sample.
    #[inline]
    pub fn split<'a>(&self, sample: &'a [u8]) -> Result<(PacketMeta, &'a [u8]), DecodeError> {
        let header_bytes = sample
            .get(..PACKET_EVENT_HEADER_BYTES)
            .ok_or(DecodeError::ShortHeader)?;
        let header = read_header(header_bytes);
        let frame = sample
            .get(PACKET_EVENT_HEADER_BYTES..PACKET_EVENT_HEADER_BYTES + header.cap_len as usize)
            .ok_or(DecodeError::ShortFrame)?;

        let mut l2 = self.l2_len.get(header.ifindex);
        if l2 == 14 {
            // 802.1Q / 802.1ad tags that were not offloaded sit between the MACs and the type.
            while matches!(frame.get(l2 - 2..l2), Some([0x81, 0x00] | [0x88, 0xa8])) {
                l2 += 4;
            }
        }
        let l3 = frame.get(l2..).unwrap_or(&[]);
        let l3 = &l3[..l3.len().min(self.snaplen as usize)];
        let meta = PacketMeta {
            ts_ns: self.clock.utc_ns(header.ts_ns),
            cgroup_id: header.cgroup_id,
            ifindex: header.ifindex,
            wire_len: header.frame_len.saturating_sub(l2 as u32),
            direction: header.direction,
        };
        Ok((meta, l3))
    }

    /// Decodes one sample into a row and its kept bytes.
    pub fn decode<'a>(&self, sample: &'a [u8]) -> Result<(PacketRow, &'a [u8]), DecodeError> {
        let (meta, l3) = self.split(sample)?;
        let row = PacketRow {
            ts_ns: meta.ts_ns,
            cgroup_id: meta.cgroup_id,
            ifindex: meta.ifindex,
            wire_len: meta.wire_len,
            payload_start: 0,
            payload_len: l3.len() as u32,
            direction: meta.direction,
            headers: parse(l3),
        };
        Ok((row, l3))
    }

    /// Decodes one sample into `batch`.
    pub fn decode_into(&self, sample: &[u8], batch: &mut PacketBatch) -> Result<(), DecodeError> {
        let (row, payload) = self.decode(sample)?;
        batch.push(row, payload);
        Ok(())
    }
}

#[inline]
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
            l2_len: [(1, 14), (5, 0)].into_iter().collect(),
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
        assert_eq!(row.headers.l3, 4);
        assert_eq!(row.headers.ip_proto, 6);
        assert_eq!(row.src_ip(), Some("198.18.0.1".parse().unwrap()));
        assert_eq!(row.ports(), Some((40000, 80)));
        assert_eq!(row.tcp(), Some((0x12, 1000, 77)));
        assert_eq!(row.cgroup(), None);
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
        assert_eq!(row.ports(), Some((40000, 80)));
        assert_eq!(row.cgroup(), Some(42));
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
        assert_eq!(batch.rows[0].headers.l3, 4);
        // Garbage after an Ethernet header: kept as a non-IP row.
        let header = PacketEventHeader {
            ifindex: 1,
            frame_len: 20,
            cap_len: 20,
            ..Default::default()
        };
        d.decode_into(&sample(header, &[0xEE; 20]), &mut batch)
            .unwrap();
        assert_eq!(batch.rows[1].headers.l3, 0);
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
