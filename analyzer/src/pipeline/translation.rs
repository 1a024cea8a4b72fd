//! Rows of a flow recorded on both sides of a NAT, as a reader expects them.
//!
//! The engine joins the two views of a translated flow into one row (`remora_dissect::Translated`)
//! whose ends are the view it recorded first. A reader wants the client as it sent (before any
//! SNAT) and the server that answered (after DNAT), and the Service the client dialled. Which view
//! is which is known from the workload history: the view whose server address is a Service's
//! ClusterIP is the one before DNAT. With no such knowledge, the first view recorded is taken as
//! the one before translation (on a node, a pod's veth records a packet before the host's NAT).
//!
//! After [`untranslate`], `nat` still holds the other view's end for each of the row's ends:
//! `nat.dst` is then the address the client dialled.

use remora_dissect::{Endpoint, Translated};
use remora_tables::Peer;

use crate::services::workloads::Resolve;

/// A Service's address, as the history names it: a service and no pod.
fn is_service_address(peer: Option<&Peer>) -> bool {
    peer.is_some_and(|p| p.pod_name.is_empty() && !p.service_name.is_empty())
}

/// Rewrites a translated row's ends to (client before translation, server after it), and its
/// `nat` to the other ends.
pub(super) fn untranslate(
    src: &mut Endpoint,
    dst: &mut Endpoint,
    nat: &mut Option<Translated>,
    ts_ns: i64,
    workloads: &dyn Resolve,
) {
    let Some(other) = nat.as_mut() else { return };
    let first_is_after = is_service_address(workloads.resolve(&other.dst, ts_ns))
        && !is_service_address(workloads.resolve(dst, ts_ns));
    if first_is_after {
        // The row's view is after DNAT: take the client from the other view.
        std::mem::swap(src, &mut other.src);
    } else {
        std::mem::swap(dst, &mut other.dst);
    }
}

/// The Service the client dialled, when the row was translated and its dialled address is a
/// Service's and the server's own attribution names another (or none).
pub fn dialled_service<'w>(
    dst: Option<&Peer>,
    nat: Option<&Translated>,
    ts_ns: i64,
    workloads: &'w dyn Resolve,
) -> Option<&'w Peer> {
    let dialled = workloads.resolve(&nat?.dst, ts_ns);
    if !is_service_address(dialled) {
        return None;
    }
    let dialled = dialled?;
    let same = dst.is_some_and(|d| {
        d.service_name == dialled.service_name && d.service_namespace == dialled.service_namespace
    });
    (!same).then_some(dialled)
}

/// `server` with its service set to `service`'s.
pub fn with_service(server: Option<&Peer>, service: &Peer) -> Peer {
    let mut peer = server.cloned().unwrap_or_default();
    peer.service_name.clone_from(&service.service_name);
    peer.service_namespace
        .clone_from(&service.service_namespace);
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    struct Cluster(Vec<(Endpoint, Peer)>);

    impl Resolve for Cluster {
        fn resolve(&self, endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
            self.0
                .iter()
                .find(|(e, _)| e.ip == endpoint.ip)
                .map(|(_, p)| p)
        }
    }

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: IpAddr::from([198, 18, 0, last]),
            port,
        }
    }

    fn cluster() -> Cluster {
        Cluster(vec![
            (
                ep(10, 0),
                Peer {
                    service_name: "checkout".into(),
                    service_namespace: "shop".into(),
                    ..Peer::default()
                },
            ),
            (
                ep(3, 0),
                Peer {
                    pod_name: "checkout-0".into(),
                    pod_namespace: "shop".into(),
                    service_name: "billing".into(),
                    service_namespace: "shop".into(),
                    ..Peer::default()
                },
            ),
        ])
    }

    #[test]
    fn the_row_names_the_client_as_it_sent_and_the_pod_that_answered() {
        let (client, service, pod, node) = (ep(2, 40000), ep(10, 80), ep(3, 8080), ep(200, 40000));
        let cluster = cluster();
        // Recorded first before DNAT, or first after DNAT and SNAT (clock skew between nodes):
        // the same row either way.
        for (first, other) in [
            ((client, service), (node, pod)),
            ((node, pod), (client, service)),
        ] {
            let (mut src, mut dst) = first;
            let mut nat = Some(Translated {
                src: other.0,
                dst: other.1,
            });
            untranslate(&mut src, &mut dst, &mut nat, 0, &cluster);
            let view = nat.expect("kept");
            assert_eq!((src, dst), (client, pod));
            assert_eq!(view.dst, service, "nat.dst is what the client dialled");
            let server = cluster.resolve(&dst, 0);
            let dialled =
                dialled_service(server, Some(&view), 0, &cluster).expect("another service");
            let peer = with_service(server, dialled);
            assert_eq!(
                (peer.pod_name.as_str(), peer.service_name.as_str()),
                ("checkout-0", "checkout")
            );
        }
    }

    #[test]
    fn without_a_history_the_first_view_is_before_translation() {
        let (mut src, mut dst) = (ep(2, 40000), ep(10, 80));
        let mut nat = Some(Translated {
            src: ep(2, 40000),
            dst: ep(3, 8080),
        });
        untranslate(
            &mut src,
            &mut dst,
            &mut nat,
            0,
            &crate::services::workloads::NoWorkloads,
        );
        assert_eq!((src, dst), (ep(2, 40000), ep(3, 8080)));
        assert_eq!(nat.map(|n| n.dst), Some(ep(10, 80)));
        let mut untouched = (ep(2, 1), ep(3, 2), None);
        untranslate(
            &mut untouched.0,
            &mut untouched.1,
            &mut untouched.2,
            0,
            &cluster(),
        );
        assert_eq!((untouched.0, untouched.1), (ep(2, 1), ep(3, 2)));
    }
}
