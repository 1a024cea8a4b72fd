//! Which node saw a flow first, when several nodes' recordings are dissected as one stream.
//!
//! A call between pods on two nodes is recorded twice, once on each node. The nodes' packets
//! are merged by time into one engine that counts a packet's copies once (the copy on the other
//! node differs only in TTL and checksum), so the call is one row. Its `node` column names the
//! node whose recording saw the flow's first packet; the rows are written in one batch per node.

use std::{collections::HashMap, net::IpAddr};

use remora_dissect::Endpoint;

/// A flow's two ends, smaller first, so both directions give the same key.
pub type FlowEnds = (IpAddr, u16, IpAddr, u16);

/// Both directions of `a` ↔ `b` as one key.
pub fn ends(a: &Endpoint, b: &Endpoint) -> FlowEnds {
    if (a.ip, a.port) <= (b.ip, b.port) {
        (a.ip, a.port, b.ip, b.port)
    } else {
        (b.ip, b.port, a.ip, a.port)
    }
}

/// The flow of an IP packet (TCP or UDP; other packets have none).
pub fn packet_ends(l3: &[u8]) -> Option<FlowEnds> {
    let (src, dst) = packet_endpoints(l3)?;
    Some(ends(&src, &dst))
}

/// The sender of an IP packet (TCP or UDP).
pub fn packet_src(l3: &[u8]) -> Option<(IpAddr, u16)> {
    packet_endpoints(l3).map(|(src, _)| (src.ip, src.port))
}

fn packet_endpoints(l3: &[u8]) -> Option<(Endpoint, Endpoint)> {
    let (src, dst, proto, l4) = match l3.first()? >> 4 {
        4 => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            let src: [u8; 4] = l3.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = l3.get(16..20)?.try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                *l3.get(9)?,
                l3.get(ihl..)?,
            )
        }
        6 => {
            let src: [u8; 16] = l3.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = l3.get(24..40)?.try_into().ok()?;
            (
                IpAddr::from(src),
                IpAddr::from(dst),
                *l3.get(6)?,
                l3.get(40..)?,
            )
        }
        _ => return None,
    };
    if !matches!(proto, 6 | 17) {
        return None;
    }
    let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    Some((
        Endpoint {
            ip: src,
            port: port(0)?,
        },
        Endpoint {
            ip: dst,
            port: port(2)?,
        },
    ))
}

/// The first node of each flow.
#[derive(Debug, Default)]
pub struct Origins {
    /// Node names, by tag.
    pub nodes: Vec<String>,
    /// Flow → (node tag, the frame it was first seen in).
    first: HashMap<FlowEnds, (usize, u64)>,
}

impl Origins {
    /// Origins over `nodes` (tag = index).
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            nodes,
            first: HashMap::new(),
        }
    }

    /// Notes that node `tag` saw `l3`, the input's frame `frame`.
    pub fn note(&mut self, tag: usize, l3: &[u8], frame: u64) {
        if let Some(key) = packet_ends(l3) {
            self.first.entry(key).or_insert((tag, frame));
        }
    }

    /// The node that first saw the flow `a` ↔ `b` in the frames up to `visible` (the first
    /// node when unknown).
    pub fn node_of(&self, a: &Endpoint, b: &Endpoint, visible: u64) -> usize {
        match self.first.get(&ends(a, b)) {
            Some(&(tag, frame)) if frame <= visible => tag,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_are_one_flow_and_the_first_node_wins() {
        let mut ipv4 = vec![
            0x45u8, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ];
        ipv4.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 0]);
        let mut back = ipv4.clone();
        back[12..16].copy_from_slice(&[198, 18, 0, 2]);
        back[16..20].copy_from_slice(&[198, 18, 0, 1]);
        back[20..24].copy_from_slice(&[0, 80, 0x9c, 0x40]);
        assert_eq!(packet_ends(&ipv4), packet_ends(&back));
        let mut o = Origins::new(vec!["node-c".into(), "node-a".into()]);
        o.note(1, &ipv4, 5);
        o.note(0, &back, 6);
        let ep = |last: u8, port: u16| Endpoint {
            ip: IpAddr::from([198, 18, 0, last]),
            port,
        };
        assert_eq!(
            o.node_of(&ep(2, 80), &ep(1, 40000), u64::MAX),
            1,
            "node-a saw it first"
        );
        assert_eq!(
            o.node_of(&ep(2, 80), &ep(1, 40000), 4),
            0,
            "not as of a frame before it"
        );
        assert_eq!(packet_ends(&[0x45, 0]), None, "cut packets have no flow");
    }
}
