//! Capture files as dissection input: `remora dissect FILE` reads a pcap or pcapng file frame by
//! frame, with a progress bar over the bytes read.

use std::{path::Path, time::Instant};

use indicatif::{ProgressBar, ProgressStyle};
use remora_dissect::capture::{CaptureReader, l3_of};

use super::{PipelineError, Summary, parallel::Dissector, sink::Sink};
use crate::services::workloads::NoWorkloads;

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

/// Dissects the capture file `input` into `<out>/calls.parquet` and `<out>/conns.parquet` on
/// `threads` threads (the rows are the same for any number); rows name `node` as their node and
/// `pcap` as their capture source.
pub fn dissect_capture(
    input: &Path,
    out: &Path,
    node: &str,
    progress: bool,
    threads: usize,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let file = std::fs::File::open(input)
        .map_err(|e| PipelineError::input(input, format!("cannot open: {e}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    // No `BufReader`: the capture reader keeps its own window of the file.
    let counted = CountingReader {
        inner: file,
        read: 0,
    };
    let mut reader = CaptureReader::new(counted).map_err(|e| {
        PipelineError::input(
            input,
            format!("not a capture Remora can read (pcap or pcapng): {e}"),
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
    let mut sink = Sink::new(out, "pcap", &NoWorkloads)?;
    sink.node = node.to_owned();
    let mut dissector = Dissector::new(threads, sink)?;
    while let Some((info, data)) = reader
        .next_frame()
        .map_err(|e| PipelineError::input(input, e))?
    {
        // A frame of a link type Remora does not read is counted, not dissected.
        let Some(l3) = l3_of(info.linktype, data) else {
            continue;
        };
        let l2 = (data.len() - l3.len()) as u32;
        dissector.push(info.ts_ns, l3, info.orig_len.saturating_sub(l2))?;
        if reader.frames() % 65536 == 0 {
            bar.set_position(reader.inner().read);
        }
    }
    bar.finish_and_clear();
    let frames = reader.frames();
    let (sink, stats) = dissector.finish()?;
    sink.close(frames, stats, started)
}
