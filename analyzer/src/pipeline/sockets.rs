//! Who sent a packet, from its socket: a packet a local socket sent carries the socket's
//! cgroup id (the recorder's `cgroup_id` column), and the node's agent says which pod each
//! cgroup belongs to (`<snapshot>/capture/<node>/cgroups.json`, from `GET /v1/cgroups`).
//! That names pods the addresses cannot: a host-network pod shares its node's address.
//!
//! An endpoint (address and port) that sent a packet from a pod's cgroup is that pod's for
//! the whole dissection; attribution asks it before the addresses.

use std::{collections::HashMap, net::IpAddr, path::PathBuf};

use remora_dissect::Endpoint;

use crate::services::workloads::{Peer, Resolve};

/// The file a snapshot keeps a node's cgroup map in, next to its `packets/`.
pub const CGROUPS_FILE: &str = "cgroups.json";

/// Endpoints whose packets came from a pod's cgroup.
#[derive(Debug, Default)]
pub struct SocketOwners {
    /// (node tag, cgroup id) → pod UID.
    cgroups: HashMap<(usize, u64), String>,
    /// Sending endpoint → pod UID, and the frame it was first seen in.
    sockets: HashMap<(IpAddr, u16), (String, u64)>,
}

impl SocketOwners {
    /// The cgroup maps of `nodes` (`(node, packets dir)`, tag = index); `None` when no node
    /// has one (a recording without an agent map, an imported capture).
    pub fn load(nodes: &[(String, PathBuf)]) -> Option<Self> {
        let mut owners = Self::default();
        for (tag, (_, packets)) in nodes.iter().enumerate() {
            let Some(file) = packets.parent().map(|d| d.join(CGROUPS_FILE)) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let Ok(list) = serde_json::from_str::<Vec<remora_agent::cgroups::PodCgroup>>(&text)
            else {
                tracing::warn!(
                    "{}: not a cgroup map; pods are named by address only",
                    file.display()
                );
                continue;
            };
            for c in list {
                owners.cgroups.insert((tag, c.id), c.pod_uid);
            }
        }
        (!owners.cgroups.is_empty()).then_some(owners)
    }

    /// Notes a packet node `tag` recorded, sent from cgroup `cgroup` (0: none), the input's
    /// frame `frame`.
    pub fn note(&mut self, tag: usize, l3: &[u8], cgroup: u64, frame: u64) {
        if cgroup == 0 {
            return;
        }
        let Some(uid) = self.cgroups.get(&(tag, cgroup)) else {
            return;
        };
        if let Some(src) = super::origin::packet_src(l3) {
            self.sockets
                .entry(src)
                .or_insert_with(|| (uid.clone(), frame));
        }
    }

    /// The pod UID whose socket `endpoint` was, as the frames up to `visible` tell.
    pub fn uid_of(&self, endpoint: &Endpoint, visible: u64) -> Option<&str> {
        self.sockets
            .get(&(endpoint.ip, endpoint.port))
            .filter(|(_, frame)| *frame <= visible)
            .map(|(uid, _)| uid.as_str())
    }
}

/// Attribution by socket first (its cgroup's pod, its process), then by address.
pub struct BySocket<'a> {
    /// By address.
    pub inner: &'a dyn Resolve,
    /// By the cgroup of the socket that sent.
    pub sockets: Option<&'a SocketOwners>,
    /// By the agent's socket events.
    pub processes: Option<&'a super::processes::Processes>,
    /// Sockets noted in the frames up to this one count ([`SocketOwners::uid_of`]).
    pub visible_frames: u64,
}

impl Resolve for BySocket<'_> {
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer> {
        self.sockets
            .and_then(|s| s.uid_of(endpoint, self.visible_frames))
            .and_then(|uid| self.inner.pod_by_uid(uid))
            .or_else(|| self.inner.resolve(endpoint, ts_ns))
    }

    fn pod_by_uid(&self, uid: &str) -> Option<&Peer> {
        self.inner.pod_by_uid(uid)
    }

    fn process(&self, local: &Endpoint, remote: &Endpoint, ts_ns: i64) -> Option<(u32, &str)> {
        self.processes
            .and_then(|p| p.process(local, remote, ts_ns))
            .or_else(|| self.inner.process(local, remote, ts_ns))
    }
}
