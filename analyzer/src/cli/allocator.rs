//! Tuning of the `remora` binary's allocator, jemalloc (`crate::jemalloc` says why).
//!
//! Its options are set where the binary is linked ([`crate::jemalloc::CONF`], read before
//! `main`); what is left for run time is per command: no transparent huge pages for a one-shot
//! dissection ([`for_dissection`]) and an exit without the allocator's handlers
//! ([`exit_now`]).

/// Sets up the allocator for a one-shot dissection on `threads` threads: no transparent huge
/// pages ([`no_huge_pages`]). (With mimalloc a dissection on several threads also shortened the
/// purge delay; jemalloc's decay, set for the whole binary, does the same for every command.)
pub(super) fn for_dissection(threads: usize) {
    no_huge_pages();
    tracing::debug!(threads, "allocator set up");
}

/// For a one-shot batch command: no transparent huge pages for this process. The VM zeroes a
/// 2 MiB page at every first touch of one, and with the allocator's sparse touches of fresh
/// arenas that was up to a quarter of a dissection's time (1.3 s of system time in a 4.4 s run,
/// 0.2–0.4 s without them), depending on how fragmented the machine's memory was.
fn no_huge_pages() {
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
/// without the allocator's exit handlers: mimalloc's handed every page back with `madvise`
/// before the kernel unmaps them anyway, which was 16–17 ms of a 1.6 s `remora dissect` (1–2%
/// of a run, more of a two-core one), and nothing is gained by any allocator doing so. Nothing else is left to run:
/// the files were closed, fsynced and renamed, and stdout and stderr are flushed here.
pub(super) fn exit_now() -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) takes an integer and does not return; skipping the exit handlers is the
    // point, and no buffered output is left (flushed above).
    unsafe { libc::_exit(0) }
}
