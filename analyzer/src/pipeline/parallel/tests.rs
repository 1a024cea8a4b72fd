//! Rows from any number of threads against one thread's.

use std::path::{Path, PathBuf};

use arrow::{
    array::{Array as _, RecordBatch},
    compute::concat_batches,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

/// Every frame of the shared fixtures, as (time, IP bytes, wire length from the IP header).
fn fixture_frames() -> Vec<(i64, Vec<u8>, u32)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/pcap");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("shared fixtures")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    let mut frames = Vec::new();
    for file in files {
        let Ok(all) = remora_dissect::capture::frames(&std::fs::read(&file).unwrap()) else {
            continue;
        };
        for (info, data) in all {
            if let Some(l3) = remora_dissect::capture::l3_of(info.linktype, &data) {
                let l2 = (data.len() - l3.len()) as u32;
                frames.push((info.ts_ns, l3.to_vec(), info.orig_len.saturating_sub(l2)));
            }
        }
    }
    frames
}

/// The fixtures played `rounds` times, each round 1,000 s after the last (each fixture's own
/// timing kept), so that they span several epochs and sweeps: (time, IP bytes, wire length).
fn looped_frames(rounds: usize) -> Vec<(i64, Vec<u8>, u32)> {
    let frames = fixture_frames();
    let mut clock = 1_700_000_000_000_000_000i64;
    let mut out = Vec::new();
    for _ in 0..rounds {
        let mut previous = None;
        for (ts, l3, wire) in &frames {
            // Frames keep their spacing within a fixture; a jump back starts the next one
            // a second later.
            clock += match previous {
                Some(p) if *ts >= p => (ts - p).min(5_000_000_000),
                _ => 1_000_000_000,
            };
            previous = Some(*ts);
            out.push((clock, l3.clone(), *wire));
        }
        clock += 1_000_000_000_000;
    }
    out
}

/// A raw-IP pcap of [`looped_frames`].
fn looped_capture(path: &Path, rounds: usize) -> usize {
    let frames = looped_frames(rounds);
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    out.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes());
    for (clock, l3, wire) in &frames {
        out.extend_from_slice(&((clock / 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((clock % 1_000_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(l3.len() as u32).to_le_bytes());
        out.extend_from_slice(&wire.to_le_bytes());
        out.extend_from_slice(l3);
    }
    std::fs::write(path, out).unwrap();
    frames.len()
}

fn table(dir: &Path, name: &str) -> RecordBatch {
    let file = std::fs::File::open(dir.join(name)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

#[test]
fn shards_are_split_in_order_with_fewer_for_a_reader_that_runs_some() {
    for threads in 2..=SHARDS {
        for reader_runs_shards in [false, true] {
            let (local, ranges) = split(threads, reader_runs_shards);
            let what = format!("{threads} threads, reader runs shards: {reader_runs_shards}");
            assert_eq!(ranges.len() + usize::from(local > 0), threads, "{what}");
            // Contiguous, in order, every shard once, none empty.
            let mut next = local;
            for range in &ranges {
                assert_eq!(range.start, next, "{what}: {ranges:?}");
                assert!(range.end > range.start, "{what}: {ranges:?}");
                next = range.end;
            }
            assert_eq!(next, SHARDS, "{what}: {ranges:?}");
            // The reader routes as well: it never has more shards than a worker.
            let fewest = ranges.iter().map(|r| r.len()).min().unwrap_or(0);
            assert!(local <= fewest, "{what}: reader {local}, {ranges:?}");
            if !reader_runs_shards {
                assert_eq!(local, 0, "{what}");
            }
        }
    }
    // Two threads: the reader a bit under half.
    assert_eq!(split(2, true).0, 24);
}

#[test]
fn any_number_of_threads_gives_the_same_rows_in_the_same_order() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("looped.pcap");
    let frames = looped_capture(&pcap, 90);
    assert!(
        frames as u64 > 2 * EPOCH_FRAMES,
        "{frames} frames: fewer than three epochs"
    );
    let mut tables = Vec::new();
    for threads in [1, 2, 3] {
        let out = tmp.path().join(format!("t{threads}"));
        let summary = super::super::dissect_file(&pcap, &out, "n", false, threads).unwrap();
        assert!(summary.calls.values().sum::<u64>() > 10_000, "{summary}");
        tables.push((
            threads,
            table(&out, "calls.parquet"),
            table(&out, "conns.parquet"),
        ));
    }
    let (_, calls, conns) = &tables[0];
    for (threads, c, n) in &tables[1..] {
        assert_eq!(
            c.num_rows(),
            calls.num_rows(),
            "calls with {threads} threads"
        );
        assert!(c == calls, "calls differ with {threads} threads");
        assert!(n == conns, "conns differ with {threads} threads");
    }
}

/// The cgroup of the client pod on the client's node, in the recording below.
const CLIENT_CGROUP: u64 = 7;

/// Names the client pod by its UID, and nothing by address: what the socket owners add shows.
struct ClientPod(crate::services::workloads::Peer);

impl crate::services::workloads::Resolve for ClientPod {
    fn resolve(&self, _: &Endpoint, _: i64) -> Option<&crate::services::workloads::Peer> {
        None
    }

    fn pod_by_uid(&self, uid: &str) -> Option<&crate::services::workloads::Peer> {
        (uid == "uid-client").then_some(&self.0)
    }
}

/// A two-node recording of the looped fixtures around a Service
/// (`remora_dissect::recorded::around_a_nat`), laid out as a snapshot under `dir`: packet
/// slices per node, the client's sockets in its pod's cgroup, and TLS plaintext on the
/// client's node, half of it for recorded connections and half for sockets the agent did not
/// see. Returns the nodes and the time span.
fn recorded_snapshot(dir: &Path, rounds: usize) -> (Vec<(String, PathBuf)>, (i64, i64)) {
    use remora_agent::{decode::PacketRow, parse::parse, slice::SliceWriter, tls::slices::TlsRow};
    let plain: Vec<(i64, Vec<u8>)> = looped_frames(rounds)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    let span = (plain[0].0, plain[plain.len() - 1].0);
    let recorded = remora_dissect::recorded::around_a_nat(&plain);
    let nodes: Vec<(String, PathBuf)> = ["node-client", "node-server"]
        .iter()
        .map(|n| (n.to_string(), dir.join("capture").join(n).join("packets")))
        .collect();
    let mut writers: Vec<SliceWriter> = nodes
        .iter()
        .map(|(name, packets)| {
            std::fs::create_dir_all(packets).unwrap();
            SliceWriter::new(packets, name, std::time::Duration::from_secs(10), 64 << 20)
        })
        .collect();
    // TLS plaintext: an HTTP exchange on every tenth connection the client opened (its SYN on
    // the client's veth), and as many on sockets of unknown ends.
    let mut tls = Vec::new();
    for (i, (t, p, node)) in recorded.iter().enumerate() {
        // The client's own packets (even source port, not from a server port) were sent from
        // its pod's cgroup.
        let sport = p
            .get(20..22)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let cgroup = if *node == 0 && p[0] >> 4 == 4 && sport > 1024 && sport % 2 == 0 {
            CLIENT_CGROUP
        } else {
            0
        };
        let row = PacketRow {
            ts_ns: *t,
            cgroup_id: cgroup,
            ifindex: 1 + *node as u32,
            wire_len: p.len() as u32,
            payload_start: 0,
            payload_len: p.len() as u32,
            direction: 0,
            headers: parse(p),
        };
        writers[*node].append(&row, p);
        let syn = p[0] >> 4 == 4 && p[9] == 6 && p.get(33).is_some_and(|f| f & 0x12 == 0x02);
        if *node == 0 && syn && i % 10 == 0 {
            let end = |at: usize, port_at: usize| {
                let ip: [u8; 4] = p[at..at + 4].try_into().unwrap();
                std::net::SocketAddr::from((ip, u16::from_be_bytes([p[port_at], p[port_at + 1]])))
            };
            let n = tls.len() / 4;
            for (known, pid) in [(true, 100), (false, 200)] {
                let (src, dst) = (end(12, 20), end(16, 22));
                let ends = |row: &mut TlsRow| {
                    if known {
                        (row.src, row.dst) = (Some(src), Some(dst));
                    }
                };
                let request = format!("GET /plain/{n} HTTP/1.1\r\nHost: tls.test\r\n\r\n");
                let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
                for (dt, direction, data) in
                    [(1_000, 1, request.into_bytes()), (2_000, 0, response)]
                {
                    let mut row = TlsRow {
                        ts_ns: t + dt,
                        pid,
                        tid: pid,
                        comm: "curl".into(),
                        cgroup_id: CLIENT_CGROUP,
                        fd: None,
                        direction,
                        lib: "libssl.so.3".into(),
                        conn_id: i as u64,
                        socket_id: None,
                        src: None,
                        dst: None,
                        offset: 0,
                        call_len: data.len() as u32,
                        truncated: false,
                        data,
                    };
                    ends(&mut row);
                    tls.push(row);
                }
            }
        }
    }
    for mut w in writers {
        w.finish();
    }
    assert!(tls.len() > 40, "{} plaintext chunks", tls.len());
    tls.sort_by_key(|r| r.ts_ns);
    let tls_dir = dir.join("capture/node-client/tls");
    std::fs::create_dir_all(&tls_dir).unwrap();
    remora_agent::tls::slices::write_slice(&tls_dir, "node-client", &tls).unwrap();
    let cgroups = [remora_agent::cgroups::PodCgroup {
        id: CLIENT_CGROUP,
        pod_uid: "uid-client".into(),
        container_id: None,
    }];
    std::fs::write(
        dir.join("capture/node-client")
            .join(super::super::sockets::CGROUPS_FILE),
        serde_json::to_vec(&cgroups).unwrap(),
    )
    .unwrap();
    (nodes, span)
}

/// A recording (two nodes, copies, NAT, VXLAN, TLS plaintext, socket owners, a window) gives
/// the same tables, row for row, on any number of threads, and they say what one would expect.
#[test]
fn a_recording_gives_the_same_rows_on_any_number_of_threads() {
    use super::super::{Copies, How, dissect_nodes_with};
    let tmp = tempfile::tempdir().unwrap();
    let (nodes, (first, last)) = recorded_snapshot(tmp.path(), 12);
    // A window that leaves out the first and last rounds' calls.
    let round = (last - first) / 12;
    let window = (first + round, last - round);
    let client = ClientPod(crate::services::workloads::Peer {
        pod_name: "client".into(),
        ..Default::default()
    });
    let mut tables = Vec::new();
    for threads in [1, 2, 3] {
        let out = tmp.path().join(format!("t{threads}"));
        let how = How {
            copies: Copies::Once,
            window: Some(window),
            threads,
        };
        let summary = dissect_nodes_with(&nodes, &out, &client, how, &|_, _| true).unwrap();
        tables.push((
            threads,
            summary,
            table(&out, "calls.parquet"),
            table(&out, "conns.parquet"),
        ));
    }
    let (_, summary, calls, conns) = &tables[0];
    assert!(
        summary.frames > 3 * EPOCH_FRAMES,
        "{} frames: fewer than four epochs",
        summary.frames
    );
    for (threads, s, c, n) in &tables[1..] {
        assert_eq!(
            c.num_rows(),
            calls.num_rows(),
            "calls with {threads} threads"
        );
        assert!(c == calls, "calls differ with {threads} threads");
        if n != conns {
            for (i, f) in conns.schema().fields().iter().enumerate() {
                let (a, b) = (conns.column(i), n.column(i));
                if a != b {
                    for r in 0..a.len().min(b.len()) {
                        if a.slice(r, 1) != b.slice(r, 1) {
                            eprintln!(
                                "DEBUG {} row {r}: {:?} vs {:?}",
                                f.name(),
                                a.slice(r, 1),
                                b.slice(r, 1)
                            );
                            break;
                        }
                    }
                }
            }
        }
        assert!(n == conns, "conns differ with {threads} threads");
        assert_eq!(
            (s.stats.duplicates, s.outside_window, s.unpaired),
            (
                summary.stats.duplicates,
                summary.outside_window,
                summary.unpaired
            ),
            "{threads} threads"
        );
    }
    // What the rows say: copies counted once, views joined, both nodes, plaintext read,
    // the client pod named by its socket.
    let strings = |column: &str| -> Vec<String> {
        let array = arrow::compute::cast(
            calls.column_by_name(column).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let array = arrow::array::AsArray::as_string::<i32>(&array);
        (0..array.len())
            .map(|i| {
                if array.is_valid(i) {
                    array.value(i).to_owned()
                } else {
                    String::new()
                }
            })
            .collect()
    };
    let count = |column: &str, value: &str| strings(column).iter().filter(|v| *v == value).count();
    assert!(
        summary.stats.duplicates > 4 * summary.frames / 10,
        "{summary}"
    );
    assert!(summary.outside_window > 0, "{summary}");
    assert!(
        count("src_name", "client") > 0,
        "the socket's pod names the client"
    );
    let paths = strings("path");
    assert!(paths.iter().filter(|p| p.starts_with("/plain/")).count() > 20);
    let nodes_seen: std::collections::BTreeSet<String> = strings("node").into_iter().collect();
    assert_eq!(nodes_seen.len(), 2, "{nodes_seen:?}");
    // One stream per id among the plaintext streams of unknown sockets, which each shard
    // numbers in its own range. (Packets' ids are frame numbers; a synthetic reply faster than
    // the hops between the nodes can make a flow's views two flows, as in one engine.)
    let ids = arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(
        calls.column_by_name("conn_id").unwrap(),
    );
    let ends: Vec<String> = ["src_ip", "src_port", "dst_ip", "dst_port"]
        .iter()
        .map(|c| {
            let column = calls.column_by_name(c).unwrap();
            arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap()
        })
        .fold(vec![String::new(); calls.num_rows()], |mut acc, column| {
            let column = arrow::array::AsArray::as_string::<i32>(&column);
            for (i, s) in acc.iter_mut().enumerate() {
                s.push_str(column.value(i));
                s.push(' ');
            }
            acc
        });
    let mut flows = std::collections::HashMap::new();
    for (i, end) in ends.iter().enumerate() {
        if ids.value(i) < 1 << 48 {
            continue;
        }
        let mut pair = end.split(' ').collect::<Vec<_>>();
        pair.truncate(4);
        let (a, b) = (pair[..2].join(":"), pair[2..].join(":"));
        let flow = if a <= b { (a, b) } else { (b, a) };
        let first = flows.entry(ids.value(i)).or_insert_with(|| flow.clone());
        assert_eq!(
            *first,
            flow,
            "connection id {} names two flows",
            ids.value(i)
        );
    }
    let plaintext_only = flows.len();
    assert!(
        plaintext_only > 10,
        "{plaintext_only} plaintext streams without packets"
    );
}
