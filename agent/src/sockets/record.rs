//! One socket event from the kernel, as a `sockets` row.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use remora_agent_common::{
    SOCK_ACCEPT, SOCK_CLOSE, SOCK_CONNECT, SOCK_OWNER, SOCK_STATE, SocketEvent,
};

use crate::clock::TaiToUtc;

/// The process an event ran in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Command name.
    pub comm: String,
}

/// A `sockets` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRow {
    /// UTC ns.
    pub ts_ns: i64,
    /// `state_change`, `owner`, `connect`, `accept` or `close`.
    pub event: &'static str,
    /// The process, when the event ran in one (not for state changes made by the network).
    pub process: Option<Process>,
    /// cgroup v2 id of that process.
    pub cgroup_id: Option<u64>,
    /// The fd (connect, accept, close).
    pub fd: Option<i32>,
    /// The socket, as an opaque id stable for the agent's run (a keyed hash of the kernel's
    /// socket address, which must not leak into data users can query).
    pub socket_id: Option<u64>,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// Local end.
    pub src: Option<SocketAddr>,
    /// Remote end.
    pub dst: Option<SocketAddr>,
    /// TCP state before (state changes).
    pub old_state: Option<&'static str>,
    /// TCP state after.
    pub new_state: Option<&'static str>,
}

/// Linux's TCP state names (`include/net/tcp_states.h`).
pub fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// State changes a process makes itself (in its own system call), so that the task the
/// tracepoint ran in is the socket's: connect, listen, close.
fn made_by_process(new_state: u8) -> bool {
    matches!(new_state, 2 | 4 | 9 | 10)
}

fn addr(family: u8, bytes: &[u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        6 => {
            let v6 = Ipv6Addr::from(*bytes);
            // A dual-stack socket talking IPv4 reports a v4-mapped address.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    if ip.is_unspecified() && port == 0 {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

/// Keyed hash of kernel socket addresses (the key is random per run).
#[derive(Debug, Clone, Copy)]
pub struct SocketIds {
    key: u64,
}

impl SocketIds {
    /// A fresh key.
    pub fn new() -> Self {
        Self {
            key: rand::random(),
        }
    }

    /// The id of a kernel socket address.
    pub fn id(&self, skaddr: u64) -> u64 {
        // splitmix64 of the keyed address: a bijection, so ids never collide.
        let mut z = skaddr ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for SocketIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The row of one kernel event; `None` for an event of an unknown kind.
pub fn row(event: &SocketEvent, clock: &TaiToUtc, ids: &SocketIds) -> Option<SocketRow> {
    let kind = match event.kind {
        SOCK_STATE => "state_change",
        SOCK_OWNER => "owner",
        SOCK_CONNECT => "connect",
        SOCK_ACCEPT => "accept",
        SOCK_CLOSE => "close",
        _ => return None,
    };
    let comm_len = event.comm.iter().position(|&b| b == 0).unwrap_or(16);
    let in_process = event.kind != SOCK_STATE || made_by_process(event.new_state);
    let process = in_process.then(|| Process {
        pid: event.pid,
        tid: event.tid,
        comm: String::from_utf8_lossy(&event.comm[..comm_len]).into_owned(),
    });
    let state = |s: u8| (event.kind == SOCK_STATE).then(|| tcp_state(s));
    Some(SocketRow {
        ts_ns: clock.utc_ns(event.ts_ns),
        event: kind,
        cgroup_id: in_process.then_some(event.cgroup_id),
        process,
        fd: matches!(event.kind, SOCK_CONNECT | SOCK_ACCEPT | SOCK_CLOSE).then_some(event.fd),
        socket_id: (event.skaddr != 0).then(|| ids.id(event.skaddr)),
        protocol: if event.protocol == 0 {
            6
        } else {
            event.protocol
        },
        src: addr(event.family, &event.saddr, event.sport),
        dst: addr(event.family, &event.daddr, event.dport),
        old_state: state(event.old_state),
        new_state: state(event.new_state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8) -> SocketEvent {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        let mut saddr = [0u8; 16];
        saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        SocketEvent {
            ts_ns: 37_000_000_100,
            skaddr: 0xffff_8880_0000_1000,
            cgroup_id: 42,
            pid: 7,
            tid: 8,
            fd: 3,
            kind,
            family: 4,
            old_state: 7,
            new_state: 2,
            sport: 40000,
            dport: 80,
            protocol: 6,
            reserved: [0; 3],
            saddr,
            daddr,
            comm,
        }
    }

    #[test]
    fn a_connect_state_change_names_its_process_a_network_one_does_not() {
        let clock = TaiToUtc::with_offset_ns(37_000_000_000);
        let ids = SocketIds::new();
        let syn_sent = row(&event(SOCK_STATE), &clock, &ids).expect("row");
        assert_eq!(syn_sent.ts_ns, 100);
        assert_eq!(syn_sent.new_state, Some("SYN_SENT"));
        assert_eq!(
            syn_sent.process.as_ref().map(|p| p.comm.as_str()),
            Some("curl")
        );
        assert_eq!(
            syn_sent.src,
            Some("198.18.0.1:40000".parse().expect("addr"))
        );
        assert_eq!(syn_sent.fd, None);
        let mut established = event(SOCK_STATE);
        (established.old_state, established.new_state) = (2, 1);
        let established = row(&established, &clock, &ids).expect("row");
        assert_eq!(established.process, None, "softirq: whoever was running");
        assert_eq!(
            established.socket_id, syn_sent.socket_id,
            "same socket, same id"
        );
        assert_ne!(
            syn_sent.socket_id,
            Some(0xffff_8880_0000_1000),
            "no kernel address"
        );
        let connect = row(&event(SOCK_CONNECT), &clock, &ids).expect("row");
        assert_eq!(
            (connect.event, connect.fd, connect.old_state),
            ("connect", Some(3), None)
        );
        let mut unknown = event(SOCK_STATE);
        unknown.kind = 99;
        assert!(row(&unknown, &clock, &ids).is_none());
    }

    #[test]
    fn v4_mapped_addresses_read_as_ipv4() {
        let mut e = event(SOCK_OWNER);
        e.family = 6;
        e.saddr = Ipv4Addr::new(198, 18, 0, 1).to_ipv6_mapped().octets();
        let r = row(&e, &TaiToUtc::with_offset_ns(0), &SocketIds::new()).expect("row");
        assert_eq!(r.src, Some("198.18.0.1:40000".parse().expect("addr")));
    }
}
