//! TCP insights against tshark's `tcp.analysis.*`: per connection and direction, Remora's
//! retransmissions, out-of-order and lost segments, zero windows, duplicate ACKs and data
//! round-trip time must equal tshark's reading of the same capture — on every shared fixture,
//! and on captures of real impaired traffic made here: nftables drops a share of the server's
//! packets after tcpdump saw them (so the sender really retransmits), and a reader with a tiny
//! receive buffer fills its window.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use remora_bpf_tests::{
    netns::{ADDR_B, IF_A, VethPair},
    pcap::PcapWriter,
    proc::{Tcpdump, wait_until},
    require_root, require_tool, workspace_root,
};

/// Per direction (src ip, src port, dst ip, dst port): retransmissions, out of order, lost,
/// zero windows, duplicate ACKs, and the sum and count of round-trip samples in µs.
type Readings = BTreeMap<(String, String, String, String), [u64; 7]>;

fn tshark(pcap: &Path) -> Readings {
    let fields = [
        "ip.src",
        "ipv6.src",
        "tcp.srcport",
        "ip.dst",
        "ipv6.dst",
        "tcp.dstport",
        "tcp.analysis.retransmission",
        "tcp.analysis.fast_retransmission",
        "tcp.analysis.spurious_retransmission",
        "tcp.analysis.out_of_order",
        "tcp.analysis.lost_segment",
        "tcp.analysis.zero_window",
        "tcp.analysis.duplicate_ack",
        "tcp.analysis.ack_rtt",
    ];
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(pcap)
        .args(["-Y", "tcp", "-T", "fields", "-E", "separator=|"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(out.status.success(), "tshark failed on {}", pcap.display());
    let mut readings = Readings::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let p: Vec<&str> = line.split('|').collect();
        let last = |s: &str| s.rsplit(',').next().unwrap_or("").to_owned();
        let src = last(if p[0].is_empty() { p[1] } else { p[0] });
        let dst = last(if p[3].is_empty() { p[4] } else { p[3] });
        // The acknowledging packet carries the sample; it belongs to the direction it acks.
        let rtt = p[13].parse::<f64>().ok();
        let flags = [
            !(p[6].is_empty() && p[7].is_empty() && p[8].is_empty()),
            !p[9].is_empty(),
            !p[10].is_empty(),
            !p[11].is_empty(),
            !p[12].is_empty(),
        ];
        let entry = readings
            .entry((src.clone(), p[2].to_owned(), dst.clone(), p[5].to_owned()))
            .or_default();
        for (i, f) in flags.iter().enumerate() {
            entry[i] += u64::from(*f);
        }
        if let Some(s) = rtt {
            let entry = readings
                .entry((dst, p[5].to_owned(), src, p[2].to_owned()))
                .or_default();
            entry[5] += (s * 1e6).round() as u64;
            entry[6] += 1;
        }
    }
    readings
}

/// Remora's reading: the rows the engine writes to `conns`.
fn remora(pcap: &Path) -> Readings {
    let bytes = std::fs::read(pcap).expect("reading the capture");
    let out = remora_dissect::dissect_capture(&bytes).expect("dissecting");
    let mut readings = Readings::new();
    for c in &out.conns {
        let (a, b) = (c.src, c.dst);
        let fwd = (
            a.ip.to_string(),
            a.port.to_string(),
            b.ip.to_string(),
            b.port.to_string(),
        );
        let rev = (fwd.2.clone(), fwd.3.clone(), fwd.0.clone(), fwd.1.clone());
        for (key, i) in [(fwd, 0), (rev, 1)] {
            let entry = readings.entry(key).or_default();
            entry[0] += c.retransmissions[i];
            entry[1] += c.out_of_order[i];
            entry[2] += c.lost_segments[i];
            entry[3] += c.zero_windows[i];
            entry[4] += c.dup_acks[i];
        }
    }
    readings
}

/// Compares the counts exactly, and Remora's mean round trip of each connection with the
/// mean of tshark's samples in the direction they measure (±1 µs of rounding).
fn compare(pcap: &Path) -> [u64; 5] {
    let theirs = tshark(pcap);
    let ours = remora(pcap);
    let counts = |r: &Readings| -> BTreeMap<_, [u64; 5]> {
        r.iter()
            .map(|(k, v)| (k.clone(), [v[0], v[1], v[2], v[3], v[4]]))
            .filter(|(_, v)| v.iter().any(|n| *n > 0))
            .collect()
    };
    let (t, o) = (counts(&theirs), counts(&ours));
    let mut diffs = Vec::new();
    for k in t.keys().chain(o.keys()) {
        if t.get(k) != o.get(k) {
            diffs.push(format!(
                "{k:?}: tshark {:?}, Remora {:?}",
                t.get(k),
                o.get(k)
            ));
        }
    }
    diffs.dedup();
    assert!(
        diffs.is_empty(),
        "{}: [retransmissions, out of order, lost, zero windows, dup acks] differ:\n{}",
        pcap.display(),
        diffs.join("\n")
    );

    // Round trips: Remora keeps one mean per connection (both directions' samples). A tuple
    // used by several connections (port reuse) mixes their samples in tshark's fields, so
    // only tuples of one connection are compared.
    let bytes = std::fs::read(pcap).expect("reading the capture");
    let out = remora_dissect::dissect_capture(&bytes).expect("dissecting");
    let mut uses = BTreeMap::new();
    for c in &out.conns {
        *uses.entry((c.src, c.dst)).or_insert(0) += 1;
    }
    for c in out.conns.iter().filter(|c| uses[&(c.src, c.dst)] == 1) {
        let fwd = (
            c.src.ip.to_string(),
            c.src.port.to_string(),
            c.dst.ip.to_string(),
            c.dst.port.to_string(),
        );
        let rev = (fwd.2.clone(), fwd.3.clone(), fwd.0.clone(), fwd.1.clone());
        let (sum, n) = [fwd, rev]
            .iter()
            .filter_map(|k| theirs.get(k))
            .fold((0, 0), |(s, n), v| (s + v[5], n + v[6]));
        let want = (n > 0).then(|| sum / n);
        match (want, c.data_rtt_us) {
            (None, None) => {}
            (Some(w), Some(g)) => assert!(
                w.abs_diff(g.unsigned_abs()) <= 1 + w / 1000,
                "{}: conn {} round trip: tshark {w} µs, Remora {g} µs",
                pcap.display(),
                c.conn_id
            ),
            (w, g) => panic!(
                "{}: conn {} round trip: tshark {w:?} µs, Remora {g:?} µs",
                pcap.display(),
                c.conn_id
            ),
        }
    }
    let mut totals = [0; 5];
    for v in t.values() {
        for (i, n) in v.iter().enumerate() {
            totals[i] += n;
        }
    }
    totals
}

// TCP flags, and a millisecond in the captures' microseconds, for the captures built below.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;
const MS: u64 = 1000;

/// A capture of a handshake whose first SYN-ACK was lost after the capture point: SYN,
/// SYN-ACK, the SYN again 1 s later, the SYN-ACK again 1 ms after it, the client's ACK 2 ms
/// later, then one request and its acknowledgment.
fn lost_syn_ack_capture(server_isn: u32) -> Vec<u8> {
    let client_isn = 100u32;
    let (client, server) = (([198, 18, 0, 1], 40000u16), ([198, 18, 0, 2], 8000u16));
    let server_next = server_isn.wrapping_add(1);
    let mut pcap = PcapWriter::default();
    // The same SYN-ACK both times: only the time differs.
    let syn_ack = |pcap: &mut PcapWriter, at: u64| {
        pcap.tcp(
            at,
            server,
            client,
            server_isn,
            client_isn + 1,
            SYN | ACK,
            &[],
        );
    };
    pcap.tcp(0, client, server, client_isn, 0, SYN, &[]);
    syn_ack(&mut pcap, MS);
    pcap.tcp(1000 * MS, client, server, client_isn, 0, SYN, &[]);
    syn_ack(&mut pcap, 1001 * MS);
    pcap.tcp(
        1003 * MS,
        client,
        server,
        client_isn + 1,
        server_next,
        ACK,
        &[],
    );
    pcap.tcp(
        1004 * MS,
        client,
        server,
        client_isn + 1,
        server_next,
        PSH | ACK,
        &[b'x'; 40],
    );
    pcap.tcp(
        1006 * MS,
        server,
        client,
        server_next,
        client_isn + 41,
        ACK,
        &[],
    );
    pcap.bytes
}

/// A capture whose closing ACK was lost after the capture point, on a connection that had
/// lost a segment before: the server's data is sent twice, both FINs and the last ACK pass,
/// then the client's FIN comes again 3 s later (its timeout backed off) and the server
/// answers with a duplicate ACK. Other connections' SYNs every 400 ms keep the engine
/// sweeping in between, as busy traffic does.
fn late_fin_capture() -> Vec<u8> {
    let (c, s) = (7000u32, 90_000u32);
    let (client, server) = (([198, 18, 0, 1], 40100u16), ([198, 18, 0, 2], 8000u16));
    let mut pcap = PcapWriter::default();
    // (ms, to the server, seq, ack, flags, payload length)
    let exchange: [(u64, bool, u32, u32, u8, usize); 12] = [
        (0, true, c, 0, SYN, 0),
        (1, false, s, c + 1, SYN | ACK, 0),
        (2, true, c + 1, s + 1, ACK, 0),
        (3, true, c + 1, s + 1, PSH | ACK, 40),
        (4, false, s + 1, c + 41, PSH | ACK, 60),
        (210, false, s + 1, c + 41, PSH | ACK, 60),
        (211, true, c + 41, s + 61, ACK, 0),
        (212, false, s + 61, c + 41, FIN | ACK, 0),
        (213, true, c + 41, s + 62, FIN | ACK, 0),
        (214, false, s + 62, c + 42, ACK, 0),
        (3213, true, c + 41, s + 62, FIN | ACK, 0),
        (3214, false, s + 62, c + 42, ACK, 0),
    ];
    let mut filler = 0u64;
    for (at, to_server, seq, ack, flags, len) in exchange {
        while filler * 400 < at {
            let port = 41_000 + filler as u16;
            pcap.tcp(
                filler * 400 * MS + 50,
                ([198, 18, 0, 3], port),
                server,
                1,
                0,
                SYN,
                &[],
            );
            filler += 1;
        }
        let (from, to) = if to_server {
            (client, server)
        } else {
            (server, client)
        };
        pcap.tcp(at * MS, from, to, seq, ack, flags, &vec![b'x'; len]);
    }
    pcap.bytes
}

#[test]
fn tcp_insights_agree_with_tshark_on_every_fixture() {
    require_tool("tshark");
    let dir = workspace_root().join("../shared/fixtures/pcap");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("shared fixtures missing at {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
        .collect();
    files.sort();
    assert!(files.len() > 20, "only {} fixtures", files.len());
    // The handshake on which Remora once disagreed with tshark (found on impaired traffic):
    // the first SYN-ACK is lost after the capture point, so the client retransmits its SYN.
    // Which SYN-ACK times the client's ACK depends on the half of the sequence space the
    // server's ISN lies in; one capture for each half.
    let tmp = tempfile::tempdir().unwrap();
    for server_isn in [500u32, 3_000_000_000] {
        let path = tmp
            .path()
            .join(format!("lost-syn-ack-isn-{server_isn}.pcap"));
        std::fs::write(&path, lost_syn_ack_capture(server_isn)).unwrap();
        files.push(path);
    }
    // Late stragglers of a closed connection (found on impaired traffic): they are counted in
    // its row, as tshark counts them.
    let late_fin = tmp.path().join("late-fin.pcap");
    std::fs::write(&late_fin, late_fin_capture()).unwrap();
    files.push(late_fin);
    let mut events = 0;
    for f in &files {
        events += compare(f).iter().sum::<u64>();
    }
    assert!(
        events > 0,
        "the fixtures flagged nothing: the comparison tests nothing"
    );
}

/// A background process, killed on drop.
struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deletes the namespace's nftables table on drop (also on failure).
struct NftTable<'a>(&'a remora_bpf_tests::netns::NetNs);

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .command("nft")
            .args(["delete", "table", "inet", "remora_impair"])
            .output();
    }
}

#[test]
fn tcp_insights_agree_with_tshark_on_impaired_traffic() {
    require_root();
    for tool in ["tshark", "tcpdump", "nft", "curl", "python3"] {
        require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let www = tmp.path().join("www");
    std::fs::create_dir(&www).unwrap();
    // Incompressible, so every byte crosses the wire.
    let mut body = vec![0u8; 6 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in &mut body {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(www.join("big.bin"), &body).unwrap();

    let mut totals = [0u64; 5];
    for (round, drop_percent) in [(1, 2u32), (2, 8)] {
        let pair = VethPair::new(&format!("tcpa{round}"));
        let server = Bg(pair
            .b
            .command("python3")
            .args(["-m", "http.server", "8000", "--bind", ADDR_B, "--directory"])
            .arg(&www)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server"));
        assert!(
            wait_until(Duration::from_secs(10), || pair
                .a
                .command("curl")
                .args(["-s", "-o", "/dev/null", &format!("http://{ADDR_B}:8000/")])
                .status()
                .is_ok_and(|s| s.success())),
            "the HTTP server did not start"
        );
        let pcap = tmp.path().join(format!("impaired-{round}.pcap"));
        // Headers are enough for the analysis; tcpdump sees a packet before nftables drops it.
        let dump = Tcpdump::start(&pair.a, IF_A, 128, &pcap, true, &["tcp", "port", "8000"]);
        let _table = NftTable(&pair.a);
        pair.a
            .exec_ok("nft", &["add", "table", "inet", "remora_impair"]);
        pair.a.exec_ok(
            "nft",
            &[
                "add",
                "chain",
                "inet",
                "remora_impair",
                "input",
                "{ type filter hook input priority 0; }",
            ],
        );
        let percent = drop_percent.to_string();
        pair.a.exec_ok(
            "nft",
            &[
                "add",
                "rule",
                "inet",
                "remora_impair",
                "input",
                "ip",
                "saddr",
                ADDR_B,
                "tcp",
                "sport",
                "8000",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                &percent,
                "drop",
            ],
        );
        for _ in 0..2 {
            pair.a.exec_ok(
                "curl",
                &[
                    "-sS",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "30",
                    &format!("http://{ADDR_B}:8000/big.bin"),
                ],
            );
        }
        pair.a
            .exec_ok("nft", &["delete", "table", "inet", "remora_impair"]);
        // A slow reader with a tiny receive buffer: its window fills and reaches zero.
        pair.a
            .exec_ok("sysctl", &["-qw", "net.ipv4.tcp_rmem=4096 8192 16384"]);
        let _ = pair
            .a
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "--limit-rate",
                "400k",
                "--max-time",
                "3",
            ])
            .arg(format!("http://{ADDR_B}:8000/big.bin"))
            .status();
        std::thread::sleep(Duration::from_millis(300));
        dump.stop();
        drop(server);
        let found = match std::panic::catch_unwind(|| compare(&pcap)) {
            Ok(found) => found,
            Err(e) => {
                // Keep the capture that disagreed, to read it in Wireshark.
                let kept = std::env::temp_dir().join(format!("remora-tcp-analysis-{round}.pcap"));
                let _ = std::fs::copy(&pcap, &kept);
                eprintln!("the capture is kept at {}", kept.display());
                std::panic::resume_unwind(e);
            }
        };
        for (t, n) in totals.iter_mut().zip(found) {
            *t += n;
        }
    }
    // The impairments really happened, so the comparison covered each kind.
    let [retransmissions, _, lost, zero_windows, dup_acks] = totals;
    assert!(
        retransmissions > 0 && lost + dup_acks > 0 && zero_windows > 0,
        "the impairments produced too little to compare: {totals:?}"
    );
}
