//! Attribution: who an address was when a call was made ([`Resolve`]).
//!
//! Without Kubernetes the source is a static file saying which pod, service and namespace an
//! address belongs to (`remora up --workloads FILE`), for laptops, VMs, compose setups and tests.
//! A snapshot freezes the records of its time (`workloads.parquet`, the table
//! `remora_tables::workloads` defines) and its dissections attribute with those.
//!
//! The file is a JSON array:
//! `[{"ip": "198.18.0.1", "pod": "frontend-7d9f8", "namespace": "shop", "service": "frontend",
//!   "process": "node", "pid": 4242}]` — every field but `ip` optional.

use std::{collections::HashMap, net::IpAddr, path::Path};

use arrow::{
    array::{ArrayRef, AsArray as _},
    compute::cast,
    datatypes::{DataType, UInt32Type},
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use remora_dissect::Endpoint;
use serde::Deserialize;

pub use remora_tables::Peer;
use remora_tables::{Table, TableWriter};

/// Resolves endpoints to workloads when rows are written.
pub trait Resolve {
    /// The peer at `endpoint` at `ts_ns`, when known.
    fn resolve(&self, endpoint: &Endpoint, ts_ns: i64) -> Option<&Peer>;

    /// Every address this source knows now, for freezing into a snapshot
    /// (`workloads.parquet`); a source that cannot list them returns none.
    fn records(&self) -> Vec<(IpAddr, Peer)> {
        Vec::new()
    }
}

/// Knows no workloads: every attribution column stays empty.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWorkloads;

impl Resolve for NoWorkloads {
    fn resolve(&self, _endpoint: &Endpoint, _ts_ns: i64) -> Option<&Peer> {
        None
    }
}

/// One address in a workloads file. Every field but `ip` may be absent or `null` (how most
/// tools write an unknown value, `kubectl ... -o json` included): both mean unknown.
#[derive(Deserialize)]
struct Entry {
    ip: IpAddr,
    #[serde(default, deserialize_with = "null_as_empty")]
    pod: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    namespace: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    service: String,
    #[serde(default)]
    service_namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    process: String,
    #[serde(default, deserialize_with = "null_as_zero")]
    pid: u32,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or_default())
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

    fn records(&self) -> Vec<(IpAddr, Peer)> {
        let mut all: Vec<_> = self.peers.iter().map(|(ip, p)| (*ip, p.clone())).collect();
        all.sort_by_key(|(ip, _)| *ip);
        all
    }
}

/// The workload records a snapshot froze when it was made, in `<snapshot>/workloads.parquet`.
/// A dissection of the snapshot attributes with these, not with what the analyzer knows when
/// the job runs, so a snapshot means the same thing after its pods are gone.
pub const SNAPSHOT_FILE: &str = "workloads.parquet";

impl StaticWorkloads {
    /// A resolver over `records`.
    pub fn from_records(records: impl IntoIterator<Item = (IpAddr, Peer)>) -> Self {
        Self {
            peers: records.into_iter().collect(),
        }
    }

    /// Writes the records as Parquet (temp, fsync, rename): one row per address.
    pub fn write_parquet(&self, path: &Path) -> anyhow::Result<()> {
        let records = self.records();
        let mut w = TableWriter::new(Table::Workloads, path);
        w.write(&remora_tables::workloads::batch(&records)?)?;
        w.finish()?;
        Ok(())
    }

    /// Reads what [`write_parquet`](Self::write_parquet) wrote.
    pub fn read_parquet(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let mut peers = HashMap::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            let batch = batch?;
            let text = |name: &str| -> anyhow::Result<ArrayRef> {
                let column = batch
                    .column_by_name(name)
                    .ok_or_else(|| anyhow::anyhow!("{}: no column {name}", path.display()))?;
                Ok(cast(column, &DataType::Utf8)?)
            };
            let [ip, pod, pod_ns, svc, svc_ns, process] = [
                "ip",
                "pod_name",
                "pod_namespace",
                "service_name",
                "service_namespace",
                "process",
            ]
            .map(text);
            let (ip, pod, pod_ns, svc, svc_ns, process) =
                (ip?, pod?, pod_ns?, svc?, svc_ns?, process?);
            let pid = cast(
                batch
                    .column_by_name("pid")
                    .ok_or_else(|| anyhow::anyhow!("{}: no column pid", path.display()))?,
                &DataType::UInt32,
            )?;
            let pid = pid.as_primitive::<UInt32Type>();
            let s = |a: &ArrayRef, r: usize| a.as_string::<i32>().value(r).to_owned();
            for r in 0..batch.num_rows() {
                let addr: IpAddr = s(&ip, r)
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{}: row {r}: {e}", path.display()))?;
                peers.insert(
                    addr,
                    Peer {
                        pod_name: s(&pod, r),
                        pod_namespace: s(&pod_ns, r),
                        service_name: s(&svc, r),
                        service_namespace: s(&svc_ns, r),
                        process: s(&process, r),
                        pid: pid.value(r),
                    },
                );
            }
        }
        Ok(Self { peers })
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
        // null for an absent service, namespace, process or pid is accepted as unknown.
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.4", "pod": "job-1", "namespace": null, "service": null,
                 "service_namespace": null, "process": null, "pid": null}]"#,
        );
        let w = w.unwrap_or_else(|e| panic!("null fields must be accepted: {e}"));
        let p = w.resolve(&ep("198.18.0.4"), 0).cloned().unwrap_or_default();
        assert_eq!(
            (p.name(), p.namespace(), p.service_name.as_str()),
            ("job-1", "", "")
        );
        assert!(
            StaticWorkloads::parse(r#"[{"ip": null}]"#).is_err(),
            "ip is required"
        );
    }

    #[test]
    fn records_survive_a_parquet_round_trip() {
        let w = StaticWorkloads::parse(
            r#"[{"ip": "198.18.0.1", "pod": "frontend-1", "namespace": "shop", "service": "frontend", "process": "node", "pid": 42},
                {"ip": "2001:db8::2", "service": "checkout", "namespace": "shop"}]"#,
        )
        .unwrap_or_default();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(SNAPSHOT_FILE);
        w.write_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = StaticWorkloads::read_parquet(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.records(), w.records());
        assert_eq!(back.len(), 2);
        assert!(StaticWorkloads::read_parquet(&dir.path().join("none.parquet")).is_err());
    }
}
