//! Tuning of mimalloc, the `remora` binary's allocator (main.rs says why it is mimalloc).

use std::os::raw::{c_int, c_long};

unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys 0.1.49).
const MI_OPTION_PURGE_DELAY: c_int = 15;
/// Its defaults (ms) in the header (10) and as libmimalloc-sys builds it (1000), used to check
/// that the index above still names that option.
const DEFAULT_PURGE_DELAYS_MS: [c_long; 2] = [10, 1000];

/// For a one-shot batch command (`remora dissect`): keep freed memory for reuse instead of
/// returning it to the kernel a moment later. Every batch of rows needs the same buffers again, and
/// returning them made the kernel zero the same pages over and over. Peak RSS is unchanged in
/// kind (live connections plus one batch); the process exits afterwards. A long-running server
/// keeps mimalloc's default.
pub(super) fn keep_freed_memory() {
    // SAFETY: mimalloc's option API has no preconditions; the index is checked against the
    // option's documented default before it is changed.
    unsafe {
        if DEFAULT_PURGE_DELAYS_MS.contains(&mi_option_get(MI_OPTION_PURGE_DELAY)) {
            mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        } else {
            tracing::debug!("mimalloc option layout changed; purge delay left at its default");
        }
    }
}

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
