//! The analyzer's services, shared by the HTTP API, MCP and the shell: what they do, apart from
//! how they are reached.
//!
//! - [`snapshots`]: the snapshot store (immutable copies of a time window's slices),
//! - [`insights`]: the seed's analyses as SQL over `kfl(...)`,
//! - [`jobs`]: delayed dissection jobs over snapshots, on a bounded worker pool,
//! - [`pcap`]: a snapshot's packets as a pcapng stream,
//! - [`query`]: KFL over a dissection's tables with DataFusion,
//! - [`sql`]: read-only SQL over a snapshot's and its dissection's tables (with `kfl(...)`),
//! - [`workloads`]: who an address was (attribution), from a static file or frozen records.

pub mod insights;
pub mod jobs;
pub mod pcap;
pub mod query;
pub mod snapshots;
pub mod sql;
pub mod workloads;
