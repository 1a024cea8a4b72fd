//! Who an address was, over time: the time-versioned IP → workload history that the Kubernetes
//! watchers keep (`services::kubernetes`), that a static file seeds (`services::workloads`),
//! that snapshots freeze and that dissection asks, so that a pod IP reused by a later pod is
//! attributed to the pod that had it when the call was made.
//!
//! Each address has a list of intervals `[from, to)` in ns, ordered and not overlapping. A new
//! owner of an address closes the previous owner's interval at the moment it takes over, which
//! is what an IP reuse means; the end of an owner that no longer holds the address changes
//! nothing, because watch events for different objects arrive in any order.
//!
//! On disk the history is the `workloads` table (`remora_tables::workloads`): one row per
//! interval, written atomically.

use std::{collections::HashMap, net::IpAddr, path::Path};

use arrow::{
    array::{Array, ArrayRef, AsArray as _, MapArray},
    compute::cast,
    datatypes::{DataType, Int64Type, TimeUnit, UInt32Type},
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use remora_dissect::Endpoint;
pub use remora_tables::workloads::WorkloadRecord;
use remora_tables::{Table, TableWriter};

use super::workloads::{Peer, Resolve};

/// An open interval's end.
const OPEN: i64 = i64::MAX;

/// Who holds an address: what it is, the attribution columns, the labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `pod`, `service`, `node` or `host`.
    pub kind: String,
    /// The attribution columns.
    pub peer: Peer,
    /// Labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// A pod's `metadata.uid` (empty for other kinds).
    pub uid: String,
    /// The address it was seen with (a host-network pod's: its node's).
    pub host_ip: IpAddr,
}

impl Default for Owner {
    fn default() -> Self {
        Self {
            kind: String::new(),
            peer: Peer::default(),
            labels: Vec::new(),
            uid: String::new(),
            host_ip: IpAddr::from([0, 0, 0, 0]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    from_ns: i64,
    to_ns: i64,
    owner: Owner,
}

/// Address → who held it when.
#[derive(Debug, Clone, Default)]
pub struct WorkloadHistory {
    by_ip: HashMap<IpAddr, Vec<Held>>,
    /// A pod UID → an address it held.
    by_uid: HashMap<String, IpAddr>,
    /// Pods on the host network, by UID: they share their node's address, so only their
    /// cgroups (the agents' map) tell their traffic apart; kind `hostpod` on disk.
    host_pods: HashMap<String, Vec<Held>>,
}

impl WorkloadHistory {
    /// `owner` holds `ip` from `at_ns` on. Whoever held it before stops at `at_ns` (never
    /// earlier than it started: history already written is not rewritten); the same owner
    /// seen again (a relist, a resync) changes nothing.
    pub fn begin(&mut self, ip: IpAddr, at_ns: i64, owner: Owner) {
        let list = self.by_ip.entry(ip).or_default();
        let mut at_ns = at_ns;
        if let Some(last) = list.last_mut() {
            if last.to_ns == OPEN && last.owner == owner {
                return;
            }
            // An ended interval keeps its end; an open one is handed over.
            at_ns = at_ns.max(if last.to_ns == OPEN {
                last.from_ns
            } else {
                last.to_ns
            });
            if last.to_ns > at_ns {
                last.to_ns = at_ns;
            }
            if last.to_ns == last.from_ns {
                // Held for no time at all: a transient owner that never mattered.
                list.pop();
            }
        }
        if !owner.uid.is_empty() {
            self.by_uid.insert(owner.uid.clone(), ip);
        }
        list.push(Held {
            from_ns: at_ns,
            to_ns: OPEN,
            owner,
        });
    }

    /// A host-network pod (`owner.uid`, its node's address in `owner.host_ip`) runs from
    /// `at_ns` on.
    pub fn begin_host_pod(&mut self, at_ns: i64, owner: Owner) {
        let list = self.host_pods.entry(owner.uid.clone()).or_default();
        if list
            .last()
            .is_some_and(|h| h.to_ns == OPEN && h.owner == owner)
        {
            return;
        }
        if let Some(last) = list.last_mut()
            && last.to_ns == OPEN
        {
            last.to_ns = at_ns.max(last.from_ns);
        }
        list.push(Held {
            from_ns: at_ns,
            to_ns: OPEN,
            owner,
        });
    }

    /// A host-network pod is gone at `at_ns`.
    pub fn end_host_pod(&mut self, uid: &str, at_ns: i64) {
        if let Some(last) = self.host_pods.get_mut(uid).and_then(|l| l.last_mut())
            && last.to_ns == OPEN
        {
            last.to_ns = at_ns.max(last.from_ns);
        }
    }

    /// The host-network pod `uid`, while it runs.
    pub fn current_host_pod(&self, uid: &str) -> Option<&Owner> {
        let last = self.host_pods.get(uid)?.last()?;
        (last.to_ns == OPEN).then_some(&last.owner)
    }

    /// The host-network pods running now, by UID.
    pub fn current_host_pods(&self) -> impl Iterator<Item = (&String, &Owner)> {
        self.host_pods.iter().filter_map(|(uid, list)| {
            let last = list.last()?;
            (last.to_ns == OPEN).then_some((uid, &last.owner))
        })
    }

    /// The pod with `uid`, as it was last recorded.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Owner> {
        if let Some(held) = self.host_pods.get(uid).and_then(|l| l.last()) {
            return Some(&held.owner);
        }
        let ip = self.by_uid.get(uid)?;
        self.by_ip
            .get(ip)?
            .iter()
            .rev()
            .map(|h| &h.owner)
            .find(|o| o.uid == uid)
    }

    /// `owner` stops holding `ip` at `at_ns`, if it still holds it.
    pub fn end(&mut self, ip: IpAddr, at_ns: i64, owner: &Owner) {
        if let Some(last) = self.by_ip.get_mut(&ip).and_then(|l| l.last_mut())
            && last.to_ns == OPEN
            && &last.owner == owner
        {
            last.to_ns = at_ns.max(last.from_ns);
        }
    }

    /// Who holds each address now.
    pub fn current(&self) -> impl Iterator<Item = (IpAddr, &Owner)> {
        self.by_ip.iter().filter_map(|(ip, list)| {
            let last = list.last()?;
            (last.to_ns == OPEN).then_some((*ip, &last.owner))
        })
    }

    /// Who holds `ip` now, if anyone.
    pub fn current_owner(&self, ip: &IpAddr) -> Option<&Owner> {
        let last = self.by_ip.get(ip)?.last()?;
        (last.to_ns == OPEN).then_some(&last.owner)
    }

    /// When the latest interval of `ip` started.
    pub fn last_start(&self, ip: &IpAddr) -> Option<i64> {
        Some(self.by_ip.get(ip)?.last()?.from_ns)
    }

    /// Who held `ip` at `ts_ns`.
    pub fn owner_at(&self, ip: &IpAddr, ts_ns: i64) -> Option<&Owner> {
        let list = self.by_ip.get(ip)?;
        // The last interval starting at or before ts.
        let i = list.partition_point(|h| h.from_ns <= ts_ns);
        let held = list.get(i.checked_sub(1)?)?;
        (ts_ns < held.to_ns).then_some(&held.owner)
    }

    /// The attribution columns of whoever held `ip` at `ts_ns`.
    pub fn at(&self, ip: &IpAddr, ts_ns: i64) -> Option<&Peer> {
        self.owner_at(ip, ts_ns).map(|o| &o.peer)
    }

    /// Forgets intervals that ended before `horizon_ns` (older than any data still kept).
    pub fn prune(&mut self, horizon_ns: i64) {
        self.by_ip.retain(|_, list| {
            list.retain(|h| h.to_ns > horizon_ns);
            !list.is_empty()
        });
        self.host_pods.retain(|_, list| {
            list.retain(|h| h.to_ns > horizon_ns);
            !list.is_empty()
        });
        let by_ip = &self.by_ip;
        self.by_uid.retain(|uid, ip| {
            by_ip
                .get(ip)
                .is_some_and(|l| l.iter().any(|h| &h.owner.uid == uid))
        });
    }

    /// The intervals that overlap `[from_ns, to_ns]`, by address then time.
    pub fn records_between(&self, from_ns: i64, to_ns: i64) -> Vec<WorkloadRecord> {
        let mut out: Vec<WorkloadRecord> = self
            .by_ip
            .iter()
            .flat_map(|(ip, list)| {
                list.iter()
                    .filter(move |h| h.from_ns <= to_ns && h.to_ns > from_ns)
                    .map(|h| WorkloadRecord {
                        ip: *ip,
                        from_ns: h.from_ns,
                        to_ns: (h.to_ns != OPEN).then_some(h.to_ns),
                        kind: h.owner.kind.clone(),
                        peer: h.owner.peer.clone(),
                        labels: h.owner.labels.clone(),
                        pod_uid: h.owner.uid.clone(),
                    })
            })
            .collect();
        out.extend(self.host_pods.values().flat_map(|list| {
            list.iter()
                .filter(move |h| h.from_ns <= to_ns && h.to_ns > from_ns)
                .map(|h| WorkloadRecord {
                    ip: h.owner.host_ip,
                    from_ns: h.from_ns,
                    to_ns: (h.to_ns != OPEN).then_some(h.to_ns),
                    kind: "hostpod".into(),
                    peer: h.owner.peer.clone(),
                    labels: h.owner.labels.clone(),
                    pod_uid: h.owner.uid.clone(),
                })
        }));
        out.sort_by(|a, b| (a.ip, a.from_ns, &a.pod_uid).cmp(&(b.ip, b.from_ns, &b.pod_uid)));
        out
    }

    /// Every interval, by address then time.
    pub fn records(&self) -> Vec<WorkloadRecord> {
        self.records_between(i64::MIN, i64::MAX)
    }

    /// A history from records (what [`records`](Self::records) gave).
    pub fn from_records(records: impl IntoIterator<Item = WorkloadRecord>) -> Self {
        let mut history = Self::default();
        for r in records {
            if r.kind == "hostpod" {
                history
                    .host_pods
                    .entry(r.pod_uid.clone())
                    .or_default()
                    .push(Held {
                        from_ns: r.from_ns,
                        to_ns: r.to_ns.unwrap_or(OPEN),
                        owner: Owner {
                            kind: "pod".into(),
                            peer: r.peer,
                            labels: r.labels,
                            uid: r.pod_uid,
                            host_ip: r.ip,
                        },
                    });
                continue;
            }
            if !r.pod_uid.is_empty() {
                history.by_uid.insert(r.pod_uid.clone(), r.ip);
            }
            history.by_ip.entry(r.ip).or_default().push(Held {
                from_ns: r.from_ns,
                to_ns: r.to_ns.unwrap_or(OPEN),
                owner: Owner {
                    kind: r.kind,
                    peer: r.peer,
                    labels: r.labels,
                    uid: r.pod_uid,
                    ..Owner::default()
                },
            });
        }
        for list in history
            .by_ip
            .values_mut()
            .chain(history.host_pods.values_mut())
        {
            list.sort_by_key(|h| h.from_ns);
        }
        history
    }

    /// Addresses with any history.
    pub fn addresses(&self) -> usize {
        self.by_ip.len()
    }

    /// Intervals held, open or closed.
    pub fn len(&self) -> usize {
        self.by_ip.values().map(Vec::len).sum()
    }

    /// Whether nothing was ever held.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Writes the history as the `workloads` table (temp, fsync, rename).
    pub fn write_parquet(&self, path: &Path) -> anyhow::Result<()> {
        write_records(&self.records(), path)
    }

    /// Reads what [`write_parquet`](Self::write_parquet) wrote. A file of the first format
    /// (one row per address, no times) reads as records held always.
    pub fn read_parquet(path: &Path) -> anyhow::Result<Self> {
        Ok(Self::from_records(read_records(path)?))
    }
}

/// Writes `records` as the `workloads` table (temp, fsync, rename).
pub fn write_records(records: &[WorkloadRecord], path: &Path) -> anyhow::Result<()> {
    let mut w = TableWriter::new(Table::Workloads, path);
    w.write(&remora_tables::workloads::batch(records)?)?;
    w.finish()?;
    Ok(())
}

/// Reads a `workloads` table.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<WorkloadRecord>> {
    let where_ = || path.display().to_string();
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", where_()))?;
    let mut out = Vec::new();
    for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
        let batch = batch?;
        let column = |name: &str| batch.column_by_name(name).cloned();
        let text = |name: &str| -> anyhow::Result<Option<ArrayRef>> {
            column(name)
                .map(|c| cast(&c, &DataType::Utf8))
                .transpose()
                .map_err(Into::into)
        };
        let need = |a: Option<ArrayRef>, name: &str| {
            a.ok_or_else(|| anyhow::anyhow!("{}: no column {name}", where_()))
        };
        let ip = need(text("ip")?, "ip")?;
        let [pod, pod_ns, svc, svc_ns, node, process, kind, uid] = [
            "pod_name",
            "pod_namespace",
            "service_name",
            "service_namespace",
            "node_name",
            "process",
            "kind",
            "pod_uid",
        ]
        .map(text);
        let (pod, pod_ns, svc, svc_ns, node, process, kind, uid) =
            (pod?, pod_ns?, svc?, svc_ns?, node?, process?, kind?, uid?);
        let time = |name: &str| -> anyhow::Result<Option<ArrayRef>> {
            column(name)
                .map(|c| cast(&c, &DataType::Timestamp(TimeUnit::Nanosecond, None)))
                .transpose()?
                .map(|c| cast(&c, &DataType::Int64))
                .transpose()
                .map_err(Into::into)
        };
        let (from, to) = (time("from_ts")?, time("to_ts")?);
        let pid = column("pid")
            .map(|c| cast(&c, &DataType::UInt32))
            .transpose()?;
        let labels = column("labels");
        let labels = labels.as_ref().and_then(|l| l.as_map_opt());
        let s = |a: &Option<ArrayRef>, r: usize| -> String {
            a.as_ref()
                .map(|a| a.as_string::<i32>())
                .filter(|a| a.is_valid(r))
                .map(|a| a.value(r).to_owned())
                .unwrap_or_default()
        };
        let i = |a: &Option<ArrayRef>, r: usize| -> Option<i64> {
            a.as_ref()
                .map(|a| a.as_primitive::<Int64Type>())
                .filter(|a| a.is_valid(r))
                .map(|a| a.value(r))
        };
        let ip_text = ip.as_string::<i32>();
        for r in 0..batch.num_rows() {
            let addr: IpAddr = ip_text
                .value(r)
                .parse()
                .map_err(|e| anyhow::anyhow!("{}: row {r}: {e}", where_()))?;
            let kind = s(&kind, r);
            out.push(WorkloadRecord {
                ip: addr,
                from_ns: i(&from, r).unwrap_or(0),
                to_ns: i(&to, r),
                kind: if kind.is_empty() { "host".into() } else { kind },
                peer: Peer {
                    pod_name: s(&pod, r),
                    pod_namespace: s(&pod_ns, r),
                    service_name: s(&svc, r),
                    service_namespace: s(&svc_ns, r),
                    node: s(&node, r),
                    process: s(&process, r),
                    pid: pid
                        .as_ref()
                        .map(|p| p.as_primitive::<UInt32Type>().value(r))
                        .unwrap_or(0),
                },
                labels: labels.map(|m| map_entries(m, r)).unwrap_or_default(),
                pod_uid: s(&uid, r),
            });
        }
    }
    Ok(out)
}

fn map_entries(map: &MapArray, row: usize) -> Vec<(String, String)> {
    if map.is_null(row) {
        return Vec::new();
    }
    let entries = map.value(row);
    let (Some(keys), Some(values)) = (
        entries.column(0).as_string_opt::<i32>(),
        entries.column(1).as_string_opt::<i32>(),
    ) else {
        return Vec::new();
    };
    (0..keys.len())
        .map(|k| (keys.value(k).to_owned(), values.value(k).to_owned()))
        .collect()
}

impl Resolve for WorkloadHistory {
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer> {
        self.at(&endpoint.ip, ts_ns)
    }

    fn pod_by_uid(&self, uid: &str) -> Option<&Peer> {
        WorkloadHistory::pod_by_uid(self, uid).map(|o| &o.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Owner {
        Owner {
            kind: "pod".into(),
            peer: Peer {
                pod_name: name.into(),
                pod_namespace: "shop".into(),
                node: "node-a".into(),
                ..Peer::default()
            },
            labels: vec![("app".into(), name.into())],
            uid: format!("uid-{name}"),
            ..Owner::default()
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
        assert_eq!(h.records().len(), 2);
        // An owner that claims a start before the current one's takes over from then on, and
        // what was written is not rewritten.
        h.begin(ip(1), 120, pod("c"));
        assert_eq!(name(&h, 149), Some("a"));
        assert_eq!(name(&h, 151), Some("c"));
        assert_eq!(h.records().len(), 2, "b held it for no time and is gone");
    }

    #[test]
    fn prune_window_and_round_trip() {
        let mut h = WorkloadHistory::default();
        for i in 0..10 {
            h.begin(ip(1), i * 100, pod(&format!("p{i}")));
        }
        h.begin(ip(2), 0, pod("db"));
        assert_eq!(h.current().count(), 2, "current owners");
        assert_eq!(h.records_between(250, 350).len(), 3, "p2, p3 and db");
        h.prune(500);
        assert_eq!(name(&h, 450), None, "ended before the horizon: forgotten");
        assert_eq!(name(&h, 550), Some("p5"));
        let again = WorkloadHistory::from_records(h.records());
        assert_eq!(again.records(), h.records());
        assert_eq!(again.addresses(), 2);

        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("history.parquet");
        h.write_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = WorkloadHistory::read_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            back.records(),
            h.records(),
            "times, labels, uids and node survive"
        );
        assert_eq!(
            back.pod_by_uid("uid-p9").map(|o| o.peer.pod_name.as_str()),
            Some("p9")
        );
        assert!(back.pod_by_uid("uid-p0").is_none(), "pruned");
        assert!(WorkloadHistory::read_parquet(&dir.path().join("none")).is_err());
    }
}
