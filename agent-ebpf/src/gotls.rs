//! Go's crypto/tls: uprobes at the entry of `crypto/tls.(*Conn).Write` and `(*Conn).Read`, and
//! at each of their `RET` instructions; never uretprobes, which rewrite the return address on
//! the goroutine's stack, and Go moves stacks and walks them.
//!
//! Go 1.17+ on amd64 passes arguments in registers (ABIInternal): the receiver in RAX, the
//! slice `b` as RBX (pointer) and RCX (length); the result `n` comes back in RAX; R14 holds the
//! current goroutine. A goroutine may run on another thread when it returns than when it
//! entered, so calls are keyed by (tgid, goroutine). The thread is noted too while the call
//! runs, so that the sock tracepoints inside it name its socket.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use remora_agent_common::{TLS_READ, TLS_WRITE};

use crate::tls::{TLS_CALLS, TlsCall, emit};

/// Calls in progress, by (tgid, goroutine).
#[map]
static GO_CALLS: LruHashMap<[u64; 2], TlsCall> = LruHashMap::with_max_entries(16_384, 0);

#[inline(always)]
fn enter(ctx: &ProbeContext, direction: u8) {
    // SAFETY: the context's register file, as the kernel saved it at the probe.
    let regs = unsafe { &*ctx.regs };
    let pid_tgid = bpf_get_current_pid_tgid();
    let call = TlsCall::new(regs.rax, regs.rbx, 0, direction);
    let _ = GO_CALLS.insert([pid_tgid >> 32, regs.r14], call, 0);
    let _ = TLS_CALLS.insert(pid_tgid, call, 0);
}

/// `crypto/tls.(*Conn).Write(b []byte) (int, error)`, at entry.
#[uprobe]
pub fn remora_go_write(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_WRITE);
    0
}

/// `crypto/tls.(*Conn).Read(b []byte) (int, error)`, at entry.
#[uprobe]
pub fn remora_go_read(ctx: ProbeContext) -> u32 {
    enter(&ctx, TLS_READ);
    0
}

/// At every `RET` of both: `n` is in RAX.
#[uprobe]
pub fn remora_go_ret(ctx: ProbeContext) -> u32 {
    // SAFETY: as above.
    let regs = unsafe { &*ctx.regs };
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = [pid_tgid >> 32, regs.r14];
    // SAFETY: copied at once.
    let Some(mut call) = (unsafe { GO_CALLS.get(key) }).copied() else {
        return 0;
    };
    let _ = GO_CALLS.remove(key);
    // The socket, when the I/O ran on this thread.
    // SAFETY: copied at once.
    if let Some(on_thread) = unsafe { TLS_CALLS.get(pid_tgid) }.copied()
        && on_thread.ssl == call.ssl
    {
        call.skaddr = on_thread.skaddr;
    }
    let _ = TLS_CALLS.remove(pid_tgid);
    let n = regs.rax as i64;
    if n > 0 {
        let _ = emit(&call, n as u64, pid_tgid);
    }
    0
}
