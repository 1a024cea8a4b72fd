//! Who an address was, over time: the time-versioned IP → workload history that Kubernetes
//! watchers feed (issue 18) and dissection asks, so that a pod IP reused by a later pod is
//! attributed to the pod that had it when the call was made.
//!
//! Each address has a list of intervals `[from, to)` in ns, ordered and not overlapping. A new
//! owner of an address closes the previous owner's interval at the moment it takes over, which
//! is what an IP reuse means; the end of an owner that no longer holds the address changes
//! nothing, because watch events for different objects arrive in any order.

use std::{collections::HashMap, net::IpAddr};

use remora_dissect::Endpoint;

use super::workloads::{Peer, Resolve};

/// An open interval's end.
const OPEN: i64 = i64::MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    from_ns: i64,
    to_ns: i64,
    peer: Peer,
}

/// Address → who held it when.
#[derive(Debug, Clone, Default)]
pub struct WorkloadHistory {
    by_ip: HashMap<IpAddr, Vec<Held>>,
}

/// One interval of the history, for persisting and freezing into snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    /// The address.
    pub ip: IpAddr,
    /// Held from (ns, inclusive).
    pub from_ns: i64,
    /// Held until (ns, exclusive); `None` while it still holds it.
    pub to_ns: Option<i64>,
    /// Who held it.
    pub peer: Peer,
}

impl WorkloadHistory {
    /// `peer` holds `ip` from `at_ns` on. Whoever held it before stops at `at_ns`; the same
    /// owner seen again (a relist, a resync) changes nothing.
    pub fn begin(&mut self, ip: IpAddr, at_ns: i64, peer: Peer) {
        let list = self.by_ip.entry(ip).or_default();
        if let Some(last) = list.last_mut() {
            if last.to_ns == OPEN && last.peer == peer {
                return;
            }
            // An event older than the current owner's start (a late watch event) must not
            // rewrite newer history.
            if last.from_ns > at_ns {
                return;
            }
            if last.to_ns > at_ns {
                last.to_ns = at_ns;
            }
        }
        list.push(Held {
            from_ns: at_ns,
            to_ns: OPEN,
            peer,
        });
    }

    /// `peer` stops holding `ip` at `at_ns`, if it still holds it.
    pub fn end(&mut self, ip: IpAddr, at_ns: i64, peer: &Peer) {
        if let Some(last) = self.by_ip.get_mut(&ip).and_then(|l| l.last_mut())
            && last.to_ns == OPEN
            && &last.peer == peer
        {
            last.to_ns = at_ns.max(last.from_ns);
        }
    }

    /// Who held `ip` at `ts_ns`.
    pub fn at(&self, ip: &IpAddr, ts_ns: i64) -> Option<&Peer> {
        let list = self.by_ip.get(ip)?;
        // The last interval starting at or before ts.
        let i = list.partition_point(|h| h.from_ns <= ts_ns);
        let held = list.get(i.checked_sub(1)?)?;
        (ts_ns < held.to_ns).then_some(&held.peer)
    }

    /// Forgets intervals that ended before `horizon_ns` (older than any data still kept).
    pub fn prune(&mut self, horizon_ns: i64) {
        self.by_ip.retain(|_, list| {
            list.retain(|h| h.to_ns > horizon_ns);
            !list.is_empty()
        });
    }

    /// Every interval, by address then time.
    pub fn intervals(&self) -> Vec<Interval> {
        let mut out: Vec<Interval> = self
            .by_ip
            .iter()
            .flat_map(|(ip, list)| {
                list.iter().map(|h| Interval {
                    ip: *ip,
                    from_ns: h.from_ns,
                    to_ns: (h.to_ns != OPEN).then_some(h.to_ns),
                    peer: h.peer.clone(),
                })
            })
            .collect();
        out.sort_by_key(|i| (i.ip, i.from_ns));
        out
    }

    /// A history from intervals (what [`intervals`](Self::intervals) gave).
    pub fn from_intervals(intervals: impl IntoIterator<Item = Interval>) -> Self {
        let mut history = Self::default();
        for i in intervals {
            history.by_ip.entry(i.ip).or_default().push(Held {
                from_ns: i.from_ns,
                to_ns: i.to_ns.unwrap_or(OPEN),
                peer: i.peer,
            });
        }
        for list in history.by_ip.values_mut() {
            list.sort_by_key(|h| h.from_ns);
        }
        history
    }

    /// Addresses with any history.
    pub fn addresses(&self) -> usize {
        self.by_ip.len()
    }
}

impl Resolve for WorkloadHistory {
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer> {
        self.at(&endpoint.ip, ts_ns)
    }

    /// Who holds each address now.
    fn records(&self) -> Vec<(IpAddr, Peer)> {
        let mut out: Vec<(IpAddr, Peer)> = self
            .by_ip
            .iter()
            .filter_map(|(ip, list)| {
                let last = list.last()?;
                (last.to_ns == OPEN).then(|| (*ip, last.peer.clone()))
            })
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Peer {
        Peer {
            pod_name: name.into(),
            pod_namespace: "shop".into(),
            ..Peer::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 18, 5, last])
    }

    fn name(h: &WorkloadHistory, at: i64) -> Option<&str> {
        h.at(&ip(1), at).map(|p| p.pod_name.as_str())
    }

    #[test]
    fn a_reused_address_is_attributed_by_time() {
        let mut h = WorkloadHistory::default();
        h.begin(ip(1), 100, pod("cart-1"));
        h.end(ip(1), 200, &pod("cart-1"));
        h.begin(ip(1), 300, pod("payment-7"));
        assert_eq!(name(&h, 99), None, "before anyone");
        assert_eq!(name(&h, 100), Some("cart-1"));
        assert_eq!(name(&h, 199), Some("cart-1"));
        assert_eq!(name(&h, 250), None, "between owners");
        assert_eq!(name(&h, 300), Some("payment-7"));
        assert_eq!(name(&h, i64::MAX - 1), Some("payment-7"), "still held");
    }

    #[test]
    fn a_new_owner_ends_the_old_one_and_a_late_end_changes_nothing() {
        let mut h = WorkloadHistory::default();
        h.begin(ip(1), 100, pod("a"));
        // The next pod's add arrives before the old pod's delete.
        h.begin(ip(1), 150, pod("b"));
        h.end(ip(1), 180, &pod("a"));
        assert_eq!(name(&h, 149), Some("a"));
        assert_eq!(name(&h, 150), Some("b"));
        assert_eq!(name(&h, 500), Some("b"), "a's late delete did not end b");
        // A resync of the same owner is not a new interval.
        h.begin(ip(1), 600, pod("b"));
        assert_eq!(h.intervals().len(), 2);
        // A late add of an older owner does not rewrite what came after it.
        h.begin(ip(1), 120, pod("old"));
        assert_eq!(name(&h, 500), Some("b"));
        assert_eq!(h.intervals().len(), 2);
    }

    #[test]
    fn prune_and_round_trip() {
        let mut h = WorkloadHistory::default();
        for i in 0..10 {
            h.begin(ip(1), i * 100, pod(&format!("p{i}")));
        }
        h.begin(ip(2), 0, pod("db"));
        assert_eq!(h.records().len(), 2, "current owners");
        h.prune(500);
        assert_eq!(name(&h, 450), None, "ended before the horizon: forgotten");
        assert_eq!(name(&h, 550), Some("p5"));
        let again = WorkloadHistory::from_intervals(h.intervals());
        assert_eq!(again.intervals(), h.intervals());
        assert_eq!(again.addresses(), 2);
    }
}
