//! Who an address was: the attribution columns of one side of a call.

/// Who an address was at a point in time: pod, service, node, process. Empty fields are unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Service name.
    pub service_name: String,
    /// Service namespace.
    pub service_namespace: String,
    /// Node the pod runs on, or the node the address is (a node's own address).
    pub node: String,
    /// Process name (comm).
    pub process: String,
    /// Process id, 0 when unknown.
    pub pid: u32,
}

/// Nobody: every attribution column empty.
pub static UNKNOWN: Peer = Peer {
    pod_name: String::new(),
    pod_namespace: String::new(),
    service_name: String::new(),
    service_namespace: String::new(),
    node: String::new(),
    process: String::new(),
    pid: 0,
};

impl Peer {
    /// The best single name: pod, else service, else process, else node.
    pub fn name(&self) -> &str {
        [
            &self.pod_name,
            &self.service_name,
            &self.process,
            &self.node,
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or("", |s| s.as_str())
    }

    /// The pod's namespace, else the service's.
    pub fn namespace(&self) -> &str {
        if self.pod_namespace.is_empty() {
            &self.service_namespace
        } else {
            &self.pod_namespace
        }
    }
}
