//! Who each address is according to the cluster now: a pure function of the watched objects
//! (Pods, Services, EndpointSlices, Nodes), and the changes that brings to the history.
//!
//! - A pod's IPs (`status.podIPs`) are the pod's while it is neither finished nor on the host
//!   network (a host-network pod's address is its node's); the pod's node is `spec.nodeName`.
//! - EndpointSlices name the service a pod address serves (`kubernetes.io/service-name`); a
//!   pod behind several services takes the first by name, so the choice is stable. An endpoint
//!   that names its pod (`targetRef`) serves for that pod only: when a deleted pod's address
//!   goes to a new pod before the slice drops the old endpoint (slices lag pods, and after a
//!   watch expires the two are listed again in either order), the new pod is not taken for the
//!   old pod's service.
//! - A service's ClusterIPs are the service's: traffic before DNAT resolves to the service.
//! - A node's InternalIP and ExternalIP addresses are the node's.
//!
//! On a conflict a pod wins over a service, which wins over a node.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use crate::services::{
    workload_history::{Owner, WorkloadHistory},
    workloads::Peer,
};

/// The label an EndpointSlice names its service with.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Who an address is now, and since when the object says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The owner.
    pub owner: Owner,
    /// The object's creation (ns), where the interval starts when the history has nothing
    /// newer for the address: a pod seen first on a relist started when it was created.
    pub since_ns: i64,
}

fn created_ns(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_nanosecond().clamp(0, i64::MAX as i128) as i64)
        .unwrap_or(0)
}

fn labels(meta: &ObjectMeta) -> Vec<(String, String)> {
    meta.labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A pod as the owner of an address (its node's, for a host-network pod).
fn pod_claim(pod: &Pod, service: (String, String), host_ip: IpAddr) -> Claim {
    let (service_name, service_namespace) = service;
    Claim {
        owner: Owner {
            kind: "pod".into(),
            peer: Peer {
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                pod_namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                service_name,
                service_namespace,
                node: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                ..Peer::default()
            },
            labels: labels(&pod.metadata),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            host_ip,
        },
        since_ns: created_ns(&pod.metadata),
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse().ok()
}

/// A service an address serves, per an EndpointSlice's endpoint.
struct Serving {
    /// The service's (name, namespace).
    service: (String, String),
    /// The pod the endpoint names (`targetRef`): (namespace, name).
    pod: Option<(String, String)>,
}

/// The addresses of the cluster now, from the watched objects.
pub fn desired(
    pods: &[impl AsRef<Pod>],
    services: &[impl AsRef<Service>],
    slices: &[impl AsRef<EndpointSlice>],
    nodes: &[impl AsRef<Node>],
) -> HashMap<IpAddr, Claim> {
    let mut out: HashMap<IpAddr, Claim> = HashMap::new();
    for node in nodes {
        let node = node.as_ref();
        let name = node.metadata.name.clone().unwrap_or_default();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addresses.into_iter().flatten() {
            if !matches!(a.type_.as_str(), "InternalIP" | "ExternalIP") {
                continue;
            }
            if let Some(ip) = parse_ip(&a.address) {
                out.insert(
                    ip,
                    Claim {
                        owner: Owner {
                            kind: "node".into(),
                            peer: Peer {
                                node: name.clone(),
                                ..Peer::default()
                            },
                            labels: labels(&node.metadata),
                            ..Owner::default()
                        },
                        since_ns: created_ns(&node.metadata),
                    },
                );
            }
        }
    }
    for svc in services {
        let svc = svc.as_ref();
        let spec = svc.spec.as_ref();
        let ips = spec
            .and_then(|s| s.cluster_ips.clone())
            .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
            .unwrap_or_default();
        for ip in ips.iter().filter_map(|ip| parse_ip(ip)) {
            out.insert(
                ip,
                Claim {
                    owner: Owner {
                        kind: "service".into(),
                        peer: Peer {
                            service_name: svc.metadata.name.clone().unwrap_or_default(),
                            service_namespace: svc.metadata.namespace.clone().unwrap_or_default(),
                            ..Peer::default()
                        },
                        labels: labels(&svc.metadata),
                        ..Owner::default()
                    },
                    since_ns: created_ns(&svc.metadata),
                },
            );
        }
    }
    // address → (service name, namespace) of every service that serves it, with the pod
    // (namespace, name) the endpoint names, if it names one.
    let mut served: BTreeMap<IpAddr, Vec<Serving>> = BTreeMap::new();
    for slice in slices {
        let slice = slice.as_ref();
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        for endpoint in slice.endpoints.iter().flatten() {
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| {
                    let name = t.name.clone()?;
                    Some((
                        t.namespace.clone().unwrap_or_else(|| namespace.clone()),
                        name,
                    ))
                });
            for ip in endpoint.addresses.iter().filter_map(|a| parse_ip(a)) {
                served.entry(ip).or_default().push(Serving {
                    service: (service.clone(), namespace.clone()),
                    pod: pod.clone(),
                });
            }
        }
    }
    for pod in pods {
        let pod = pod.as_ref();
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            // Its address is its node's: the node keeps it; the pod is told apart by its
            // cgroups (host_network_pods).
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|p| parse_ip(&p.ip))
            .collect();
        if ips.is_empty() {
            ips.extend(status.pod_ip.as_deref().and_then(parse_ip));
        }
        let this_pod = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        for ip in ips {
            let service = served
                .get(&ip)
                .into_iter()
                .flatten()
                .filter(|s| s.pod.as_ref().is_none_or(|p| *p == this_pod))
                .map(|s| &s.service)
                .min()
                .cloned()
                .unwrap_or_default();
            // An address-keyed owner has no host address: equal owners stay equal on disk.
            out.insert(ip, pod_claim(pod, service, IpAddr::from([0, 0, 0, 0])));
        }
    }
    out
}

/// The running pods on the host network, by UID: they share their node's address, so the
/// history keeps them apart from the addresses, for the agents' cgroup maps to name.
pub fn host_network_pods(pods: &[impl AsRef<Pod>]) -> HashMap<String, Claim> {
    let mut out = HashMap::new();
    for pod in pods {
        let pod = pod.as_ref();
        let spec = pod.spec.as_ref();
        if !spec.and_then(|s| s.host_network).unwrap_or(false) {
            continue;
        }
        let status = pod.status.as_ref();
        if matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let host_ip = status
            .and_then(|s| {
                s.host_ip.as_deref().or(s.pod_ip.as_deref()).or(s
                    .pod_ips
                    .as_ref()?
                    .first()
                    .map(|p| p.ip.as_str()))
            })
            .and_then(parse_ip)
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        out.insert(uid, pod_claim(pod, (String::new(), String::new()), host_ip));
    }
    out
}

/// Brings the host-network pods of `history` to `desired` at `now_ns`; returns the changes.
pub fn apply_host_pods(
    history: &mut WorkloadHistory,
    desired: &HashMap<String, Claim>,
    now_ns: i64,
) -> usize {
    // A changed pod is handed over by begin_host_pod; only pods no longer there end here.
    let gone: Vec<String> = history
        .current_host_pods()
        .filter(|(uid, _)| !desired.contains_key(*uid))
        .map(|(uid, _)| uid.clone())
        .collect();
    let mut changes = gone.len();
    for uid in gone {
        history.end_host_pod(&uid, now_ns);
    }
    for (uid, claim) in desired {
        if history.current_host_pod(uid) == Some(&claim.owner) {
            continue;
        }
        history.begin_host_pod(claim.since_ns.min(now_ns), claim.owner.clone());
        changes += 1;
    }
    changes
}

/// Brings `history` to `desired` at `now_ns`: owners no longer claimed end now; new owners
/// begin at their object's creation, or now when the address already had someone after that
/// (an address reused while the analyzer was away is handed over when it learns of it).
/// Returns how many intervals began or ended.
pub fn apply(
    history: &mut WorkloadHistory,
    desired: &HashMap<IpAddr, Claim>,
    now_ns: i64,
) -> usize {
    // A new owner of an address is handed it by begin; only addresses no longer claimed end
    // here. Kinds the watchers do not manage (a static record) are left alone.
    let gone: Vec<(IpAddr, Owner)> = history
        .current()
        .filter(|(ip, owner)| {
            !desired.contains_key(ip) && matches!(owner.kind.as_str(), "pod" | "service" | "node")
        })
        .map(|(ip, owner)| (ip, owner.clone()))
        .collect();
    let mut changes = gone.len();
    for (ip, owner) in gone {
        history.end(ip, now_ns, &owner);
    }
    for (ip, claim) in desired {
        if history.current_owner(ip) == Some(&claim.owner) {
            continue;
        }
        let last_start = history.last_start(ip);
        let at = match last_start {
            Some(from) if from >= claim.since_ns => now_ns,
            _ => claim.since_ns.min(now_ns),
        };
        history.begin(*ip, at, claim.owner.clone());
        changes += 1;
    }
    changes
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        NodeAddress, NodeStatus, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::api::discovery::v1::Endpoint;

    use super::*;

    fn meta(name: &str, ns: Option<&str>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    fn pod(name: &str, ip: &str, node: &str) -> Pod {
        Pod {
            metadata: meta(name, Some("shop"), &[("app", name)]),
            spec: Some(PodSpec {
                node_name: Some(node.into()),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                ..PodStatus::default()
            }),
        }
    }

    /// A slice of `service` whose endpoints are (address, pod the endpoint names).
    fn slice(service: &str, endpoints: &[(&str, Option<&str>)]) -> EndpointSlice {
        use k8s_openapi::api::core::v1::ObjectReference;
        EndpointSlice {
            metadata: meta(
                &format!("{service}-abc"),
                Some("shop"),
                &[(SERVICE_NAME_LABEL, service)],
            ),
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, pod)| Endpoint {
                        addresses: vec![(*ip).into()],
                        target_ref: pod.map(|name| ObjectReference {
                            kind: Some("Pod".into()),
                            namespace: Some("shop".into()),
                            name: Some(name.into()),
                            ..ObjectReference::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
            ports: None,
        }
    }

    #[test]
    fn a_stale_endpoint_of_another_pod_does_not_name_the_service() {
        let service_of = |slices: Vec<EndpointSlice>, pod_name: &str| {
            let pods = vec![std::sync::Arc::new(pod(pod_name, "198.18.1.2", "node-c"))];
            let slices: Vec<_> = slices.into_iter().map(std::sync::Arc::new).collect();
            let none: Vec<std::sync::Arc<Service>> = Vec::new();
            let nodes: Vec<std::sync::Arc<Node>> = Vec::new();
            let d = desired(&pods, &none, &slices, &nodes);
            let owner = &d[&IpAddr::from([198, 18, 1, 2])].owner;
            owner.peer.service_name.clone()
        };
        // The slice still lists checkout-1's address after payment-1 got it.
        let stale = || vec![slice("checkout", &[("198.18.1.2", Some("checkout-1"))])];
        assert_eq!(service_of(stale(), "payment-1"), "");
        assert_eq!(service_of(stale(), "checkout-1"), "checkout");
        // An endpoint that names no pod serves whoever holds the address.
        let unnamed = vec![slice("checkout", &[("198.18.1.2", None)])];
        assert_eq!(service_of(unnamed, "payment-1"), "checkout");
        // Behind two services, the first by name that names this pod (or none).
        let both = vec![
            slice("zeta", &[("198.18.1.2", Some("payment-1"))]),
            slice("alpha", &[("198.18.1.2", Some("checkout-1"))]),
        ];
        assert_eq!(service_of(both, "payment-1"), "zeta");
    }

    #[test]
    fn pods_services_slices_and_nodes() {
        let mut host = pod("kube-proxy-x", "198.18.9.1", "node-a");
        if let Some(s) = host.spec.as_mut() {
            s.host_network = Some(true);
        }
        host.metadata.uid = Some("1a2b3c4d-0000-4000-8000-0123456789ab".into());
        let host_pods = host_network_pods(&[std::sync::Arc::new(host.clone())]);
        let hp = host_pods
            .values()
            .next()
            .map(|c| c.owner.clone())
            .unwrap_or_default();
        assert_eq!(
            (hp.peer.pod_name.as_str(), hp.peer.node.as_str(), hp.host_ip),
            ("kube-proxy-x", "node-a", IpAddr::from([198, 18, 9, 1]))
        );
        let mut h = WorkloadHistory::default();
        assert_eq!(apply_host_pods(&mut h, &host_pods, 10), 1);
        assert_eq!(
            apply_host_pods(&mut h, &host_pods, 20),
            0,
            "the same pod again"
        );
        assert_eq!(
            h.pod_by_uid("1a2b3c4d-0000-4000-8000-0123456789ab")
                .map(|o| o.peer.pod_name.as_str()),
            Some("kube-proxy-x")
        );
        assert_eq!(apply_host_pods(&mut h, &HashMap::new(), 30), 1, "gone");
        assert_eq!(h.current_host_pods().count(), 0);
        let mut done = pod("job-1", "198.18.1.9", "node-a");
        if let Some(s) = done.status.as_mut() {
            s.phase = Some("Succeeded".into());
        }
        let pods = vec![pod("checkout-1", "198.18.1.2", "node-c"), host, done];
        let services = vec![Service {
            metadata: meta("checkout", Some("shop"), &[]),
            spec: Some(ServiceSpec {
                cluster_ips: Some(vec!["198.19.0.10".into()]),
                ..ServiceSpec::default()
            }),
            status: None,
        }];
        let slices = vec![EndpointSlice {
            metadata: meta(
                "checkout-abc",
                Some("shop"),
                &[(SERVICE_NAME_LABEL, "checkout")],
            ),
            address_type: "IPv4".into(),
            endpoints: Some(vec![Endpoint {
                addresses: vec!["198.18.1.2".into()],
                ..Endpoint::default()
            }]),
            ports: None,
        }];
        let nodes = vec![Node {
            metadata: meta("node-a", None, &[]),
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        address: "198.18.9.1".into(),
                        type_: "InternalIP".into(),
                    },
                    NodeAddress {
                        address: "node-a".into(),
                        type_: "Hostname".into(),
                    },
                ]),
                ..NodeStatus::default()
            }),
        }];
        fn arc<T>(v: Vec<T>) -> Vec<std::sync::Arc<T>> {
            v.into_iter().map(std::sync::Arc::new).collect()
        }
        let d = desired(&arc(pods), &arc(services), &arc(slices), &arc(nodes));
        let at = |ip: &str| {
            d.get(&parse_ip(ip).unwrap_or(IpAddr::from([0, 0, 0, 0])))
                .map(|c| &c.owner)
        };
        let checkout = at("198.18.1.2").cloned().unwrap_or_default();
        assert_eq!(
            (
                checkout.kind.as_str(),
                checkout.peer.pod_name.as_str(),
                checkout.peer.service_name.as_str(),
                checkout.peer.node.as_str()
            ),
            ("pod", "checkout-1", "checkout", "node-c")
        );
        assert_eq!(at("198.19.0.10").map(|o| o.kind.as_str()), Some("service"));
        let node = at("198.18.9.1").cloned().unwrap_or_default();
        assert_eq!(
            (node.kind.as_str(), node.peer.node.as_str()),
            ("node", "node-a"),
            "host network → node"
        );
        assert!(
            at("198.18.1.9").is_none(),
            "a finished pod holds no address"
        );
        assert_eq!(d.len(), 3);

        let mut h = WorkloadHistory::default();
        assert_eq!(apply(&mut h, &d, 1_000), 3);
        assert_eq!(
            apply(&mut h, &d, 2_000),
            0,
            "a relist of the same cluster changes nothing"
        );
        let none: HashMap<IpAddr, Claim> = HashMap::new();
        assert_eq!(apply(&mut h, &none, 3_000), 3);
        assert_eq!(h.current().count(), 0);
        assert_eq!(h.records().len(), 3, "the history keeps who they were");
    }
}
