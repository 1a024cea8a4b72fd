//! UDP flows carrying DNS, numbered the same way by one engine and by the router of a sharded
//! dissection.
//!
//! A UDP flow has no handshake to name it: its id is the frame number of its first datagram,
//! and it ends after [`IDLE_NS`] without one (its next datagram starts a new flow). A call on
//! it is numbered by the datagram that started it (a query, or an answer whose query was not
//! seen), counting every datagram of the flow from 1, so that `<node>/<flow id>/<number>` is
//! unique.
//!
//! Why every datagram and not every call: a sharded dissection spreads the messages of one
//! flow over the shards by DNS id (one busy resolver socket would otherwise load one thread
//! while the others wait), so no shard sees the whole flow. Whether an answer starts a call
//! depends on its shard's pending queries, but a datagram's place on its flow depends only on
//! the input's order, which the router sees whole: it numbers the datagrams and each shard's
//! engine takes the numbers it is given ([`crate::Engine::push_routed`]). One engine alone
//! numbers them itself, the same way.

// FxHash, as for the engine's other flow tables (see `engine/mod.rs`).
use rustc_hash::FxHashMap as HashMap;

use crate::flow::FlowKey;

/// A UDP flow with no datagram for this long is over; the next one starts a new flow (the
/// engine's idle time for TCP connections).
pub(crate) const IDLE_NS: i64 = 120_000_000_000;

/// A datagram's place on its UDP flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram {
    /// The flow's id: the frame number of its first datagram.
    pub flow_id: u64,
    /// The datagram's number on the flow, from 1.
    pub number: u32,
}

/// The live UDP flows of an input and their datagram counts.
#[derive(Default)]
pub(crate) struct UdpFlows {
    flows: HashMap<FlowKey, Flow>,
}

struct Flow {
    id: u64,
    last_ns: i64,
    datagrams: u32,
}

impl UdpFlows {
    /// Counts a datagram of flow `key`, read as frame `frame` at `ts_ns`.
    pub(crate) fn datagram(&mut self, key: FlowKey, frame: u64, ts_ns: i64) -> UdpDatagram {
        let flow = self.flows.entry(key).or_insert(Flow {
            id: frame,
            last_ns: ts_ns,
            datagrams: 0,
        });
        flow.last_ns = ts_ns;
        flow.datagrams = flow.datagrams.saturating_add(1);
        UdpDatagram {
            flow_id: flow.id,
            number: flow.datagrams,
        }
    }

    /// Forgets the flows idle for longer than [`IDLE_NS`] as of `now_ns`.
    pub(crate) fn expire(&mut self, now_ns: i64) {
        self.flows.retain(|_, f| now_ns - f.last_ns <= IDLE_NS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{call::Endpoint, flow::key};

    fn flow(port: u16) -> FlowKey {
        let a = Endpoint {
            ip: [198, 18, 0, 1].into(),
            port,
        };
        let b = Endpoint {
            ip: [198, 18, 0, 2].into(),
            port: 53,
        };
        key(a, b)
    }

    #[test]
    fn datagrams_are_numbered_per_flow_and_an_idle_flow_starts_over() {
        let mut flows = UdpFlows::default();
        let at = |s: i64| s * 1_000_000_000;
        assert_eq!(
            flows.datagram(flow(1000), 7, at(0)),
            UdpDatagram {
                flow_id: 7,
                number: 1
            }
        );
        assert_eq!(flows.datagram(flow(2000), 8, at(1)).number, 1);
        assert_eq!(
            flows.datagram(flow(1000), 9, at(2)),
            UdpDatagram {
                flow_id: 7,
                number: 2
            }
        );
        // 120 s after its last datagram a flow is still live; after that it is over.
        flows.expire(at(122));
        assert_eq!(flows.datagram(flow(1000), 10, at(122)).number, 3);
        flows.expire(at(243));
        assert_eq!(
            flows.datagram(flow(1000), 11, at(243)),
            UdpDatagram {
                flow_id: 11,
                number: 1
            }
        );
    }
}
