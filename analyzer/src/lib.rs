//! Remora's analyzer: snapshots, delayed dissection, KFL, the query API and MCP.
//!
//! What works so far: the embedded default, [`up`] (the recorder of this machine with its API on
//! `127.0.0.1:8898`), offline dissection of capture files, [`dissect_cmd`], writing the
//! `calls` and `conns` tables ([`rows`]), and KFL queries over them ([`query`], with the
//! `kfl` crate). Snapshots, the query API and MCP arrive module by module (`store`, `api`,
//! `mcp`, `k8s`), see DESIGN.md.

pub mod api;
pub mod client;
pub mod dissect_cmd;
pub mod jobs;
pub mod mcp;
pub mod query;
pub mod rows;
pub mod slices_input;
pub mod store;
pub mod synth;
pub mod up;
pub mod workloads;
