//! The dissection pipeline: input (the recorder's packet slices, or a pcap/pcapng file) →
//! the dissection engine → the `calls` and `conns` table writers.
//!
//! - [`capture`] reads capture files (`remora dissect FILE`),
//! - [`slices`] merges packet slices by time (snapshots, `remora dissect DIR`),
//! - `sink` attributes rows to workloads and writes both tables batch by batch.
//!
//! Everything here is synchronous and runs on a blocking thread; a caller stops a dissection
//! through its progress callback, which makes it end with [`PipelineError::Cancelled`] and
//! publish nothing.

pub mod capture;
mod origin;
mod parallel;
pub mod plaintext;
pub mod processes;
mod sink;
pub mod slices;
pub mod sockets;
mod tables;
mod translation;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use remora_dissect::{Engine, Stats};

pub use capture::dissect_capture;
pub use parallel::default_threads;
pub use sink::calls_batch;

use crate::services::workloads::{NoWorkloads, Resolve};
use sink::Sink;

/// Why a dissection did not produce its tables.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The caller stopped it.
    #[error("dissection cancelled")]
    Cancelled,
    /// There was nothing to read.
    #[error(
        "no packet slices (*.parquet) to dissect; point at <data>/capture/<node>/packets or a snapshot"
    )]
    NoInput,
    /// An input file could not be read.
    #[error("{path}: {message}")]
    Input {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong, and what to do.
        message: String,
    },
    /// The output directory could not be made.
    #[error("creating {path}: {source}")]
    Output {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing a table failed.
    #[error(transparent)]
    Write(#[from] remora_tables::WriteError),
    /// A dissection thread could not start or stopped early.
    #[error("{0}")]
    Worker(String),
}

impl PipelineError {
    /// An input error about `path`.
    pub(crate) fn input(path: &Path, message: impl std::fmt::Display) -> Self {
        Self::Input {
            path: path.to_owned(),
            message: message.to_string(),
        }
    }
}

impl From<arrow::error::ArrowError> for PipelineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Write(e.into())
    }
}

/// What a dissection produced.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Frames in the capture.
    pub frames: u64,
    /// Calls per protocol.
    pub calls: BTreeMap<&'static str, u64>,
    /// Calls with an error type.
    pub unpaired: u64,
    /// TCP connections.
    pub conns: u64,
    /// Calls and connections read but left out because they were outside the window.
    pub outside_window: u64,
    /// What the engine skipped.
    pub stats: Stats,
    /// Wall time.
    pub seconds: f64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let calls: u64 = self.calls.values().sum();
        let per: Vec<String> = self.calls.iter().map(|(p, n)| format!("{p} {n}")).collect();
        writeln!(
            f,
            "{} frames in {:.2} s ({:.0} frames/s): {} calls ({}), {} without a pair, {} TCP connections",
            self.frames,
            self.seconds,
            self.frames as f64 / self.seconds.max(1e-9),
            calls,
            if per.is_empty() {
                "none".into()
            } else {
                per.join(", ")
            },
            self.unpaired,
            self.conns
        )?;
        write!(
            f,
            "skipped: {} undecodable packets, {} IP fragments, {} bad DNS messages, {} HTTP heads that did not parse, {} copies of packets seen twice",
            self.stats.undecodable,
            self.stats.fragments,
            self.stats.dns_errors,
            self.stats.http_errors,
            self.stats.duplicates
        )
    }
}

/// Dissects `input` into `<out>/calls.parquet` and `<out>/conns.parquet`: a pcap/pcapng file,
/// or a directory of the recorder's packet slices.
pub fn dissect_file(
    input: &Path,
    out: &Path,
    node: &str,
    progress: bool,
    threads: usize,
) -> Result<Summary, PipelineError> {
    if input.is_dir() {
        let bar = if progress {
            indicatif::ProgressBar::new_spinner()
        } else {
            indicatif::ProgressBar::hidden()
        };
        // A snapshot (or a data directory): each node's packets, with its socket events and TLS
        // plaintext beside them; any other directory: the packet slices found below it.
        let nodes = node_dirs(input).unwrap_or_else(|| vec![(node.to_owned(), input.to_owned())]);
        let summary = dissect_nodes(&nodes, out, &NoWorkloads, &|packets, _| {
            bar.set_position(packets);
            true
        })?;
        bar.finish_and_clear();
        return Ok(summary);
    }
    dissect_capture(input, out, node, progress, threads)
}

/// `(node, packets dir)` of every node under `dir/capture/`, when `dir` is laid out as a
/// snapshot or a data directory.
fn node_dirs(dir: &Path) -> Option<Vec<(String, PathBuf)>> {
    let mut nodes: Vec<(String, PathBuf)> = std::fs::read_dir(dir.join("capture"))
        .ok()?
        .flatten()
        .filter(|e| e.path().join("packets").is_dir())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path().join("packets"),
            )
        })
        .collect();
    nodes.sort();
    (!nodes.is_empty()).then_some(nodes)
}

/// How a packet that appears more than once in the input is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// Once: the recorder keeps a packet once per interface it crossed (veth, bridge, uplink).
    Once,
    /// Every time: a capture file made elsewhere holds what it holds, as `remora dissect FILE`
    /// reads it.
    Each,
}

/// Dissects the packet slices of several nodes (`(node, packets dir)`) into one pair of tables,
/// node after node, counting copies of a packet once. `progress(packets, calls)` is called
/// every 65,536 packets and at the end; when it returns false the dissection stops with
/// [`PipelineError::Cancelled`] and writes nothing.
pub fn dissect_nodes(
    nodes: &[(String, PathBuf)],
    out: &Path,
    workloads: &dyn Resolve,
    progress: &dyn Fn(u64, u64) -> bool,
) -> Result<Summary, PipelineError> {
    dissect_nodes_with(nodes, out, workloads, Copies::Once, None, progress)
}

/// [`dissect_nodes`], with copies counted as `copies` says, keeping only the calls that start
/// in `window` (ns, inclusive) and the connections that overlap it.
pub fn dissect_nodes_with(
    nodes: &[(String, PathBuf)],
    out: &Path,
    workloads: &dyn Resolve,
    copies: Copies,
    window: Option<(i64, i64)>,
    progress: &dyn Fn(u64, u64) -> bool,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let mut all_files = Vec::new();
    for (node, dir) in nodes {
        all_files.push((node, slices::slice_files(dir)?));
    }
    if !all_files.iter().any(|(_, f)| !f.is_empty()) {
        return Err(PipelineError::NoInput);
    }
    let mut sink = Sink::new(out, "ebpf", workloads)?;
    // One engine reads the slices (dedup, the NAT join and the TLS plaintext need every
    // packet in one place); Parquet encoding, a fifth of the time, runs beside it.
    if default_threads() > 1 {
        sink = sink.in_background()?;
    }
    sink.window = window;
    sink.sockets = sockets::SocketOwners::load(nodes);
    sink.processes = processes::Processes::load(nodes);
    if copies == Copies::Once && all_files.iter().filter(|(_, f)| !f.is_empty()).count() > 1 {
        let plain = plaintext::Plaintext::load(nodes, sink.processes.as_ref());
        return dissect_merged(all_files, plain, sink, progress, started);
    }
    let mut total = 0u64;
    let mut summary_stats = Stats::default();
    for (tag, (node, files)) in all_files.into_iter().enumerate() {
        sink.node = node.clone();
        let files: Vec<(usize, PathBuf)> = files.into_iter().map(|f| (tag, f)).collect();
        let engine = match copies {
            Copies::Once => Engine::new().count_copies_once(),
            Copies::Each => Engine::new(),
        };
        let mut plain = plaintext::Plaintext::load(&nodes[tag..=tag], sink.processes.as_ref());
        let stats = stream(&files, engine, &mut plain, &mut sink, &mut total, progress)?;
        summary_stats.add(&stats);
    }
    if !progress(total, sink.calls_total()) {
        return Err(PipelineError::Cancelled);
    }
    sink.close(total, summary_stats, started)
}

/// Several nodes' recordings as one stream (see [`origin`]): a packet recorded on two nodes
/// is counted once, so a call between pods on two nodes is one row.
fn dissect_merged(
    all_files: Vec<(&String, Vec<PathBuf>)>,
    mut plain: plaintext::Plaintext,
    mut sink: Sink<'_>,
    progress: &dyn Fn(u64, u64) -> bool,
    started: Instant,
) -> Result<Summary, PipelineError> {
    let names: Vec<String> = all_files.iter().map(|(n, _)| (*n).clone()).collect();
    let tagged: Vec<(usize, PathBuf)> = all_files
        .into_iter()
        .enumerate()
        .flat_map(|(tag, (_, files))| files.into_iter().map(move |f| (tag, f)))
        .collect();
    sink.origins = Some(origin::Origins::new(names));
    let mut total = 0;
    let stats = stream(
        &tagged,
        Engine::new().count_copies_once(),
        &mut plain,
        &mut sink,
        &mut total,
        progress,
    )?;
    if !progress(total, sink.calls_total()) {
        return Err(PipelineError::Cancelled);
    }
    sink.close(total, stats, started)
}

/// Feeds `files` (tagged by node), and the TLS plaintext of `plain` between their packets,
/// through `engine` into `sink` in time order, noting each packet's flow and socket for
/// attribution; `total` counts packets across calls. Rows are written as they finish;
/// `progress` is asked every 65,536 packets whether to go on.
fn stream(
    files: &[(usize, PathBuf)],
    mut engine: Engine,
    plain: &mut plaintext::Plaintext,
    sink: &mut Sink<'_>,
    total: &mut u64,
    progress: &dyn Fn(u64, u64) -> bool,
) -> Result<Stats, PipelineError> {
    let (mut failed, mut stopped) = (None, false);
    let base = *total;
    let mut seen = base;
    let packets =
        slices::for_each_packet_of_socket(files, |tag, ts, payload, wire_len, cgroup| {
            if stopped {
                return;
            }
            if let Some(o) = sink.origins.as_mut() {
                o.note(tag, payload);
            }
            if let Some(s) = sink.sockets.as_mut() {
                s.note(tag, payload, cgroup);
            }
            plain.feed_until(&mut engine, Some(ts));
            engine.push(ts, payload, wire_len);
            seen += 1;
            if seen.is_multiple_of(65536) {
                if failed.is_none()
                    && let Err(e) = sink.drain(&mut engine)
                {
                    failed = Some(e);
                }
                stopped = !progress(seen, sink.calls_total());
            }
        })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if stopped {
        return Err(PipelineError::Cancelled);
    }
    *total = base + packets;
    plain.feed_until(&mut engine, None);
    let output = engine.finish();
    sink.write(output.calls, output.conns)?;
    Ok(output.stats)
}

/// Writes empty `calls` and `conns` tables: the dissection of an empty window.
pub fn empty_tables(out: &Path) -> Result<Summary, PipelineError> {
    Sink::new(out, "ebpf", &NoWorkloads)?.close(0, Stats::default(), Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::{
        array::{Array as _, AsArray as _},
        datatypes::UInt16Type,
    };
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn dissects_a_fixture_into_readable_parquet() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/pcap/http-simple-get.pcap");
        assert!(
            fixture.is_file(),
            "shared fixtures missing at {}",
            fixture.display()
        );
        let out = tempfile::tempdir().unwrap();
        let summary = dissect_file(&fixture, out.path(), "test", false, 2).unwrap();
        assert_eq!(summary.calls.get("HTTP"), Some(&1));
        let file = File::open(out.path().join("calls.parquet")).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        // `method` is dictionary-typed in the file (remora_tables::Encoding::Dictionary).
        let method = arrow::compute::cast(
            batch.column_by_name("method").unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let method = method.as_string::<i32>();
        let status = batch
            .column_by_name("status_code")
            .unwrap()
            .as_primitive::<UInt16Type>();
        assert_eq!((method.value(0), status.value(0)), ("GET", 403));
        assert_eq!(
            batch.column_by_name("elapsed_time").unwrap().null_count(),
            0
        );
        let conns = File::open(out.path().join("conns.parquet")).unwrap();
        let rows: usize = ParquetRecordBatchReaderBuilder::try_new(conns)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 1);
        assert!(dissect_file(Path::new("/nonexistent.pcap"), out.path(), "t", false, 1).is_err());
    }

    use std::fs::File;

    /// A packets slice with `n` packets of junk bytes (the engine counts them undecodable).
    fn junk_slice(dir: &Path, n: usize) {
        use arrow::array::{BinaryArray, RecordBatch, TimestampNanosecondArray, UInt32Array};
        use std::sync::Arc;
        std::fs::create_dir_all(dir).unwrap();
        let batch = RecordBatch::try_from_iter([
            (
                "ts",
                Arc::new(
                    TimestampNanosecondArray::from_iter_values((0..n as i64).map(|i| i * 1000))
                        .with_timezone("UTC"),
                ) as arrow::array::ArrayRef,
            ),
            ("wire_len", Arc::new(UInt32Array::from(vec![4u32; n]))),
            (
                "payload",
                Arc::new(BinaryArray::from_iter_values(
                    (0..n).map(|_| [0u8, 1, 2, 3]),
                )),
            ),
        ])
        .unwrap();
        let file = File::create(dir.join("0-1.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn a_stopped_dissection_is_cancelled_and_publishes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let packets = tmp.path().join("capture/n1/packets");
        junk_slice(&packets, 10);
        let nodes = [("n1".to_owned(), packets.clone())];
        let out = tmp.path().join("out");
        let stopped = dissect_nodes(&nodes, &out, &NoWorkloads, &|_, _| false);
        assert!(
            matches!(stopped, Err(PipelineError::Cancelled)),
            "{stopped:?}"
        );
        assert!(!out.join("calls.parquet").exists() && !out.join("conns.parquet").exists());

        let done = dissect_nodes(&nodes, &out, &NoWorkloads, &|_, _| true).unwrap();
        assert_eq!((done.frames, done.stats.undecodable), (10, 10));
        assert!(out.join("calls.parquet").is_file() && out.join("conns.parquet").is_file());
    }

    #[test]
    fn bad_input_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let packets = tmp.path().join("packets");
        std::fs::create_dir_all(&packets).unwrap();
        std::fs::write(packets.join("0-1.parquet"), b"not parquet").unwrap();
        let nodes = [("n1".to_owned(), packets.clone())];
        let out = tmp.path().join("out");
        match dissect_nodes(&nodes, &out, &NoWorkloads, &|_, _| true) {
            Err(PipelineError::Input { path, .. }) => {
                assert_eq!(path, packets.join("0-1.parquet"))
            }
            other => panic!("expected an input error, got {other:?}"),
        }
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let nodes = [("n1".to_owned(), empty)];
        assert!(matches!(
            dissect_nodes(&nodes, &out, &NoWorkloads, &|_, _| true),
            Err(PipelineError::NoInput)
        ));
    }
}
