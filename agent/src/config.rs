//! The recorder's settings, their defaults (docs/capture.md) and their validation.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use remora_agent_common::MAX_CAPTURE_BYTES;

use crate::error::{AgentError, Result};

/// How the TC programs are attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// TCX on kernels that have it (6.6+), a netlink clsact filter otherwise.
    #[default]
    Auto,
    /// Always a netlink clsact filter (what kernels before 6.6 get); survives a killed agent, so
    /// the agent sweeps such leftovers at start.
    Netlink,
}

/// Everything the recorder needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Name of this node in slice paths and API answers.
    pub node: String,
    /// Root of the data directory; slices go to `<data_dir>/capture/<node>/<kind>/`.
    pub data_dir: PathBuf,
    /// Interfaces to record; empty means every interface that is up, and new ones as they come.
    pub interfaces: Vec<String>,
    /// Bytes of each packet kept, counted from the network (IP) header.
    pub snaplen: u32,
    /// Bytes of each per-CPU perf ring (rounded down to a power-of-two number of pages).
    pub ring_bytes: usize,
    /// A slice is closed after this long.
    pub slice_duration: Duration,
    /// ... or once its file reaches this many bytes.
    pub slice_max_bytes: u64,
    /// How payloads are compressed.
    pub compression: crate::packets_parquet::Compression,
    /// Oldest slices are deleted while the node's slices take more than this.
    pub retention_bytes: u64,
    /// Slices older than this are deleted (`None`: no age limit).
    pub retention_age: Option<Duration>,
    /// The oldest slices are deleted while the data directory's filesystem has less than
    /// this free, whatever filled it (see `store::make_room`).
    pub min_free_bytes: u64,
    /// Address of the node API (`None`: no API).
    pub listen: Option<SocketAddr>,
    /// Bearer token file for the node API; created (0600) when missing.
    pub token_file: PathBuf,
    /// TCP/UDP ports never recorded (Remora's own API listeners are added automatically).
    pub exclude_ports: Vec<u16>,
    /// How often the interface list is re-read to attach to new interfaces.
    pub interface_poll: Duration,
    /// TCX or netlink.
    pub attach_mode: AttachMode,
    /// Whether socket events are recorded (`sockets` slices).
    pub socket_events: HookMode,
    /// Whether TLS plaintext is recorded (`tls` slices).
    pub tls: HookMode,
    /// How packets travel from the TC programs to the collector.
    pub packet_transport: PacketTransport,
}

/// How packets travel from the TC programs to the collector (docs/capture.md compares the two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PacketTransport {
    /// One perf ring per CPU of `ring_bytes` each; the kernel appends the frame bytes to the
    /// event itself (`bpf_perf_event_output` with a context length).
    #[default]
    PerfRings,
    /// One BPF ring buffer of `ring_bytes` × CPUs shared by every CPU; records are reserved in
    /// size classes and filled with `bpf_skb_load_bytes`.
    RingBuffer,
}

/// Whether a family of hooks (socket tracepoints, TLS uprobes) is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookMode {
    /// Attached when possible; when not, the agent says why and records packets without them.
    Auto,
    /// Attached, or the agent does not start.
    On,
    /// Not attached.
    Off,
}

impl AgentConfig {
    /// Default settings for a node called `node` storing under `data_dir`.
    pub fn new(node: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            node: node.into(),
            token_file: data_dir.join("token"),
            data_dir,
            interfaces: Vec::new(),
            snaplen: DEFAULT_SNAPLEN,
            ring_bytes: 8 << 20,
            slice_duration: Duration::from_secs(10),
            slice_max_bytes: 64 << 20,
            compression: crate::slice::DEFAULT_COMPRESSION,
            retention_bytes: 1 << 30,
            retention_age: None,
            min_free_bytes: 128 << 20,
            listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_NODE_API_PORT))),
            exclude_ports: Vec::new(),
            interface_poll: Duration::from_secs(1),
            attach_mode: AttachMode::Auto,
            socket_events: HookMode::Auto,
            tls: HookMode::Auto,
            packet_transport: PacketTransport::PerfRings,
        }
    }

    /// Checks ranges and names; the error says which setting is wrong and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !valid_node_name(&self.node) {
            return Err(AgentError::Config(format!(
                "node name `{}` must match [A-Za-z0-9][A-Za-z0-9._-]{{0,62}}",
                self.node
            )));
        }
        if self.snaplen < 64 || self.snaplen > MAX_CAPTURE_BYTES - 14 {
            return Err(AgentError::Config(format!(
                "snaplen {} is out of range: use 64 to {}",
                self.snaplen,
                MAX_CAPTURE_BYTES - 14
            )));
        }
        if self.ring_bytes < 64 << 10 || self.ring_bytes > 1 << 30 {
            return Err(AgentError::Config(format!(
                "ring size {} bytes is out of range: use 64 KiB to 1 GiB per CPU",
                self.ring_bytes
            )));
        }
        if self.slice_duration < Duration::from_millis(100) {
            return Err(AgentError::Config(
                "slice duration must be at least 100ms".to_owned(),
            ));
        }
        if self.slice_max_bytes < 1 << 20 {
            return Err(AgentError::Config(
                "slice size limit must be at least 1 MiB".to_owned(),
            ));
        }
        if self.retention_bytes < self.slice_max_bytes {
            return Err(AgentError::Config(format!(
                "retention quota ({} bytes) must be at least one slice ({} bytes)",
                self.retention_bytes, self.slice_max_bytes
            )));
        }
        Ok(())
    }

    /// Directory of one kind of slice (`packets`, `tls`, `sockets`) of this node.
    pub fn kind_dir(&self, kind: &str) -> PathBuf {
        self.data_dir.join("capture").join(&self.node).join(kind)
    }

    /// Bytes of the shared ring buffer (`--packet-ring ringbuf`): `ring_bytes` per possible
    /// CPU, rounded down to a power of two, as the kernel requires.
    pub fn ring_buffer_bytes(&self) -> Result<u32> {
        let cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| AgentError::io(format!("reading {what}"), e))?
            .max(1);
        let per_cpu = self.ring_pages() * page_size();
        let total = per_cpu.saturating_mul(cpus);
        let total = if total.is_power_of_two() {
            total
        } else {
            total.next_power_of_two() / 2
        };
        u32::try_from(total.min(1 << 30))
            .map_err(|_| AgentError::Config(format!("a ring buffer of {total} bytes is too large")))
    }

    /// Number of pages per CPU ring: a power of two, as perf requires.
    pub fn ring_pages(&self) -> usize {
        let pages = (self.ring_bytes / page_size()).max(1);
        1 << (usize::BITS - 1 - pages.leading_zeros())
    }
}

/// Default snaplen, counted from the IP header.
///
/// 4096 bytes keep the headers and typical bodies of HTTP/1, HTTP/2 and gRPC calls in every
/// packet of MTU size (all of it) and the first 4 KiB of GSO/GRO super-packets and loopback
/// segments (which reach 64 KiB). docs/capture.md has the trade-off and its measurements.
pub const DEFAULT_SNAPLEN: u32 = 4096;

/// Default port of the node API.
pub const DEFAULT_NODE_API_PORT: u16 = 8897;

/// Node and snapshot names: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`; never a path component trick.
pub fn valid_node_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// Parses durations such as `500ms`, `10s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s, 5m, 1h or 7d"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

/// Parses sizes such as `512`, `64KiB`, `8MiB`, `1GiB` (also `k`, `M`, `G` as binary units).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 64MiB or 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`: use KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 furlongs").is_err());
    }

    #[test]
    fn validates() {
        let mut c = AgentConfig::new("node-1", "/tmp/x");
        c.validate().unwrap();
        c.snaplen = 10;
        assert!(c.validate().unwrap_err().to_string().contains("snaplen 10"));
        c.snaplen = 4096;
        c.node = "../etc".into();
        assert!(c.validate().is_err());
        assert!(valid_node_name("kind-worker2"));
        assert!(!valid_node_name(".hidden"));
        assert!(!valid_node_name("a/b"));
    }

    #[test]
    fn ring_pages_are_a_power_of_two() {
        let mut c = AgentConfig::new("n", "/tmp");
        c.ring_bytes = 8 << 20;
        assert_eq!(c.ring_pages() * page_size(), 8 << 20);
        c.ring_bytes = 3 * page_size() * 100;
        assert!(c.ring_pages().is_power_of_two());
    }
}
