//! `GET /mcp/snapshots/{name}/pcap`: a snapshot's packets as pcapng, streamed while the slices
//! are read (a blocking reader feeds a bounded channel, so memory stays flat however large the
//! snapshot).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::Response,
};
use serde::Deserialize;

use super::{AnalyzerState, ApiError};
use crate::services::{pcap, snapshots::SnapshotStatus};

/// Export parameters.
#[derive(Debug, Deserialize)]
pub struct PcapQuery {
    /// Only these nodes, comma-separated (default: all).
    nodes: Option<String>,
    /// From this time, unix ms (default: the snapshot's start).
    start: Option<i64>,
    /// Until this time, unix ms, inclusive (default: the snapshot's end).
    end: Option<i64>,
}

/// Hands each write of the exporter to the response body, waiting while the client is slow.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /mcp/snapshots/{name}/pcap?nodes=&start=&end=`.
pub async fn export(
    State(s): State<Arc<AnalyzerState>>,
    Path(name): Path<String>,
    q: Result<Query<PcapQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("{e}; nodes, start, end are optional")))?;
    let manifest = s.store.get(&name)?;
    if manifest.status != SnapshotStatus::Completed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!("snapshot `{name}` is not completed yet; poll get_snapshot until it is"),
        ));
    }
    let mut nodes = s.store.packet_dirs(&name)?;
    if let Some(wanted) = &q.nodes {
        let wanted: Vec<&str> = wanted
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(missing) = wanted.iter().find(|w| !nodes.iter().any(|(n, _)| n == *w)) {
            let known: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
            return Err(ApiError::bad(format!(
                "snapshot `{name}` has no node `{missing}`; it has: {}",
                known.join(", ")
            )));
        }
        nodes.retain(|(n, _)| wanted.contains(&n.as_str()));
    }
    let start_ns = q.start.map_or(i64::MIN, |ms| ms.saturating_mul(1_000_000));
    let end_ns = q.end.map_or(i64::MAX, |ms| {
        ms.saturating_mul(1_000_000).saturating_add(999_999)
    });
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter(tx);
        if let Err(e) = pcap::export(&nodes, start_ns, end_ns, &mut out) {
            tracing::warn!("pcap export of {name} stopped: {e}");
            // The client sees the stream end with an error instead of a short file.
            let _ = out
                .0
                .blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-pcapng")
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.pcapng\"", manifest.name),
        )
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}
