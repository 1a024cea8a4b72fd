//! Flow keys: a connection or UDP flow named by its two endpoints, the same in both directions.

use crate::call::Endpoint;

/// The two endpoints of a flow, in a fixed order, and whether it is a TLS plaintext stream
/// (the same connection's bytes before encryption, from uprobes) rather than packets.
pub(crate) type FlowKey = (Endpoint, Endpoint, bool);

/// The key of the flow between `a` and `b`, whichever sent the packet.
pub(crate) fn key(a: Endpoint, b: Endpoint) -> FlowKey {
    if a <= b { (a, b, false) } else { (b, a, false) }
}

/// The key of the plaintext stream of the connection between `a` and `b`.
pub(crate) fn plain_key(a: Endpoint, b: Endpoint) -> FlowKey {
    let (a, b, _) = key(a, b);
    (a, b, true)
}
