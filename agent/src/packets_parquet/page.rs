//! A page of rows, one fixed-size array per column: what the collector fills and the file
//! writer encodes.
//!
//! The collector appends every recorded packet here, so a row must cost as little as possible:
//! the arrays are sized for a full page up front and indexed by one row counter (nullable
//! columns by their own), which is checked once per row, and the IP and TCP/UDP header fields
//! are parsed straight into them ([`HeaderSink`]). Nothing is allocated after the first page.

use crate::{
    decode::{PacketMeta, PacketRow},
    parse::{HeaderSink, Transport, parse_into},
};

/// Rows per page.
pub const PAGE_ROWS: usize = 8192;
/// Payload bytes that end a page early (large packets).
pub const PAGE_PAYLOAD_BYTES: usize = 1 << 20;

/// Presence bits of one row's nullable columns.
pub const HAS_PORTS: u8 = 1;
/// TCP flags, sequence and acknowledgment numbers are set.
pub const HAS_TCP: u8 = 2;
/// The cgroup id is set.
pub const HAS_CGROUP: u8 = 4;

type Column<T> = Box<[T; PAGE_ROWS]>;

fn column<T: Copy + Default>() -> Column<T> {
    match vec![T::default(); PAGE_ROWS].into_boxed_slice().try_into() {
        Ok(array) => array,
        Err(_) => unreachable!("a vector of PAGE_ROWS values is an array of PAGE_ROWS values"),
    }
}

/// One page of rows. Nullable columns hold only their present values, back to back;
/// `presence` says which rows have them. Addresses are kept as the 16 bytes read as a
/// little-endian `u128`; the writer maps them to its dictionaries.
pub struct PageRows {
    rows: usize,
    ports: usize,
    tcp: usize,
    cgroups: usize,
    /// Payload bytes at which the page is full.
    payload_limit: usize,
    /// Smallest and largest `ts` (UTC ns) in the page.
    min_ts: i64,
    max_ts: i64,
    ts: Column<u64>,
    ifindex: Column<u32>,
    direction: Column<u8>,
    wire_len: Column<u32>,
    l3: Column<u8>,
    ip_proto: Column<u8>,
    src_ip: Column<u128>,
    dst_ip: Column<u128>,
    presence: Column<u8>,
    cgroup_id: Column<u64>,
    src_port: Column<u16>,
    dst_port: Column<u16>,
    tcp_flags: Column<u8>,
    tcp_seq: Column<u32>,
    tcp_ack: Column<u32>,
    /// PLAIN-encoded payloads (4-byte length, bytes).
    payload: Vec<u8>,
}

impl Default for PageRows {
    fn default() -> Self {
        Self::new()
    }
}

impl PageRows {
    /// An empty page, full at [`PAGE_ROWS`] rows or [`PAGE_PAYLOAD_BYTES`] payload bytes.
    pub fn new() -> Self {
        Self::with_payload_limit(PAGE_PAYLOAD_BYTES)
    }

    /// An empty page that is full at `limit` payload bytes (at most [`PAGE_PAYLOAD_BYTES`]).
    pub fn with_payload_limit(limit: usize) -> Self {
        let limit = limit.min(PAGE_PAYLOAD_BYTES);
        Self {
            rows: 0,
            ports: 0,
            tcp: 0,
            cgroups: 0,
            payload_limit: limit,
            min_ts: 0,
            max_ts: 0,
            ts: column(),
            ifindex: column(),
            direction: column(),
            wire_len: column(),
            l3: column(),
            ip_proto: column(),
            src_ip: column(),
            dst_ip: column(),
            presence: column(),
            cgroup_id: column(),
            src_port: column(),
            dst_port: column(),
            tcp_flags: column(),
            tcp_seq: column(),
            tcp_ack: column(),
            payload: Vec::with_capacity(limit + 64 * 1024),
        }
    }

    /// Appends the fields every row has; returns the row's index, or `None` when the page
    /// is already full (callers check [`is_full`](Self::is_full) first).
    #[inline]
    fn begin_row(
        &mut self,
        ts_ns: i64,
        ifindex: u32,
        direction: u8,
        wire_len: u32,
        cgroup_id: u64,
    ) -> Option<usize> {
        let i = self.rows;
        if i >= PAGE_ROWS {
            return None;
        }
        if i == 0 {
            self.min_ts = ts_ns;
            self.max_ts = ts_ns;
        } else {
            self.min_ts = self.min_ts.min(ts_ns);
            self.max_ts = self.max_ts.max(ts_ns);
        }
        self.ts[i] = ts_ns as u64;
        self.ifindex[i] = ifindex;
        self.direction[i] = direction;
        self.wire_len[i] = wire_len;
        self.presence[i] = 0;
        self.l3[i] = 0;
        self.ip_proto[i] = 0;
        self.src_ip[i] = 0;
        self.dst_ip[i] = 0;
        if cgroup_id != 0 {
            // At most one value per row: this index is below `i`, so below PAGE_ROWS.
            self.cgroup_id[self.cgroups & (PAGE_ROWS - 1)] = cgroup_id;
            self.cgroups += 1;
            self.presence[i] = HAS_CGROUP;
        }
        Some(i)
    }

    #[inline]
    fn end_row(&mut self, payload: &[u8]) {
        self.payload
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.payload.extend_from_slice(payload);
        self.rows += 1;
    }

    /// Appends one recorded packet: the event's fields and the packet's bytes, whose IP and
    /// TCP/UDP headers are read straight into the columns.
    #[inline]
    pub fn push_packet(&mut self, meta: &PacketMeta, payload: &[u8]) {
        let Some(i) = self.begin_row(
            meta.ts_ns,
            meta.ifindex,
            meta.direction,
            meta.wire_len,
            meta.cgroup_id,
        ) else {
            return;
        };
        parse_into(payload, &mut RowSink { page: self, row: i });
        self.end_row(payload);
    }

    /// Appends one row and its kept bytes (rows decoded elsewhere: tests and tools).
    pub fn push(&mut self, row: &PacketRow, payload: &[u8]) {
        let Some(i) = self.begin_row(
            row.ts_ns,
            row.ifindex,
            row.direction,
            row.wire_len,
            row.cgroup_id,
        ) else {
            return;
        };
        let h = &row.headers;
        let mut sink = RowSink { page: self, row: i };
        sink.ip(h.l3, h.ip_proto, h.src_ip, h.dst_ip);
        if h.transport != Transport::None {
            sink.ports(h.src_port, h.dst_port);
        }
        if h.transport == Transport::Tcp {
            sink.tcp(h.tcp_flags, h.tcp_seq, h.tcp_ack);
        }
        self.end_row(payload);
    }

    /// Rows in the page.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when the page holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// True when the page should be written: enough rows, or enough payload bytes.
    pub fn is_full(&self) -> bool {
        self.rows >= PAGE_ROWS || self.payload.len() >= self.payload_limit
    }

    /// Smallest and largest `ts` of the page (UTC ns); `None` when empty.
    pub fn ts_range(&self) -> Option<(i64, i64)> {
        (self.rows > 0).then_some((self.min_ts, self.max_ts))
    }

    /// Takes the page's payload buffer (PLAIN-encoded payloads), leaving `empty` in its place.
    pub(super) fn swap_payload(&mut self, mut empty: Vec<u8>) -> Vec<u8> {
        empty.clear();
        std::mem::replace(&mut self.payload, empty)
    }

    /// A buffer fit to be a page's payload buffer.
    pub(super) fn payload_buffer(&self) -> Vec<u8> {
        Vec::with_capacity(self.payload_limit + 64 * 1024)
    }

    /// Empties the page, keeping its memory (a page of large packets gives its payload
    /// buffer back down to the usual size, so that one burst does not pin memory).
    pub fn clear(&mut self) {
        self.rows = 0;
        self.ports = 0;
        self.tcp = 0;
        self.cgroups = 0;
        self.payload.clear();
        self.payload.shrink_to(self.payload_limit + 64 * 1024);
    }

    pub(super) fn ts(&self) -> &[u64] {
        &self.ts[..self.rows]
    }
    pub(super) fn ifindex(&self) -> &[u32] {
        &self.ifindex[..self.rows]
    }
    pub(super) fn direction(&self) -> &[u8] {
        &self.direction[..self.rows]
    }
    pub(super) fn wire_len(&self) -> &[u32] {
        &self.wire_len[..self.rows]
    }
    pub(super) fn l3(&self) -> &[u8] {
        &self.l3[..self.rows]
    }
    pub(super) fn ip_proto(&self) -> &[u8] {
        &self.ip_proto[..self.rows]
    }
    pub(super) fn src_ip(&self) -> &[u128] {
        &self.src_ip[..self.rows]
    }
    pub(super) fn dst_ip(&self) -> &[u128] {
        &self.dst_ip[..self.rows]
    }
    pub(super) fn presence(&self) -> &[u8] {
        &self.presence[..self.rows]
    }
    pub(super) fn cgroup_id(&self) -> &[u64] {
        &self.cgroup_id[..self.cgroups]
    }
    pub(super) fn src_port(&self) -> &[u16] {
        &self.src_port[..self.ports]
    }
    pub(super) fn dst_port(&self) -> &[u16] {
        &self.dst_port[..self.ports]
    }
    pub(super) fn tcp_flags(&self) -> &[u8] {
        &self.tcp_flags[..self.tcp]
    }
    pub(super) fn tcp_seq(&self) -> &[u32] {
        &self.tcp_seq[..self.tcp]
    }
    pub(super) fn tcp_ack(&self) -> &[u32] {
        &self.tcp_ack[..self.tcp]
    }
    pub(super) fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Writes parsed header fields into row `row` of a page as they are read.
struct RowSink<'a> {
    page: &'a mut PageRows,
    row: usize,
}

impl HeaderSink for RowSink<'_> {
    #[inline]
    fn ip(&mut self, l3: u8, ip_proto: u8, src: u128, dst: u128) {
        let (p, i) = (&mut *self.page, self.row & (PAGE_ROWS - 1));
        p.l3[i] = l3;
        p.ip_proto[i] = ip_proto;
        p.src_ip[i] = src;
        p.dst_ip[i] = dst;
    }
    #[inline]
    fn ports(&mut self, src: u16, dst: u16) {
        let p = &mut *self.page;
        // At most one value per row, so below the row index and PAGE_ROWS.
        let j = p.ports & (PAGE_ROWS - 1);
        p.src_port[j] = src;
        p.dst_port[j] = dst;
        p.ports += 1;
        p.presence[self.row & (PAGE_ROWS - 1)] |= HAS_PORTS;
    }
    #[inline]
    fn tcp(&mut self, flags: u8, seq: u32, ack: u32) {
        let p = &mut *self.page;
        let j = p.tcp & (PAGE_ROWS - 1);
        p.tcp_flags[j] = flags;
        p.tcp_seq[j] = seq;
        p.tcp_ack[j] = ack;
        p.tcp += 1;
        p.presence[self.row & (PAGE_ROWS - 1)] |= HAS_TCP;
    }
}
