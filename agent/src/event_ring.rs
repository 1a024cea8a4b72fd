//! Draining a BPF ring buffer of events (socket events, TLS chunks) into slices: the loop both
//! writers share.
//!
//! The programs wake the reader only when a batch is waiting (`agent-ebpf`'s `wakeup_flags`),
//! so the loop also polls every 100 ms; a slice is sealed every period, when the batch is full,
//! and at the end.

use std::{
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};

use crate::clock::TaiToUtc;

/// What one ring's records become, slice by slice.
pub trait EventRows {
    /// Takes one ring record (`clock` converts its kernel timestamps).
    fn take(&mut self, record: &[u8], clock: &TaiToUtc);
    /// No row is held.
    fn is_empty(&self) -> bool;
    /// Enough is held to write it before the period ends (memory).
    fn is_full(&self) -> bool {
        false
    }
    /// Writes the rows held as one slice and forgets them; says what was lost since the last
    /// time.
    fn seal(&mut self);
}

/// The fixed-size head of a ring record (an event or a chunk header), when the record is long
/// enough to hold it. The ring gives no alignment guarantee to Rust, so it is read unaligned.
pub fn record_head<T: aya::Pod>(record: &[u8]) -> Option<T> {
    if record.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: `T` is plain old data (every bit pattern is a value) and the record holds at
    // least its size.
    Some(unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) })
}

/// Drains `ring` into `rows` until `stop`, sealing every `period`.
pub fn drain(
    ring: &mut RingBuf<MapData>,
    period: Duration,
    stop: &AtomicBool,
    rows: &mut impl EventRows,
) {
    let mut clock = TaiToUtc::sample();
    let mut clock_at = Instant::now();
    let mut opened = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping {
            let mut pollfd = libc::pollfd {
                fd: ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pollfd, 1, 100) };
        }
        if clock_at.elapsed() > Duration::from_secs(10) {
            clock = TaiToUtc::sample();
            clock_at = Instant::now();
        }
        while let Some(item) = ring.next() {
            rows.take(&item, &clock);
        }
        if (stopping || rows.is_full() || opened.elapsed() >= period) && !rows.is_empty() {
            rows.seal();
            opened = Instant::now();
        }
        if stopping {
            return;
        }
    }
}
