//! HTTP/2 (RFC 9113) over a reassembled connection: frames, HPACK header blocks with one
//! dynamic table per direction ([`crate::hpack`]), streams, trailers, server push; gRPC on top
//! (method from `:path`, status from the trailers).
//!
//! HPACK state cannot survive a hole in the stream: after a gap in a direction, that direction's
//! headers can no longer be decoded, and its open streams end as truncated.

use std::collections::BTreeMap;

use crate::http1::MAX_PREVIEW;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const PUSH_PROMISE: u8 = 5;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Header blocks larger than this, in one frame or with their CONTINUATIONs, are not decoded
/// and end the direction (a peer may allow more; none sane sends it). What a block decodes to
/// is bounded separately ([`crate::hpack::MAX_HEADER_LIST`]).
const MAX_HEADER_BLOCK: usize = 256 << 10;

/// Streams open at once, at most (servers advertise 100 to 256 in
/// SETTINGS_MAX_CONCURRENT_STREAMS): with the header-list bound this caps what one connection's
/// open streams hold; past it the oldest stream is finished as it is.
const MAX_OPEN_STREAMS: usize = 256;

/// True when `bytes` start like a server's first frame: SETTINGS on stream 0.
pub fn looks_like_server_settings(bytes: &[u8]) -> bool {
    match bytes.get(..9) {
        Some(h) => {
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            h[3] == 4 && h[4] & !1 == 0 && h[5..9] == [0, 0, 0, 0] && len % 6 == 0 && len <= 120
        }
        None => false,
    }
}

/// One half (request or response) of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Half {
    /// Header fields, pseudo-headers included, names as sent (HPACK names are lower case).
    pub headers: crate::Headers,
    /// Trailer fields.
    pub trailers: crate::Headers,
    /// DATA bytes (after padding).
    pub body_size: u64,
    /// First DATA bytes.
    pub body_preview: Vec<u8>,
    /// Header block bytes.
    pub head_size: u64,
    /// END_STREAM seen.
    pub ended: bool,
    /// Headers seen.
    pub seen: bool,
}

impl Half {
    /// A header value by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).or_else(|| self.trailers.get(name))
    }
}

/// A finished (or abandoned) stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exchange {
    /// Stream id.
    pub stream_id: u32,
    /// First frame of the stream.
    pub start_ns: i64,
    /// Last frame of the stream.
    pub end_ns: i64,
    /// What the client sent (for a pushed stream: the PUSH_PROMISE's request).
    pub request: Half,
    /// What the server sent.
    pub response: Half,
    /// Ended by RST_STREAM.
    pub reset: bool,
    /// Promised by the server (server push).
    pub pushed: bool,
}

struct Pending {
    stream: u32,
    promised: Option<u32>,
    end_stream: bool,
    block: Vec<u8>,
    ts_ns: i64,
}

/// The HTTP/2 state of one connection.
pub struct Conn {
    client_dir: usize,
    bufs: [Vec<u8>; 2],
    preface_left: usize,
    decoders: [crate::hpack::Decoder; 2],
    pending: [Option<Pending>; 2],
    broken: [bool; 2],
    streams: BTreeMap<u32, Exchange>,
    /// Finished exchanges, in the order they finished.
    pub done: Vec<Exchange>,
    /// Frames or header blocks that could not be decoded.
    pub errors: u64,
}

impl Conn {
    /// A connection whose client sends in direction `client_dir`; `preface` says whether the
    /// client preface is still to come in the stream.
    pub fn new(client_dir: usize, preface: bool) -> Self {
        Self {
            client_dir,
            bufs: [Vec::new(), Vec::new()],
            preface_left: if preface { PREFACE.len() } else { 0 },
            decoders: Default::default(),
            pending: [None, None],
            broken: [false, false],
            streams: BTreeMap::new(),
            done: Vec::new(),
            errors: 0,
        }
    }

    /// A connection that an HTTP/1.1 request upgraded to h2c (RFC 9113 §3.1 of RFC 7540: the
    /// `Upgrade: h2c` request becomes stream 1, half-closed by the client, whose response comes
    /// as HTTP/2 frames after the `101`). The client preface is still to come.
    pub fn upgraded(client_dir: usize, request: Half, start_ns: i64) -> Self {
        let mut conn = Self::new(client_dir, true);
        conn.streams.insert(
            1,
            Exchange {
                stream_id: 1,
                start_ns,
                end_ns: start_ns,
                request,
                ..Exchange::default()
            },
        );
        conn
    }

    /// Bytes this connection holds: partial frames, open header blocks, the open streams'
    /// decoded headers and previews, finished streams not taken yet, and the HPACK tables.
    pub fn buffered(&self) -> usize {
        let half = |h: &Half| h.headers.held() + h.trailers.held() + h.body_preview.len();
        let exchanges: usize = self
            .streams
            .values()
            .chain(&self.done)
            .map(|s| half(&s.request) + half(&s.response) + 64)
            .sum();
        let blocks: usize = self.pending.iter().flatten().map(|p| p.block.len()).sum();
        let tables = self.decoders[0].table_size() + self.decoders[1].table_size();
        self.bufs[0].len() + self.bufs[1].len() + exchanges + blocks + tables
    }

    /// The direction of the client.
    pub fn client_dir(&self) -> usize {
        self.client_dir
    }

    /// Feeds stream bytes of direction `dir`.
    pub fn data(&mut self, dir: usize, ts_ns: i64, mut bytes: &[u8]) {
        if self.broken[dir] {
            return;
        }
        if dir == self.client_dir && self.preface_left > 0 {
            let take = self.preface_left.min(bytes.len());
            let at = PREFACE.len() - self.preface_left;
            if bytes[..take] == PREFACE[at..at + take] {
                self.preface_left -= take;
                bytes = &bytes[take..];
            } else if at == 0 {
                self.preface_left = 0; // seen from the middle: frames right away
            } else {
                self.break_direction(dir);
                return;
            }
        }
        self.bufs[dir].extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let buf = &self.bufs[dir];
            let Some(h) = buf.get(at..at + 9) else { break };
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7FFF_FFFF;
            let Some(payload) = buf.get(at + 9..at + 9 + len) else {
                break;
            };
            let payload = payload.to_vec();
            at += 9 + len;
            self.frame(dir, ts_ns, kind, flags, stream, &payload);
            if self.broken[dir] {
                return;
            }
        }
        self.bufs[dir].drain(..at);
        if self.bufs[dir].len() > (1 << 24) + 9 {
            self.break_direction(dir);
        }
    }

    /// A hole in direction `dir`: its HPACK table is lost.
    pub fn gap(&mut self, dir: usize) {
        self.break_direction(dir);
    }

    fn break_direction(&mut self, dir: usize) {
        if !self.broken[dir] {
            self.errors += 1;
        }
        self.broken[dir] = true;
        self.bufs[dir].clear();
        self.pending[dir] = None;
    }

    fn frame(&mut self, dir: usize, ts_ns: i64, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let from_client = dir == self.client_dir;
        if let Some(p) = &mut self.pending[dir] {
            // Only CONTINUATION of the same stream may follow an open header block.
            if kind != CONTINUATION || stream != p.stream {
                self.break_direction(dir);
                return;
            }
            p.block.extend_from_slice(payload);
            if p.block.len() > MAX_HEADER_BLOCK {
                self.break_direction(dir);
                return;
            }
            if flags & END_HEADERS != 0
                && let Some(p) = self.pending[dir].take()
            {
                self.header_block(dir, p);
            }
            return;
        }
        match kind {
            DATA if stream != 0 => {
                let body = unpad(flags, payload).unwrap_or(&[]);
                let ex = self.stream(stream, ts_ns);
                let half = if from_client {
                    &mut ex.request
                } else {
                    &mut ex.response
                };
                half.body_size += body.len() as u64;
                let room = MAX_PREVIEW.saturating_sub(half.body_preview.len());
                half.body_preview
                    .extend_from_slice(&body[..body.len().min(room)]);
                if flags & END_STREAM != 0 {
                    half.ended = true;
                    self.maybe_finish(stream);
                }
            }
            HEADERS | PUSH_PROMISE if stream != 0 => {
                let Some(mut rest) = unpad(flags, payload) else {
                    self.errors += 1;
                    return;
                };
                let mut promised = None;
                if kind == HEADERS && flags & PRIORITY != 0 {
                    rest = rest.get(5..).unwrap_or(&[]);
                }
                if kind == PUSH_PROMISE {
                    let Some(id) = rest.get(..4) else { return };
                    promised = Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]) & 0x7FFF_FFFF);
                    rest = &rest[4..];
                }
                if rest.len() > MAX_HEADER_BLOCK {
                    self.break_direction(dir);
                    return;
                }
                let p = Pending {
                    stream,
                    promised,
                    end_stream: kind == HEADERS && flags & END_STREAM != 0,
                    block: rest.to_vec(),
                    ts_ns,
                };
                if flags & END_HEADERS != 0 {
                    self.header_block(dir, p);
                } else {
                    self.pending[dir] = Some(p);
                }
            }
            RST_STREAM if stream != 0 => {
                let ex = self.stream(stream, ts_ns);
                ex.reset = true;
                if let Some(ex) = self.streams.remove(&stream) {
                    self.done.push(ex);
                }
            }
            _ => {}
        }
    }

    fn stream(&mut self, id: u32, ts_ns: i64) -> &mut Exchange {
        if self.streams.len() >= MAX_OPEN_STREAMS
            && !self.streams.contains_key(&id)
            && let Some(oldest) = self.streams.pop_first()
        {
            // A peer that opens streams without end: the oldest is given up as it is.
            self.errors += 1;
            self.done.push(oldest.1);
        }
        let ex = self.streams.entry(id).or_insert_with(|| Exchange {
            stream_id: id,
            start_ns: ts_ns,
            ..Exchange::default()
        });
        ex.end_ns = ex.end_ns.max(ts_ns);
        ex
    }

    fn header_block(&mut self, dir: usize, p: Pending) {
        let block = &p.block;
        let Ok(decoded) = self.decoders[dir].decode_bounded(block) else {
            self.break_direction(dir);
            return;
        };
        if decoded.truncated {
            self.errors += 1;
        }
        let fields = decoded.fields;
        let from_client = dir == self.client_dir;
        if let Some(promised) = p.promised {
            let ex = self.stream(promised, p.ts_ns);
            ex.pushed = true;
            ex.request.headers = fields;
            ex.request.head_size = block.len() as u64;
            ex.request.seen = true;
            ex.request.ended = true;
            return;
        }
        let ex = self.stream(p.stream, p.ts_ns);
        let half = if from_client {
            &mut ex.request
        } else {
            &mut ex.response
        };
        let informational = !from_client
            && fields
                .iter()
                .find(|&(n, _)| n == ":status")
                .is_some_and(|(_, v)| v.starts_with('1') && v.len() == 3);
        if informational {
            return; // 1xx: the final response follows
        }
        if half.seen {
            half.trailers = fields;
        } else {
            half.headers = fields;
            half.head_size = block.len() as u64;
            half.seen = true;
        }
        if p.end_stream {
            half.ended = true;
            self.maybe_finish(p.stream);
        }
    }

    fn maybe_finish(&mut self, stream: u32) {
        let finished = self
            .streams
            .get(&stream)
            .is_some_and(|ex| ex.response.ended && (ex.request.ended || ex.pushed));
        if finished && let Some(ex) = self.streams.remove(&stream) {
            self.done.push(ex);
        }
    }

    /// The connection ended: streams still open are finished as they are.
    pub fn close(&mut self) {
        let open: Vec<Exchange> = std::mem::take(&mut self.streams).into_values().collect();
        self.done.extend(open);
    }
}

fn unpad(flags: u8, payload: &[u8]) -> Option<&[u8]> {
    if flags & PADDED == 0 {
        return Some(payload);
    }
    let pad = usize::from(*payload.first()?);
    payload.get(1..payload.len().checked_sub(pad)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn request_response_with_continuation_trailers_and_garbage() {
        let mut enc = fluke_hpack::Encoder::new();
        let req = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/pkg.Svc/Do"),
            (b":authority", b"svc:50051"),
            (b"content-type", b"application/grpc"),
        ]);
        let mut senc = fluke_hpack::Encoder::new();
        let resp = senc.encode(vec![(&b":status"[..], &b"200"[..])]);
        let trailers = senc.encode(vec![(&b"grpc-status"[..], &b"5"[..])]);
        let mut client = PREFACE.to_vec();
        client.extend(frame(4, 0, 0, &[]));
        client.extend(frame(HEADERS, 0, 1, &req[..5]));
        client.extend(frame(CONTINUATION, END_HEADERS, 1, &req[5..]));
        client.extend(frame(DATA, END_STREAM, 1, &[0, 0, 0, 0, 2, 8, 1]));
        let mut server = frame(4, 0, 0, &[]);
        server.extend(frame(HEADERS, END_HEADERS, 1, &resp));
        server.extend(frame(DATA, 0, 1, &[0, 0, 0, 0, 0]));
        server.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &trailers));
        let mut c = Conn::new(0, true);
        // Byte by byte, interleaved.
        for b in &client {
            c.data(0, 1, std::slice::from_ref(b));
        }
        for b in &server {
            c.data(1, 2, std::slice::from_ref(b));
        }
        assert_eq!(c.done.len(), 1);
        let ex = &c.done[0];
        assert_eq!(ex.request.header(":path"), Some("/pkg.Svc/Do"));
        assert_eq!(ex.response.header(":status"), Some("200"));
        assert_eq!(ex.response.header("grpc-status"), Some("5"));
        assert_eq!(ex.request.body_size, 7);
        // Garbage never panics, and a broken direction stays broken.
        let mut g = Conn::new(0, false);
        g.data(
            0,
            1,
            &[
                0, 0, 10, 1, 4, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                0xff,
            ],
        );
        assert_eq!(g.errors, 1);
        g.close();
    }
}
