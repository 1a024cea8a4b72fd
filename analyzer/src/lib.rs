//! Remora's analyzer: snapshots, delayed dissection, KFL, the query API and MCP.
//!
//! What works so far: the embedded default, [`up`] (the recorder of this machine with its API on
//! `127.0.0.1:8898`), and offline dissection of capture files, [`dissect_cmd`], writing the
//! `calls` and `conns` tables ([`rows`]). Snapshots, KFL, the query API and MCP arrive module by
//! module (`store`, `kfl`, `query`, `api`, `mcp`, `k8s`), see DESIGN.md.

pub mod dissect_cmd;
pub mod rows;
pub mod slices_input;
pub mod up;
