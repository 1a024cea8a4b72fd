//! Remora's analyzer: snapshots, delayed dissection, KFL, the query API and MCP.
//!
//! This crate is a skeleton for now. What works is the embedded default, [`up`]: the recorder
//! of this machine with its API on `127.0.0.1:8898`. Snapshots, dissection, KFL and MCP arrive
//! module by module (`store`, `dissect`, `kfl`, `query`, `api`, `mcp`, `k8s`), see DESIGN.md.

pub mod up;
