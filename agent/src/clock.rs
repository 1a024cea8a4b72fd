//! Converting the kernel's `CLOCK_TAI` event timestamps to wall-clock (UTC) nanoseconds.
//!
//! The TC hook stamps events with `bpf_ktime_get_tai_ns`. TAI runs in lock step with
//! `CLOCK_REALTIME` (they differ by the kernel's TAI offset, 0 or 37 s), so one offset, sampled
//! from user space and refreshed now and then, converts exactly, including after NTP steps.

/// Reads a clock in nanoseconds.
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock ids used here always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Current `CLOCK_TAI` time in nanoseconds, the clock of event timestamps.
pub fn tai_now_ns() -> u64 {
    clock_ns(libc::CLOCK_TAI) as u64
}

/// Current wall-clock time in nanoseconds since the Unix epoch.
pub fn realtime_now_ns() -> i64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Converts TAI nanoseconds to UTC nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct TaiToUtc {
    /// TAI minus UTC, in nanoseconds.
    offset_ns: i64,
}

impl TaiToUtc {
    /// Samples the current TAI − UTC offset.
    pub fn sample() -> Self {
        // Read REALTIME between two TAI reads and use the midpoint, so scheduling between the
        // reads does not bias the offset.
        let a = clock_ns(libc::CLOCK_TAI);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let b = clock_ns(libc::CLOCK_TAI);
        let offset = a + (b - a) / 2 - real;
        // The true offset is a whole number of seconds; round away the sampling jitter.
        let offset_ns = ((offset as f64 / 1e9).round() as i64) * 1_000_000_000;
        Self { offset_ns }
    }

    /// An explicit offset (tests).
    pub fn with_offset_ns(offset_ns: i64) -> Self {
        Self { offset_ns }
    }

    /// Converts one TAI timestamp.
    pub fn utc_ns(&self, tai_ns: u64) -> i64 {
        tai_ns as i64 - self.offset_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_tai_matches_realtime() {
        let conv = TaiToUtc::sample();
        let utc = conv.utc_ns(tai_now_ns());
        let real = realtime_now_ns();
        assert!((utc - real).abs() < 50_000_000, "utc {utc} real {real}");
        assert_eq!(
            TaiToUtc::with_offset_ns(37_000_000_000).utc_ns(40_000_000_000),
            3_000_000_000
        );
    }
}
