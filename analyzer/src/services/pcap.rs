//! PCAP export: a snapshot's packets as one pcapng stream, merged across nodes in time order,
//! written as it is read (memory does not grow with the snapshot).
//!
//! Each node is one interface of the file (its name is the node's), link type raw IP (101,
//! since the recorder keeps packets from their IP header on), timestamps in nanoseconds. A
//! packet's captured length is what the recorder kept (its snaplen) and its original length
//! the packet's length on the wire from the IP header on, so Wireshark shows cut packets as cut.

use std::{io::Write, path::PathBuf};

use super::pcap_selection::Selection;
use crate::pipeline::{PipelineError, slices};

/// Link type of the packets: raw IPv4/IPv6.
const LINKTYPE_RAW: u16 = 101;

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Exported {
    /// Packets.
    pub packets: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the slices failed.
    #[error(transparent)]
    Read(#[from] PipelineError),
    /// Writing the stream failed (the client went away, or the disk is full).
    #[error("writing the pcapng: {0}")]
    Write(#[from] std::io::Error),
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// One pcapng block of type `kind` whose body is `parts` one after the other (padded to 32
/// bits); parts, so that a packet's bytes go straight into `out` without an extra copy.
fn block(out: &mut Vec<u8>, kind: u32, parts: &[&[u8]]) {
    let body: usize = parts.iter().map(|p| p.len()).sum();
    let len = (12 + body + pad4(body)) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend(std::iter::repeat_n(0, pad4(body)));
    out.extend_from_slice(&len.to_le_bytes());
}

/// An option (code, value), padded.
fn option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out.extend(std::iter::repeat_n(0, pad4(value.len())));
}

/// The section header and one interface per node.
fn header(nodes: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length not known
    option(&mut shb, 4, b"Remora"); // shb_userappl
    option(&mut shb, 0, b"");
    block(&mut out, 0x0A0D_0D0A, &[&shb]);
    for node in nodes {
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes()); // no snaplen limit
        option(&mut idb, 2, node.as_bytes()); // if_name
        option(&mut idb, 9, &[9]); // if_tsresol: nanoseconds
        option(&mut idb, 0, b"");
        block(&mut out, 1, &[&idb]);
    }
    out
}

/// Writes the packets of `nodes` (`(node, packets dir)`) whose time is within
/// `start_ns..=end_ns` and that `selection` keeps to `out` as pcapng, in time order across
/// nodes (node `i` of the selection is `nodes[i]`).
pub fn export(
    nodes: &[(String, PathBuf)],
    start_ns: i64,
    end_ns: i64,
    selection: &Selection,
    out: &mut impl Write,
) -> Result<Exported, ExportError> {
    let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
    let mut files = Vec::new();
    for (i, (_, dir)) in nodes.iter().enumerate() {
        for f in slices::slice_files(dir)? {
            files.push((i, f));
        }
    }
    let head = header(&names);
    out.write_all(&head)?;
    let mut written = Exported {
        packets: 0,
        bytes: head.len() as u64,
    };
    let mut buf = Vec::with_capacity(1 << 16);
    let mut failed: Option<std::io::Error> = None;
    slices::for_each_tagged_packet(&files, |node, ts, payload, wire_len| {
        if failed.is_some()
            || ts < start_ns
            || ts > end_ns
            || !selection.keeps(node, ts, payload, wire_len)
        {
            return;
        }
        // Enhanced packet block: interface, timestamp (high, low), captured and original length.
        let ts = ts as u64;
        let mut head = [0u8; 20];
        for (i, field) in [
            node as u32,
            (ts >> 32) as u32,
            ts as u32,
            payload.len() as u32,
            wire_len.max(payload.len() as u32),
        ]
        .into_iter()
        .enumerate()
        {
            head[i * 4..i * 4 + 4].copy_from_slice(&field.to_le_bytes());
        }
        block(&mut buf, 6, &[&head, payload]);
        written.packets += 1;
        if buf.len() >= 1 << 16 {
            written.bytes += buf.len() as u64;
            if let Err(e) = out.write_all(&buf) {
                failed = Some(e);
            }
            buf.clear();
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    written.bytes += buf.len() as u64;
    out.write_all(&buf)?;
    out.flush()?;
    Ok(written)
}
