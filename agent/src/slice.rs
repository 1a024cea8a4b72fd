//! Time slices: pages of rows encoded into row groups, row groups written into Parquet files
//! that are published atomically.
//!
//! Time is cut into periods of `duration` aligned to the Unix epoch (10 s: :00, :10, :20 ...).
//! A slice holds rows of one period; it closes when a row group of a later period arrives,
//! when its file reaches `max_bytes` (the period goes on in a new slice), or when the period is
//! over (the recording's watermark passed its end, so quiet periods still publish promptly).
//! Pages never straddle periods: whoever fills them starts a new page at each boundary.
//!
//! The work is split in two halves that talk through [`SliceMsg`]s: [`SliceEncoder`] (pages to
//! row groups, pure CPU; the recorder runs it in its collector thread) and [`SliceFiles`] (row
//! groups to files: footer, fsync, rename from the hidden temp name to
//! `<first>-<last>.parquet`, fsync of the directory; the recorder's writer thread).
//! [`SliceWriter`] is both in one, for tools and tests that have rows.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::{
    decode::PacketRow,
    error::{AgentError, Result},
    packets_parquet::{
        Compression, EncodedRowGroup, PacketsFile, PageRows, PayloadCompressor, ROW_GROUP_BYTES,
        RowGroupEncoder,
    },
    slice_file::SliceFile,
    store::{slice_path, sync_dir},
};

/// The default compression of payloads.
pub const DEFAULT_COMPRESSION: Compression = Compression::Auto;

/// A slice that was published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedSlice {
    /// Final path.
    pub path: PathBuf,
    /// First row's time, UTC ns.
    pub start_ns: i64,
    /// Last row's time, UTC ns.
    pub end_ns: i64,
    /// Rows in the file.
    pub rows: u64,
    /// File size.
    pub bytes: u64,
}

/// What happened to a slice: published, or lost to a write error.
#[derive(Debug)]
pub enum SliceEvent {
    /// The slice is on disk under its final name.
    Published(FinishedSlice),
    /// Writing the slice failed; its temp file was removed and its rows are gone.
    Lost {
        /// What went wrong, with what to do about it.
        error: AgentError,
        /// Rows the slice held.
        rows: u64,
    },
}

/// What the encoding half hands to the file half.
pub enum SliceMsg {
    /// A finished row group whose rows belong to `period`.
    RowGroup {
        /// The encoded rows (boxed: the message is moved through a queue).
        group: Box<EncodedRowGroup>,
        /// Their period.
        period: i64,
    },
    /// Period `period` is over: its slice can be published.
    EndPeriod(i64),
}

/// The period a time falls in.
fn period_of(ts_ns: i64, duration_ns: i64) -> i64 {
    ts_ns.div_euclid(duration_ns)
}

/// Start of the period after `period`.
fn period_end(period: i64, duration_ns: i64) -> i64 {
    period.saturating_add(1).saturating_mul(duration_ns)
}

/// Payload bytes per page and encoded bytes per row group for slices of at most
/// `max_bytes`: small enough that a slice overshoots its limit by at most an eighth.
fn part_limit(max_bytes: u64) -> usize {
    (max_bytes / 8).clamp(64 << 10, u64::MAX) as usize
}

/// An encoding failure: the row group's rows are lost (the next one starts afresh).
#[derive(Debug)]
pub struct EncodeFailure {
    /// What went wrong.
    pub error: io::Error,
    /// Rows lost with the row group.
    pub rows: u64,
}

/// Pages to row groups, one period at a time.
pub struct SliceEncoder {
    encoder: RowGroupEncoder,
    period: Option<i64>,
    duration_ns: i64,
}

impl SliceEncoder {
    /// An encoder for slices of `duration` and at most `max_bytes`.
    pub fn new(compression: Compression, duration: Duration, max_bytes: u64) -> io::Result<Self> {
        let limit = ROW_GROUP_BYTES.min(part_limit(max_bytes));
        Ok(Self {
            encoder: RowGroupEncoder::new(PayloadCompressor::new(compression)?, limit),
            period: None,
            duration_ns: (duration.as_nanos() as i64).max(1),
        })
    }

    /// Payload bytes at which a page for these slices is full.
    pub fn page_payload_limit(max_bytes: u64) -> usize {
        part_limit(max_bytes)
    }

    /// The period a time (UTC ns) falls in; rows of one page must share it.
    pub fn period_of(&self, ts_ns: i64) -> i64 {
        period_of(ts_ns, self.duration_ns)
    }

    /// Start of the period after `period` (UTC ns).
    pub fn period_end(&self, period: i64) -> i64 {
        period_end(period, self.duration_ns)
    }

    /// The period of the rows encoded and not yet ended, if any.
    pub fn period(&self) -> Option<i64> {
        self.period
    }

    /// Encodes a page of rows of one period (rows that came late may be older); what is
    /// finished goes to `send`.
    pub fn encode(
        &mut self,
        page: &mut PageRows,
        send: &mut impl FnMut(SliceMsg),
    ) -> std::result::Result<(), EncodeFailure> {
        let Some((_, max_ts)) = page.ts_range() else {
            return Ok(());
        };
        let period = self.period_of(max_ts);
        if self.period.is_some_and(|p| period > p) {
            self.end_period(send);
        }
        let period = self.period.map_or(period, |p| p.max(period));
        self.period = Some(period);
        match self.encoder.encode_page(page) {
            Ok(true) => self.flush(send),
            Ok(false) => {}
            Err(error) => {
                // A half-encoded row group cannot be written: drop it whole.
                let rows = self.encoder.take().map_or(0, |g| g.rows()) + page.rows() as u64;
                return Err(EncodeFailure { error, rows });
            }
        }
        Ok(())
    }

    /// Sends the unfinished row group, if any (the period goes on).
    pub fn flush(&mut self, send: &mut impl FnMut(SliceMsg)) {
        if let (Some(period), Some(group)) = (self.period, self.encoder.take()) {
            send(SliceMsg::RowGroup {
                group: Box::new(group),
                period,
            });
        }
    }

    /// Ends the current period: its last row group, then the end.
    pub fn end_period(&mut self, send: &mut impl FnMut(SliceMsg)) {
        self.flush(send);
        if let Some(period) = self.period.take() {
            send(SliceMsg::EndPeriod(period));
        }
    }

    /// Gives back a written row group, whose buffers are then reused.
    pub fn recycle(&mut self, group: Box<EncodedRowGroup>) {
        self.encoder.recycle(*group);
    }
}

struct OpenSlice {
    tmp_path: PathBuf,
    file: PacketsFile<SliceFile>,
    period: i64,
    start_ns: i64,
    end_ns: i64,
}

/// Row groups to published slice files, in one directory.
///
/// The rare outcomes (a slice published or lost) are collected as [`SliceEvent`]s for the
/// caller to take.
pub struct SliceFiles {
    dir: PathBuf,
    node: String,
    max_bytes: u64,
    open: Option<OpenSlice>,
    events: Vec<SliceEvent>,
    /// The kernel's drop counters, when recording: each sealed slice carries the drops since
    /// the one before it.
    drops: Option<std::sync::Arc<crate::drops::DropTotals>>,
    /// The reading already charged to published slices.
    charged: Vec<(u64, u64)>,
}

impl SliceFiles {
    /// Files of node `node` in `dir` (which must exist), of at most about `max_bytes`.
    pub fn new(dir: &Path, node: &str, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            node: node.to_owned(),
            max_bytes,
            open: None,
            events: Vec::new(),
            drops: None,
            charged: Vec::new(),
        }
    }

    /// Charges each sealed slice with the drops `totals` counted since the slice before it.
    pub fn with_drops(mut self, totals: std::sync::Arc<crate::drops::DropTotals>) -> Self {
        self.charged = totals.read();
        self.drops = Some(totals);
        self
    }

    /// Acts on one message; a row group comes back once written, for its buffers to be reused.
    pub fn handle(&mut self, msg: SliceMsg) -> Option<Box<EncodedRowGroup>> {
        match msg {
            SliceMsg::RowGroup { group, period } => {
                self.write(&group, period);
                Some(group)
            }
            SliceMsg::EndPeriod(period) => {
                if self.open.as_ref().is_some_and(|o| o.period <= period) {
                    self.finish();
                }
                None
            }
        }
    }

    fn write(&mut self, group: &EncodedRowGroup, period: i64) {
        if self.open.as_ref().is_some_and(|o| period > o.period) {
            self.finish();
        }
        let (min_ts, max_ts) = group.ts_range();
        if self.open.is_none() {
            match create(&self.dir, &self.node, period, min_ts) {
                Ok(open) => self.open = Some(open),
                Err(error) => {
                    let rows = group.rows();
                    self.events.push(SliceEvent::Lost { error, rows });
                    return;
                }
            }
        }
        let Some(open) = &mut self.open else {
            return;
        };
        if let Err(e) = open.file.write_row_group(group) {
            let error = write_error(&open.tmp_path, e.to_string());
            let rows = open.file.rows() + group.rows();
            self.abandon(error, rows);
            return;
        }
        open.start_ns = open.start_ns.min(min_ts);
        open.end_ns = open.end_ns.max(max_ts);
        if open.file.bytes_written() >= self.max_bytes {
            self.finish();
        }
    }

    /// True when events are waiting to be taken.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Takes the events recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> std::vec::Drain<'_, SliceEvent> {
        self.events.drain(..)
    }

    /// Publishes the open slice, if any.
    pub fn finish(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let tmp_path = open.tmp_path.clone();
        let rows = open.file.rows();
        let reading = self.drops.as_ref().map(|d| d.read());
        if let Some(now) = &reading {
            let drops = crate::drops::SliceDrops::between(&self.charged, now);
            if let Ok(json) = serde_json::to_string(&drops) {
                open.file.set_metadata(crate::drops::FOOTER_KEY, json);
            }
        }
        match seal(open, &self.dir) {
            Ok(done) => {
                if let Some(now) = reading {
                    self.charged = now;
                }
                self.events.push(SliceEvent::Published(done));
            }
            Err(error) => {
                // The temp file must not outlive a failed publication.
                let _ = std::fs::remove_file(&tmp_path);
                self.events.push(SliceEvent::Lost { error, rows });
            }
        }
    }

    /// Drops the open slice after a failure: its temp file is removed, its rows are lost.
    fn abandon(&mut self, error: AgentError, rows: u64) {
        if let Some(open) = self.open.take() {
            drop(open.file);
            let _ = std::fs::remove_file(&open.tmp_path);
        }
        self.events.push(SliceEvent::Lost { error, rows });
    }
}

impl Drop for SliceFiles {
    fn drop(&mut self) {
        // Dropped without finish() (a panic elsewhere): no temp file may stay behind.
        if let Some(open) = self.open.take() {
            drop(open.file);
            let _ = std::fs::remove_file(&open.tmp_path);
        }
    }
}

/// Slices from rows or pages, encoded and written in the caller's thread: for tools and
/// tests (the recorder splits the two halves across its threads).
pub struct SliceWriter {
    encoder: SliceEncoder,
    files: SliceFiles,
    /// Rows given one at a time ([`append`](Self::append)), until they fill a page.
    staging: PageRows,
    staging_period: i64,
    lost: Vec<EncodeFailure>,
}

impl SliceWriter {
    /// A writer for node `node` into `dir` (which must exist), with the default compression.
    pub fn new(dir: &Path, node: &str, duration: Duration, max_bytes: u64) -> Self {
        Self::with_compression(dir, node, duration, max_bytes, DEFAULT_COMPRESSION)
    }

    /// The same with another compression.
    pub fn with_compression(
        dir: &Path,
        node: &str,
        duration: Duration,
        max_bytes: u64,
        compression: Compression,
    ) -> Self {
        let encoder = SliceEncoder::new(compression, duration, max_bytes)
            .or_else(|_| SliceEncoder::new(Compression::None, duration, max_bytes));
        let Ok(encoder) = encoder else {
            unreachable!("an encoder without compression needs no zstd context")
        };
        Self {
            encoder,
            files: SliceFiles::new(dir, node, max_bytes),
            staging: PageRows::with_payload_limit(SliceEncoder::page_payload_limit(max_bytes)),
            staging_period: i64::MIN,
            lost: Vec::new(),
        }
    }

    /// Writes a page of rows of one period (its payload buffer may be swapped for another).
    pub fn write_page(&mut self, page: &mut PageRows) {
        let mut out = Vec::new();
        if let Err(failure) = self.encoder.encode(page, &mut |m| out.push(m)) {
            self.lost.push(failure);
        }
        self.deliver(out);
    }

    fn deliver(&mut self, msgs: Vec<SliceMsg>) {
        for msg in msgs {
            if let Some(group) = self.files.handle(msg) {
                self.encoder.recycle(group);
            }
        }
    }

    /// Appends one row.
    pub fn append(&mut self, row: &PacketRow, payload: &[u8]) {
        let period = self.encoder.period_of(row.ts_ns);
        if !self.staging.is_empty() && period > self.staging_period {
            self.flush_staging();
        }
        if self.encoder.period().is_some_and(|p| period > p) {
            let mut out = Vec::new();
            self.encoder.end_period(&mut |m| out.push(m));
            self.deliver(out);
        }
        self.staging_period = self.staging_period.max(period);
        self.staging.push(row, payload);
        if self.staging.is_full() {
            self.flush_staging();
        }
    }

    fn flush_staging(&mut self) {
        let mut staging = std::mem::take(&mut self.staging);
        self.write_page(&mut staging);
        self.staging = staging;
        self.staging.clear();
    }

    /// Closes the open slice if its period is over (`watermark_ns` is the time before which
    /// every row has been delivered).
    pub fn tick(&mut self, watermark_ns: i64) {
        if !self.staging.is_empty() && watermark_ns >= self.encoder.period_end(self.staging_period)
        {
            self.flush_staging();
        }
        if let Some(p) = self.encoder.period()
            && watermark_ns >= self.encoder.period_end(p)
        {
            let mut out = Vec::new();
            self.encoder.end_period(&mut |m| out.push(m));
            self.deliver(out);
        }
    }

    /// True when events are waiting to be taken.
    pub fn has_events(&self) -> bool {
        self.files.has_events() || !self.lost.is_empty()
    }

    /// Takes the events recorded since the last call (encoding failures first).
    pub fn take_events(&mut self) -> Vec<SliceEvent> {
        let mut events: Vec<SliceEvent> = self
            .lost
            .drain(..)
            .map(|f| SliceEvent::Lost {
                error: AgentError::io("encoding a row group", f.error),
                rows: f.rows,
            })
            .collect();
        events.extend(self.files.take_events());
        events
    }

    /// Publishes everything given so far.
    pub fn finish(&mut self) {
        self.flush_staging();
        let mut out = Vec::new();
        self.encoder.end_period(&mut |m| out.push(m));
        self.deliver(out);
        self.files.finish();
    }
}

/// Opens a hidden temp file for a slice of `period` whose first row is at `start_ns`.
fn create(dir: &Path, node: &str, period: i64, start_ns: i64) -> Result<OpenSlice> {
    let tmp_path = dir.join(format!(
        ".{start_ns}-{:08x}.parquet.tmp",
        rand::random::<u32>()
    ));
    let out = SliceFile::create(&tmp_path).map_err(|e| write_error(&tmp_path, e.to_string()))?;
    if !out.is_direct() {
        tracing::debug!(dir = %dir.display(), "this filesystem has no direct I/O: slices go through the page cache");
    }
    let file = match PacketsFile::new(out, node) {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            return Err(write_error(&tmp_path, e.to_string()));
        }
    };
    Ok(OpenSlice {
        tmp_path,
        file,
        period,
        start_ns,
        end_ns: start_ns,
    })
}

/// Footer, fsync, rename to the final name, fsync of the directory.
fn seal(open: OpenSlice, dir: &Path) -> Result<FinishedSlice> {
    let tmp = open.tmp_path;
    let fail = |e: String| write_error(&tmp, e);
    let rows = open.file.rows();
    let (bytes, out) = open.file.finish().map_err(|e| fail(e.to_string()))?;
    let file = out.finish().map_err(|e| fail(e.to_string()))?;
    file.sync_all().map_err(|e| fail(e.to_string()))?;
    drop(file);
    let path = slice_path(dir, open.start_ns, open.end_ns);
    std::fs::rename(&tmp, &path).map_err(|e| fail(e.to_string()))?;
    sync_dir(dir).map_err(|e| fail(e.to_string()))?;
    Ok(FinishedSlice {
        path,
        start_ns: open.start_ns,
        end_ns: open.end_ns,
        rows,
        bytes,
    })
}

fn write_error(path: &Path, message: String) -> AgentError {
    let hint = if message.contains("No space left") {
        "; the disk is full: free space or lower --retention-bytes, recording resumes with the next slice"
    } else {
        ""
    };
    AgentError::SliceWrite {
        path: path.to_owned(),
        message: format!("{message}{hint}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::read_ts;

    fn row(ts_ns: i64) -> PacketRow {
        let mut row = PacketRow::new(ts_ns, 3, 60);
        row.headers = crate::parse::parse(&[
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2, 0, 1, 0, 2, 0,
            8, 0, 0,
        ]);
        row
    }

    /// The slices published since the last call (a lost slice fails the test).
    fn published(w: &mut SliceWriter) -> Vec<FinishedSlice> {
        w.take_events()
            .into_iter()
            .map(|e| match e {
                SliceEvent::Published(done) => done,
                SliceEvent::Lost { error, .. } => panic!("slice lost: {error}"),
            })
            .collect()
    }

    #[test]
    fn rotates_by_time_and_publishes_atomically() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SliceWriter::new(tmp.path(), "n1", Duration::from_secs(10), 64 << 20);
        let s = 1_000_000_000_000i64;
        w.append(&row(s), b"abc");
        w.append(&row(s + 5_000_000_000), b"def");
        assert!(!w.has_events());
        // Nothing is visible while the slice is open (rows are staged, then written to a
        // hidden temp file).
        let visible = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !(n.starts_with('.') && n.ends_with(".tmp")))
                .count()
        };
        assert_eq!(visible(tmp.path()), 0);
        w.append(&row(s + 10_000_000_000), b"ghi");
        let done = published(&mut w);
        assert_eq!(done.len(), 1);
        assert_eq!(
            (done[0].start_ns, done[0].end_ns, done[0].rows),
            (s, s + 5_000_000_000, 2)
        );
        assert_eq!(read_ts(&done[0].path), [s, s + 5_000_000_000]);
        w.tick(s + 15_000_000_000);
        assert!(!w.has_events());
        w.tick(s + 20_000_000_000);
        let done = published(&mut w);
        assert_eq!(read_ts(&done[0].path), [s + 10_000_000_000]);
        w.finish();
        assert!(!w.has_events());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 2);
    }

    #[test]
    fn rotates_by_size() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = SliceWriter::new(tmp.path(), "n1", Duration::from_secs(3600), 1 << 20);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..4000 {
            // Incompressible payloads, so that the file really grows.
            let p: Vec<u8> = (0..1500)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            w.append(&row(i), &p);
        }
        w.finish();
        let finished = published(&mut w);
        assert!(finished.len() >= 2, "{finished:?}");
        for f in &finished {
            assert!(
                f.bytes <= (1 << 20) + (1 << 20) / 8 + 64 * 1024,
                "slice of {} bytes",
                f.bytes
            );
        }
        assert_eq!(finished.iter().map(|f| f.rows).sum::<u64>(), 4000);
        let mut all = Vec::new();
        for f in &finished {
            all.extend(read_ts(&f.path));
        }
        assert_eq!(all, (0..4000).collect::<Vec<i64>>());
    }

    #[test]
    fn failure_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gone");
        std::fs::create_dir(&dir).unwrap();
        let mut w = SliceWriter::new(&dir, "n1", Duration::from_secs(10), 64 << 20);
        w.append(&row(1), b"x");
        // The directory vanishes under the writer: publishing fails, nothing half-written stays.
        std::fs::remove_dir_all(&dir).unwrap();
        w.finish();
        let events = w.take_events();
        let [SliceEvent::Lost { error, rows }] = &events[..] else {
            panic!("{events:?}");
        };
        assert!(error.to_string().contains("writing slice"), "{error}");
        assert_eq!(*rows, 1);
        assert!(!dir.exists());
        // The next row starts afresh once the directory is back.
        std::fs::create_dir(&dir).unwrap();
        w.append(&row(2), b"y");
        w.finish();
        let done = published(&mut w);
        assert_eq!(read_ts(&done[0].path), [2]);
    }
}
