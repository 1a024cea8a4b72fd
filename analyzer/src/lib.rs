//! Remora's analyzer: snapshots, delayed dissection, KFL and SQL queries, the HTTP API and MCP,
//! and the `remora` command line. Arranged by role:
//!
//! - [`cli`]: the command line, one small function per subcommand, and the one HTTP client of
//!   a running analyzer;
//! - [`pipeline`]: dissection, from slices or capture files through the engine
//!   (`remora-dissect`) into the table writers (`remora-tables`);
//! - [`services`]: the snapshot store, dissection jobs, queries and workload attribution;
//! - [`api`] and [`mcp`]: the entry points, the HTTP routes and the MCP tools over them;
//! - [`allocator`]: the binary's allocator, jemalloc for dissections and mimalloc for the rest.
//!
//! docs/architecture.md draws the whole data path and says where each kind of change goes.

pub mod allocator;
pub mod api;
pub mod cli;
pub mod mcp;
pub mod pipeline;
pub mod services;
