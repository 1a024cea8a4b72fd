//! The analyzer's services, shared by the HTTP API, MCP and the shell: what they do, apart from
//! how they are reached.
//!
//! - [`snapshots`]: the snapshot store (immutable copies of a time window's slices),
//! - [`bpf_filter`]: libpcap capture filters (loaded at run time) for PCAP exports,
//! - [`insights`]: the seed's analyses as SQL over `kfl(...)`,
//! - [`jobs`]: delayed dissection jobs over snapshots, on a bounded worker pool,
//! - [`pcap`]: a snapshot's packets as a pcapng stream,
//! - [`pcap_selection`]: which packets a filtered export keeps (bpf filter, KFL's flows),
//! - [`query`]: KFL over a dissection's tables with DataFusion,
//! - [`sql`]: read-only SQL over a snapshot's and its dissection's tables (with `kfl(...)`),
//! - [`kubernetes`]: watchers on the cluster feeding the workload history,
//! - [`workload_history`]: who an address was over time (intervals; persisted, frozen),
//! - [`workloads`]: attribution (`Resolve`), where the history comes from (`WorkloadSource`),
//!   static workload files.

pub mod bpf_filter;
pub mod checksum;
pub mod insights;
pub mod job_process;
pub mod jobs;
pub mod kubernetes;
pub mod pcap;
pub mod pcap_selection;
pub mod query;
pub mod snapshots;
pub mod sql;
pub mod workload_history;
pub mod workloads;
