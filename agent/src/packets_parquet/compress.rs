//! Compression of the payload column, and the `auto` policy that decides when it pays.
//!
//! Measured on the recorder's 2-core VM (zstd 1.5.7): level 1 compresses 64-byte UDP pages
//! 2.8× at 0.42 GB/s, bulk TCP payload 28× at 2.3 GB/s; level −1 does the first 2.6× at
//! 0.50 GB/s and the second 28× at 4.8 GB/s. Writing a byte into the page cache costs the
//! recorder about 0.8 ns. So compressing small packets costs ~2 ns per byte to save ~0.5 ns of
//! writing (their bytes are mostly IP and TCP/UDP headers, which the columns already hold),
//! while bulk payloads compress for ~0.2 ns per byte and save ~0.8.
//!
//! `auto` therefore compresses a row group's payload chunk (zstd −1) only when the last
//! measurement showed it is cheap and effective: at least [`AUTO_MIN_RATIO`] and
//! [`AUTO_MIN_BYTES_PER_SEC`]. Every compressed page is a measurement; a stored chunk measures
//! its first page (compressed aside and thrown away) every [`AUTO_PROBE_EVERY`] row groups, and
//! the recorder's first page. When a measurement changes the decision, the row group ends after
//! that page ([`PayloadCompressor::changed_mind`]), so at most one page goes the wrong way.

use std::{io, time::Instant};

use super::format::Codec;

/// How the payload column is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// Zstandard at this level on every page (negative levels are zstd's fast modes).
    Zstd(i32),
    /// Zstandard level −1 where it is cheap and effective (see the module docs).
    Auto,
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// `auto`, `none`, `zstd` (level 1) or `zstd:<level>` (-7 to 19).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            "zstd" => Ok(Self::Zstd(1)),
            _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (-7..=19).contains(&level) => Ok(Self::Zstd(level)),
                _ => Err(format!(
                    "unknown compression `{s}`: use auto, none, zstd or zstd:<level> (-7 to 19)"
                )),
            },
        }
    }
}

/// Level `auto` compresses with.
const AUTO_LEVEL: i32 = -1;
/// Smallest compression ratio for which `auto` compresses.
pub const AUTO_MIN_RATIO: f64 = 2.0;
/// Slowest compression (input bytes per second) for which `auto` compresses.
pub const AUTO_MIN_BYTES_PER_SEC: f64 = 2e9;
/// A stored chunk measures again every this many row groups.
pub const AUTO_PROBE_EVERY: u32 = 4;

/// The zstd context and, for `auto`, what the last measurement said. One per recorder: it
/// passes from each slice file to the next.
pub struct PayloadCompressor {
    mode: Compression,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// `auto`: whether the next chunk is compressed.
    worth_it: bool,
    /// `auto`: stored row groups since the last measurement.
    since_probe: u32,
    /// `auto`: the ratio and speed a chunk needs.
    min_ratio: f64,
    min_bytes_per_sec: f64,
    scratch: Vec<u8>,
}

impl PayloadCompressor {
    /// A compressor for `mode`.
    pub fn new(mode: Compression) -> io::Result<Self> {
        let zstd = match mode {
            Compression::None => None,
            Compression::Zstd(level) => Some(zstd::bulk::Compressor::new(level)?),
            Compression::Auto => Some(zstd::bulk::Compressor::new(AUTO_LEVEL)?),
        };
        Ok(Self {
            mode,
            zstd,
            // Start stored, and measure on the first page.
            worth_it: mode != Compression::Auto,
            since_probe: AUTO_PROBE_EVERY,
            min_ratio: AUTO_MIN_RATIO,
            min_bytes_per_sec: AUTO_MIN_BYTES_PER_SEC,
            scratch: Vec::new(),
        })
    }

    /// The same with other `auto` thresholds (tests).
    pub fn with_thresholds(mut self, min_ratio: f64, min_bytes_per_sec: f64) -> Self {
        self.min_ratio = min_ratio;
        self.min_bytes_per_sec = min_bytes_per_sec;
        self
    }

    /// The codec of the next row group's payload chunk.
    pub fn next_chunk(&mut self) -> Codec {
        match self.mode {
            Compression::None => Codec::Uncompressed,
            Compression::Zstd(_) => Codec::Zstd,
            Compression::Auto if self.worth_it => Codec::Zstd,
            Compression::Auto => {
                self.since_probe += 1;
                Codec::Uncompressed
            }
        }
    }

    /// True when the last measurement wants another codec than `current` (the writer then
    /// ends the row group, so the next chunk follows the new decision).
    pub fn changed_mind(&self, current: Codec) -> bool {
        self.mode == Compression::Auto && self.worth_it != (current == Codec::Zstd)
    }

    /// Compresses a page of a compressed chunk into `out` (which is overwritten).
    pub fn compress(&mut self, page: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let Some(zstd) = &mut self.zstd else {
            return Err(io::Error::other("compress called without a codec"));
        };
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(page.len()));
        let started = Instant::now();
        zstd.compress_to_buffer(page, out)?;
        if self.mode == Compression::Auto {
            self.observe(page.len(), out.len(), started);
        }
        Ok(())
    }

    /// Called with the first page of each stored chunk: under `auto`, every few row groups
    /// the page is compressed aside (and thrown away) to measure.
    pub fn probe(&mut self, page: &[u8]) -> io::Result<()> {
        if self.mode != Compression::Auto || self.since_probe < AUTO_PROBE_EVERY {
            return Ok(());
        }
        self.since_probe = 0;
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.compress(page, &mut scratch);
        self.scratch = scratch;
        result
    }

    fn observe(&mut self, raw: usize, compressed: usize, started: Instant) {
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        let ratio = raw as f64 / compressed.max(1) as f64;
        let speed = raw as f64 / seconds;
        self.worth_it = ratio >= self.min_ratio && speed >= self.min_bytes_per_sec;
        tracing::debug!(
            raw,
            compressed,
            ratio,
            gb_per_s = speed / 1e9,
            compress_next = self.worth_it,
            "payload compression measured"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_flag() {
        assert_eq!("auto".parse(), Ok(Compression::Auto));
        assert_eq!("none".parse(), Ok(Compression::None));
        assert_eq!("zstd".parse(), Ok(Compression::Zstd(1)));
        assert_eq!("zstd:-3".parse(), Ok(Compression::Zstd(-3)));
        let err = "zstd:40".parse::<Compression>().unwrap_err();
        assert!(err.contains("-7 to 19"), "{err}");
        assert!("lz4".parse::<Compression>().is_err());
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut state = 0x1234_5678_9abc_def1u64;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn auto_stores_what_does_not_compress_and_probes_again() {
        // Speed does not count here (this test must not depend on the machine's load).
        let mut c = PayloadCompressor::new(Compression::Auto)
            .unwrap()
            .with_thresholds(AUTO_MIN_RATIO, 0.0);
        let noise = noise(1 << 20);
        assert_eq!(
            c.next_chunk(),
            Codec::Uncompressed,
            "the first chunk is stored..."
        );
        c.probe(&[7u8; 1 << 16]).unwrap();
        assert!(
            c.changed_mind(Codec::Uncompressed),
            "...and its first page measured"
        );
        assert_eq!(c.next_chunk(), Codec::Zstd);
        let mut out = Vec::new();
        c.compress(&noise, &mut out).unwrap();
        assert!(c.changed_mind(Codec::Zstd));
        // Random bytes do not compress: the next chunks are stored, and only every
        // AUTO_PROBE_EVERY-th one measures again.
        for _ in 0..AUTO_PROBE_EVERY - 1 {
            assert_eq!(c.next_chunk(), Codec::Uncompressed);
            c.probe(&[0u8; 4096]).unwrap();
        }
        assert_eq!(c.next_chunk(), Codec::Uncompressed);
        c.probe(&vec![0u8; 1 << 20]).unwrap();
        assert_eq!(c.next_chunk(), Codec::Zstd, "zeros compress: back to zstd");
    }

    #[test]
    fn auto_stores_what_compresses_too_slowly() {
        let mut c = PayloadCompressor::new(Compression::Auto)
            .unwrap()
            .with_thresholds(AUTO_MIN_RATIO, f64::INFINITY);
        assert_eq!(c.next_chunk(), Codec::Uncompressed);
        c.probe(&vec![0u8; 1 << 20]).unwrap();
        assert!(!c.changed_mind(Codec::Uncompressed));
        assert_eq!(c.next_chunk(), Codec::Uncompressed);
    }

    #[test]
    fn fixed_modes_ignore_measurements() {
        let mut c = PayloadCompressor::new(Compression::Zstd(3)).unwrap();
        let mut out = Vec::new();
        c.compress(&noise(4096), &mut out).unwrap();
        assert_eq!(c.next_chunk(), Codec::Zstd);
        let mut none = PayloadCompressor::new(Compression::None).unwrap();
        assert_eq!(none.next_chunk(), Codec::Uncompressed);
        assert!(none.compress(b"x", &mut out).is_err());
    }
}
