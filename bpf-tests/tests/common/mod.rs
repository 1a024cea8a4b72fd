//! Shared pieces of the end-to-end tests: traffic, and comparisons with the reference tools.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{collections::HashMap, process::Command};

use remora_bpf_tests::{
    netns::NetNs, pcap::PcapRecord, sibling_binary, slices::Packet, workspace_root,
};

/// Sends `count` UDP datagrams of `size` bytes to `dst` from inside `ns` at `rate` per second.
pub fn blast(ns: &NetNs, dst: &str, count: u64, size: usize, rate: u64) -> serde_json::Value {
    let bin = sibling_binary("udp-blast");
    assert!(
        bin.is_file(),
        "{} missing: cargo build -p remora-bpf-tests",
        bin.display()
    );
    let out = ns.exec_ok(
        bin.to_str().unwrap(),
        &[
            "--dst",
            dst,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
            "--rate",
            &rate.to_string(),
        ],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("udp-blast report");
    assert_eq!(
        report["sent"].as_u64(),
        Some(count),
        "udp-blast could not send everything"
    );
    report
}

/// Starts `udp-blast` in the background (same arguments as [`blast`]); wait on the child.
pub fn blast_background(
    ns: &NetNs,
    dst: &str,
    count: u64,
    size: usize,
    rate: u64,
) -> std::process::Child {
    let bin = sibling_binary("udp-blast");
    ns.command(bin.to_str().unwrap())
        .args([
            "--dst",
            dst,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
        ])
        .args(["--rate", &rate.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawning udp-blast")
}

/// The TCP payload of an IPv4 packet (empty when it is not TCP or is cut before it).
pub fn tcp_payload(l3: &[u8]) -> &[u8] {
    if l3.len() < 20 || l3[0] >> 4 != 4 || l3[9] != 6 {
        return &[];
    }
    let ihl = usize::from(l3[0] & 0x0F) * 4;
    let Some(tcp) = l3.get(ihl..) else { return &[] };
    let Some(&off) = tcp.get(12) else { return &[] };
    tcp.get(usize::from(off >> 4) * 4..).unwrap_or(&[])
}

/// Number of recorded UDP datagrams to `port`.
pub fn count_udp_to(ours: &[Packet], port: u16) -> usize {
    ours.iter()
        .filter(|p| p.ip_proto == 17 && p.dst_port == Some(port))
        .count()
}

/// Checks that the recorder kept exactly the packets tcpdump kept: same count, same bytes (after
/// removing the `l2`-byte link header from tcpdump's), same wire lengths, and timestamps within
/// 1 ms of each other. Returns a one-line report of the match.
pub fn compare_with_pcap(
    ours: &[Packet],
    reference: &[PcapRecord],
    l2: usize,
    snaplen: u32,
) -> String {
    let mut by_bytes: HashMap<&[u8], Vec<(i64, u32)>> = HashMap::new();
    for r in reference {
        let l3 = r.data.get(l2..).unwrap_or(&[]);
        let l3 = &l3[..l3.len().min(snaplen as usize)];
        by_bytes.entry(l3).or_default().push((r.ts_ns, r.orig_len));
    }
    let mut unmatched = Vec::new();
    let mut max_delta = 0i64;
    let mut deltas = Vec::new();
    for p in ours {
        let Some(candidates) = by_bytes.get_mut(p.payload.as_slice()) else {
            unmatched.push(p);
            continue;
        };
        let Some(best) = (0..candidates.len()).min_by_key(|&i| (candidates[i].0 - p.ts_ns).abs())
        else {
            unmatched.push(p);
            continue;
        };
        let (ts, orig_len) = candidates.swap_remove(best);
        assert_eq!(
            p.wire_len + l2 as u32,
            orig_len,
            "wire length differs for {} -> {} at {}",
            p.src_ip,
            p.dst_ip,
            p.ts_ns
        );
        let delta = (ts - p.ts_ns).abs();
        max_delta = max_delta.max(delta);
        deltas.push(delta);
    }
    let big_tcp = match_big_tcp(&mut unmatched, &mut by_bytes, l2, &mut max_delta);
    let missing: usize = by_bytes.values().map(Vec::len).sum();
    if !unmatched.is_empty() || missing != 0 {
        for (bytes, left) in by_bytes.iter().filter(|(_, v)| !v.is_empty()).take(5) {
            eprintln!(
                "tcpdump only: {} bytes kept, ts/orig_len {:?}, head {:02x?}",
                bytes.len(),
                left,
                &bytes[..bytes.len().min(40)]
            );
        }
        for p in unmatched.iter().take(5) {
            eprintln!(
                "recorder only: {} bytes kept, ts {} wire_len {}, head {:02x?}",
                p.payload.len(),
                p.ts_ns,
                p.wire_len,
                &p.payload[..p.payload.len().min(40)]
            );
        }
    }
    assert!(
        unmatched.is_empty() && missing == 0,
        "recorder and tcpdump differ: {} recorded packets tcpdump does not have, {} tcpdump packets not recorded \
         (recorded {}, tcpdump {}); first extra: {:?}",
        unmatched.len(),
        missing,
        ours.len(),
        reference.len(),
        unmatched
            .first()
            .map(|p| (p.ts_ns, &p.src_ip, &p.dst_ip, p.ip_proto, p.wire_len))
    );
    assert!(
        max_delta <= 1_000_000,
        "timestamps differ from tcpdump's by up to {max_delta} ns (limit 1 ms)"
    );
    deltas.sort_unstable();
    let median = deltas.get(deltas.len() / 2).copied().unwrap_or(0);
    format!(
        "{} packets identical to tcpdump's ({big_tcp} IPv4 BIG TCP super-packets that the stack split \
         after the TC hook matched piece by piece); timestamp difference median {} µs, max {} µs",
        ours.len(),
        median / 1000,
        max_delta / 1000
    )
}

/// tshark's reading of a pcap: `src,dst,proto,frame_len` per frame.
pub fn tshark_fields(pcap: &std::path::Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=,", "-E", "aggregator=;"])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ip.proto",
            "-e",
            "frame.len",
        ])
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            // ICMP errors quote the original header: tshark then lists two addresses per field.
            line.split(',')
                .map(|f| f.split(';').next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Runs one SQL statement in DuckDB (the project venv's Python package) and returns its rows as
/// comma-separated lines.
pub fn duckdb(sql: &str) -> String {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup` (it creates the venv with duckdb)",
        python.display()
    );
    let script = "import duckdb, sys\nfor row in duckdb.sql(sys.argv[1]).fetchall():\n    print(','.join(str(v) for v in row))";
    let out = Command::new(python)
        .args(["-c", script, sql])
        .output()
        .expect("running duckdb");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// IPv4 BIG TCP: TC egress sees one super-packet (IPv4 total length 0) that the stack splits
/// before tcpdump's tap. A recorded super-packet matches when tcpdump has pieces of the same flow
/// whose sequence ranges tile exactly its payload, within 1 ms. Matched entries are removed from
/// both sides; returns how many super-packets matched.
fn match_big_tcp(
    unmatched: &mut Vec<&Packet>,
    by_bytes: &mut HashMap<&[u8], Vec<(i64, u32)>>,
    l2: usize,
    max_delta: &mut i64,
) -> usize {
    let mut pieces: Vec<Piece> = Vec::new();
    for (bytes, entries) in by_bytes.iter() {
        for &(ts, orig_len) in entries {
            if let Some((flow, seq, hdr)) = tcp_flow(bytes) {
                let len = orig_len - l2 as u32 - hdr;
                pieces.push((flow, seq, len, ts, bytes.to_vec()));
            }
        }
    }
    let mut matched = 0;
    unmatched.retain(|p| {
        let l3 = p.payload.as_slice();
        let is_big = l3.len() >= 20 && l3[0] >> 4 == 4 && l3[2] == 0 && l3[3] == 0;
        let Some((flow, seq, hdr)) = tcp_flow(l3).filter(|_| is_big) else {
            return true;
        };
        let total = p.wire_len - hdr;
        let mut chosen: Vec<usize> = Vec::new();
        let mut next = seq;
        let mut covered = 0u32;
        while covered < total {
            let Some(i) = pieces.iter().position(|(f, s, len, ts, _)| {
                *f == flow && *s == next && *len > 0 && (ts - p.ts_ns).abs() <= 1_000_000
            }) else {
                return true;
            };
            covered += pieces[i].2;
            next = next.wrapping_add(pieces[i].2);
            chosen.push(i);
        }
        if covered != total {
            return true;
        }
        chosen.sort_unstable_by(|a, b| b.cmp(a));
        for i in chosen {
            let (_, _, _, ts, key) = pieces.swap_remove(i);
            *max_delta = (*max_delta).max((ts - p.ts_ns).abs());
            if let Some(list) = by_bytes.get_mut(key.as_slice())
                && let Some(pos) = list.iter().position(|e| e.0 == ts)
            {
                list.swap_remove(pos);
            }
        }
        matched += 1;
        false
    });
    matched
}

/// One tcpdump packet as a candidate piece: (flow bytes: addresses and ports, sequence number,
/// payload length, timestamp, its key in the by-bytes map).
type Piece = (Vec<u8>, u32, u32, i64, Vec<u8>);

/// For an IPv4 TCP packet: (addresses + ports, sequence number, IP + TCP header length).
fn tcp_flow(l3: &[u8]) -> Option<(Vec<u8>, u32, u32)> {
    if l3.len() < 40 || l3[0] >> 4 != 4 || l3[9] != 6 {
        return None;
    }
    let ihl = usize::from(l3[0] & 0x0F) * 4;
    let tcp = l3.get(ihl..)?;
    let doff = usize::from(*tcp.get(12)? >> 4) * 4;
    let mut flow = l3[12..20].to_vec();
    flow.extend_from_slice(tcp.get(0..4)?);
    let seq = u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?);
    Some((flow, seq, (ihl + doff) as u32))
}
