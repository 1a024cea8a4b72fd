//! The `remora` binary's global allocator: jemalloc for the dissection commands, mimalloc for
//! everything else, chosen once per process by its command line ([`ByCommand`]).
//!
//! Why two. Dissection builds and frees millions of small strings between MiB-sized Arrow and
//! Parquet buffers, and glibc spent half of `remora dissect` in malloc/free and in the kernel
//! zeroing pages it had returned (3.04 s against 1.45 s with mimalloc, 1.7M packets). Both
//! mimalloc and jemalloc are that fast, but they differ elsewhere (docs/dissection.md,
//! "jemalloc: the long capture within its bound, the percentile query not"):
//!
//! - over a long capture mimalloc keeps freed pages: on the benchmark capture looped to 10 GiB
//!   its peak crept to 1.375x the rounds' two-core peak, where jemalloc with [`JEMALLOC_CONF`]
//!   stayed at 1.21x (the bound is 1.25x);
//! - DataFusion's percentile query ran 1.5–1.6x slower on jemalloc (1.03 against 0.65 s on
//!   10 M calls), and queries are what the server and `remora calls|stats|sql` run.
//!
//! So `remora dissect` and `remora dissect-job` (the server's dissection processes) run on
//! jemalloc, and the server, the queries and the rest on mimalloc. `REMORA_ALLOCATOR=mimalloc`
//! or `=jemalloc` overrides the choice, for measuring one against the other on one binary.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU8, Ordering};

/// jemalloc's options (`MALLOC_CONF`-style pairs, NUL-terminated), read when jemalloc starts.
/// Freed pages go back to the kernel after 1 s instead of 10 s, with no second ("muzzy")
/// stage, by a background thread rather than by whichever thread allocates next, and every
/// thread allocates from one arena (each keeps its own cache in front of it), so that a page
/// one thread freed serves the others. On the 10 GiB loop of the benchmark capture (two
/// threads) the peak went from 129 MiB with jemalloc's defaults to 121 MiB with the shorter
/// decay, and with the rest to 116 MiB against the rounds' 96 (1.21x; 1.255x without the one
/// arena), with no difference in speed beyond the host's noise (docs/dissection.md, "An
/// allocator per process").
pub const JEMALLOC_CONF: &[u8] =
    b"background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The subcommands that run on jemalloc: the one-shot dissections.
const JEMALLOC_COMMANDS: [&[u8]; 2] = [b"dissect", b"dissect-job"];

/// The environment variable that overrides the choice (`mimalloc` or `jemalloc`); a C string,
/// as it is read before anything may allocate.
pub const OVERRIDE_VAR: &std::ffi::CStr = c"REMORA_ALLOCATOR";

/// Which allocator a process runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// mimalloc: the server, queries, and every command but the dissections.
    Mimalloc,
    /// jemalloc with [`JEMALLOC_CONF`]: `remora dissect` and `remora dissect-job`.
    Jemalloc,
}

impl Kind {
    /// The allocator's name, as [`OVERRIDE_VAR`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mimalloc => "mimalloc",
            Kind::Jemalloc => "jemalloc",
        }
    }
}

const UNDECIDED: u8 = 0;
const MIMALLOC: u8 = 1;
const JEMALLOC: u8 = 2;

/// The process's allocator, decided at its first allocation and never changed after, so that
/// every block goes back to the allocator that gave it.
static CHOSEN: AtomicU8 = AtomicU8::new(UNDECIDED);

/// A global allocator that hands each call to mimalloc or jemalloc, whichever [`choose`] picks
/// from the process's command line at its first allocation. Declare it in a binary with
/// [`global_allocator!`](crate::global_allocator), which also gives jemalloc its options.
pub struct ByCommand;

impl ByCommand {
    #[inline]
    fn kind() -> u8 {
        match CHOSEN.load(Ordering::Relaxed) {
            UNDECIDED => decide(),
            chosen => chosen,
        }
    }
}

// SAFETY: every call goes to one of two allocators that uphold GlobalAlloc's contract, and
// always the same one in a process (`CHOSEN` is set once, before the first block is handed
// out), so each block is freed and resized by the allocator that allocated it.
unsafe impl GlobalAlloc for ByCommand {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Self::kind() == JEMALLOC {
                tikv_jemallocator::Jemalloc.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if Self::kind() == JEMALLOC {
                tikv_jemallocator::Jemalloc.alloc_zeroed(layout)
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on; `ptr` came from the same allocator.
        unsafe {
            if Self::kind() == JEMALLOC {
                tikv_jemallocator::Jemalloc.dealloc(ptr, layout)
            } else {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on; `ptr` came from the same allocator.
        unsafe {
            if Self::kind() == JEMALLOC {
                tikv_jemallocator::Jemalloc.realloc(ptr, layout, new_size)
            } else {
                mimalloc::MiMalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// The allocator this process runs on, if it declared [`ByCommand`] and has allocated
/// (`None` otherwise: the C library's, or a test binary's).
pub fn current() -> Option<Kind> {
    match CHOSEN.load(Ordering::Relaxed) {
        MIMALLOC => Some(Kind::Mimalloc),
        JEMALLOC => Some(Kind::Jemalloc),
        _ => None,
    }
}

/// Decides at the first allocation. Allocates nothing itself: the command line is read with
/// plain system calls into a stack buffer. Two threads racing here decide the same.
#[cold]
fn decide() -> u8 {
    let mut buf = [0u8; 4096];
    let cmdline = read_cmdline(&mut buf);
    let chosen = match choose(cmdline, env_override()) {
        Kind::Mimalloc => MIMALLOC,
        Kind::Jemalloc => JEMALLOC,
    };
    CHOSEN.store(chosen, Ordering::Relaxed);
    chosen
}

/// The allocator for a command line (`/proc/self/cmdline`: NUL-separated arguments, the
/// program first), unless `forced` names one. The subcommand is the first argument that is
/// not an option, skipping the value of `--log` (the one global option that takes one).
pub fn choose(cmdline: &[u8], forced: Option<Kind>) -> Kind {
    if let Some(kind) = forced {
        return kind;
    }
    let mut args = cmdline.split(|&b| b == 0).skip(1);
    while let Some(arg) = args.next() {
        if arg == b"--log" {
            args.next();
        } else if !arg.starts_with(b"-") {
            return if JEMALLOC_COMMANDS.contains(&arg) {
                Kind::Jemalloc
            } else {
                Kind::Mimalloc
            };
        }
    }
    Kind::Mimalloc
}

/// `f` of [`OVERRIDE_VAR`]'s value, if it is set; reads it without allocating.
fn with_override<R>(f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    // SAFETY: getenv reads the environment the C library set up before any of our code ran;
    // the name is NUL-terminated; the result, if not null, is a NUL-terminated string.
    let value = unsafe { libc::getenv(OVERRIDE_VAR.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: not null, so a NUL-terminated string, used here before anything can change
    // the environment.
    Some(f(unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes()))
}

/// The allocator [`OVERRIDE_VAR`] names. An unknown value is ignored here and reported by
/// [`override_problem`], once logging is up.
fn env_override() -> Option<Kind> {
    with_override(parse_override).flatten()
}

/// The allocator whose [`Kind::name`] `value` is.
fn parse_override(value: &[u8]) -> Option<Kind> {
    [Kind::Mimalloc, Kind::Jemalloc]
        .into_iter()
        .find(|kind| kind.name().as_bytes() == value)
}

/// What is wrong with [`OVERRIDE_VAR`], if it is set to something other than an allocator's
/// name (it was then ignored).
pub fn override_problem() -> Option<String> {
    with_override(|value| {
        parse_override(value).is_none().then(|| {
            format!(
                "{}={} is neither mimalloc nor jemalloc; ignored",
                OVERRIDE_VAR.to_string_lossy(),
                String::from_utf8_lossy(value)
            )
        })
    })
    .flatten()
}

/// The start of `/proc/self/cmdline` in `buf` (empty if it cannot be read: mimalloc then).
fn read_cmdline(buf: &mut [u8]) -> &[u8] {
    // SAFETY: open(2) with a NUL-terminated path and integer flags.
    let fd = unsafe {
        libc::open(
            c"/proc/self/cmdline".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return &[];
    }
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf`, whose length bounds the count.
        let n = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    &buf[..filled]
}

/// jemalloc's options as it runs with them (the `opt.*` mallctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JemallocOptions {
    /// `opt.dirty_decay_ms`.
    pub dirty_decay_ms: isize,
    /// `opt.muzzy_decay_ms`.
    pub muzzy_decay_ms: isize,
    /// `opt.background_thread`.
    pub background_thread: bool,
    /// `opt.narenas`.
    pub narenas: u32,
}

/// jemalloc's options as it runs with them. Only where [`current`] is jemalloc: the call
/// starts jemalloc.
pub fn jemalloc_options() -> Result<JemallocOptions, String> {
    use tikv_jemalloc_ctl::raw;
    // SAFETY: each name is an `opt.*` mallctl of the type read (ssize_t, ssize_t, bool,
    // unsigned).
    unsafe {
        Ok(JemallocOptions {
            dirty_decay_ms: raw::read::<isize>(b"opt.dirty_decay_ms\0")
                .map_err(|e| e.to_string())?,
            muzzy_decay_ms: raw::read::<isize>(b"opt.muzzy_decay_ms\0")
                .map_err(|e| e.to_string())?,
            background_thread: raw::read::<bool>(b"opt.background_thread\0")
                .map_err(|e| e.to_string())?,
            narenas: raw::read::<u32>(b"opt.narenas\0").map_err(|e| e.to_string())?,
        })
    }
}

/// Declares [`ByCommand`] as the global allocator of the binary this is invoked in, and
/// [`JEMALLOC_CONF`] as jemalloc's options. A macro, not a static of this library: jemalloc
/// finds its options by the symbol `_rjem_malloc_conf` (`malloc_conf` with the crate's
/// prefix), which only a binary's own object is sure to bring into the link.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOC: $crate::allocator::ByCommand = $crate::allocator::ByCommand;

        // SAFETY: jemalloc reads this as a `const char *` to a NUL-terminated string that
        // lives for the whole process, which a reference to the first byte of the options is.
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static JEMALLOC_CONF: &u8 = &$crate::allocator::JEMALLOC_CONF[0];
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmdline(args: &[&str]) -> Vec<u8> {
        args.iter().flat_map(|a| a.bytes().chain([0])).collect()
    }

    #[test]
    fn the_dissections_run_on_jemalloc_the_rest_on_mimalloc() {
        let cases: [(&[&str], Kind); 10] = [
            (
                &["remora", "dissect", "x.pcap", "--out", "o"],
                Kind::Jemalloc,
            ),
            (
                &["/usr/bin/remora", "dissect-job", "--out", "o"],
                Kind::Jemalloc,
            ),
            (
                &["remora", "--log", "debug", "dissect", "x"],
                Kind::Jemalloc,
            ),
            (&["remora", "--log=debug", "dissect", "x"], Kind::Jemalloc),
            (&["remora", "up"], Kind::Mimalloc),
            (
                &["remora", "serve", "--data-dir", "dissect"],
                Kind::Mimalloc,
            ),
            (&["remora", "calls", "dissect"], Kind::Mimalloc),
            (&["remora", "--log", "dissect", "up"], Kind::Mimalloc),
            (&["remora", "--help"], Kind::Mimalloc),
            (&[], Kind::Mimalloc),
        ];
        for (args, kind) in cases {
            assert_eq!(choose(&cmdline(args), None), kind, "{args:?}");
        }
        // /proc/self/cmdline ends each argument with NUL; a cut-off last one still counts.
        assert_eq!(choose(b"remora\0dissect", None), Kind::Jemalloc);
    }

    #[test]
    fn the_environment_overrides_the_command() {
        let dissect = cmdline(&["remora", "dissect", "x"]);
        assert_eq!(choose(&dissect, Some(Kind::Mimalloc)), Kind::Mimalloc);
        assert_eq!(
            choose(&cmdline(&["remora", "up"]), Some(Kind::Jemalloc)),
            Kind::Jemalloc
        );
        assert_eq!(parse_override(b"jemalloc"), Some(Kind::Jemalloc));
        assert_eq!(parse_override(b"mimalloc"), Some(Kind::Mimalloc));
        assert_eq!(parse_override(b"glibc"), None);
        assert_eq!(parse_override(b""), None);
    }

    #[test]
    fn the_command_line_is_read_without_allocating() {
        let mut buf = [0u8; 4096];
        let read = read_cmdline(&mut buf);
        // The test binary's own path comes first.
        let program = std::env::args_os().next().expect("argv[0]");
        assert!(read.starts_with(program.as_encoded_bytes()), "{read:?}");
        // A buffer too small for the whole line keeps its start.
        let mut small = [0u8; 3];
        assert_eq!(read_cmdline(&mut small), &read[..3.min(read.len())]);
    }

    #[test]
    fn jemalloc_options_are_nul_terminated() {
        assert_eq!(JEMALLOC_CONF.last(), Some(&0));
        assert!(!JEMALLOC_CONF[..JEMALLOC_CONF.len() - 1].contains(&0));
    }
}
