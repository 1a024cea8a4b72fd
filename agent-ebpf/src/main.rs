//! The packet recorder: a TC classifier on clsact/TCX ingress and egress; the socket hooks on
//! tracepoints ([`sockets`]); the TLS plaintext hooks, uprobes on OpenSSL ([`tls`]) and on Go's
//! crypto/tls ([`gotls`]).
//!
//! For every packet it writes a [`PacketEventHeader`] into this CPU's perf ring and lets the
//! kernel append the first `SNAPLEN` bytes of the frame straight from the skb (the
//! `BPF_F_CTXLEN_MASK` form of `bpf_perf_event_output`): one copy, non-linear skbs included, no
//! verifier gymnastics over variable lengths. A full ring is counted per CPU, never silent.
//!
//! The programs are passive: they always return `TC_ACT_UNSPEC` (-1, which TCX calls
//! `TCX_NEXT`), so the next program in the chain runs and the packet's fate is untouched.
//!
//! Minimum kernel: 6.1 for `bpf_ktime_get_tai_ns`; TCX attachment needs 6.6 (the agent falls back
//! to a netlink clsact filter before that). Capabilities: `CAP_BPF`, `CAP_NET_ADMIN`,
//! `CAP_PERFMON`.
#![no_std]
#![no_main]

mod gotls;
mod sockets;
mod tls;

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    EbpfContext as _, Global,
    bindings::{BPF_F_CURRENT_CPU, TC_ACT_UNSPEC, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::generated::bpf_skb_load_bytes,
    helpers::generated::{
        bpf_ktime_get_tai_ns, bpf_perf_event_output, bpf_skb_cgroup_id, bpf_skb_load_bytes_relative,
    },
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray, PerfEventArray, RingBuf},
    programs::TcContext,
};
use remora_agent_common::{
    CpuCounters, DIRECTION_EGRESS, DIRECTION_INGRESS, EXCLUDED_PORT_WORDS, EndpointKey,
    MAX_CAPTURE_BYTES, MAX_EXCLUDED_ENDPOINTS, PacketEventHeader,
};

/// Frame bytes to append to each event (the agent sets snaplen + link header at load time).
#[unsafe(no_mangle)]
static SNAPLEN: Global<u32> = Global::new(4096 + 14);

/// Non-zero when `EXCLUDED_PORTS` holds ports to skip; lets the common case avoid parsing.
#[unsafe(no_mangle)]
static EXCLUDE_PORTS: Global<u32> = Global::new(0);

/// Non-zero when `EXCLUDED_ENDPOINTS` holds endpoints to skip.
#[unsafe(no_mangle)]
static EXCLUDE_ENDPOINTS: Global<u32> = Global::new(0);

/// Endpoints (address and port) whose packets are not recorded: Remora's own API listeners,
/// exactly, so that another service on the same port (another address, another namespace)
/// is still recorded.
#[map]
static EXCLUDED_ENDPOINTS: HashMap<EndpointKey, u8> =
    HashMap::with_max_entries(MAX_EXCLUDED_ENDPOINTS, 0);

/// One perf ring per CPU; each event is a `PacketEventHeader` followed by the frame bytes.
#[map]
static PACKETS: PerfEventArray<PacketEventHeader> = PerfEventArray::new(0);

/// The other packet transport (`--packet-ring ringbuf`): one ring shared by every CPU, each
/// record a `PacketEventHeader` followed by the frame bytes padded to a size class. Sized at
/// load time (a page when the perf rings are used).
#[map]
static PACKET_RING: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Bytes waiting in `PACKET_RING` after which a write wakes the collector (a quarter of the
/// ring, set at load time).
#[unsafe(no_mangle)]
static PACKET_RING_WAKE: Global<u64> = Global::new(1 << 20);

/// Per-CPU packet, byte and drop counters (slot 0).
#[map]
static COUNTERS: PerCpuArray<CpuCounters> = PerCpuArray::with_max_entries(1, 0);

/// Bitmap of TCP/UDP ports whose packets are not recorded (Remora's own API listeners).
#[map]
static EXCLUDED_PORTS: Array<u32> = Array::with_max_entries(EXCLUDED_PORT_WORDS, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Records packets arriving on an interface.
#[classifier]
pub fn remora_tc_ingress(ctx: TcContext) -> i32 {
    record(&ctx, DIRECTION_INGRESS, Transport::PerfRings);
    TC_ACT_UNSPEC
}

/// Records packets leaving an interface.
#[classifier]
pub fn remora_tc_egress(ctx: TcContext) -> i32 {
    record(&ctx, DIRECTION_EGRESS, Transport::PerfRings);
    TC_ACT_UNSPEC
}

/// Records packets arriving on an interface, into the shared ring buffer.
#[classifier]
pub fn remora_tc_ingress_rb(ctx: TcContext) -> i32 {
    record(&ctx, DIRECTION_INGRESS, Transport::RingBuffer);
    TC_ACT_UNSPEC
}

/// Records packets leaving an interface, into the shared ring buffer.
#[classifier]
pub fn remora_tc_egress_rb(ctx: TcContext) -> i32 {
    record(&ctx, DIRECTION_EGRESS, Transport::RingBuffer);
    TC_ACT_UNSPEC
}

/// Where a program writes its packets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `PACKETS`, this CPU's perf ring, through `bpf_perf_event_output`.
    PerfRings,
    /// `PACKET_RING`, reserved then filled with `bpf_skb_load_bytes`.
    RingBuffer,
}

#[inline(always)]
fn record(ctx: &TcContext, direction: u8, transport: Transport) {
    let skb = ctx.skb.skb;
    let frame_len = ctx.len();
    // SAFETY: `skb` is the context pointer the kernel handed to this program; the verifier
    // rewrites these `__sk_buff` field reads into reads of the real skb.
    let (ifindex, protocol_be) = unsafe { ((*skb).ifindex, (*skb).protocol) };
    let protocol = u16::from_be(protocol_be as u16);

    if (EXCLUDE_PORTS.load() != 0 || EXCLUDE_ENDPOINTS.load() != 0) && is_excluded(ctx, protocol) {
        if let Some(counters) = COUNTERS.get_ptr_mut(0) {
            // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
            unsafe { (*counters).excluded_packets += 1 };
        }
        return;
    }

    let snaplen = SNAPLEN.load();
    let mut cap_len = if frame_len < snaplen {
        frame_len
    } else {
        snaplen
    };
    if cap_len > MAX_CAPTURE_BYTES {
        cap_len = MAX_CAPTURE_BYTES;
    }

    let header = PacketEventHeader {
        // SAFETY: helpers without pointer arguments.
        ts_ns: unsafe { bpf_ktime_get_tai_ns() },
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
        ifindex,
        frame_len,
        cap_len,
        protocol: protocol_be as u16,
        direction,
        reserved: 0,
    };
    let rc = match transport {
        Transport::PerfRings => {
            // The upper 32 bits ask the kernel to append `cap_len` bytes of the skb after
            // `header`.
            let flags = (u64::from(cap_len) << 32) | BPF_F_CURRENT_CPU;
            // SAFETY: `PACKETS` is a map definition the loader relocates to the map's fd;
            // `header` lives on this stack frame for the duration of the call and its size is
            // passed with it.
            unsafe {
                bpf_perf_event_output(
                    ctx.as_ptr(),
                    ptr::addr_of!(PACKETS).cast_mut().cast::<c_void>(),
                    flags,
                    ptr::addr_of!(header).cast_mut().cast::<c_void>(),
                    core::mem::size_of::<PacketEventHeader>() as u64,
                )
            }
        }
        Transport::RingBuffer => ring_output(ctx, &header),
    };

    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += u64::from(frame_len);
            if rc != 0 {
                (*counters).dropped_packets += 1;
                (*counters).dropped_bytes += u64::from(frame_len);
            }
        }
    }
}

/// A ring-buffer record of one size class: the verifier wants a constant reservation size.
#[repr(C)]
struct PacketRecord<const N: usize> {
    header: PacketEventHeader,
    frame: [u8; N],
}

/// Writes `header` and `header.cap_len` frame bytes into `PACKET_RING`, in the smallest size
/// class that holds them; 0 on success, like `bpf_perf_event_output`.
#[inline(always)]
fn ring_output(ctx: &TcContext, header: &PacketEventHeader) -> i64 {
    // Classes fit the common frames closely: bare ACKs, 1500-byte MTU frames, the default
    // 4096-byte snaplen (+ link header); above that the waste is at most half a record.
    match header.cap_len {
        0 => -1,
        1..=96 => ring_write::<96>(ctx, header),
        97..=256 => ring_write::<256>(ctx, header),
        257..=512 => ring_write::<512>(ctx, header),
        513..=1024 => ring_write::<1024>(ctx, header),
        1025..=1536 => ring_write::<1536>(ctx, header),
        1537..=2048 => ring_write::<2048>(ctx, header),
        2049..=3072 => ring_write::<3072>(ctx, header),
        3073..=4160 => ring_write::<4160>(ctx, header),
        4161..=8192 => ring_write::<8192>(ctx, header),
        8193..=16384 => ring_write::<16384>(ctx, header),
        16385..=32768 => ring_write::<32768>(ctx, header),
        _ => ring_write::<65536>(ctx, header),
    }
}

#[inline(always)]
fn ring_write<const N: usize>(ctx: &TcContext, header: &PacketEventHeader) -> i64 {
    // The verifier's bound on the copy: within the class, never zero. A volatile read, so that
    // the compiler (which knows the class's range from the caller) keeps the checks.
    // SAFETY: reading a field of a live reference.
    let mut len = unsafe { ptr::read_volatile(&header.cap_len) };
    if len > N as u32 {
        len = N as u32;
    }
    if len == 0 {
        return -1;
    }
    let wake = wakeup_flags(&PACKET_RING, PACKET_RING_WAKE.load());
    let Some(mut entry) = PACKET_RING.reserve::<PacketRecord<N>>(0) else {
        return -1;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reservation of `size_of::<PacketRecord<N>>()` bytes; the
    // header is written whole and the helper copies at most `N` bytes into `frame`.
    let rc = unsafe {
        ptr::addr_of_mut!((*record).header).write(PacketEventHeader {
            cap_len: len,
            ..*header
        });
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            0,
            ptr::addr_of_mut!((*record).frame).cast::<c_void>(),
            len,
        )
    };
    if rc == 0 {
        entry.submit(wake);
    } else {
        entry.discard(u64::from(aya_ebpf::bindings::BPF_RB_NO_WAKEUP));
    }
    rc
}

/// True when the packet's TCP/UDP source or destination port is in `EXCLUDED_PORTS`, or its
/// source or destination endpoint (address and port) in `EXCLUDED_ENDPOINTS`.
#[inline(always)]
fn is_excluded(ctx: &TcContext, protocol: u16) -> bool {
    let mut src_key: EndpointKey = [0; 20];
    let mut dst_key: EndpointKey = [0; 20];
    let (l4_offset, ip_proto) = match protocol {
        ETH_P_IP => {
            let Some(head) = load_net::<[u8; 20]>(ctx, 0) else {
                return false;
            };
            // Non-first fragments carry no ports.
            let frag = u16::from_be_bytes([head[6], head[7]]) & 0x1FFF;
            if frag != 0 {
                return false;
            }
            // IPv4-mapped IPv6: ::ffff:a.b.c.d
            src_key[10] = 0xff;
            src_key[11] = 0xff;
            dst_key[10] = 0xff;
            dst_key[11] = 0xff;
            src_key[12] = head[12];
            src_key[13] = head[13];
            src_key[14] = head[14];
            src_key[15] = head[15];
            dst_key[12] = head[16];
            dst_key[13] = head[17];
            dst_key[14] = head[18];
            dst_key[15] = head[19];
            (u32::from(head[0] & 0x0F) * 4, head[9])
        }
        ETH_P_IPV6 => {
            let (Some(head), Some(src), Some(dst)) = (
                load_net::<[u8; 8]>(ctx, 0),
                load_net::<[u8; 16]>(ctx, 8),
                load_net::<[u8; 16]>(ctx, 24),
            ) else {
                return false;
            };
            src_key[..16].copy_from_slice(&src);
            dst_key[..16].copy_from_slice(&dst);
            (40, head[6])
        }
        _ => return false,
    };
    if ip_proto != IPPROTO_TCP && ip_proto != IPPROTO_UDP {
        return false;
    }
    let Some(ports) = load_net::<[u8; 4]>(ctx, l4_offset) else {
        return false;
    };
    let src = u16::from_be_bytes([ports[0], ports[1]]);
    let dst = u16::from_be_bytes([ports[2], ports[3]]);
    if EXCLUDE_PORTS.load() != 0 && (port_excluded(src) || port_excluded(dst)) {
        return true;
    }
    if EXCLUDE_ENDPOINTS.load() == 0 {
        return false;
    }
    src_key[16] = ports[0];
    src_key[17] = ports[1];
    dst_key[16] = ports[2];
    dst_key[17] = ports[3];
    // SAFETY: map lookups with keys on this stack frame; the values are not read.
    unsafe {
        EXCLUDED_ENDPOINTS.get(src_key).is_some() || EXCLUDED_ENDPOINTS.get(dst_key).is_some()
    }
}

#[inline(always)]
fn port_excluded(port: u16) -> bool {
    match EXCLUDED_PORTS.get(u32::from(port >> 5)) {
        Some(word) => word & (1u32 << (port & 31)) != 0,
        None => false,
    }
}

/// Copies `T` from `offset` bytes past the network header.
#[inline(always)]
fn load_net<T: Copy + Default>(ctx: &TcContext, offset: u32) -> Option<T> {
    let mut value = T::default();
    // SAFETY: the destination is a local of exactly the length passed; the helper bounds-checks
    // the source against the skb.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.as_ptr(),
            offset,
            ptr::addr_of_mut!(value).cast::<c_void>(),
            core::mem::size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    (rc == 0).then_some(value)
}

/// Ring-buffer bytes waiting after which a TLS or socket event wakes the agent up; below, the
/// agent finds them on its next poll (every 100 ms). A wakeup per record costs an
/// inter-processor interrupt, which in a VM is a VM exit: tens of microseconds charged to the
/// traced call.
const WAKE_AT_BYTES: u64 = 512 << 10;

/// The flags for a ring-buffer write: wake the reader only when `wake_at` bytes are waiting.
#[inline(always)]
fn wakeup_flags(ring: &RingBuf, wake_at: u64) -> u64 {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    if ring.query(u64::from(BPF_RB_AVAIL_DATA)) >= wake_at {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Reachable panics make the verifier reject the program, so this body never runs.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
