//! Run-time tuning of the `remora` binary's allocator ([`crate::allocator`] says which one a
//! command runs on, and why).
//!
//! On mimalloc (a dissection forced onto it with `REMORA_ALLOCATOR=mimalloc`), the purge delay
//! (how long freed memory stays resident before it goes back to the kernel) is its default,
//! 1 s, except for a dissection on several threads, which sets it to
//! [`THREADED_PURGE_DELAY_MS`]: keeping freed memory for ever made `remora dissect` no faster
//! on one thread and held 50–90 MiB more at its peak on two; at 1 s a two-thread dissection
//! held ~100 MiB of freed memory that its other threads could not reuse (measured in
//! docs/dissection.md, "Memory on a long capture" and "Memory on two cores"). jemalloc's
//! decay is set once, by [`crate::allocator::JEMALLOC_CONF`].

use crate::allocator::{self, Kind};

/// mimalloc's purge delay, ms, for a dissection on more than one thread: on ten copies of the
/// benchmark capture in a row (1.6 GB) the two-thread peak went from 269–284 MiB to 222–241
/// MiB, as fast (8.4–8.5 s back to back); on the capture itself from 190–206 to 164–172 MiB,
/// median wall 0.975 against 0.945 s over six pairs. One thread keeps the default: there the
/// shorter delay cost 2–3% of the time for 13 MiB less.
pub(super) const THREADED_PURGE_DELAY_MS: libc::c_long = 100;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (the `mimalloc` crate binds no
/// option setter; `the_purge_delay_option_is_mimallocs` checks the number).
const MI_OPTION_PURGE_DELAY: libc::c_int = 15;

// The options live in mimalloc's C library, which this links even where it is not the global
// allocator (tests, the `system-allocator` feature).
extern crate mimalloc as _;

unsafe extern "C" {
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_option_get(option: libc::c_int) -> libc::c_long;
}

/// Sets up the allocator for a one-shot dissection on `threads` threads: no transparent huge
/// pages ([`no_huge_pages`]), and on mimalloc freed memory handed back sooner when there are
/// several. Logs (at debug) the allocator the process runs on and, on jemalloc, the options
/// jemalloc took, which the end-to-end tests read back.
pub(super) fn for_dissection(threads: usize) {
    no_huge_pages();
    if let Some(problem) = allocator::override_problem() {
        tracing::warn!("{problem}");
    }
    match allocator::current() {
        Some(Kind::Jemalloc) => match allocator::jemalloc_options() {
            Ok(options) => tracing::debug!(
                threads,
                allocator = "jemalloc",
                dirty_decay_ms = options.dirty_decay_ms,
                muzzy_decay_ms = options.muzzy_decay_ms,
                background_thread = options.background_thread,
                narenas = options.narenas,
                "allocator set up"
            ),
            Err(error) => {
                tracing::debug!(threads, allocator = "jemalloc", %error, "allocator set up")
            }
        },
        kind => {
            if threads > 1 {
                // SAFETY: mimalloc reads its options at any time; setting one is a plain store.
                unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, THREADED_PURGE_DELAY_MS) };
            }
            tracing::debug!(
                threads,
                allocator = kind.map_or("system", Kind::name),
                purge_delay_ms = purge_delay_ms(),
                "allocator set up"
            );
        }
    }
}

/// mimalloc's current purge delay, ms.
fn purge_delay_ms() -> libc::c_long {
    // SAFETY: reads an option; no arguments beyond its number.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
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
/// without the allocator's exit handlers: mimalloc's `mi_process_done` hands every page back
/// with `madvise` before the kernel unmaps them anyway, which was 16–17 ms of a 1.6 s
/// `remora dissect` (1–2% of a run, more of a two-core one), and no allocator gains anything
/// by doing so. Nothing else is left to run:
/// the files were closed, fsynced and renamed, and stdout and stderr are flushed here.
pub(super) fn exit_now() -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) takes an integer and does not return; skipping the exit handlers is the
    // point, and no buffered output is left (flushed above).
    unsafe { libc::_exit(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // mimalloc's documented default for `purge_delay` (1000 ms) marks the option number
        // as the right one, unless the environment overrides it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                purge_delay_ms(),
                1000,
                "option {MI_OPTION_PURGE_DELAY} is not purge_delay"
            );
        }
        for_dissection(2);
        assert_eq!(purge_delay_ms(), THREADED_PURGE_DELAY_MS);
    }
}
