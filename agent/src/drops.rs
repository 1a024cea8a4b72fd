//! Drops carried by the slices. The kernel counts, per CPU, the packets it could not write
//! because that CPU's ring was full; a sampler copies those counters here, and each slice,
//! when it is sealed, takes the drops counted since the slice before it into its footer
//! (`remora.drops`). Any window's drops are then the sum over its slices, and a snapshot carries
//! them with the slices it links. A drop is charged to the slice sealed after the sampler saw it
//! (within a sampling period of when it happened), so sums over whole recordings are exact and a
//! window's figure can lean by one sampling period to the next slice.

use std::{path::Path, sync::Mutex};

use remora_agent_common::CpuCounters;
use serde::{Deserialize, Serialize};

/// The footer key of a slice's drops.
pub const FOOTER_KEY: &str = "remora.drops";

/// The kernel's drop counters as last sampled: (packets, bytes) per CPU, since the recorder
/// was loaded.
#[derive(Debug, Default)]
pub struct DropTotals {
    per_cpu: Mutex<Vec<(u64, u64)>>,
}

impl DropTotals {
    /// Takes a new reading of the kernel counters.
    pub fn update(&self, counters: &[CpuCounters]) {
        let reading: Vec<(u64, u64)> = counters
            .iter()
            .map(|c| (c.dropped_packets, c.dropped_bytes))
            .collect();
        *self.per_cpu.lock().unwrap_or_else(|e| e.into_inner()) = reading;
    }

    /// The last reading.
    pub fn read(&self) -> Vec<(u64, u64)> {
        self.per_cpu
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The drops charged to one slice.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceDrops {
    /// Packets lost because a CPU's ring was full.
    pub packets: u64,
    /// Their frame bytes.
    pub bytes: u64,
    /// Packets per CPU.
    pub per_cpu: Vec<u64>,
}

impl SliceDrops {
    /// The drops between two readings (`before` may be shorter: CPUs it lacks count from 0).
    pub fn between(before: &[(u64, u64)], now: &[(u64, u64)]) -> Self {
        let per_cpu: Vec<(u64, u64)> = now
            .iter()
            .enumerate()
            .map(|(i, &(p, b))| {
                let (p0, b0) = before.get(i).copied().unwrap_or_default();
                (p.saturating_sub(p0), b.saturating_sub(b0))
            })
            .collect();
        Self {
            packets: per_cpu.iter().map(|c| c.0).sum(),
            bytes: per_cpu.iter().map(|c| c.1).sum(),
            per_cpu: per_cpu.iter().map(|c| c.0).collect(),
        }
    }

    /// Adds another slice's drops.
    pub fn add(&mut self, other: &SliceDrops) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        if self.per_cpu.len() < other.per_cpu.len() {
            self.per_cpu.resize(other.per_cpu.len(), 0);
        }
        for (a, b) in self.per_cpu.iter_mut().zip(&other.per_cpu) {
            *a += b;
        }
    }
}

/// The drops in a slice's footer; none for a slice written without them (an import, an older
/// recorder) or one that cannot be read.
pub fn read_slice_drops(path: &Path) -> Option<SliceDrops> {
    use parquet::file::reader::{FileReader as _, SerializedFileReader};
    let file = std::fs::File::open(path).ok()?;
    let reader = SerializedFileReader::new(file).ok()?;
    let value = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()?
        .iter()
        .find(|kv| kv.key == FOOTER_KEY)?
        .value
        .clone()?;
    serde_json::from_str(&value).ok()
}

/// The drops carried by the packet slices among `slices`.
pub fn sum_slices<'a>(slices: impl IntoIterator<Item = &'a crate::store::SliceFile>) -> SliceDrops {
    let mut total = SliceDrops::default();
    for slice in slices.into_iter().filter(|s| s.kind == "packets") {
        if let Some(d) = read_slice_drops(&slice.path) {
            total.add(&d);
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_between_readings_and_sums() {
        let d = SliceDrops::between(&[(1, 100)], &[(4, 400), (2, 50)]);
        assert_eq!(
            d,
            SliceDrops {
                packets: 5,
                bytes: 350,
                per_cpu: vec![3, 2]
            }
        );
        let mut total = SliceDrops::default();
        total.add(&d);
        total.add(&SliceDrops::between(&[], &[(1, 10)]));
        assert_eq!(
            (total.packets, total.bytes, total.per_cpu),
            (6, 360, vec![4, 2])
        );
    }
}
