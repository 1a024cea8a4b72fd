//! Loading the TC recorder into the kernel and attaching it to interfaces.

use std::{collections::HashMap, io};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, Map, MapData, PerCpuArray},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
};
use remora_agent_common::{CpuCounters, EXCLUDED_PORT_WORDS, EndpointKey, MAX_L2_HEADER_BYTES};

/// The BPF key of an endpoint: IPv6 (IPv4 mapped) address, port in network order, padding.
pub fn endpoint_key(addr: &std::net::SocketAddr) -> EndpointKey {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&ip.octets());
    key[16..18].copy_from_slice(&addr.port().to_be_bytes());
    key
}

use crate::{
    config::{AgentConfig, AttachMode, PacketTransport},
    error::{AgentError, Result},
    interfaces::Interface,
};

/// The compiled eBPF object (built from `agent-ebpf` by `build.rs`).
pub static TC_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/remora-tc"));

/// Program names inside [`TC_OBJECT`] (ingress, egress) writing to the per-CPU perf rings.
pub const PERF_PROGRAMS: [&str; 2] = ["remora_tc_ingress", "remora_tc_egress"];
/// The same programs writing to the shared BPF ring buffer.
pub const RING_BUFFER_PROGRAMS: [&str; 2] = ["remora_tc_ingress_rb", "remora_tc_egress_rb"];

/// The map a transport's programs write packets to.
pub enum PacketMap {
    /// `PACKETS`, a `BPF_MAP_TYPE_PERF_EVENT_ARRAY` whose slots the agent fills with rings.
    PerfEventArray(MapData),
    /// `PACKET_RING`, a `BPF_MAP_TYPE_RINGBUF`.
    RingBuffer(MapData),
}

/// Links of one interface, to detach it again.
#[derive(Debug)]
struct Attachment {
    name: String,
    ingress: Option<SchedClassifierLinkId>,
    egress: Option<SchedClassifierLinkId>,
}

/// The loaded recorder: its programs, maps and the interfaces it is attached to.
///
/// Dropping it detaches everything (TCX links close with their file descriptors; netlink
/// filters are removed by aya's link drop).
pub struct Recorder {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, CpuCounters>,
    attached: HashMap<u32, Attachment>,
    mode: AttachMode,
    /// The ingress and egress programs in use (one of [`PERF_PROGRAMS`],
    /// [`RING_BUFFER_PROGRAMS`]).
    programs: [&'static str; 2],
    tls: Option<crate::tls::Probes>,
}

impl Recorder {
    /// Loads the programs with the configured snaplen, excluded ports (any address) and
    /// excluded endpoints (one address and port each).
    pub fn load(
        config: &AgentConfig,
        exclude_ports: &[u16],
        exclude_endpoints: &[std::net::SocketAddr],
    ) -> Result<Self> {
        raise_memlock_limit();
        let snaplen = config.snaplen + MAX_L2_HEADER_BYTES;
        let exclude = u32::from(!exclude_ports.is_empty());
        let exclude_eps = u32::from(!exclude_endpoints.is_empty());
        let (programs, ring_bytes) = match config.packet_transport {
            PacketTransport::PerfRings => (PERF_PROGRAMS, crate::config::page_size() as u32),
            PacketTransport::RingBuffer => (RING_BUFFER_PROGRAMS, config.ring_buffer_bytes()?),
        };
        // A write wakes the collector once a quarter of the ring is waiting, like the perf
        // rings' watermark.
        let ring_wake = u64::from(ring_bytes / 4);
        let mut ebpf = EbpfLoader::new()
            .override_global("SNAPLEN", &snaplen, true)
            .override_global("EXCLUDE_PORTS", &exclude, true)
            .override_global("EXCLUDE_ENDPOINTS", &exclude_eps, true)
            .override_global("PACKET_RING_WAKE", &ring_wake, true)
            .map_max_entries("PACKET_RING", ring_bytes)
            .load(TC_OBJECT)
            .map_err(load_error)?;
        {
            let mut endpoints: aya::maps::HashMap<_, EndpointKey, u8> =
                aya::maps::HashMap::try_from(
                    ebpf.map_mut("EXCLUDED_ENDPOINTS")
                        .ok_or_else(|| AgentError::Load("map EXCLUDED_ENDPOINTS missing".into()))?,
                )
                .map_err(|e| AgentError::Load(e.to_string()))?;
            for addr in exclude_endpoints {
                endpoints
                    .insert(endpoint_key(addr), 1, 0)
                    .map_err(|e| AgentError::Load(format!("setting excluded endpoints: {e}")))?;
            }
        }

        let mut ports: Array<_, u32> = Array::try_from(
            ebpf.map_mut("EXCLUDED_PORTS")
                .ok_or_else(|| AgentError::Load("map EXCLUDED_PORTS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        let mut words = vec![0u32; EXCLUDED_PORT_WORDS as usize];
        for &port in exclude_ports {
            words[usize::from(port >> 5)] |= 1 << (port & 31);
        }
        for (i, word) in words.iter().enumerate() {
            if *word != 0 {
                ports
                    .set(i as u32, word, 0)
                    .map_err(|e| AgentError::Load(format!("setting excluded ports: {e}")))?;
            }
        }

        for name in programs {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| AgentError::Load(format!("program {name} missing from object")))?
                .try_into()
                .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
            program.load().map_err(|e| program_error(name, e))?;
        }
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| AgentError::Load("map COUNTERS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        Ok(Self {
            ebpf,
            counters,
            attached: HashMap::new(),
            mode: config.attach_mode,
            programs,
            tls: None,
        })
    }

    /// Replaces the excluded endpoints (an API on every address follows the addresses the
    /// namespace has now). Takes effect for the next packet.
    pub fn set_excluded_endpoints(&mut self, endpoints: &[std::net::SocketAddr]) -> Result<()> {
        let mut map: aya::maps::HashMap<_, EndpointKey, u8> = aya::maps::HashMap::try_from(
            self.ebpf
                .map_mut("EXCLUDED_ENDPOINTS")
                .ok_or_else(|| AgentError::Load("map EXCLUDED_ENDPOINTS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        let wanted: Vec<EndpointKey> = endpoints.iter().map(endpoint_key).collect();
        for key in &wanted {
            map.insert(*key, 1, 0)
                .map_err(|e| AgentError::Load(format!("setting excluded endpoints: {e}")))?;
        }
        let stale: Vec<EndpointKey> = map
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(k))
            .collect();
        for key in stale {
            let _ = map.remove(&key);
        }
        Ok(())
    }

    /// Loads and attaches the socket tracepoints (`crate::sockets`); their ring comes with them.
    pub fn attach_socket_hooks(&mut self) -> Result<crate::sockets::SocketHooks> {
        crate::sockets::SocketHooks::attach(&mut self.ebpf)
    }

    /// Loads the TLS uprobes and hooks the libraries mapped now; returns their ring.
    pub fn start_tls(&mut self) -> Result<crate::tls::Ring> {
        let (mut probes, ring) = crate::tls::Probes::load(&mut self.ebpf)?;
        probes.scan(&mut self.ebpf);
        self.tls = Some(probes);
        Ok(ring)
    }

    /// Hooks TLS libraries mapped since the last scan (new processes, new containers).
    pub fn scan_tls(&mut self) -> usize {
        match &mut self.tls {
            Some(probes) => probes.scan(&mut self.ebpf),
            None => 0,
        }
    }

    /// The TLS libraries found and how each is hooked (`None`: TLS plaintext is off).
    pub fn tls_status(&self) -> Option<Vec<crate::tls::LibraryStatus>> {
        self.tls.as_ref().map(crate::tls::Probes::status)
    }

    /// Takes the map the programs in use write packets to (once).
    pub fn take_packet_map(&mut self) -> Result<PacketMap> {
        let name = if self.programs == PERF_PROGRAMS {
            "PACKETS"
        } else {
            "PACKET_RING"
        };
        match self.ebpf.take_map(name) {
            Some(Map::PerfEventArray(map)) if name == "PACKETS" => {
                Ok(PacketMap::PerfEventArray(map))
            }
            Some(Map::RingBuf(map)) if name == "PACKET_RING" => Ok(PacketMap::RingBuffer(map)),
            Some(_) => Err(AgentError::Load(format!("map {name} has the wrong type"))),
            None => Err(AgentError::Load(format!(
                "map {name} missing or already taken"
            ))),
        }
    }

    /// Removes filters a killed earlier agent left on `iface` (netlink attachments survive
    /// SIGKILL; TCX links do not). Returns how many program attachments were removed.
    pub fn sweep_leftovers(iface: &str) -> usize {
        let mut removed = 0;
        for [ingress, egress] in [PERF_PROGRAMS, RING_BUFFER_PROGRAMS] {
            for (kind, name) in [
                (TcAttachType::Ingress, ingress),
                (TcAttachType::Egress, egress),
            ] {
                if tc::qdisc_detach_program(iface, kind, name).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Attaches to one interface: ingress and egress, or egress alone on loopback where the
    /// egress hook already sees every packet once.
    pub fn attach(&mut self, iface: &Interface) -> Result<()> {
        if self.attached.contains_key(&iface.ifindex) {
            return Ok(());
        }
        Self::sweep_leftovers(&iface.name);
        if self.mode == AttachMode::Netlink {
            // "Exists" is the normal case after the first attach; real failures show on attach.
            let _ = tc::qdisc_add_clsact(&iface.name);
        }
        let ingress = if iface.is_loopback() {
            None
        } else {
            Some(self.attach_one(iface, TcAttachType::Ingress)?)
        };
        let egress = match self.attach_one(iface, TcAttachType::Egress) {
            Ok(link) => Some(link),
            Err(e) => {
                if let Some(link) = ingress {
                    let _ = self
                        .program(self.programs[0])
                        .and_then(|p| p.detach(link).map_err(|e| AgentError::Load(e.to_string())));
                }
                return Err(e);
            }
        };
        self.attached.insert(
            iface.ifindex,
            Attachment {
                name: iface.name.clone(),
                ingress,
                egress,
            },
        );
        Ok(())
    }

    fn attach_one(
        &mut self,
        iface: &Interface,
        kind: TcAttachType,
    ) -> Result<SchedClassifierLinkId> {
        let (name, direction) = match kind {
            TcAttachType::Ingress => (self.programs[0], "ingress"),
            _ => (self.programs[1], "egress"),
        };
        let mode = self.mode;
        let program = self.program(name)?;
        let result = match mode {
            AttachMode::Auto => program.attach(&iface.name, kind),
            AttachMode::Netlink => program.attach_with_options(
                &iface.name,
                kind,
                TcAttachOptions::Netlink(NlOptions::default()),
            ),
        };
        result.map_err(|e| {
            if is_permission_error(&e) {
                AgentError::Privilege {
                    action: format!("attaching to {}", iface.name),
                    source: io::Error::from_raw_os_error(libc::EPERM),
                }
            } else {
                AgentError::Attach {
                    interface: iface.name.clone(),
                    direction,
                    message: error_chain(&e),
                }
            }
        })
    }

    /// Detaches from an interface (quietly: a vanished interface took its links with it).
    pub fn detach(&mut self, ifindex: u32) {
        let Some(att) = self.attached.remove(&ifindex) else {
            return;
        };
        let [ingress, egress] = self.programs;
        if let (Some(link), Ok(p)) = (att.ingress, self.program(ingress)) {
            let _ = p.detach(link);
        }
        if let (Some(link), Ok(p)) = (att.egress, self.program(egress)) {
            let _ = p.detach(link);
        }
        tracing::info!(interface = %att.name, "detached");
    }

    /// Interface indexes currently attached, with their names.
    pub fn attached(&self) -> Vec<(u32, String)> {
        let mut v: Vec<_> = self
            .attached
            .iter()
            .map(|(i, a)| (*i, a.name.clone()))
            .collect();
        v.sort();
        v
    }

    /// The kernel-side counters, one entry per possible CPU.
    pub fn cpu_counters(&self) -> Vec<CpuCounters> {
        match self.counters.get(&0, 0) {
            Ok(values) => values.iter().copied().collect(),
            Err(_) => Vec::new(),
        }
    }

    fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| AgentError::Load(format!("program {name} missing")))?
            .try_into()
            .map_err(|e: ProgramError| AgentError::Load(e.to_string()))
    }
}

fn is_permission_error(e: &ProgramError) -> bool {
    let text = error_chain(e);
    text.contains("Operation not permitted") || text.contains("Permission denied")
}

/// Renders an error with all its sources ("a: b: c").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Lifts the locked-memory limit, so that the perf rings' pages may be locked without
/// CAP_IPC_LOCK: the kernel lets a perf ring past `perf_event_mlock_kb` when RLIMIT_MEMLOCK
/// allows it, and raising the limit needs only CAP_SYS_RESOURCE (which the capability-only
/// DaemonSet has). Where it cannot be raised, the ring's own error says what to do.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct; it only changes this process's limit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!(
            "could not lift RLIMIT_MEMLOCK ({}); without CAP_SYS_RESOURCE or CAP_IPC_LOCK large rings may be refused",
            std::io::Error::last_os_error()
        );
    }
}

fn load_error(e: EbpfError) -> AgentError {
    let text = error_chain(&e);
    if text.contains("Operation not permitted") || text.contains("Permission denied") {
        AgentError::Privilege {
            action: "loading the eBPF recorder".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        }
    } else {
        AgentError::Load(text)
    }
}

pub(crate) fn program_error(name: &str, e: ProgramError) -> AgentError {
    if let ProgramError::LoadError { io_error, .. } = &e
        && io_error.raw_os_error() == Some(libc::EPERM)
    {
        return AgentError::Privilege {
            action: format!("loading program {name}"),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
    }
    AgentError::Load(format!("program {name}: {}", error_chain(&e)))
}
