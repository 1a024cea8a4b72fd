//! Pages to row groups: every column of a page encoded into its chunk of the current row group.
//!
//! The encoder runs in the collector's thread, right after a page is filled, while the page
//! is still in that core's cache; what leaves the thread is the finished row group, the bytes
//! that go to disk ([`EncodedRowGroup`]), which [`super::PacketsFile`] lays out in a file.

use std::io;

use super::{
    DICTIONARY_ENTRIES, ROW_GROUP_ROWS, col,
    column::{AddrDict, Chunk, Order, StatValue, dict_page_body, int_page_body, min_max},
    compress::PayloadCompressor,
    encoding::Levels,
    format::{COLUMNS, Codec, Stats, encoding as enc},
    page::{HAS_CGROUP, HAS_PORTS, HAS_TCP, PageRows},
    thrift,
};

/// Payload page buffers kept for reuse (each a page of payload: about 1 MiB).
const SPARE_BODIES: usize = 4;
/// Written row groups kept for reuse (their chunk buffers; page buffers go to the pool).
const SPARE_GROUPS: usize = 2;

/// One row group, encoded: every column's data pages, and the address dictionaries.
pub struct EncodedRowGroup {
    pub(super) chunks: Vec<Chunk>,
    /// PLAIN-encoded dictionary entries of `src_ip` and `dst_ip`.
    pub(super) dictionaries: [Vec<u8>; 2],
    pub(super) dictionary_entries: [u32; 2],
    pub(super) dictionary_stats: [Stats; 2],
    rows: u64,
    min_ts: i64,
    max_ts: i64,
    /// Every row's `ts` is at least the one before it: only then does the footer declare the
    /// row group sorted by `ts`.
    sorted: bool,
}

impl EncodedRowGroup {
    fn empty(codec: Codec) -> Self {
        let chunks = (0..COLUMNS.len())
            .map(|c| {
                let mut chunk = Chunk::new(c, c == col::TS);
                if c == col::PAYLOAD {
                    chunk.reset(codec);
                }
                chunk
            })
            .collect();
        Self {
            chunks,
            dictionaries: Default::default(),
            dictionary_entries: [0; 2],
            dictionary_stats: Default::default(),
            rows: 0,
            min_ts: 0,
            max_ts: 0,
            sorted: true,
        }
    }

    /// True when its rows are in `ts` order (rows that arrived late make it false).
    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// Rows in the row group.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Smallest and largest `ts` (UTC ns) of its rows.
    pub fn ts_range(&self) -> (i64, i64) {
        (self.min_ts, self.max_ts)
    }
}

/// Encodes pages into row groups.
pub struct RowGroupEncoder {
    compressor: PayloadCompressor,
    group: EncodedRowGroup,
    src_ip: AddrDict,
    dst_ip: AddrDict,
    /// Encoded bytes after which the row group is finished.
    limit_bytes: usize,
    /// Encoded bytes of the row group so far.
    bytes: usize,
    /// Row groups given back by [`recycle`](Self::recycle), whose buffers are reused.
    spare: Vec<EncodedRowGroup>,
    /// Payload page buffers given back, for pages and compressed pages to reuse.
    spare_bodies: Vec<Vec<u8>>,
    body: Vec<u8>,
    /// Compressor output; the (small) result is copied out, so that a compressed page does
    /// not pin a page-sized buffer.
    compressed: Vec<u8>,
    indexes: Vec<u32>,
    /// Per-row definition levels of the ports, TCP and cgroup columns (by presence bit).
    levels: [Vec<u32>; 3],
}

impl RowGroupEncoder {
    /// An encoder whose row groups end at about `limit_bytes` encoded bytes.
    pub fn new(mut compressor: PayloadCompressor, limit_bytes: usize) -> Self {
        let codec = compressor.next_chunk();
        Self {
            compressor,
            group: EncodedRowGroup::empty(codec),
            src_ip: AddrDict::default(),
            dst_ip: AddrDict::default(),
            limit_bytes: limit_bytes.max(64 << 10),
            bytes: 0,
            spare: Vec::new(),
            spare_bodies: Vec::new(),
            body: Vec::new(),
            compressed: Vec::new(),
            indexes: Vec::new(),
            levels: Default::default(),
        }
    }

    /// Rows of the unfinished row group.
    pub fn rows(&self) -> u64 {
        self.group.rows
    }

    /// Encodes one page into the row group; returns true when the row group is finished and
    /// should be [`take`](Self::take)n (large enough, a dictionary too big, or the payload's
    /// compression decided otherwise for what follows).
    ///
    /// The page's payload buffer may be taken over (the page then holds an empty one).
    pub fn encode_page(&mut self, p: &mut PageRows) -> io::Result<bool> {
        let rows = p.rows();
        let Some((min_ts, max_ts)) = p.ts_range() else {
            return Ok(false);
        };
        let first = self.group.rows;
        let body = &mut self.body;
        let chunks = &mut self.group.chunks;
        let levels = &mut self.levels;
        let unsigned = Order::Unsigned;

        int_page(
            &mut chunks[col::TS],
            body,
            first,
            rows,
            p.ts(),
            None,
            Order::Signed,
        );
        // The node column is one dictionary entry: a single RLE run of index 0.
        body.clear();
        body.push(1);
        thrift::put_varint(body, (rows as u64) << 1);
        body.push(0);
        chunks[col::NODE].push_page(first, rows, enc::RLE_DICTIONARY, body, None);
        int_page(
            &mut chunks[col::IFINDEX],
            body,
            first,
            rows,
            p.ifindex(),
            None,
            unsigned,
        );
        int_page(
            &mut chunks[col::DIRECTION],
            body,
            first,
            rows,
            p.direction(),
            None,
            unsigned,
        );
        int_page(
            &mut chunks[col::WIRE_LEN],
            body,
            first,
            rows,
            p.wire_len(),
            None,
            unsigned,
        );
        int_page(
            &mut chunks[col::L3],
            body,
            first,
            rows,
            p.l3(),
            None,
            unsigned,
        );
        int_page(
            &mut chunks[col::IP_PROTO],
            body,
            first,
            rows,
            p.ip_proto(),
            None,
            unsigned,
        );
        let cgroup = page_levels(p, levels, HAS_CGROUP, p.cgroup_id().len());
        let chunk = &mut chunks[col::CGROUP_ID];
        int_page(
            chunk,
            body,
            first,
            rows,
            p.cgroup_id(),
            Some(cgroup),
            unsigned,
        );
        let ports = page_levels(p, levels, HAS_PORTS, p.src_port().len());
        let c = &mut chunks[col::SRC_PORT];
        int_page(c, body, first, rows, p.src_port(), Some(ports), unsigned);
        let c = &mut chunks[col::DST_PORT];
        int_page(c, body, first, rows, p.dst_port(), Some(ports), unsigned);
        let tcp = page_levels(p, levels, HAS_TCP, p.tcp_seq().len());
        let c = &mut chunks[col::TCP_FLAGS];
        int_page(c, body, first, rows, p.tcp_flags(), Some(tcp), unsigned);
        let c = &mut chunks[col::TCP_SEQ];
        int_page(c, body, first, rows, p.tcp_seq(), Some(tcp), unsigned);
        let c = &mut chunks[col::TCP_ACK];
        int_page(c, body, first, rows, p.tcp_ack(), Some(tcp), unsigned);
        for (c, addrs, dict) in [
            (col::SRC_IP, p.src_ip(), &mut self.src_ip),
            (col::DST_IP, p.dst_ip(), &mut self.dst_ip),
        ] {
            self.indexes.clear();
            // Consecutive packets mostly belong to one conversation, whose two directions
            // alternate: the last two addresses seen cost a comparison, not a lookup.
            // (Kept in three small arrays: whole tuples moved per row cost store-forwarding
            // stalls.)
            let (mut seen_l3, mut seen, mut seen_index) = ([u8::MAX; 2], [0u128; 2], [0u32; 2]);
            let mut replace = 0;
            self.indexes
                .extend(p.l3().iter().zip(addrs).map(|(&l3, &addr)| {
                    for k in 0..2 {
                        if seen_l3[k] == l3 && seen[k] == addr {
                            return seen_index[k];
                        }
                    }
                    let i = dict.index(l3, addr);
                    (seen_l3[replace], seen[replace], seen_index[replace]) = (l3, addr, i);
                    replace ^= 1;
                    i
                }));
            dict_page_body(body, &self.indexes, dict.len);
            chunks[c].push_page(first, rows, enc::RLE_DICTIONARY, body, None);
        }
        // Stored payload pages are moved into the chunk, not copied: the chunk takes the
        // page's buffer and the page gets a spare one. Compressed pages are small: copied out.
        let payload = &mut chunks[col::PAYLOAD];
        let codec = payload.codec;
        let raw = p.payload().len();
        if codec == Codec::Zstd {
            self.compressor
                .compress(p.payload(), &mut self.compressed)?;
            let stored = self.compressed.clone();
            payload.push_page_owned(first, rows, enc::PLAIN, raw, stored);
        } else {
            if payload.is_empty() {
                self.compressor.probe(p.payload())?;
            }
            let spare = self
                .spare_bodies
                .pop()
                .unwrap_or_else(|| p.payload_buffer());
            let body = p.swap_payload(spare);
            payload.push_page_owned(first, rows, enc::PLAIN, raw, body);
        }

        let g = &mut self.group;
        // ts is stored as the i64's bits.
        let ts = p.ts();
        let page_sorted = ts.windows(2).all(|w| w[0] as i64 <= w[1] as i64);
        let follows = g.rows == 0 || ts.first().is_some_and(|&t| g.max_ts <= t as i64);
        g.sorted = (g.rows == 0 || g.sorted) && page_sorted && follows;
        if g.rows == 0 {
            (g.min_ts, g.max_ts) = (min_ts, max_ts);
        } else {
            g.min_ts = g.min_ts.min(min_ts);
            g.max_ts = g.max_ts.max(max_ts);
        }
        g.rows += rows as u64;
        self.bytes = g.chunks.iter().map(Chunk::len).sum();
        Ok(self.bytes >= self.limit_bytes
            || g.rows >= ROW_GROUP_ROWS
            || self.src_ip.len.max(self.dst_ip.len) >= DICTIONARY_ENTRIES
            || self.compressor.changed_mind(codec))
    }

    /// Takes the row group encoded so far (none when it has no rows) and starts the next.
    pub fn take(&mut self) -> Option<EncodedRowGroup> {
        if self.group.rows == 0 {
            return None;
        }
        let codec = self.compressor.next_chunk();
        let mut next = match self.spare.pop() {
            Some(mut spare) => {
                for chunk in &mut spare.chunks {
                    let codec = if chunk.column == col::PAYLOAD {
                        codec
                    } else {
                        Codec::Uncompressed
                    };
                    let _ = chunk.reset(codec);
                }
                spare.rows = 0;
                spare.sorted = true;
                spare
            }
            None => EncodedRowGroup::empty(codec),
        };
        for (i, dict) in [&mut self.src_ip, &mut self.dst_ip].into_iter().enumerate() {
            self.group.dictionary_entries[i] = dict.len;
            self.group.dictionary_stats[i] = dict.stats();
            // The entries go with the row group; the dictionary goes on in a spare buffer.
            let spare = std::mem::take(&mut next.dictionaries[i]);
            self.group.dictionaries[i] = std::mem::replace(&mut dict.plain, spare);
            dict.clear();
        }
        self.bytes = 0;
        Some(std::mem::replace(&mut self.group, next))
    }

    /// Gives back a row group that has been written, so that its buffers are reused: its
    /// page-sized payload buffers go to the pool at once (a few of them; the rest are freed),
    /// the row group's own buffers are kept for the next ones.
    pub fn recycle(&mut self, mut group: EncodedRowGroup) {
        for chunk in &mut group.chunks {
            for part in chunk.parts.drain(..) {
                if part.capacity() >= 64 << 10 && self.spare_bodies.len() < SPARE_BODIES {
                    self.spare_bodies.push(part);
                }
            }
        }
        if self.spare.len() < SPARE_GROUPS {
            for plain in &mut group.dictionaries {
                plain.clear();
            }
            self.spare.push(group);
        }
    }
}

/// The page's definition levels for the columns of presence bit `bit`, which `present` rows
/// have; per-row levels are only built when the page mixes present and null values.
fn page_levels<'a>(
    p: &PageRows,
    levels: &'a mut [Vec<u32>; 3],
    bit: u8,
    present: usize,
) -> Levels<'a> {
    let rows = p.rows();
    let nulls = rows - present;
    let slot = &mut levels[bit.trailing_zeros() as usize];
    slot.clear();
    if nulls > 0 && nulls < rows {
        slot.extend(p.presence().iter().map(|&x| u32::from(x & bit != 0)));
    }
    Levels {
        rows,
        nulls,
        present: slot,
    }
}

/// Encodes one integer column's page and folds its statistics into the chunk.
fn int_page<T: StatValue>(
    chunk: &mut Chunk,
    body: &mut Vec<u8>,
    first_row: u64,
    rows: usize,
    values: &[T],
    levels: Option<Levels<'_>>,
    order: Order,
) {
    let encoding = int_page_body(body, values, levels);
    if let Some((min, max)) = min_max(values, order) {
        chunk.observe(min, max, order);
        if let Some(pages) = &mut chunk.page_stats {
            pages.push((min.plain(), max.plain()));
        }
    }
    chunk.nulls += levels.map_or(0, |l| l.nulls as u64);
    chunk.push_page(first_row, rows, encoding, body, None);
}
