//! Socket events: the tracepoint programs (`agent-ebpf/src/sockets.rs`) attached, their ring
//! drained by one thread into `sockets` slices.
//!
//! Tracepoints are global: one agent per kernel sees every socket of every network namespace
//! (pods included). They need tracefs; when it is not mounted the agent mounts it at
//! `/sys/kernel/tracing`. Socket events are an addition to packet recording: when the hooks
//! cannot be attached the agent says why once and records packets without them.

pub mod record;
pub mod slices;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use remora_agent_common::{SocketCounters, SocketEvent};

use crate::{
    clock::TaiToUtc,
    error::{AgentError, Result},
};
use record::{SocketIds, SocketRow};

/// (program, tracepoint category, tracepoint name).
const HOOKS: [(&str, &str, &str); 7] = [
    ("remora_sock_state", "sock", "inet_sock_set_state"),
    ("remora_sock_send", "sock", "sock_send_length"),
    ("remora_sock_recv", "sock", "sock_recv_length"),
    ("remora_sys_connect", "syscalls", "sys_enter_connect"),
    ("remora_sys_accept", "syscalls", "sys_exit_accept4"),
    ("remora_sys_accept", "syscalls", "sys_exit_accept"),
    ("remora_sys_close", "syscalls", "sys_enter_close"),
];

/// Field offsets the programs read, checked against this kernel's tracepoint formats.
const FIELDS: [(&str, &str, &str, usize); 9] = [
    ("sock", "inet_sock_set_state", "skaddr", 8),
    ("sock", "inet_sock_set_state", "newstate", 20),
    ("sock", "inet_sock_set_state", "saddr_v6", 40),
    ("sock", "inet_sock_set_state", "daddr_v6", 56),
    ("sock", "sock_send_length", "protocol", 18),
    ("sock", "sock_recv_length", "protocol", 18),
    ("syscalls", "sys_enter_connect", "uservaddr", 24),
    ("syscalls", "sys_exit_accept4", "ret", 16),
    ("syscalls", "sys_enter_close", "fd", 16),
];

/// The attached socket hooks and their ring.
pub struct SocketHooks {
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, SocketCounters>,
    _links: Vec<TracePointLinkId>,
}

/// Where tracefs is, mounting it when it is not.
fn tracefs() -> Result<PathBuf> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(dir.into());
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: constant NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(AgentError::Load(format!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({}); mount it \
             (`mount -t tracefs nodev /sys/kernel/tracing`, in Kubernetes the agent's tracefs \
             hostPath) or run the agent with CAP_SYS_ADMIN",
            std::io::Error::last_os_error()
        )));
    }
    Ok("/sys/kernel/tracing".into())
}

/// Offset of `field` in a tracepoint's format file.
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split("offset:").nth(1)?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

impl SocketHooks {
    /// Loads and attaches the socket programs of `ebpf`, after checking the tracepoint formats
    /// they read.
    pub fn attach(ebpf: &mut Ebpf) -> Result<Self> {
        let tracing = tracefs()?;
        for (category, name, field, expected) in FIELDS {
            let path = tracing
                .join("events")
                .join(category)
                .join(name)
                .join("format");
            let format = std::fs::read_to_string(&path).map_err(|e| {
                AgentError::Load(format!(
                    "{}: {e}; this kernel lacks the tracepoint {category}:{name}",
                    path.display()
                ))
            })?;
            let found = field_offset(&format, field);
            if found != Some(expected) {
                return Err(AgentError::Load(format!(
                    "tracepoint {category}:{name} has `{field}` at {found:?}, the socket hooks \
                     read it at {expected}: this kernel's layout is not supported"
                )));
            }
        }
        let mut links = Vec::new();
        for (program, category, name) in HOOKS {
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| AgentError::Load(format!("program {program} missing from object")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| AgentError::Load(e.to_string()))?;
            if tp.fd().is_err() {
                tp.load()
                    .map_err(|e| crate::ebpf::program_error(program, e))?;
            }
            let link = tp.attach(category, name).map_err(|e| {
                AgentError::Load(format!("attaching {program} to {category}:{name}: {e}"))
            })?;
            links.push(link);
        }
        let ring = RingBuf::try_from(
            ebpf.take_map("SOCKET_EVENTS")
                .ok_or_else(|| AgentError::Load("map SOCKET_EVENTS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("SOCKET_COUNTERS")
                .ok_or_else(|| AgentError::Load("map SOCKET_COUNTERS missing".into()))?,
        )
        .map_err(|e| AgentError::Load(e.to_string()))?;
        Ok(Self {
            ring,
            counters,
            _links: links,
        })
    }

    /// Events written and lost so far, over all CPUs.
    pub fn counters(&self) -> SocketCounters {
        total(&self.counters)
    }
}

fn total(map: &PerCpuArray<MapData, SocketCounters>) -> SocketCounters {
    let mut total = SocketCounters::default();
    if let Ok(values) = map.get(&0, 0) {
        for v in values.iter() {
            total.events += v.events;
            total.dropped += v.dropped;
        }
    }
    total
}

/// Drains the ring into `sockets` slices under `dir` until `stop`; a slice is sealed every
/// `period` (and at the end).
pub fn run_writer(
    hooks: SocketHooks,
    dir: PathBuf,
    node: String,
    period: Duration,
    ids: SocketIds,
    stop: Arc<AtomicBool>,
) {
    let SocketHooks {
        mut ring,
        counters,
        _links,
    } = hooks;
    let mut rows = Rows {
        counters,
        dir,
        node,
        ids,
        rows: Vec::new(),
        warned_drops: 0,
    };
    crate::event_ring::drain(&mut ring, period, &stop, &mut rows);
    drop(_links);
}

/// Socket events on their way to a slice.
struct Rows {
    counters: PerCpuArray<MapData, SocketCounters>,
    dir: PathBuf,
    node: String,
    ids: SocketIds,
    rows: Vec<SocketRow>,
    warned_drops: u64,
}

impl crate::event_ring::EventRows for Rows {
    fn take(&mut self, record: &[u8], clock: &TaiToUtc) {
        let Some(event) = crate::event_ring::record_head::<SocketEvent>(record) else {
            return;
        };
        if let Some(row) = record::row(&event, clock, &self.ids) {
            self.rows.push(row);
        }
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn seal(&mut self) {
        self.rows.sort_by_key(|r| r.ts_ns);
        match slices::write_slice(&self.dir, &self.node, &self.rows) {
            Ok(path) => {
                tracing::debug!(path = %path.display(), rows = self.rows.len(), "sockets slice")
            }
            Err(e) => tracing::warn!(
                dir = %self.dir.display(),
                error = %e,
                "writing a sockets slice failed; its events are lost (free space on the data disk)"
            ),
        }
        self.rows.clear();
        let dropped = total(&self.counters).dropped;
        if dropped > self.warned_drops {
            tracing::warn!(
                lost = dropped - self.warned_drops,
                "socket events lost to a full ring"
            );
            self.warned_drops = dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_a_format_file() {
        let format = "name: inet_sock_set_state\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
            \tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n";
        assert_eq!(field_offset(format, "skaddr"), Some(8));
        assert_eq!(field_offset(format, "saddr_v6"), Some(40));
        assert_eq!(field_offset(format, "daddr"), None);
    }
}
