//! The allocator of the `remora` binary, and of the benchmarks that measure its paths:
//! jemalloc with [`CONF`], declared in a binary by [`global_allocator!`](crate::global_allocator).
//!
//! Why jemalloc: dissection builds and frees millions of small strings between MiB-sized Arrow
//! and Parquet buffers. glibc spent ~30% of `remora dissect` in malloc/free and ~20% more in the
//! kernel zeroing pages it had returned (3.04 s against 1.45 s with mimalloc, on the
//! 1.7M-packet benchmark capture). jemalloc is as fast as mimalloc here and, over a long
//! capture, holds less: on the benchmark capture looped to 10 GiB the peak stayed ~1.16x one
//! copy's where mimalloc's crept to ~1.3x (docs/dissection.md, "jemalloc, for memory that
//! follows live connections").

pub use tikv_jemallocator::Jemalloc;

/// jemalloc's options (`MALLOC_CONF`-style pairs, NUL-terminated), read once, before `main`.
/// Freed pages go back to the kernel after 1 s instead of 10 s, with no second ("muzzy")
/// stage, by a background thread rather than by whichever thread allocates next. On the 10 GiB
/// loop of the benchmark capture (two threads) the peak went from 129 MiB with the defaults to
/// 121 MiB with the shorter decay and 117 MiB with the thread as well; one copy's from 106 to
/// 100–103 MiB, at the same speed (docs/dissection.md).
pub const CONF: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Declares jemalloc as the global allocator of the binary this is invoked in, with [`CONF`]
/// as its options. A macro, not a static of this library: jemalloc finds its options by the
/// symbol `_rjem_malloc_conf` (`malloc_conf` with the crate's prefix), which only a binary's own
/// object is sure to bring into the link.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOC: $crate::jemalloc::Jemalloc = $crate::jemalloc::Jemalloc;

        // SAFETY: jemalloc reads this as a `const char *` to a NUL-terminated string that
        // lives for the whole process, which a reference to the first byte of `CONF` is.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static MALLOC_CONF: &u8 = &$crate::jemalloc::CONF[0];
    };
}

#[cfg(test)]
mod tests {
    use tikv_jemalloc_ctl::raw;

    // This library's tests run on the allocator the binaries get (lib.rs).
    #[test]
    fn jemalloc_takes_the_options_the_binaries_set() {
        assert_eq!(super::CONF.last(), Some(&0), "not NUL-terminated");
        // SAFETY: each name is an `opt.*` mallctl of the type read (ssize_t, bool).
        let (dirty, muzzy, background) = unsafe {
            (
                raw::read::<isize>(b"opt.dirty_decay_ms\0").expect("opt.dirty_decay_ms"),
                raw::read::<isize>(b"opt.muzzy_decay_ms\0").expect("opt.muzzy_decay_ms"),
                raw::read::<bool>(b"opt.background_thread\0").expect("opt.background_thread"),
            )
        };
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert_eq!((dirty, muzzy, background), (1000, 0, true));
        }
    }
}
