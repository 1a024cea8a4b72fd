//! Remora's node agent: records every packet of this node's interfaces with eBPF into Parquet
//! time slices, keeps them within a retention budget, and serves them over the node API.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! TC hooks (remora-agent-ebpf) ─► per-CPU perf rings ─► collector (merge by time, decode, parse,
//!     pages) ─► writer (packets_parquet encoding, slice: atomic files) ─► store (retention)
//!                                                 node API (node_api) ◄─┘
//! socket tracepoints ─► ring buffer ─► sockets (one thread: rows, `sockets` slices) ─┘
//! TLS uprobes (tls: libraries found in /proc/*/maps) ─► ring buffer ─► `tls` slices ─┘
//! ```
//!
//! [`run::run`] wires them together; `remora-agent` is its command line.

pub mod auth;
pub mod cgroups;
pub mod clock;
pub mod collector;
pub mod config;
pub mod decode;
pub mod drops;
pub mod ebpf;
pub mod error;
pub mod event_ring;
pub mod flags;
pub mod interfaces;
pub mod listen;
pub mod metrics;
pub mod node_api;
pub mod packets_parquet;
pub mod parse;
pub mod perf_ring;
pub mod ring_buffer;
pub mod run;
pub mod schema;
pub mod slice;
pub mod slice_file;
pub mod sockets;
pub mod store;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod writer;

pub use config::AgentConfig;
pub use error::AgentError;
pub use run::{RunSummary, Started, run, run_with_routes, shutdown_signal};
