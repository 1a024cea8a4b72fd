//! Snapshots made from a capture file (`remora snapshot import FILE NAME`), so a user's own
//! pcap or pcapng goes through the same snapshot → dissection → KFL → MCP flow as a recording.
//!
//! The frames are written as the recorder would have written them: packet slices of 10 s
//! (64 MiB at most) whose payload starts at the IP header, whatever the file's link type, and
//! whose timestamps are the file's. Nothing of a frame is cut below 65,000 bytes.

use std::{io::Read, path::Path, time::Duration};

use remora_agent::{
    decode::PacketRow,
    parse::parse,
    slice::{SliceEvent, SliceWriter},
};
use remora_agent_common::{DIRECTION_INGRESS, MAX_CAPTURE_BYTES};
use remora_dissect::capture::{CaptureReader, l3_of};

use super::{
    Manifest, SnapshotFile, SnapshotNode, SnapshotStatus, SnapshotStore, StoreError, io,
    parquet_rows, validate_name, write_atomic,
};

/// What a capture file became.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    /// Packets written.
    pub packets: u64,
    /// Frames without an IP packet in them (other link types, ARP, ...), left out.
    pub skipped: u64,
    /// First and last packet, ns since the epoch (0 when there were none).
    pub first_ns: i64,
    /// Last packet.
    pub last_ns: i64,
}

/// The interface index imported packets carry.
const IMPORT_IFINDEX: u32 = 1;

/// Writes the frames of a pcap or pcapng stream as packet slices of `node` into `packets_dir`
/// (which must exist), keeping `snaplen` bytes of each from its IP header on.
pub fn capture_to_slices(
    input: impl Read,
    packets_dir: &Path,
    node: &str,
    snaplen: u32,
) -> Result<Imported, StoreError> {
    let mut reader = CaptureReader::new(input).map_err(|e| {
        StoreError::Io(format!(
            "not a capture Remora can read (pcap or pcapng): {e}"
        ))
    })?;
    let mut slices = SliceWriter::new(packets_dir, node, Duration::from_secs(10), 64 << 20);
    let mut out = Imported {
        first_ns: i64::MAX,
        last_ns: i64::MIN,
        ..Imported::default()
    };
    while let Some((info, frame)) = reader
        .next_frame()
        .map_err(|e| StoreError::Io(format!("reading the capture: {e}")))?
    {
        let Some(l3) = l3_of(info.linktype, frame) else {
            out.skipped += 1;
            continue;
        };
        let l2 = frame.len() - l3.len();
        let kept = &l3[..l3.len().min(snaplen as usize)];
        // The row the recorder's decoder makes of a packet (`remora_agent::decode`).
        let row = PacketRow {
            ts_ns: info.ts_ns,
            cgroup_id: 0,
            ifindex: IMPORT_IFINDEX,
            wire_len: info.orig_len.saturating_sub(l2 as u32),
            payload_start: 0,
            payload_len: kept.len() as u32,
            direction: DIRECTION_INGRESS,
            headers: parse(kept),
        };
        slices.append(&row, kept);
        out.first_ns = out.first_ns.min(row.ts_ns);
        out.last_ns = out.last_ns.max(row.ts_ns);
        out.packets += 1;
    }
    slices.finish();
    for event in slices.take_events() {
        if let SliceEvent::Lost { error, .. } = event {
            return Err(StoreError::Io(format!("writing a slice: {error}")));
        }
    }
    if out.packets == 0 {
        out.first_ns = 0;
        out.last_ns = 0;
    }
    Ok(out)
}

impl SnapshotStore {
    /// Makes the completed snapshot `name` from the capture file `file`, as recorded by `node`.
    /// Built beside the others and renamed into place when whole, like any snapshot.
    pub fn import(&self, name: &str, file: &Path, node: &str) -> Result<Manifest, StoreError> {
        validate_name(name)?;
        validate_name(node)?;
        let final_dir = self.path(name)?;
        if final_dir.exists() || self.is_creating(name) {
            return Err(StoreError::Exists(name.to_owned()));
        }
        let input = std::fs::File::open(file).map_err(|e| io(file.display(), e))?;
        std::fs::create_dir_all(self.dir()).map_err(|e| io(self.dir().display(), e))?;
        // Made with create_dir, not create_dir_all: a build of the same name in progress
        // (here or in another process) already holds it.
        let tmp = self.dir().join(format!(".{name}.creating"));
        match std::fs::create_dir(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(name.to_owned()));
            }
            Err(e) => return Err(io(tmp.display(), e)),
        }
        let source = file.file_name().map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let result = self.import_into(name, input, &source, node, &tmp);
        match result {
            Ok(manifest) => {
                std::fs::rename(&tmp, &final_dir).map_err(|e| io(final_dir.display(), e))?;
                let _ = remora_agent::store::sync_dir(&self.dir());
                Ok(manifest)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    fn import_into(
        &self,
        name: &str,
        input: std::fs::File,
        source: &str,
        node: &str,
        tmp: &Path,
    ) -> Result<Manifest, StoreError> {
        let node_dir = tmp.join("capture").join(node);
        let packets_dir = node_dir.join("packets");
        std::fs::create_dir_all(&packets_dir).map_err(|e| io(packets_dir.display(), e))?;
        // The capture reader buffers the file itself (`CaptureReader`).
        let imported = capture_to_slices(input, &packets_dir, node, MAX_CAPTURE_BYTES)?;
        let mut files = Vec::new();
        let mut total = SnapshotNode {
            name: node.to_owned(),
            status: "complete".into(),
            reason: None,
            source: None,
            files: 0,
            packets: 0,
            bytes: 0,
        };
        for slice in remora_agent::store::list_node(&node_dir) {
            let rows = parquet_rows(&slice.path);
            let checksum = crate::services::checksum::checksum(&slice.path)
                .map_err(|e| super::io(slice.path.display(), e))?;
            total.files += 1;
            total.packets += rows;
            total.bytes += slice.bytes;
            files.push(SnapshotFile {
                node: node.to_owned(),
                kind: slice.kind.clone(),
                file: slice.file.clone(),
                bytes: slice.bytes,
                rows,
                checksum: Some(checksum),
            });
        }
        let manifest = Manifest {
            name: name.to_owned(),
            status: SnapshotStatus::Completed,
            reason: None,
            start: imported.first_ns.div_euclid(1_000_000),
            end: imported.last_ns.div_euclid(1_000_000) + 1,
            packets: total.packets,
            bytes: total.bytes,
            nodes: vec![total],
            files,
            drops: 0,
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            workloads: 0,
            imported_from: Some(source.to_owned()),
        };
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| io("manifest", e))?;
        write_atomic(&tmp.join("manifest.json"), &json)?;
        Ok(manifest)
    }
}
