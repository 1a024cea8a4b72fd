//! Remora's node agent: records every packet of this node's interfaces with eBPF into Parquet
//! time slices, keeps them within a retention budget, and serves them over the node API.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! TC hooks (agent-ebpf) ─► per-CPU perf rings ─► reader (one task per CPU, decode)
//!     ─► merge (watermark, time order) ─► slice (Parquet, atomic) ─► store (retention)
//!                                                      node API (api) ◄─┘
//! ```
//!
//! [`run::run`] wires them together; `remora-agent` is its command line.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod ebpf;
pub mod error;
pub mod interfaces;
pub mod merge;
pub mod metrics;
pub mod perf_ring;
pub mod reader;
pub mod run;
pub mod schema;
pub mod slice;
pub mod store;
pub mod writer;

pub use config::AgentConfig;
pub use error::AgentError;
pub use run::{RunSummary, Started, run, run_with_routes, shutdown_signal};
