//! Privileged end-to-end tests of the packet recorder: real eBPF, real traffic in network
//! namespaces, checked against tcpdump, tshark and DuckDB.
//!
//! Run with `cargo xtask test` (as root). A missing privilege or tool fails with a message.

mod common;

use std::time::Duration;

use common::{blast, compare_with_pcap, count_udp_to, tshark_fields};
use remora_bpf_tests::{
    metric_total,
    netns::{ADDR_A, ADDR_B, IF_A, NetNs, VethPair},
    pcap::read_pcap,
    proc::{AgentProc, Nginx, Tcpdump, wait_until},
    require_root, require_tool,
    slices::{read_all, read_slice, slice_files},
};

fn preflight() {
    require_root();
    for tool in ["ip", "tcpdump", "tshark", "nginx", "curl", "nc", "ping"] {
        require_tool(tool);
    }
}

#[test]
fn records_exactly_what_tcpdump_records_on_a_veth() {
    let snaplen = 4096u32;
    let Recording {
        pair,
        _nginx,
        tmp: _tmp,
        data,
        agent,
        pcap,
        dump,
    } = start_recording("cmp", 18801, snaplen, &[], &[]);

    // Known traffic: 4 HTTP requests (one a 200 KB download), 5 pings, 300 UDP datagrams.
    fetch(&pair, &["/", "/index.html", "/big.bin", "/missing"]);
    pair.a
        .exec_ok("ping", &["-c", "5", "-i", "0.05", "-q", ADDR_B]);
    blast(&pair.a, &format!("{ADDR_B}:9999"), 300, 200, 3000);
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();

    // The node API, while the agent runs.
    let (status, _) = agent.api_with_token("/v1/health", None);
    assert_eq!(
        status, 401,
        "the node API must refuse requests without the token"
    );
    let (status, _) = agent.api_with_token("/v1/health", Some("wrong"));
    assert_eq!(status, 401);
    let health = agent.api_json("/v1/health");
    assert_eq!(health["node"], "test");
    assert_eq!(health["interfaces"][0]["name"], IF_A);
    assert!(
        wait_until(Duration::from_secs(10), || {
            agent.api_json("/v1/slices?kind=packets")["slices"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        }),
        "no slice was published within 10 s"
    );
    let listed = agent.api_json("/v1/slices?kind=packets");
    let first = &listed["slices"][0];
    let file = first["file"].as_str().unwrap();
    let (status, body) = agent.api(&format!("/v1/slices/packets/{file}"));
    assert_eq!(status, 200);
    let on_disk = std::fs::read(data.join("capture/test/packets").join(file)).unwrap();
    assert_eq!(
        body, on_disk,
        "the node API must serve the slice byte for byte"
    );
    let (status, _) = agent.api("/v1/slices/packets/..%2F..%2Ftoken");
    assert_eq!(status, 400);
    let metrics = String::from_utf8(agent.api("/metrics").1).unwrap();
    assert!(
        metrics.contains("remora_packets_total{node=\"test\",cpu=\"0\"}"),
        "{metrics}"
    );
    let boundaries = agent.api_json("/v1/boundaries");
    assert!(
        boundaries["kinds"]["packets"]["oldest_ts"]
            .as_i64()
            .unwrap()
            > 1_700_000_000_000
    );

    let log = agent.stop();
    assert!(log.contains("0 packets dropped"), "{log}");
    assert_eq!(
        stats.dropped, 0,
        "tcpdump dropped packets; the reference is incomplete"
    );

    let dir = data.join("capture/test/packets");
    let ours = sorted_rows(&dir);
    let reference = read_pcap(&pcap);
    assert_eq!(stats.captured as usize, reference.len());
    let report = compare_with_pcap(&ours, &reference, 14, snaplen);
    eprintln!("veth: {report}");

    // The traffic is what was sent.
    let requests = ours
        .iter()
        .filter(|p| p.ip_proto == 6 && common::tcp_payload(&p.payload).starts_with(b"GET "))
        .count();
    assert_eq!(requests, 4);
    let icmp = ours
        .iter()
        .filter(|p| p.ip_proto == 1 && p.src_ip == ADDR_A)
        .count();
    assert_eq!(
        icmp, 5,
        "5 echo requests leave A (replies and port-unreachables come from B)"
    );
    assert_eq!(count_udp_to(&ours, 9999), 300);

    // tshark's reading of the reference pcap has the same header fields.
    let mut theirs: Vec<String> = tshark_fields(&pcap);
    let mut mine: Vec<String> = ours
        .iter()
        .map(|p| {
            let proto = if p.src_ip.is_empty() {
                String::new()
            } else {
                p.ip_proto.to_string()
            };
            format!("{},{},{},{}", p.src_ip, p.dst_ip, proto, p.wire_len + 14)
        })
        .collect();
    theirs.sort();
    mine.sort();
    let only_mine: Vec<_> = mine
        .iter()
        .filter(|m| !theirs.contains(m))
        .take(5)
        .collect();
    let only_theirs: Vec<_> = theirs
        .iter()
        .filter(|t| !mine.contains(t))
        .take(5)
        .collect();
    assert!(
        mine == theirs,
        "header fields differ from tshark's reading: ours only {only_mine:?}, tshark only {only_theirs:?}"
    );

    // DuckDB reads the slices (written by Remora's own Parquet writer) as standard Parquet
    // and agrees with the parquet crate's reading on every column: times, integers, nulls,
    // dictionary-encoded addresses, payloads.
    let sql = format!(
        "select count(*), sum(wire_len), sum(octet_length(payload)), min(epoch_ns(ts)), \
         max(epoch_ns(ts)), sum(ifindex), sum(direction), sum(ip_proto), count(src_port), \
         sum(src_port), sum(dst_port), count(distinct src_ip), min(dst_ip), \
         hex(min(payload)), hex(max(payload)) from read_parquet('{}/*.parquet')",
        dir.display()
    );
    let duck = common::duckdb(&sql);
    let sum =
        |f: &dyn Fn(&remora_bpf_tests::slices::Packet) -> u64| ours.iter().map(f).sum::<u64>();
    let mut sources: Vec<&str> = ours.iter().map(|p| p.src_ip.as_str()).collect();
    sources.sort();
    sources.dedup();
    let expected = format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        ours.len(),
        sum(&|p| u64::from(p.wire_len)),
        sum(&|p| p.payload.len() as u64),
        ours.iter().map(|p| p.ts_ns).min().unwrap_or(0),
        ours.iter().map(|p| p.ts_ns).max().unwrap_or(0),
        sum(&|p| u64::from(p.ifindex)),
        sum(&|p| u64::from(p.direction)),
        sum(&|p| u64::from(p.ip_proto)),
        ours.iter().filter(|p| p.src_port.is_some()).count(),
        sum(&|p| u64::from(p.src_port.unwrap_or(0))),
        sum(&|p| u64::from(p.dst_port.unwrap_or(0))),
        sources.len(),
        ours.iter().map(|p| p.dst_ip.as_str()).min().unwrap_or(""),
        hex(ours.iter().map(|p| &p.payload).min()),
        hex(ours.iter().map(|p| &p.payload).max()),
    );
    assert_eq!(duck.trim(), expected, "DuckDB disagrees");
}

/// The other packet transport, the shared BPF ring buffer, records the same packets, byte for
/// byte: at the largest snaplen, so that every record size class is used (bare ACKs, MTU
/// frames, GSO frames of tens of kilobytes).
#[test]
fn ring_buffer_transport_records_exactly_what_tcpdump_records() {
    let snaplen = 64_986u32;
    let rec = start_recording(
        "rbuf",
        18803,
        snaplen,
        &["--packet-ring", "ringbuf"],
        &["-B", "65536"],
    );
    let (pair, data, pcap) = (&rec.pair, &rec.data, &rec.pcap);
    fetch(pair, &["/", "/big.bin", "/missing", "/big.bin"]);
    for size in ["56", "1400", "3000", "9000"] {
        pair.a
            .exec_ok("ping", &["-c", "3", "-i", "0.05", "-q", "-s", size, ADDR_B]);
    }
    blast(&pair.a, &format!("{ADDR_B}:9999"), 300, 200, 3000);
    std::thread::sleep(Duration::from_millis(300));
    let stats = rec.dump.stop();
    let log = rec.agent.stop();
    assert!(log.contains("0 packets dropped"), "{log}");
    assert_eq!(stats.dropped, 0, "tcpdump dropped packets");

    let dir = data.join("capture/test/packets");
    let ours = sorted_rows(&dir);
    let reference = read_pcap(pcap);
    assert_eq!(stats.captured as usize, reference.len());
    let report = compare_with_pcap(&ours, &reference, 14, snaplen);
    eprintln!("ring buffer: {report}");
    assert_eq!(count_udp_to(&ours, 9999), 300);
    let biggest = ours.iter().map(|p| p.payload.len()).max().unwrap_or(0);
    assert!(
        biggest > 16_384,
        "no GSO frame above 16 KiB was recorded (largest {biggest} bytes)"
    );
}

/// An agent and tcpdump recording interface A of a fresh veth pair, with nginx on B.
struct Recording {
    pair: VethPair,
    _nginx: Nginx,
    tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    agent: AgentProc,
    pcap: std::path::PathBuf,
    dump: Tcpdump,
}

/// Starts a [`Recording`]: the agent on API port `port` keeping `snaplen` bytes, with `extra`
/// flags; tcpdump keeping the same bytes, with `tcpdump_extra` flags.
fn start_recording(
    name: &str,
    port: u16,
    snaplen: u32,
    extra: &[&str],
    tcpdump_extra: &[&str],
) -> Recording {
    preflight();
    let pair = VethPair::new(name);
    let nginx = Nginx::start(&pair.b, ADDR_B, 8080);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let snap = snaplen.to_string();
    let mut args = vec![
        "--interfaces",
        IF_A,
        "--snaplen",
        &snap,
        "--slice-duration",
        "2s",
    ];
    args.extend_from_slice(extra);
    let agent = AgentProc::start(&pair.a, &data, port, &args);
    let pcap = tmp.path().join("ref.pcap");
    let dump = Tcpdump::start(&pair.a, IF_A, snaplen + 14, &pcap, true, tcpdump_extra);
    Recording {
        pair,
        _nginx: nginx,
        tmp,
        data,
        agent,
        pcap,
        dump,
    }
}

/// GETs each of `paths` from nginx on B.
fn fetch(pair: &VethPair, paths: &[&str]) {
    for path in paths {
        pair.a.exec_ok(
            "curl",
            &[
                "-sS",
                "-o",
                "/dev/null",
                &format!("http://{ADDR_B}:8080{path}"),
            ],
        );
    }
}

/// Every packet of the slices in `dir`, after checking that each slice is in time order.
fn sorted_rows(dir: &std::path::Path) -> Vec<remora_bpf_tests::slices::Packet> {
    for file in slice_files(dir) {
        let rows = read_slice(&file);
        assert!(
            rows.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
            "{} is not sorted by ts",
            file.display()
        );
    }
    read_all(dir)
}

/// Upper-case hex, as DuckDB's `hex()` prints a blob.
fn hex(bytes: Option<&Vec<u8>>) -> String {
    bytes
        .map(|b| b.iter().map(|x| format!("{x:02X}")).collect())
        .unwrap_or_default()
}

fn agent_port() -> u16 {
    18802
}

#[test]
fn records_loopback_once_like_tcpdump() {
    preflight();
    let ns = NetNs::new("lo");
    let _nginx = Nginx::start(&ns, "127.0.0.1", 8080);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let agent = AgentProc::start(
        &ns,
        &data,
        18802,
        &["--interfaces", "lo", "--snaplen", "2048"],
    );
    let pcap = tmp.path().join("lo.pcap");
    let dump = Tcpdump::start(&ns, "lo", 2048 + 14, &pcap, true, &["port", "8080"]);
    for _ in 0..3 {
        ns.exec_ok(
            "curl",
            &["-sS", "-o", "/dev/null", "http://127.0.0.1:8080/big.bin"],
        );
    }
    // Remora's own API traffic crosses lo too, and must not be recorded.
    for _ in 0..5 {
        agent.api_json("/v1/health");
    }
    let metrics = String::from_utf8(agent.api("/metrics").1).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let stats = dump.stop();
    agent.stop();
    assert_eq!(stats.dropped, 0);
    let everything = read_all(&data.join("capture/test/packets"));
    assert!(
        !everything
            .iter()
            .any(|p| p.src_port == Some(agent_port()) || p.dst_port == Some(agent_port())),
        "the agent recorded its own API traffic"
    );
    let excluded = metric_total(&metrics, "remora_excluded_packets_total");
    assert!(
        excluded >= 10,
        "API packets should be counted as excluded, got {excluded}"
    );
    let ours: Vec<_> = everything
        .into_iter()
        .filter(|p| p.src_port == Some(8080) || p.dst_port == Some(8080))
        .collect();
    let report = compare_with_pcap(&ours, &read_pcap(&pcap), 14, 2048);
    eprintln!("loopback: {report}");
    assert!(
        ours.len() > 30,
        "three 200 KB downloads are more than 30 packets"
    );
}

#[test]
fn new_interfaces_are_recorded_when_they_come_up() {
    preflight();
    let pair = VethPair::new("new");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // No --interfaces: every interface that is up, and new ones.
    let agent = AgentProc::start(&pair.a, &data, 18803, &[]);
    pair.a.exec_ok(
        "ip",
        &[
            "link",
            "add",
            "veth-n",
            "type",
            "veth",
            "peer",
            "name",
            "veth-nb",
            "netns",
            &pair.b.name,
        ],
    );
    pair.a
        .exec_ok("ip", &["addr", "add", "198.18.1.1/24", "dev", "veth-n"]);
    pair.b
        .exec_ok("ip", &["addr", "add", "198.18.1.2/24", "dev", "veth-nb"]);
    pair.a.exec_ok("ip", &["link", "set", "veth-n", "up"]);
    pair.b.exec_ok("ip", &["link", "set", "veth-nb", "up"]);
    assert!(
        wait_until(Duration::from_secs(10), || agent
            .log_text()
            .contains("recording new interface")),
        "the agent did not pick up veth-n:\n{}",
        agent.log_text()
    );
    pair.a
        .exec_ok("ping", &["-c", "3", "-i", "0.05", "-q", "198.18.1.2"]);
    std::thread::sleep(Duration::from_millis(200));
    agent.stop();
    let ours = read_all(&data.join("capture/test/packets"));
    let echo = ours
        .iter()
        .filter(|p| p.ip_proto == 1 && p.dst_ip == "198.18.1.2")
        .count();
    assert_eq!(echo, 3, "three echo requests on the new interface");
}
