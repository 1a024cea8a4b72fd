//! TLS plaintext from uprobes on OpenSSL: `SSL_write`, `SSL_read`, `SSL_write_ex`,
//! `SSL_read_ex` (each at entry, and one return probe for all four), and `SSL_set_fd`.
//!
//! The entry probe stashes the arguments per thread; the return probe knows how many bytes the
//! call moved, copies them from the process's memory into a per-CPU scratch record and writes
//! it to the ring, split in chunks of [`TLS_CHUNK_BYTES`] (at most [`TLS_MAX_CHUNKS`]; the rest
//! is cut and the chunk marked). The socket comes from the sock tracepoints that fire inside the
//! call (`crate::sockets` notes it for the thread), and is remembered per `SSL*` for calls that
//! did no I/O (a read served from OpenSSL's buffer).

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_tai_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_buf,
        generated::bpf_get_current_cgroup_id,
    },
    macros::{map, uprobe, uretprobe},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::{ProbeContext, RetProbeContext},
};
use remora_agent_common::{
    TLS_CHUNK_BYTES, TLS_CHUNK_HEADER_BYTES, TLS_MAX_CHUNKS, TLS_READ, TLS_TRUNCATED, TLS_WRITE,
    TlsChunkHeader, TlsCounters,
};

/// A call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// The connection: OpenSSL's `SSL*`, Go's `*tls.Conn`.
    pub ssl: u64,
    buf: u64,
    /// `size_t *` of the `_ex` variants, 0 for the others.
    out_len: u64,
    /// Set by the sock tracepoints when the call does I/O.
    pub skaddr: u64,
    direction: u64,
    /// `CLOCK_TAI` ns at the call's entry: a write's time (see [`emit`]).
    started_ns: u64,
}

impl TlsCall {
    /// A call on connection `ssl` moving bytes at `buf`.
    #[inline(always)]
    pub fn new(ssl: u64, buf: u64, out_len: u64, direction: u8) -> Self {
        Self {
            ssl,
            buf,
            out_len,
            skaddr: 0,
            direction: u64::from(direction),
            // SAFETY: a helper without arguments.
            started_ns: unsafe { bpf_ktime_get_tai_ns() },
        }
    }
}

/// One chunk as written to the ring: header, then up to `TLS_CHUNK_BYTES` of plaintext.
#[repr(C)]
pub struct TlsChunk {
    header: TlsChunkHeader,
    data: [u8; TLS_CHUNK_BYTES],
}

/// Calls in progress, by pid_tgid.
#[map]
pub static TLS_CALLS: LruHashMap<u64, TlsCall> = LruHashMap::with_max_entries(16_384, 0);

/// The last socket each (tgid, `SSL*`) did I/O on.
#[map]
pub static TLS_SOCKETS: LruHashMap<[u64; 2], u64> = LruHashMap::with_max_entries(65_536, 0);

/// The fd `SSL_set_fd` gave each (tgid, `SSL*`).
#[map]
static TLS_FDS: LruHashMap<[u64; 2], i32> = LruHashMap::with_max_entries(65_536, 0);

/// Chunks for the agent.
#[map]
static TLS_EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Where a chunk is built (too big for the stack).
#[map]
static TLS_SCRATCH: PerCpuArray<TlsChunk> = PerCpuArray::with_max_entries(1, 0);

/// Chunks written, lost, unreadable, per CPU.
#[map]
static TLS_COUNTERS: PerCpuArray<TlsCounters> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u8, ex: bool) {
    let (Some(ssl), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let out_len = if ex {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let call = TlsCall::new(ssl, buf, out_len, direction);
    let _ = TLS_CALLS.insert(bpf_get_current_pid_tgid(), call, 0);
}

/// `SSL_write(ssl, buf, num)`.
#[uprobe]
pub fn remora_ssl_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, false);
    0
}

/// `SSL_write_ex(ssl, buf, num, *written)`.
#[uprobe]
pub fn remora_ssl_write_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE, true);
    0
}

/// `SSL_read(ssl, buf, num)`.
#[uprobe]
pub fn remora_ssl_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, false);
    0
}

/// `SSL_read_ex(ssl, buf, num, *readbytes)`.
#[uprobe]
pub fn remora_ssl_read_ex(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ, true);
    0
}

/// `SSL_set_fd(ssl, fd)`.
#[uprobe]
pub fn remora_ssl_set_fd(ctx: ProbeContext) -> u32 {
    if let (Some(ssl), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
        let tgid = bpf_get_current_pid_tgid() >> 32;
        let _ = TLS_FDS.insert([tgid, ssl], fd, 0);
    }
    0
}

/// The return of any of the four calls.
#[uretprobe]
pub fn remora_ssl_ret(ctx: RetProbeContext) -> u32 {
    let _ = ret(&ctx);
    0
}

#[inline(always)]
fn count(f: impl FnOnce(&mut TlsCounters)) {
    if let Some(c) = TLS_COUNTERS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        f(unsafe { &mut *c });
    }
}

#[inline(always)]
fn ret(ctx: &RetProbeContext) -> Option<()> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a copy is taken at once; the slot may be reused after.
    let call = unsafe { *TLS_CALLS.get(pid_tgid)? };
    let _ = TLS_CALLS.remove(pid_tgid);
    let rc: i64 = ctx.ret::<i64>();
    let total: u64 = if call.out_len != 0 {
        if rc as i32 != 1 {
            return None;
        }
        // SAFETY: user memory, read with the helper that tolerates faults.
        unsafe { bpf_probe_read_user(call.out_len as *const u64) }.ok()?
    } else {
        let n = rc as i32;
        if n <= 0 {
            return None;
        }
        n as u64
    };
    emit(&call, total, pid_tgid)
}

/// Writes the `total` bytes `call` moved to the ring, in chunks.
///
/// A write is timed when it started, a read when it returned: the bytes cannot be answered
/// before the write began, nor seen before the read returned. Timing a write at its return
/// put a request after its own response when the reply was read on another thread (Go's HTTP
/// client writes and reads a connection from two goroutines), and the call fell apart.
#[inline(always)]
pub fn emit(call: &TlsCall, total: u64, pid_tgid: u64) -> Option<()> {
    let tgid = pid_tgid >> 32;
    let key = [tgid, call.ssl];
    let skaddr = if call.skaddr != 0 {
        let _ = TLS_SOCKETS.insert(key, call.skaddr, 0);
        call.skaddr
    } else {
        // SAFETY: the value is copied at once.
        unsafe { TLS_SOCKETS.get(key) }.copied().unwrap_or(0)
    };
    let scratch = TLS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, used by this program only while it runs.
    let chunk = unsafe { &mut *scratch };
    let h = &mut chunk.header;
    h.ts_ns = if call.direction == u64::from(TLS_WRITE) {
        call.started_ns
    } else {
        // SAFETY: a helper without arguments.
        unsafe { bpf_ktime_get_tai_ns() }
    };
    h.ssl = call.ssl;
    h.skaddr = skaddr;
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    h.pid = tgid as u32;
    h.tid = pid_tgid as u32;
    // SAFETY: the value is copied at once.
    h.fd = unsafe { TLS_FDS.get(key) }.copied().unwrap_or(-1);
    h.total = total as u32;
    h.direction = call.direction as u8;
    h.family = 0;
    h.reserved = 0;
    h.sport = 0;
    h.dport = 0;
    h.saddr = [0; 4];
    h.daddr = [0; 4];
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if skaddr != 0 {
        // struct sock_common's head: daddr, rcv_saddr, hash, dport (network order), num, family.
        // SAFETY: a kernel pointer a tracepoint handed out; a bad read returns an error.
        if let Ok(head) = unsafe { bpf_probe_read_kernel(skaddr as *const [u8; 18]) }
            && u16::from_ne_bytes([head[16], head[17]]) == 2
        {
            h.family = 4;
            h.daddr = [head[0], head[1], head[2], head[3]];
            h.saddr = [head[4], head[5], head[6], head[7]];
            h.dport = u16::from_be_bytes([head[12], head[13]]);
            h.sport = u16::from_ne_bytes([head[14], head[15]]);
        }
    }
    for i in 0..TLS_MAX_CHUNKS {
        let offset = u64::from(i) * TLS_CHUNK_BYTES as u64;
        if offset >= total {
            break;
        }
        let left = total - offset;
        let mut n = if left > TLS_CHUNK_BYTES as u64 {
            TLS_CHUNK_BYTES
        } else {
            left as usize
        };
        // The verifier's bound on the copy and the output size.
        n &= 0x7fff;
        if n > TLS_CHUNK_BYTES {
            n = TLS_CHUNK_BYTES;
        }
        chunk.header.offset = offset as u32;
        chunk.header.len = n as u32;
        chunk.header.flags = if i + 1 == TLS_MAX_CHUNKS && left > TLS_CHUNK_BYTES as u64 {
            TLS_TRUNCATED
        } else {
            0
        };
        let Some(dst) = chunk.data.get_mut(..n) else {
            break;
        };
        // SAFETY: user memory of the traced process, read with the fault-tolerant helper into
        // a bounded slice of the scratch record.
        if unsafe { bpf_probe_read_user_buf((call.buf + offset) as *const u8, dst) }.is_err() {
            count(|c| c.unreadable += 1);
            break;
        }
        // SAFETY: the scratch record is `TLS_CHUNK_HEADER_BYTES + TLS_CHUNK_BYTES` bytes long
        // and `n` is at most `TLS_CHUNK_BYTES`.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (chunk as *const TlsChunk).cast::<u8>(),
                TLS_CHUNK_HEADER_BYTES + n,
            )
        };
        if TLS_EVENTS
            .output::<[u8]>(
                bytes,
                crate::wakeup_flags(&TLS_EVENTS, crate::WAKE_AT_BYTES),
            )
            .is_ok()
        {
            count(|c| c.chunks += 1);
        } else {
            count(|c| c.dropped += 1);
        }
    }
    Some(())
}
