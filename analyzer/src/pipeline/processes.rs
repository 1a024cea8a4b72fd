//! Which process owned each end of a connection, from the agent's `sockets` slices.
//!
//! A process is named by the events it made itself: the first send or receive of each process
//! on a socket (`owner`) and the TCP state changes a system call makes (`SYN_SENT` on connect,
//! `FIN_WAIT1`/`LAST_ACK` on close, `LISTEN`). An `owner` row of an IPv6 socket may lack its
//! addresses; the socket's state changes (same `socket_id`) supply them.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use arrow::array::{
    Array, AsArray, RecordBatch,
    types::{Int32Type, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type},
};
use remora_dissect::Endpoint;

/// The kind directory of socket slices, next to `packets/` (the agent's name for it).
pub use remora_agent::sockets::slices::SOCKETS_KIND as SOCKETS_DIR;

/// A process seen on a socket, from `ts_ns` on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ts_ns: i64,
    pid: u32,
    comm: String,
}

/// A socket's (own, peer) ends.
type Ends = (Endpoint, Endpoint);

/// (local end, remote end) → the processes seen on such a socket, by time.
#[derive(Debug, Default)]
pub struct Processes {
    by_ends: HashMap<(Endpoint, Endpoint), Vec<Seen>>,
    /// socket id → (from when, its (own, peer) ends), as a reused address changes hands.
    socket_ends: HashMap<u64, Vec<(i64, Ends)>>,
}

/// One row of a `sockets` slice, as far as attribution needs it.
struct Row {
    ts_ns: i64,
    socket_id: Option<u64>,
    process: Option<(u32, String)>,
    ends: Option<(Endpoint, Endpoint)>,
    /// A state change to CLOSE: the socket is gone (its address may be reused).
    closed: bool,
}

fn endpoint(ip: Option<&str>, port: Option<u16>) -> Option<Endpoint> {
    let ip: IpAddr = ip?.parse().ok()?;
    let port = port?;
    (!ip.is_unspecified() && port != 0).then_some(Endpoint { ip, port })
}

fn rows(batch: &RecordBatch) -> Option<Vec<Row>> {
    let col = |name: &str| batch.column_by_name(name);
    let ts = col("ts")?.as_primitive_opt::<TimestampNanosecondType>()?;
    let socket = col("socket_id")?.as_primitive_opt::<UInt64Type>()?;
    let pid = col("pid")?.as_primitive_opt::<UInt32Type>()?;
    let comm = col("comm")?.as_string_opt::<i32>()?;
    let src_ip = col("src_ip")?.as_string_opt::<i32>()?;
    let dst_ip = col("dst_ip")?.as_string_opt::<i32>()?;
    let src_port = col("src_port")?.as_primitive_opt::<UInt16Type>()?;
    let dst_port = col("dst_port")?.as_primitive_opt::<UInt16Type>()?;
    let _fd = col("fd")?.as_primitive_opt::<Int32Type>()?;
    let new_state =
        arrow::compute::cast(col("new_state")?, &arrow::datatypes::DataType::Utf8).ok()?;
    let new_state = new_state.as_string_opt::<i32>()?;
    fn opt_str(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
        (!a.is_null(i)).then(|| a.value(i))
    }
    Some(
        (0..batch.num_rows())
            .map(|i| {
                let local = endpoint(
                    opt_str(src_ip, i),
                    (!src_port.is_null(i)).then(|| src_port.value(i)),
                );
                let remote = endpoint(
                    opt_str(dst_ip, i),
                    (!dst_port.is_null(i)).then(|| dst_port.value(i)),
                );
                Row {
                    ts_ns: ts.value(i),
                    socket_id: (!socket.is_null(i)).then(|| socket.value(i)),
                    process: (!pid.is_null(i)).then(|| {
                        (
                            pid.value(i),
                            opt_str(comm, i).unwrap_or_default().to_owned(),
                        )
                    }),
                    ends: local.zip(remote),
                    closed: opt_str(new_state, i) == Some("CLOSE"),
                }
            })
            .collect(),
    )
}

impl Processes {
    /// The socket slices of `nodes` (`(node, packets dir)`: `sockets/` is its sibling); `None`
    /// when there are none (an older recording, an imported capture).
    pub fn load(nodes: &[(String, PathBuf)]) -> Option<Self> {
        let mut all = Vec::new();
        for path in kind_files(nodes, SOCKETS_DIR) {
            read_file(&path, &mut all);
        }
        (!all.is_empty()).then(|| Self::from_rows(all))
    }

    fn from_rows(mut all: Vec<Row>) -> Self {
        all.sort_by_key(|r| r.ts_ns);
        // A kernel socket's address is reused once it is freed, so a socket's ends are only
        // those seen between its first event and its CLOSE. An event without ends (a connect's
        // SYN_SENT, before the port is chosen) waits for the socket's next event with ends.
        let mut current: HashMap<u64, (Endpoint, Endpoint)> = HashMap::new();
        let mut waiting: HashMap<u64, Vec<Seen>> = HashMap::new();
        let mut by_ends: HashMap<(Endpoint, Endpoint), Vec<Seen>> = HashMap::new();
        let mut note = |ends: (Endpoint, Endpoint), seen: Seen| {
            let list = by_ends.entry(ends).or_default();
            if list.last().is_none_or(|s| s.pid != seen.pid) {
                list.push(seen);
            }
        };
        let mut socket_ends: HashMap<u64, Vec<(i64, Ends)>> = HashMap::new();
        for r in all {
            if let (Some(id), Some(ends)) = (r.socket_id, r.ends) {
                if current.insert(id, ends) != Some(ends) {
                    socket_ends.entry(id).or_default().push((r.ts_ns, ends));
                }
                for seen in waiting.remove(&id).unwrap_or_default() {
                    note(ends, seen);
                }
            }
            if let Some((pid, comm)) = r.process {
                let seen = Seen {
                    ts_ns: r.ts_ns,
                    pid,
                    comm,
                };
                match (r.ends, r.socket_id) {
                    (Some(ends), _) => note(ends, seen),
                    (None, Some(id)) => match current.get(&id) {
                        Some(ends) => note(*ends, seen),
                        None => waiting.entry(id).or_default().push(seen),
                    },
                    (None, None) => {}
                }
            }
            if r.closed
                && let Some(id) = r.socket_id
            {
                current.remove(&id);
                waiting.remove(&id);
            }
        }
        Self {
            by_ends,
            socket_ends,
        }
    }

    /// The (own, peer) ends of socket `id` at `ts_ns`: the last seen by then (a second after,
    /// for clock differences), else the first.
    pub fn ends_of_socket(&self, id: u64, ts_ns: i64) -> Option<(Endpoint, Endpoint)> {
        let seen = self.socket_ends.get(&id)?;
        seen.iter()
            .rev()
            .find(|(t, _)| *t <= ts_ns + 1_000_000_000)
            .or_else(|| seen.first())
            .map(|(_, ends)| *ends)
    }

    /// The process whose socket had `local` as its own end and `remote` as its peer around
    /// `ts_ns`: the last one seen by then (a second after, for clock differences), else the first.
    pub fn process(&self, local: &Endpoint, remote: &Endpoint, ts_ns: i64) -> Option<(u32, &str)> {
        let seen = self.by_ends.get(&(*local, *remote))?;
        let at = seen
            .iter()
            .rev()
            .find(|s| s.ts_ns <= ts_ns + 1_000_000_000)
            .or_else(|| seen.first())?;
        Some((at.pid, at.comm.as_str()))
    }
}

fn read_file(path: &Path, out: &mut Vec<Row>) {
    each_batch(path, "sockets", |batch| {
        out.extend(rows(batch)?);
        Some(())
    });
}

/// The slices of kind `dir` (`sockets`, `tls`) beside the packets of `nodes`
/// (`(node, packets dir)`), in name (time) order per node.
pub(super) fn kind_files(nodes: &[(String, PathBuf)], dir: &str) -> Vec<PathBuf> {
    parquet_files(
        nodes
            .iter()
            .filter_map(|(_, packets)| packets.parent().map(|d| d.join(dir))),
    )
}

/// The Parquet files directly in each of `dirs` (temp files end in `.tmp`, so are not among
/// them), in name (time) order per directory; a directory that cannot be read has none.
pub fn parquet_files(dirs: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut here: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .collect();
        here.sort();
        out.extend(here);
    }
    out
}

/// Calls `take` with every record batch of the slice at `path` (of `kind`); an unreadable
/// slice, or one whose batch `take` refuses (`None`: columns missing), is logged and skipped:
/// the dissection goes on without it.
pub(super) fn each_batch(
    path: &Path,
    kind: &str,
    mut take: impl FnMut(&RecordBatch) -> Option<()>,
) {
    let reader = std::fs::File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|f| {
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .and_then(|b| b.build())
                .map_err(|e| e.to_string())
        });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable {kind} slice; skipped");
            return;
        }
    };
    for batch in reader {
        if batch.ok().as_ref().and_then(&mut take).is_none() {
            tracing::warn!(path = %path.display(), "a {kind} slice without the expected columns; skipped");
            return;
        }
    }
}

/// `addr` as an [`Endpoint`].
pub fn to_endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        ip: addr.ip(),
        port: addr.port(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        to_endpoint(s.parse().expect("address"))
    }

    #[test]
    fn an_owner_without_addresses_borrows_them_from_its_socket() {
        let ends = (ep("198.18.0.1:40000"), ep("198.18.0.2:80"));
        let rows = vec![
            Row {
                ts_ns: 10,
                socket_id: Some(5),
                process: None,
                ends: Some(ends),
                closed: false,
            },
            Row {
                ts_ns: 20,
                socket_id: Some(5),
                process: Some((42, "curl".into())),
                ends: None,
                closed: false,
            },
            Row {
                ts_ns: 30,
                socket_id: Some(6),
                process: Some((7, "nginx".into())),
                ends: Some((ends.1, ends.0)),
                closed: false,
            },
        ];
        let p = Processes::from_rows(rows);
        assert_eq!(p.process(&ends.0, &ends.1, 25), Some((42, "curl")));
        assert_eq!(
            p.process(&ends.1, &ends.0, 25),
            Some((7, "nginx")),
            "the server's socket"
        );
        assert_eq!(p.process(&ends.0, &ep("198.18.0.3:80"), 25), None);
    }

    #[test]
    fn a_reused_socket_address_is_a_new_socket() {
        let server = (ep("198.18.0.2:80"), ep("198.18.0.1:40000"));
        let client = (ep("198.18.0.1:40001"), ep("198.18.0.2:80"));
        let row = |ts_ns, process: Option<(u32, &str)>, ends, closed| Row {
            ts_ns,
            socket_id: Some(9),
            process: process.map(|(p, c)| (p, c.to_owned())),
            ends,
            closed,
        };
        let p = Processes::from_rows(vec![
            row(10, Some((7, "nginx")), Some(server), false),
            row(20, None, Some(server), true),
            // The freed address is curl's next socket: its SYN_SENT has no port yet.
            row(30, Some((42, "curl")), None, false),
            row(31, None, Some(client), false),
        ]);
        assert_eq!(p.process(&server.0, &server.1, 15), Some((7, "nginx")));
        assert_eq!(p.process(&client.0, &client.1, 35), Some((42, "curl")));
        assert_eq!(
            p.by_ends.get(&server).map(Vec::len),
            Some(1),
            "curl is not nginx's"
        );
    }
}
