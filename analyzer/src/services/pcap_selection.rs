//! Which packets a filtered PCAP export keeps: a libpcap `bpf_filter`, and the packets of the
//! calls a KFL filter matches.
//!
//! A call's packets are those of its flow: for TCP the whole connection it travelled on (from
//! its first to its last packet, handshake and close included, so Wireshark can follow the
//! stream), for UDP the packets of the call's 4-tuple from its request to its response. Flows
//! are keyed by node and by both endpoints in either direction; tunnelled packets (VXLAN,
//! Geneve, GRE, IP-in-IP) are matched on their inner packet, as dissection reads them.

use std::{collections::HashMap, net::IpAddr};

use datafusion::arrow::{
    array::{Array, ArrayRef, AsArray},
    compute::cast,
    datatypes::{DataType, Int64Type, UInt16Type},
};
use remora_dissect::net;

use super::{
    bpf_filter::BpfFilter,
    sql::{self, Limits, Sources, SqlError},
};

/// The most flows a KFL selection may name; past it the filter must be narrowed.
pub const MAX_FLOWS: usize = 1_000_000;

/// Nesting of tunnels followed, as in dissection.
const MAX_TUNNEL_DEPTH: u8 = 4;

/// Why a selection could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// The KFL or its query failed.
    #[error(transparent)]
    Query(#[from] SqlError),
    /// Too many flows matched.
    #[error(
        "the kfl filter matches more than {MAX_FLOWS} flows; narrow it (a time range, a \
         service, a status) or export without kfl"
    )]
    TooMany,
    /// A column came back with an unexpected type (a bug).
    #[error("kfl selection: unexpected column type for `{0}`")]
    Column(&'static str),
}

/// Protocol and both endpoints, lower first, so both directions share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl FlowKey {
    fn new(proto: u8, x: (IpAddr, u16), y: (IpAddr, u16)) -> Self {
        let (a, b) = if x <= y { (x, y) } else { (y, x) };
        Self { proto, a, b }
    }
}

/// The flows of the calls a KFL filter matched: per node and flow, the time ranges to keep.
#[derive(Debug, Default)]
pub struct FlowSet {
    /// Node name → its number in the export.
    nodes: HashMap<String, usize>,
    /// (node number, flow) → inclusive ns ranges.
    flows: HashMap<(usize, FlowKey), Vec<(i64, i64)>>,
    /// Calls that matched.
    pub calls: u64,
}

impl FlowSet {
    /// Runs `kfl` over the calls of the dissection in `sources` and keeps their flows, for an
    /// export whose interfaces are `nodes` in this order.
    pub async fn from_kfl(
        sources: &Sources,
        kfl: &str,
        nodes: &[String],
    ) -> Result<Self, SelectionError> {
        let limits = Limits {
            max_rows: MAX_FLOWS + 1,
            ..Limits::default()
        };
        let ctx = sql::session(sources, &limits).await?;
        let filter = kfl.replace('\'', "''");
        // TCP: one range per connection, from `conns`; UDP (and a TCP call whose connection is
        // missing): the call's own span, its latency (none when unanswered) rounded up to the next
        // microsecond.
        let statement = format!(
            "WITH k AS (SELECT * FROM kfl('{filter}')) \
             SELECT CAST(k.node AS VARCHAR) AS node, CAST(k.transport AS VARCHAR) AS transport, \
                    CAST(k.src_ip AS VARCHAR) AS src_ip, k.src_port, \
                    CAST(k.dst_ip AS VARCHAR) AS dst_ip, k.dst_port, \
                    COALESCE(CAST(c.first_ts AS BIGINT), CAST(k.timestamp AS BIGINT)) AS range_start, \
                    COALESCE(CAST(c.last_ts AS BIGINT), \
                             CAST(k.timestamp AS BIGINT) + (COALESCE(k.elapsed_time, 0) + 1) * 1000) AS range_end, \
                    count(*) AS calls \
             FROM k LEFT JOIN conns c \
               ON k.transport = 'tcp' AND c.node = k.node AND c.conn_id = k.conn_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
        );
        let answer = sql::run(&ctx, &statement, &limits).await?;
        if answer.truncated {
            return Err(SelectionError::TooMany);
        }
        let mut set = FlowSet {
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect(),
            ..FlowSet::default()
        };
        for batch in &answer.batches {
            // Strings come as views or as plain strings depending on the session's settings.
            let texts: Vec<ArrayRef> = [0, 1, 2, 4]
                .into_iter()
                .map(|i| cast(batch.column(i), &DataType::Utf8))
                .collect::<Result<_, _>>()
                .map_err(|_| SelectionError::Column("node, transport or address"))?;
            let text = |i: usize, name: &'static str| {
                let slot = match i {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    _ => 3,
                };
                texts[slot]
                    .as_string_opt::<i32>()
                    .ok_or(SelectionError::Column(name))
            };
            let port = |i: usize, name: &'static str| {
                batch
                    .column(i)
                    .as_primitive_opt::<UInt16Type>()
                    .ok_or(SelectionError::Column(name))
            };
            let int = |i: usize, name: &'static str| {
                batch
                    .column(i)
                    .as_primitive_opt::<Int64Type>()
                    .ok_or(SelectionError::Column(name))
            };
            let (node, transport, src_ip, src_port) = (
                text(0, "node")?,
                text(1, "transport")?,
                text(2, "src_ip")?,
                port(3, "src_port")?,
            );
            let (dst_ip, dst_port, start, end, calls) = (
                text(4, "dst_ip")?,
                port(5, "dst_port")?,
                int(6, "range_start")?,
                int(7, "range_end")?,
                int(8, "calls")?,
            );
            for row in 0..batch.num_rows() {
                set.calls += calls.value(row).max(0) as u64;
                let Some(&node) = set.nodes.get(node.value(row)) else {
                    continue; // a node left out of the export
                };
                let (Ok(src), Ok(dst)) = (
                    src_ip.value(row).parse::<IpAddr>(),
                    dst_ip.value(row).parse::<IpAddr>(),
                ) else {
                    continue;
                };
                let proto = if transport.value(row) == "udp" { 17 } else { 6 };
                let key = FlowKey::new(
                    proto,
                    (src, src_port.value(row)),
                    (dst, dst_port.value(row)),
                );
                if start.is_null(row) || end.is_null(row) {
                    continue;
                }
                set.flows
                    .entry((node, key))
                    .or_default()
                    .push((start.value(row), end.value(row)));
            }
        }
        for ranges in set.flows.values_mut() {
            merge(ranges);
        }
        Ok(set)
    }

    /// Flows kept.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Whether the packet (from its IP header on) at `ts_ns` on node `node` belongs to a kept
    /// flow at that time.
    pub fn contains(&self, node: usize, ts_ns: i64, packet: &[u8], wire_len: u32) -> bool {
        let Some(key) = flow_of(packet, wire_len, 0) else {
            return false;
        };
        self.flows.get(&(node, key)).is_some_and(|ranges| {
            // Ranges are sorted and disjoint: the last one starting at or before ts decides.
            let i = ranges.partition_point(|&(start, _)| start <= ts_ns);
            i > 0 && ranges[i - 1].1 >= ts_ns
        })
    }
}

/// Sorts and merges overlapping ranges.
fn merge(ranges: &mut Vec<(i64, i64)>) {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
    for &(start, end) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    *ranges = merged;
}

/// The TCP or UDP flow of a packet, inside its tunnels; `None` for other protocols and for
/// fragments after the first (they carry no ports).
fn flow_of(packet: &[u8], wire_len: u32, depth: u8) -> Option<FlowKey> {
    let ip = net::ip(packet, wire_len)?;
    if ip.fragment.is_some_and(|f| f.offset > 0) {
        return None;
    }
    if depth < MAX_TUNNEL_DEPTH
        && let Some((inner, inner_wire)) = ip.tunnelled()
    {
        return flow_of(inner, inner_wire, depth + 1);
    }
    let (sport, dport) = match ip.proto {
        6 => {
            let seg = net::tcp(ip.payload, ip.payload_wire_len)?;
            (seg.src_port, seg.dst_port)
        }
        17 => {
            let (s, d, _) = net::udp(ip.payload)?;
            (s, d)
        }
        _ => return None,
    };
    Some(FlowKey::new(ip.proto, (ip.src, sport), (ip.dst, dport)))
}

/// What an export keeps: every packet, or those passing the bpf filter and in the KFL flows.
#[derive(Debug, Default)]
pub struct Selection {
    /// libpcap filter.
    pub bpf: Option<BpfFilter>,
    /// Flows of the calls a KFL filter matched.
    pub flows: Option<FlowSet>,
}

impl Selection {
    /// Whether the packet is kept.
    pub fn keeps(&self, node: usize, ts_ns: i64, packet: &[u8], wire_len: u32) -> bool {
        self.flows
            .as_ref()
            .is_none_or(|f| f.contains(node, ts_ns, packet, wire_len))
            && self
                .bpf
                .as_ref()
                .is_none_or(|b| b.matches(packet, wire_len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&8u16.to_be_bytes());
        p
    }

    #[test]
    fn both_directions_within_the_ranges_are_kept() {
        let key = FlowKey::new(
            17,
            ("10.0.0.1".parse().unwrap_or(IpAddr::from([0; 4])), 5000),
            ("10.0.0.2".parse().unwrap_or(IpAddr::from([0; 4])), 53),
        );
        let mut ranges = vec![(300, 400), (100, 200), (150, 250)];
        merge(&mut ranges);
        assert_eq!(ranges, vec![(100, 250), (300, 400)]);
        let mut set = FlowSet::default();
        set.flows.insert((0, key), ranges);
        let query = udp([10, 0, 0, 1], 5000, [10, 0, 0, 2], 53);
        let answer = udp([10, 0, 0, 2], 53, [10, 0, 0, 1], 5000);
        assert!(set.contains(0, 100, &query, 28));
        assert!(set.contains(0, 250, &answer, 28));
        assert!(!set.contains(0, 260, &answer, 28));
        assert!(set.contains(0, 400, &answer, 28));
        assert!(!set.contains(0, 99, &query, 28));
        assert!(!set.contains(1, 150, &query, 28), "another node");
        let other = udp([10, 0, 0, 1], 5001, [10, 0, 0, 2], 53);
        assert!(!set.contains(0, 150, &other, 28));
    }
}
