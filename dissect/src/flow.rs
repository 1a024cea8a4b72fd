//! Flow keys: a connection or UDP flow named by its two endpoints, the same in both directions.

use crate::call::Endpoint;

/// The two endpoints of a flow, in a fixed order.
pub(crate) type FlowKey = (Endpoint, Endpoint);

/// The key of the flow between `a` and `b`, whichever sent the packet.
pub(crate) fn key(a: Endpoint, b: Endpoint) -> FlowKey {
    if a <= b { (a, b) } else { (b, a) }
}
