//! Remora's benchmarks and the synthetic data they use; nothing here ships in `remora`.
//!
//! The binaries (`cargo xtask bench capture|dissect|query|jobs` builds and runs them in release)
//! measure Remora against the tool a user would otherwise use, in the same run:
//!
//! | binary | compares | with |
//! |---|---|---|
//! | `bench-capture` | the recorder | `tcpdump -w` on the same veth |
//! | `bench-dissect` | `remora dissect` | `tshark -T fields` on the same capture |
//! | `bench-query` | KFL over DataFusion, `/mcp/calls` | DuckDB SQL on the same Parquet |
//! | `bench-jobs` | a dissection job over HTTP | `remora dissect` on the same slices |
//!
//! [`synth`] generates the synthetic calls of `bench-query` and of the KFL-against-DuckDB test.

pub mod synth;

/// Bytes of the files below `dir` (0 for what cannot be read).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}
