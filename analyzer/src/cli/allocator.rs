//! Tuning of mimalloc, the `remora` binary's allocator (main.rs says why it is mimalloc).
//!
//! mimalloc's purge delay stays at its default (freed memory goes back to the kernel after
//! 1 s): keeping it for ever made `remora dissect` no faster on one thread and held 50–90 MiB
//! more at its peak on two, whose four threads each kept the most they ever had (measured in
//! docs/dissection.md, "Memory on a long capture").

/// For a one-shot batch command: no transparent huge pages for this process. The VM zeroes a
/// 2 MiB page at every first touch of one, and with the allocator's sparse touches of fresh
/// arenas that was up to a quarter of a dissection's time (1.3 s of system time in a 4.4 s run,
/// 0.2–0.4 s without them), depending on how fragmented the machine's memory was.
pub(super) fn no_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "transparent huge pages left on"
        );
    }
}

/// Ends a one-shot batch command that succeeded, once its output is published and printed,
/// without the allocator's exit handler: mimalloc's `mi_process_done` hands every page back
/// with `madvise` before the kernel unmaps them anyway, which was 16–17 ms of a 1.6 s
/// `remora dissect` (1–2% of a run, more of a two-core one). Nothing else is left to run:
/// the files were closed, fsynced and renamed, and stdout and stderr are flushed here.
pub(super) fn exit_now() -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) takes an integer and does not return; skipping the exit handlers is the
    // point, and no buffered output is left (flushed above).
    unsafe { libc::_exit(0) }
}
