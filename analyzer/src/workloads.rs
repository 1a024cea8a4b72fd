//! Workloads without Kubernetes: a static file saying which pod, service and namespace an
//! address belongs to (`remora up --workloads FILE`), for laptops, VMs, compose setups and tests.
//! The Kubernetes watchers (a later issue) feed the same [`Resolve`] interface.
//!
//! The file is a JSON array:
//! `[{"ip": "198.18.0.1", "pod": "frontend-7d9f8", "namespace": "shop", "service": "frontend",
//!   "process": "node", "pid": 4242}]` — every field but `ip` optional.

use std::{collections::HashMap, net::IpAddr, path::Path};

use remora_dissect::Endpoint;
use serde::Deserialize;

use crate::rows::{Peer, Resolve};

#[derive(Deserialize)]
struct Entry {
    ip: IpAddr,
    #[serde(default)]
    pod: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    service_namespace: Option<String>,
    #[serde(default)]
    process: String,
    #[serde(default)]
    pid: u32,
}

/// Address → workload, from a static file.
#[derive(Debug, Clone, Default)]
pub struct StaticWorkloads {
    peers: HashMap<IpAddr, Peer>,
}

impl StaticWorkloads {
    /// Reads `path`; a clear error says which entry is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading workloads file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| {
            anyhow::anyhow!(
                "workloads file {}: {e}; expected [{{\"ip\": \"198.18.0.1\", \"pod\": \"...\", \"namespace\": \"...\", \"service\": \"...\"}}]",
                path.display()
            )
        })
    }

    /// Parses the JSON text of a workloads file.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        let entries: Vec<Entry> = serde_json::from_str(text)?;
        let peers = entries
            .into_iter()
            .map(|e| {
                let service_namespace = e.service_namespace.unwrap_or_else(|| {
                    if e.service.is_empty() {
                        String::new()
                    } else {
                        e.namespace.clone()
                    }
                });
                (
                    e.ip,
                    Peer {
                        pod_namespace: if e.pod.is_empty() {
                            String::new()
                        } else {
                            e.namespace
                        },
                        pod_name: e.pod,
                        service_name: e.service,
                        service_namespace,
                        process: e.process,
                        pid: e.pid,
                    },
                )
            })
            .collect();
        Ok(Self { peers })
    }

    /// How many addresses are known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

impl Resolve for StaticWorkloads {
    fn resolve(&self, endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
        self.peers.get(&endpoint.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.1", "pod": "frontend-1", "namespace": "shop", "service": "frontend"},
                {"ip": "198.18.0.2", "service": "checkout", "namespace": "shop"}]"#,
        )
        .unwrap_or_default();
        assert_eq!(w.len(), 2);
        let ep = |ip: &str| Endpoint {
            ip: ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
            port: 1,
        };
        let p = w.resolve(&ep("198.18.0.1"), 0).cloned().unwrap_or_default();
        assert_eq!((p.name(), p.namespace()), ("frontend-1", "shop"));
        let p = w.resolve(&ep("198.18.0.2"), 0).cloned().unwrap_or_default();
        assert_eq!(
            (p.name(), p.pod_namespace.as_str(), p.namespace()),
            ("checkout", "", "shop")
        );
        assert!(w.resolve(&ep("198.18.0.3"), 0).is_none());
        assert!(StaticWorkloads::parse("[{\"pod\": \"x\"}]").is_err());
    }
}
