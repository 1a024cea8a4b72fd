//! `remora dissect <capture> --out <dir>`: a pcap or pcapng file through the dissection engine
//! into `calls.parquet` and `conns.parquet`, with a progress bar and a summary.

use std::{collections::BTreeMap, path::Path, time::Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use remora_dissect::{Engine, Stats, capture};

use crate::rows::{NoWorkloads, Resolve, TableWriter, calls_batch, conns_batch};

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
) -> anyhow::Result<Summary> {
    no_fastbins();
    if input.is_dir() {
        return dissect_slices(input, out, node, progress);
    }
    let started = Instant::now();
    let file =
        std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let counted = CountingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        read: 0,
    };
    let mut reader = capture::CaptureReader::new(counted).with_context(|| {
        format!(
            "{} is not a capture Remora can read (pcap or pcapng)",
            input.display()
        )
    })?;
    let bar = if progress {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} dissecting [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut sink = Sink::new(out, node, "pcap", &NoWorkloads)?;
    let mut engine = Engine::new();
    while let Some((info, data)) = reader
        .next_frame()
        .with_context(|| format!("reading {}", input.display()))?
    {
        remora_dissect::feed_frame(&mut engine, info, data);
        if reader.frames() % 65536 == 0 {
            bar.set_position(reader.inner().read);
            sink.drain(&mut engine)?;
        }
    }
    bar.finish_and_clear();
    let frames = reader.frames();
    sink.finish(engine, frames, started)
}

/// Dissection frees millions of small strings between large Parquet buffer allocations; glibc
/// then spends ~7% of the run consolidating its fastbins (measured). Without fastbins that work
/// is gone. This command runs in its own process, so the setting touches nothing else.
fn no_fastbins() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Counts bytes read, for the progress bar.
struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Dissects the packet slices below `dir`, merged in time order.
fn dissect_slices(dir: &Path, out: &Path, node: &str, progress: bool) -> anyhow::Result<Summary> {
    let bar = if progress {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    let nodes = [(node.to_owned(), dir.to_owned())];
    let summary = dissect_nodes(&nodes, out, &NoWorkloads, &|packets, _| {
        bar.set_position(packets);
        true
    })?;
    bar.finish_and_clear();
    Ok(summary)
}

/// The dissection was stopped by its caller.
#[derive(Debug, thiserror::Error)]
#[error("dissection cancelled")]
pub struct Cancelled;

/// Dissects the packet slices of several nodes (`(node, packets dir)`) into one pair of tables,
/// node after node. `progress(packets, calls)` is called every 65,536 packets and at the end;
/// when it returns false the dissection stops with [`Cancelled`] and writes nothing.
pub fn dissect_nodes(
    nodes: &[(String, std::path::PathBuf)],
    out: &Path,
    workloads: &dyn Resolve,
    progress: &dyn Fn(u64, u64) -> bool,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let mut all_files = Vec::new();
    for (node, dir) in nodes {
        let files = crate::slices_input::slice_files(dir)?;
        all_files.push((node, files));
    }
    anyhow::ensure!(
        all_files.iter().any(|(_, f)| !f.is_empty()),
        "no packet slices (*.parquet) to dissect; point at <data>/capture/<node>/packets or a snapshot"
    );
    let mut sink: Option<Sink> = None;
    let mut total = 0u64;
    let mut summary_stats = Stats::default();
    for (node, files) in all_files {
        let s = match sink.take() {
            Some(mut s) => {
                s.node = node.clone();
                s
            }
            None => Sink::new(out, node, "ebpf", workloads)?,
        };
        let mut sink_now = s;
        let mut engine = Engine::new().count_copies_once();
        let mut failed = None;
        let mut stopped = false;
        let base = total;
        let packets = crate::slices_input::for_each_packet(&files, |ts, payload, wire_len| {
            if stopped {
                return;
            }
            engine.push(ts, payload, wire_len);
            total += 1;
            if total.is_multiple_of(65536) {
                if failed.is_none()
                    && let Err(e) = sink_now.drain(&mut engine)
                {
                    failed = Some(e);
                }
                stopped = !progress(total, sink_now.calls.values().sum());
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if stopped {
            return Err(Cancelled.into());
        }
        total = base + packets;
        let output = engine.finish();
        sink_now.write(&output.calls, &output.conns)?;
        add_stats(&mut summary_stats, &output.stats);
        sink = Some(sink_now);
    }
    let Some(sink) = sink else {
        anyhow::bail!("nothing to dissect");
    };
    if !progress(total, sink.calls.values().sum()) {
        return Err(Cancelled.into());
    }
    sink.close(total, summary_stats, started)
}

/// Writes empty `calls` and `conns` tables: the dissection of an empty window.
pub fn empty_tables(out: &Path) -> anyhow::Result<Option<Summary>> {
    Sink::new(out, "", "ebpf", &NoWorkloads)?.close(0, Stats::default(), Instant::now())?;
    Ok(None)
}

fn add_stats(into: &mut Stats, s: &Stats) {
    into.packets += s.packets;
    into.undecodable += s.undecodable;
    into.fragments += s.fragments;
    into.dns_errors += s.dns_errors;
    into.http_errors += s.http_errors;
    into.reassembled += s.reassembled;
    into.evicted_conns += s.evicted_conns;
    into.defrag_dropped += s.defrag_dropped;
    into.h2c_upgrades += s.h2c_upgrades;
    into.duplicates += s.duplicates;
}

/// Where rows go as they complete: the two tables, written batch by batch, and the counts.
struct Sink<'w> {
    workloads: &'w dyn Resolve,
    node: String,
    source: &'static str,
    calls_out: TableWriter,
    conns_out: TableWriter,
    calls: BTreeMap<&'static str, u64>,
    unpaired: u64,
    conns: u64,
}

impl<'w> Sink<'w> {
    fn new(
        out: &Path,
        node: &str,
        source: &'static str,
        workloads: &'w dyn Resolve,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        Ok(Self {
            workloads,
            node: node.to_owned(),
            source,
            calls_out: TableWriter::new(&out.join("calls.parquet")),
            conns_out: TableWriter::new(&out.join("conns.parquet")),
            calls: BTreeMap::new(),
            unpaired: 0,
            conns: 0,
        })
    }

    fn write(
        &mut self,
        calls: &[remora_dissect::Call],
        conns: &[remora_dissect::Conn],
    ) -> anyhow::Result<()> {
        for c in calls {
            *self.calls.entry(c.protocol).or_default() += 1;
            self.unpaired += u64::from(c.error_type.is_some());
        }
        self.conns += conns.len() as u64;
        if !calls.is_empty() {
            self.calls_out.write(&calls_batch(
                &self.node,
                self.source,
                calls,
                self.workloads,
            )?)?;
        }
        if !conns.is_empty() {
            self.conns_out.write(&conns_batch(&self.node, conns)?)?;
        }
        Ok(())
    }

    /// Writes the rows the engine finished so far.
    fn drain(&mut self, engine: &mut Engine) -> anyhow::Result<()> {
        let (calls, conns) = engine.take_rows();
        self.write(&calls, &conns)
    }

    fn finish(mut self, engine: Engine, frames: u64, started: Instant) -> anyhow::Result<Summary> {
        let output = engine.finish();
        self.write(&output.calls, &output.conns)?;
        self.close(frames, output.stats, started)
    }

    /// Publishes both tables and sums up.
    fn close(self, frames: u64, stats: Stats, started: Instant) -> anyhow::Result<Summary> {
        self.calls_out
            .finish(&calls_batch(&self.node, self.source, &[], self.workloads)?)?;
        self.conns_out.finish(&conns_batch(&self.node, &[])?)?;
        Ok(Summary {
            frames,
            calls: self.calls,
            unpaired: self.unpaired,
            conns: self.conns,
            stats,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
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
        let summary = dissect_file(&fixture, out.path(), "test", false).unwrap();
        assert_eq!(summary.calls.get("HTTP"), Some(&1));
        let file = File::open(out.path().join("calls.parquet")).unwrap();
        let batch = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        // `method` is dictionary-typed in the file (rows::is_dictionary_column).
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
        assert!(dissect_file(Path::new("/nonexistent.pcap"), out.path(), "t", false).is_err());
    }

    use std::fs::File;
}
