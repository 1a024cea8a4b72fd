//! Socket events from tracepoints (this kernel family has no kprobes to rely on).
//!
//! - `sock:inet_sock_set_state`: every TCP state change with its 4-tuple and socket address;
//!   the process is only meaningful for the changes a process makes (connect, close, listen),
//!   the agent keeps it for those.
//! - `sock:sock_send_length` / `sock:sock_recv_length`: run in the process that sends or
//!   receives; the first time a process is seen on a socket it becomes one of its owners
//!   (an LRU map of (socket, tgid) keeps the rest silent). IPv4 addresses are read from the
//!   head of `struct sock_common`, whose layout has not changed in the kernels we support
//!   (checked against the tracepoint's own family field, else left empty for the agent to join
//!   by socket address).
//! - `syscalls:sys_enter_connect`, `sys_exit_accept(4)`, `sys_enter_close`: who connected to
//!   where, which fd an accept gave, and when a socket fd was closed (only fds known to be
//!   sockets, from connect or accept, so that closing files costs one lookup).
//!
//! Events go through one ring buffer; a full ring is counted per CPU, never silent.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_tai_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, generated::bpf_get_current_cgroup_id,
    },
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use remora_agent_common::{
    SOCK_ACCEPT, SOCK_CLOSE, SOCK_CONNECT, SOCK_OWNER, SOCK_STATE, SocketCounters, SocketEvent,
};

/// Socket events for the agent.
#[map]
static SOCKET_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Events written and lost to a full ring, per CPU (slot 0).
#[map]
static SOCKET_COUNTERS: PerCpuArray<SocketCounters> = PerCpuArray::with_max_entries(1, 0);

/// (socket address, tgid) pairs already reported as owners.
#[map]
static OWNERS_SEEN: LruHashMap<[u64; 2], u8> = LruHashMap::with_max_entries(65_536, 0);

/// (tgid, fd) of sockets from connect/accept, so that their close is reported.
#[map]
static SOCKET_FDS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65_536, 0);

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// An event about the current task, every address field empty.
#[inline(always)]
fn event(kind: u8) -> SocketEvent {
    let pid_tgid = bpf_get_current_pid_tgid();
    SocketEvent {
        // SAFETY: helpers without pointer arguments.
        ts_ns: unsafe { bpf_ktime_get_tai_ns() },
        skaddr: 0,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        fd: -1,
        kind,
        family: 0,
        old_state: 0,
        new_state: 0,
        sport: 0,
        dport: 0,
        protocol: 0,
        reserved: [0; 3],
        saddr: [0; 16],
        daddr: [0; 16],
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn emit(event: &SocketEvent) {
    let lost = SOCKET_EVENTS
        .output::<SocketEvent>(
            event,
            crate::wakeup_flags(&SOCKET_EVENTS, crate::WAKE_AT_BYTES),
        )
        .is_err();
    if let Some(counters) = SOCKET_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe {
            if lost {
                (*counters).dropped += 1;
            } else {
                (*counters).events += 1;
            }
        }
    }
}

/// Records a TCP state change.
#[tracepoint]
pub fn remora_sock_state(ctx: TracePointContext) -> u32 {
    let _ = sock_state(&ctx);
    0
}

#[inline(always)]
fn sock_state(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: offsets of `sock:inet_sock_set_state`'s format (the agent checks them at load).
    unsafe {
        if ctx.read_at::<u16>(30).ok()? != IPPROTO_TCP {
            return None;
        }
        let mut e = event(SOCK_STATE);
        e.protocol = IPPROTO_TCP as u8;
        e.skaddr = ctx.read_at::<u64>(8).ok()?;
        e.old_state = ctx.read_at::<i32>(16).ok()? as u8;
        e.new_state = ctx.read_at::<i32>(20).ok()? as u8;
        e.sport = ctx.read_at::<u16>(24).ok()?;
        e.dport = ctx.read_at::<u16>(26).ok()?;
        match ctx.read_at::<u16>(28).ok()? {
            AF_INET => {
                e.family = 4;
                let s = ctx.read_at::<[u8; 4]>(32).ok()?;
                let d = ctx.read_at::<[u8; 4]>(36).ok()?;
                e.saddr[..4].copy_from_slice(&s);
                e.daddr[..4].copy_from_slice(&d);
            }
            AF_INET6 => {
                e.family = 6;
                e.saddr = ctx.read_at::<[u8; 16]>(40).ok()?;
                e.daddr = ctx.read_at::<[u8; 16]>(56).ok()?;
            }
            _ => return None,
        }
        emit(&e);
    }
    Some(())
}

/// A process sent on a socket.
#[tracepoint]
pub fn remora_sock_send(ctx: TracePointContext) -> u32 {
    let _ = sock_owner(&ctx);
    0
}

/// A process received on a socket.
#[tracepoint]
pub fn remora_sock_recv(ctx: TracePointContext) -> u32 {
    let _ = sock_owner(&ctx);
    0
}

#[inline(always)]
fn sock_owner(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: offsets of `sock:sock_send_length` / `sock_recv_length` (same layout).
    let (sk, family, protocol) = unsafe {
        (
            ctx.read_at::<u64>(8).ok()?,
            ctx.read_at::<u16>(16).ok()?,
            ctx.read_at::<u16>(18).ok()?,
        )
    };
    if (family != AF_INET && family != AF_INET6)
        || (protocol != IPPROTO_TCP && protocol != IPPROTO_UDP)
    {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    // Inside an SSL call on this thread: that call's socket (`crate::tls`).
    if let Some(call) = crate::tls::TLS_CALLS.get_ptr_mut(pid_tgid) {
        // SAFETY: the thread's own slot; only this thread's probes touch it.
        unsafe { (*call).skaddr = sk };
    }
    let tgid = pid_tgid >> 32;
    let key = [sk, tgid];
    // SAFETY: the value is not read.
    if unsafe { OWNERS_SEEN.get(key) }.is_some() {
        return None;
    }
    OWNERS_SEEN.insert(key, 1, 0).ok()?;
    let mut e = event(SOCK_OWNER);
    e.skaddr = sk;
    e.protocol = protocol as u8;
    e.family = if family == AF_INET { 4 } else { 6 };
    if family == AF_INET {
        // struct sock_common: daddr, rcv_saddr, hash, dport (network order), num (host order),
        // family. The family read back confirms the layout.
        // SAFETY: a kernel pointer the tracepoint handed out; a bad read returns an error.
        let head = unsafe { bpf_probe_read_kernel(sk as *const [u8; 18]) }.ok()?;
        if u16::from_ne_bytes([head[16], head[17]]) == AF_INET {
            e.daddr[..4].copy_from_slice(&head[0..4]);
            e.saddr[..4].copy_from_slice(&head[4..8]);
            e.dport = u16::from_be_bytes([head[12], head[13]]);
            e.sport = u16::from_ne_bytes([head[14], head[15]]);
        } else {
            e.family = 0;
        }
    }
    emit(&e);
    Some(())
}

/// `connect(fd, addr, len)`: where to.
#[tracepoint]
pub fn remora_sys_connect(ctx: TracePointContext) -> u32 {
    let _ = sys_connect(&ctx);
    0
}

#[inline(always)]
fn sys_connect(ctx: &TracePointContext) -> Option<()> {
    // SAFETY: offsets of `syscalls:sys_enter_connect`; the address is user memory, read with
    // the helper that tolerates faults.
    unsafe {
        let fd = ctx.read_at::<u64>(16).ok()? as i32;
        let addr = ctx.read_at::<u64>(24).ok()? as *const u8;
        let family = bpf_probe_read_user(addr as *const u16).ok()?;
        let mut e = event(SOCK_CONNECT);
        e.fd = fd;
        match family {
            AF_INET => {
                let sin = bpf_probe_read_user(addr as *const [u8; 8]).ok()?;
                e.family = 4;
                e.dport = u16::from_be_bytes([sin[2], sin[3]]);
                e.daddr[..4].copy_from_slice(&sin[4..8]);
            }
            AF_INET6 => {
                let sin6 = bpf_probe_read_user(addr as *const [u8; 24]).ok()?;
                e.family = 6;
                e.dport = u16::from_be_bytes([sin6[2], sin6[3]]);
                e.daddr.copy_from_slice(&sin6[8..24]);
            }
            _ => return None,
        }
        emit(&e);
        let key = (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | u64::from(fd as u32);
        let _ = SOCKET_FDS.insert(key, 1, 0);
    }
    Some(())
}

/// `accept`/`accept4` returned a socket fd.
#[tracepoint]
pub fn remora_sys_accept(ctx: TracePointContext) -> u32 {
    // SAFETY: offset of `ret` in `syscalls:sys_exit_accept(4)`.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(16) }) else {
        return 0;
    };
    if ret < 0 {
        return 0;
    }
    let mut e = event(SOCK_ACCEPT);
    e.fd = ret as i32;
    emit(&e);
    let key = (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | u64::from(ret as u32);
    let _ = SOCKET_FDS.insert(key, 1, 0);
    0
}

/// `close(fd)` of a socket fd from connect or accept.
#[tracepoint]
pub fn remora_sys_close(ctx: TracePointContext) -> u32 {
    // SAFETY: offset of `fd` in `syscalls:sys_enter_close`.
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(16) }) else {
        return 0;
    };
    let key = (bpf_get_current_pid_tgid() & 0xffff_ffff_0000_0000) | (fd & 0xffff_ffff);
    // SAFETY: the value is not read.
    if unsafe { SOCKET_FDS.get(key) }.is_none() {
        return 0;
    }
    let _ = SOCKET_FDS.remove(key);
    let mut e = event(SOCK_CLOSE);
    e.fd = fd as i32;
    emit(&e);
    0
}
