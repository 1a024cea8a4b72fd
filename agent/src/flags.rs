//! Command-line flags of the recorder, shared by `remora-agent` and `remora up`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::config::{
    AgentConfig, AttachMode, DEFAULT_NODE_API_PORT, HookMode, PacketTransport, parse_duration,
    parse_size,
};

/// Recorder flags.
#[derive(Args, Debug, Clone)]
pub struct RecordArgs {
    /// Interfaces to record, comma separated [default: every interface that is up, and new
    /// ones as they appear]
    #[arg(long, short = 'i', value_delimiter = ',')]
    pub interfaces: Vec<String>,
    /// Data directory; slices go to <data-dir>/capture/<node>/packets/
    #[arg(long, default_value = "./remora-data", env = "REMORA_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Name of this node [default: the host name]
    #[arg(long, env = "REMORA_NODE")]
    pub node: Option<String>,
    /// Bytes kept of each packet, counted from the IP header (64 to 64986)
    #[arg(long, default_value_t = crate::config::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Size of each per-CPU ring, e.g. 8MiB
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    pub ring_bytes: u64,
    /// Close a slice after this long, e.g. 10s
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub slice_duration: Duration,
    /// ... or once its file reaches this size
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub slice_max_bytes: u64,
    /// Payload compression: `auto` (zstd where it is cheap and pays, see docs/capture.md),
    /// `zstd`, `zstd:<level>` (-7 to 19) or `none`
    #[arg(long, default_value = "auto")]
    pub compression: crate::packets_parquet::Compression,
    /// Keep at most this many bytes of slices on this node (oldest deleted first)
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub retention_bytes: u64,
    /// Delete slices older than this, e.g. 24h [default: no age limit]
    #[arg(long, value_parser = parse_duration)]
    pub retention_age: Option<Duration>,
    /// Keep this much of the data directory's filesystem free, deleting the oldest slices
    /// when something fills it [default: twice --slice-max-bytes]
    #[arg(long, value_parser = parse_size)]
    pub min_free: Option<u64>,
    /// Node API address, or `off`
    #[arg(long, default_value_t = format!("127.0.0.1:{DEFAULT_NODE_API_PORT}"))]
    pub listen: String,
    /// Bearer token file of the node API [default: <data-dir>/token]
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// TCP/UDP ports never to record (the API port is always excluded)
    #[arg(long, value_delimiter = ',')]
    pub exclude_port: Vec<u16>,
    /// `auto` (TCX on 6.6+, netlink before) or `netlink` (force the clsact filter path)
    #[arg(long, default_value = "auto", value_parser = ["auto", "netlink"])]
    pub attach_mode: String,
    /// Socket events from tracepoints (`sockets` slices: TCP state changes, connect, accept,
    /// close, the process of each socket): `auto` (on when the kernel allows, else said once),
    /// `on` (required) or `off`
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub socket_events: String,
    /// TLS plaintext from uprobes on the TLS libraries processes map (`tls` slices): `auto`,
    /// `on` (required) or `off`
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    pub tls: String,
    /// How packets reach the agent: `perf` (a perf ring per CPU, the default) or `ringbuf`
    /// (one BPF ring buffer shared by the CPUs); docs/capture.md has the measured costs
    #[arg(long, default_value = "perf", value_parser = ["perf", "ringbuf"])]
    pub packet_ring: String,
}

impl RecordArgs {
    /// Builds the recorder configuration (`listen_default` replaces an `auto` listen address).
    pub fn to_config(&self) -> Result<AgentConfig, String> {
        let node = match &self.node {
            Some(n) => n.clone(),
            None => hostname(),
        };
        let mut config = AgentConfig::new(node, &self.data_dir);
        config.interfaces = self.interfaces.clone();
        config.snaplen = self.snaplen;
        config.ring_bytes = usize::try_from(self.ring_bytes).map_err(|e| e.to_string())?;
        config.slice_duration = self.slice_duration;
        config.slice_max_bytes = self.slice_max_bytes;
        config.compression = self.compression;
        config.retention_bytes = self.retention_bytes;
        config.retention_age = self.retention_age;
        config.min_free_bytes = self
            .min_free
            .unwrap_or(self.slice_max_bytes.saturating_mul(2));
        config.listen = match self.listen.as_str() {
            "off" | "none" => None,
            addr => Some(addr.parse::<SocketAddr>().map_err(|e| {
                format!("--listen `{addr}` is not an address like 127.0.0.1:8897 ({e})")
            })?),
        };
        if let Some(t) = &self.token_file {
            config.token_file = t.clone();
        }
        config.exclude_ports = self.exclude_port.clone();
        config.attach_mode = match self.attach_mode.as_str() {
            "netlink" => AttachMode::Netlink,
            _ => AttachMode::Auto,
        };
        let mode = |text: &str| match text {
            "on" => HookMode::On,
            "off" => HookMode::Off,
            _ => HookMode::Auto,
        };
        config.socket_events = mode(&self.socket_events);
        config.packet_transport = match self.packet_ring.as_str() {
            "ringbuf" => PacketTransport::RingBuffer,
            _ => PacketTransport::PerfRings,
        };
        config.tls = mode(&self.tls);
        Ok(config)
    }
}

/// Logs to stderr with `filter` (e.g. `info`, `remora_agent=debug`), for Remora's binaries.
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}

/// This machine's host name, made into a valid node name.
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if cleaned.is_empty() || !cleaned.as_bytes()[0].is_ascii_alphanumeric() {
        "node".to_owned()
    } else {
        cleaned
    }
}
