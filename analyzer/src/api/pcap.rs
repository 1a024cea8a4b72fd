//! `GET /mcp/snapshots/{name}/pcap`: a snapshot's packets as pcapng, streamed while the slices
//! are read (a blocking reader feeds a bounded channel, so memory stays flat however large the
//! snapshot). `bpf_filter` and `kfl` are compiled and resolved before the first byte, so a bad
//! filter is a JSON error, not a broken file.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;

use super::{AnalyzerState, ApiError};
use crate::services::{
    bpf_filter::{BpfFilter, FilterError},
    jobs::JobState,
    pcap,
    pcap_selection::{FlowSet, Selection, SelectionError},
    sql::Sources,
};

/// Export parameters.
#[derive(Debug, Deserialize)]
pub struct PcapQuery {
    /// Only these nodes, comma-separated (default: all).
    nodes: Option<String>,
    /// From this time, unix ms (default: the snapshot's start).
    start: Option<i64>,
    /// Until this time, unix ms, inclusive (default: the snapshot's end).
    end: Option<i64>,
    /// A capture filter in libpcap's syntax (`tcp port 443`).
    bpf_filter: Option<String>,
    /// Only the packets of the calls this KFL filter matches (their TCP connections, their UDP
    /// exchanges).
    kfl: Option<String>,
    /// The dissection `kfl` runs over (default: the snapshot's only completed one).
    dissection: Option<String>,
    /// Check the filters and count what they select instead of exporting.
    #[serde(default)]
    check: bool,
}

impl From<FilterError> for ApiError {
    fn from(e: FilterError) -> Self {
        match e {
            FilterError::NoLibpcap => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "no_libpcap", e.to_string())
            }
            FilterError::Syntax { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_bpf_filter",
                format!("{e}; the syntax is tcpdump's, e.g. `tcp port 443 and host 10.0.0.7`"),
            ),
        }
    }
}

impl From<SelectionError> for ApiError {
    fn from(e: SelectionError) -> Self {
        match e {
            SelectionError::Query(q) => q.into(),
            SelectionError::TooMany => ApiError::bad(e.to_string()),
            SelectionError::Column(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

/// The dissection `kfl` runs over: the one named, else the snapshot's only completed one.
fn dissection_dir(
    s: &AnalyzerState,
    snapshot: &str,
    named: Option<&str>,
) -> Result<std::path::PathBuf, ApiError> {
    if let Some(name) = named {
        return Ok(s.jobs.db(&format!("{snapshot}/{name}"))?);
    }
    let done: Vec<String> = s
        .jobs
        .list(Some(snapshot))?
        .into_iter()
        .filter(|j| j.status == JobState::Completed)
        .map(|j| j.dissection_name)
        .collect();
    match done.as_slice() {
        [only] => Ok(s.jobs.db(&format!("{snapshot}/{only}"))?),
        [] => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_ready",
            format!(
                "kfl selects calls, and snapshot `{snapshot}` has no completed dissection: start \
                 one (start_dissection) and wait for it, or filter with bpf_filter"
            ),
        )),
        many => Err(ApiError::bad(format!(
            "snapshot `{snapshot}` has several dissections ({}); name one with dissection=",
            many.join(", ")
        ))),
    }
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

/// `GET /mcp/snapshots/{name}/pcap?nodes=&start=&end=&bpf_filter=&kfl=&dissection=&check=`.
pub async fn export(
    State(s): State<Arc<AnalyzerState>>,
    Path(name): Path<String>,
    q: Result<Query<PcapQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| {
        ApiError::bad(format!(
            "{e}; nodes, start, end, bpf_filter, kfl, dissection and check are optional"
        ))
    })?;
    let manifest = s.store.get(&name)?;
    if !manifest.status.is_readable() {
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
    let mut selection = Selection::default();
    let bpf_filter = q
        .bpf_filter
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty());
    if let Some(expression) = bpf_filter {
        selection.bpf = Some(BpfFilter::compile(expression)?);
    }
    let kfl = q.kfl.as_deref().map(str::trim).filter(|f| !f.is_empty());
    if let Some(kfl) = kfl {
        let sources = Sources {
            dissection: Some(dissection_dir(&s, &name, q.dissection.as_deref())?),
            ..Sources::default()
        };
        let names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        let _slot = s.query_slot().await?;
        selection.flows = Some(FlowSet::from_kfl(&sources, kfl, &names).await?);
    }
    if q.check {
        return Ok(axum::Json(serde_json::json!({
            "snapshot": name,
            "nodes": nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "bpf_filter": bpf_filter,
            "kfl": kfl,
            "kfl_calls": selection.flows.as_ref().map(|f| f.calls),
            "kfl_flows": selection.flows.as_ref().map(FlowSet::flows),
        }))
        .into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let mut out = ChannelWriter(tx);
        if let Err(e) = pcap::export(&nodes, start_ns, end_ns, &selection, &mut out) {
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
