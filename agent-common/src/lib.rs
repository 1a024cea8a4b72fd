//! Event layouts shared by Remora's eBPF programs (`agent-ebpf`) and its agent (`agent`).
//!
//! Everything here is `#[repr(C)]`, free of implicit padding, and read by both sides: the kernel
//! writes these headers into the per-CPU perf rings, the agent reads them back byte for byte.
//! Changing a field changes the wire format between the two, so both are always built together.
#![no_std]

/// The packet came into the interface (TC ingress hook).
pub const DIRECTION_INGRESS: u8 = 0;
/// The packet left the interface (TC egress hook).
pub const DIRECTION_EGRESS: u8 = 1;

/// Largest number of packet bytes one event may carry.
///
/// A perf sample must stay under 64 KiB including its headers, so the appended packet bytes are
/// capped a little below that. The agent rejects a configured snaplen above this.
pub const MAX_CAPTURE_BYTES: u32 = 65_000;

/// Longest link-layer header the recorder expects in front of the network header (Ethernet).
///
/// The TC hook copies bytes from the start of the frame; the agent asks it for `snaplen` plus this
/// many bytes so that `snaplen` bytes of the L3 packet survive after the link header is removed.
pub const MAX_L2_HEADER_BYTES: u32 = 14;

/// Key of an excluded endpoint: its address as IPv6 (IPv4 mapped, `::ffff:a.b.c.d`), then its
/// TCP/UDP port in network order, then two zero bytes.
pub type EndpointKey = [u8; 20];

/// Most endpoints that can be excluded (Remora's own listeners).
pub const MAX_EXCLUDED_ENDPOINTS: u32 = 256;

/// Number of `u32` words in the excluded-ports bitmap (one bit per TCP/UDP port).
pub const EXCLUDED_PORT_WORDS: u32 = 65_536 / 32;

/// Header of one packet event in the `PACKETS` perf ring; `cap_len` packet bytes follow it.
///
/// The bytes start at the link-layer header as the TC hook sees the frame (Ethernet on L2
/// devices, the IP header on L3 devices such as WireGuard or tun).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketEventHeader {
    /// When the hook ran, in `CLOCK_TAI` nanoseconds (`bpf_ktime_get_tai_ns`).
    pub ts_ns: u64,
    /// cgroup v2 id of the sending socket (`bpf_skb_cgroup_id`); 0 when the packet has no local
    /// socket, which is the usual case on ingress.
    pub cgroup_id: u64,
    /// Interface index in the agent's network namespace.
    pub ifindex: u32,
    /// Length of the whole frame as the hook saw it (`skb->len`), link header included.
    pub frame_len: u32,
    /// Number of frame bytes that follow this header.
    pub cap_len: u32,
    /// `skb->protocol` as the kernel stores it (network byte order EtherType).
    pub protocol: u16,
    /// [`DIRECTION_INGRESS`] or [`DIRECTION_EGRESS`].
    pub direction: u8,
    /// Always zero; makes the padding explicit so the type is plain old data.
    pub reserved: u8,
}

/// Size in bytes of [`PacketEventHeader`] on the wire.
pub const PACKET_EVENT_HEADER_BYTES: usize = core::mem::size_of::<PacketEventHeader>();

/// Per-CPU counters kept by the TC program (one `PerCpuArray` slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Packets the hook saw and tried to record (excluded ports not counted).
    pub packets: u64,
    /// Frame bytes of those packets (`skb->len`).
    pub bytes: u64,
    /// Packets that could not be written because this CPU's ring was full.
    pub dropped_packets: u64,
    /// Frame bytes of the dropped packets.
    pub dropped_bytes: u64,
    /// Packets skipped on purpose because they belong to Remora's own API traffic.
    pub excluded_packets: u64,
}

/// A TCP state change (`sock:inet_sock_set_state`).
pub const SOCK_STATE: u8 = 1;
/// A process sent or received on a socket for the first time (`sock:sock_send_length`,
/// `sock:sock_recv_length`).
pub const SOCK_OWNER: u8 = 2;
/// `connect(2)`: the destination, from the syscall's arguments.
pub const SOCK_CONNECT: u8 = 3;
/// `accept(2)`/`accept4(2)` returned a socket fd.
pub const SOCK_ACCEPT: u8 = 4;
/// `close(2)` of a socket fd from connect or accept.
pub const SOCK_CLOSE: u8 = 5;

/// One socket event in the `SOCKET_EVENTS` ring buffer.
///
/// Addresses are the socket's: `saddr`/`sport` its own end, `daddr`/`dport` its peer (IPv4 in
/// the first four bytes); ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketEvent {
    /// `CLOCK_TAI` ns.
    pub ts_ns: u64,
    /// The kernel's socket address (an identity, never dereferenced by the agent); 0 when none.
    pub skaddr: u64,
    /// cgroup v2 id of the current task.
    pub cgroup_id: u64,
    /// Current task's tgid (process id).
    pub pid: u32,
    /// Current task's pid (thread id).
    pub tid: u32,
    /// The fd (connect, accept, close); -1 otherwise.
    pub fd: i32,
    /// `SOCK_*`.
    pub kind: u8,
    /// 4, 6, or 0 when the addresses are unknown.
    pub family: u8,
    /// TCP state before (`SOCK_STATE`).
    pub old_state: u8,
    /// TCP state after (`SOCK_STATE`).
    pub new_state: u8,
    /// Own port.
    pub sport: u16,
    /// Peer port.
    pub dport: u16,
    /// 6 (TCP) or 17 (UDP).
    pub protocol: u8,
    /// Always zero.
    pub reserved: [u8; 3],
    /// Own address.
    pub saddr: [u8; 16],
    /// Peer address.
    pub daddr: [u8; 16],
    /// Current task's command name, NUL-padded.
    pub comm: [u8; 16],
}

/// Size in bytes of [`SocketEvent`].
pub const SOCKET_EVENT_BYTES: usize = core::mem::size_of::<SocketEvent>();

/// Per-CPU counters of the socket hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Events written to the ring.
    pub events: u64,
    /// Events lost to a full ring.
    pub dropped: u64,
}

/// Plaintext bytes one TLS chunk carries at most; a longer `SSL_read`/`SSL_write` is split.
pub const TLS_CHUNK_BYTES: usize = 16_384;
/// Chunks one TLS call is split into at most; what is beyond is cut and the chunk marked
/// [`TLS_TRUNCATED`].
pub const TLS_MAX_CHUNKS: u32 = 4;
/// Plaintext read by `SSL_read`/`SSL_read_ex`.
pub const TLS_READ: u8 = 0;
/// Plaintext written by `SSL_write`/`SSL_write_ex`.
pub const TLS_WRITE: u8 = 1;
/// The call was longer than [`TLS_MAX_CHUNKS`] chunks: bytes past them were not recorded.
pub const TLS_TRUNCATED: u8 = 1;

/// Header of one TLS plaintext chunk in the `TLS_EVENTS` ring buffer; `len` bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsChunkHeader {
    /// `CLOCK_TAI` ns when a read returned, or when a write started.
    pub ts_ns: u64,
    /// The `SSL*` (the TLS connection, within its process).
    pub ssl: u64,
    /// The kernel socket the call's I/O went through (0 when none was seen yet).
    pub skaddr: u64,
    /// cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The socket fd (`SSL_set_fd`), -1 when unknown.
    pub fd: i32,
    /// Plaintext bytes in this chunk.
    pub len: u32,
    /// Plaintext bytes of the whole call.
    pub total: u32,
    /// Offset of this chunk in the call.
    pub offset: u32,
    /// [`TLS_READ`] or [`TLS_WRITE`].
    pub direction: u8,
    /// [`TLS_TRUNCATED`] or 0.
    pub flags: u8,
    /// 4, or 0 when the addresses are unknown (the agent joins them by socket).
    pub family: u8,
    /// Always zero.
    pub reserved: u8,
    /// Own port (host order).
    pub sport: u16,
    /// Peer port.
    pub dport: u16,
    /// Own IPv4 address.
    pub saddr: [u8; 4],
    /// Peer IPv4 address.
    pub daddr: [u8; 4],
    /// Command name, NUL-padded.
    pub comm: [u8; 16],
}

/// Size in bytes of [`TlsChunkHeader`].
pub const TLS_CHUNK_HEADER_BYTES: usize = core::mem::size_of::<TlsChunkHeader>();

/// Per-CPU counters of the TLS hooks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsCounters {
    /// Chunks written to the ring.
    pub chunks: u64,
    /// Chunks lost to a full ring.
    pub dropped: u64,
    /// Calls whose plaintext could not be read from the process's memory.
    pub unreadable: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, integers and byte arrays only, no implicit padding (sizes asserted).
    unsafe impl aya::Pod for super::TlsChunkHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TlsCounters {}
    // SAFETY: `#[repr(C)]`, integers and byte arrays only, no implicit padding (sizes asserted).
    unsafe impl aya::Pod for super::SocketEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SocketCounters {}
    // SAFETY: both types are `#[repr(C)]`, contain only integers and have no implicit padding
    // (checked by the size assertions below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PacketEventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuCounters {}
}

const _: () = assert!(PACKET_EVENT_HEADER_BYTES == 32);
const _: () = assert!(core::mem::size_of::<CpuCounters>() == 40);
const _: () = assert!(SOCKET_EVENT_BYTES == 96);
const _: () = assert!(core::mem::size_of::<SocketCounters>() == 16);
const _: () = assert!(TLS_CHUNK_HEADER_BYTES == 88);
const _: () = assert!(core::mem::size_of::<TlsCounters>() == 24);
