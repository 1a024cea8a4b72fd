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

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `#[repr(C)]`, contain only integers and have no implicit padding
    // (checked by the size assertions below), so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::PacketEventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuCounters {}
}

const _: () = assert!(PACKET_EVENT_HEADER_BYTES == 32);
const _: () = assert!(core::mem::size_of::<CpuCounters>() == 40);
