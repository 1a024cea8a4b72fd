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
mod turns;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Instant,
};

use remora_dissect::Stats;

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
        let how = How {
            copies: Copies::Once,
            window: None,
            threads,
        };
        let summary = dissect_nodes_with(&nodes, out, &NoWorkloads, how, &|packets, _| {
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
/// node after node, counting copies of a packet once, on every core. `progress(packets, calls)`
/// is called every 65,536 packets and at the end; when it returns false the dissection stops
/// with [`PipelineError::Cancelled`] and writes nothing.
pub fn dissect_nodes(
    nodes: &[(String, PathBuf)],
    out: &Path,
    workloads: &dyn Resolve,
    progress: &dyn Fn(u64, u64) -> bool,
) -> Result<Summary, PipelineError> {
    let how = How {
        copies: Copies::Once,
        window: None,
        threads: default_threads(),
    };
    dissect_nodes_with(nodes, out, workloads, how, progress)
}

/// How [`dissect_nodes_with`] dissects.
#[derive(Debug, Clone, Copy)]
pub struct How {
    /// How copies of a packet count.
    pub copies: Copies,
    /// Only the calls that start in this window (ns, inclusive) and the connections that
    /// overlap it are kept.
    pub window: Option<(i64, i64)>,
    /// Threads to dissect on ([`default_threads`]: every core); the rows are the same with any
    /// number.
    pub threads: usize,
}

/// [`dissect_nodes`], as `how` says.
pub fn dissect_nodes_with(
    nodes: &[(String, PathBuf)],
    out: &Path,
    workloads: &dyn Resolve,
    how: How,
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
    sink.window = how.window;
    sink.sockets = sockets::SocketOwners::load(nodes);
    sink.processes = processes::Processes::load(nodes);
    let copies_once = how.copies == Copies::Once;
    let mut reader = Reader {
        threads: how.threads,
        copies_once,
        total: 0,
        progress,
    };
    if copies_once && all_files.iter().filter(|(_, f)| !f.is_empty()).count() > 1 {
        // Several nodes' recordings as one stream (see [`origin`]): a packet recorded on two
        // nodes is counted once, so a call between pods on two nodes is one row.
        let names: Vec<String> = all_files.iter().map(|(n, _)| (*n).clone()).collect();
        let tagged: Vec<(usize, PathBuf)> = all_files
            .into_iter()
            .enumerate()
            .flat_map(|(tag, (_, files))| files.into_iter().map(move |f| (tag, f)))
            .collect();
        let plain = plaintext::Plaintext::load(nodes, sink.processes.as_ref());
        sink.origins = Some(origin::Origins::new(names));
        let (sink, stats) = reader.stream(&tagged, plain, sink)?;
        return reader.close(sink, stats, started);
    }
    let mut summary_stats = Stats::default();
    for (tag, (node, files)) in all_files.into_iter().enumerate() {
        sink.node = node.clone();
        let files: Vec<(usize, PathBuf)> = files.into_iter().map(|f| (tag, f)).collect();
        let plain = plaintext::Plaintext::load(&nodes[tag..=tag], sink.processes.as_ref());
        let stats;
        (sink, stats) = reader.stream(&files, plain, sink)?;
        summary_stats.add(&stats);
    }
    reader.close(sink, summary_stats, started)
}

/// Reads the recorder's slices into a [`parallel::Dissector`], node after node or merged.
struct Reader<'p> {
    threads: usize,
    copies_once: bool,
    /// Packets read so far, over every call.
    total: u64,
    progress: &'p dyn Fn(u64, u64) -> bool,
}

impl Reader<'_> {
    /// Feeds `files` (tagged by node), and the TLS plaintext of `plain` between their
    /// packets, through a dissector into `sink` in time order, noting each packet's flow and
    /// socket for attribution. Rows are written as their epochs end; `progress` is asked
    /// every 65,536 packets whether to go on.
    fn stream<'w>(
        &mut self,
        files: &[(usize, PathBuf)],
        mut plain: plaintext::Plaintext,
        sink: Sink<'w>,
    ) -> Result<(Sink<'w>, Stats), PipelineError> {
        let mut dissector =
            parallel::Dissector::recorded(self.threads, sink, self.copies_once, self.total)?;
        let (mut failed, mut stopped) = (None, false);
        let mut seen = self.total;
        let progress = self.progress;
        let packets =
            slices::for_each_packet_of_socket(files, |tag, ts, payload, wire_len, cgroup| {
                if stopped || failed.is_some() {
                    return;
                }
                let fed = plain
                    .feed_until(Some(ts), |t, chunk| dissector.push_plaintext(t, chunk))
                    .and_then(|()| dissector.push_noted(tag, ts, payload, wire_len, cgroup));
                if let Err(e) = fed {
                    failed = Some(e);
                    return;
                }
                seen += 1;
                if seen.is_multiple_of(65536) {
                    stopped = !progress(seen, dissector.calls_total());
                }
            })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if stopped {
            return Err(PipelineError::Cancelled);
        }
        self.total += packets;
        plain.feed_until(None, |t, chunk| dissector.push_plaintext(t, chunk))?;
        dissector.finish()
    }

    /// Asks `progress` a last time, then publishes the tables.
    fn close(
        &self,
        sink: Sink<'_>,
        stats: Stats,
        started: Instant,
    ) -> Result<Summary, PipelineError> {
        if !(self.progress)(self.total, sink.calls_total()) {
            return Err(PipelineError::Cancelled);
        }
        sink.close(self.total, stats, started)
    }
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
