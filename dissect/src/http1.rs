//! HTTP/1.0 and 1.1 messages from one direction of a reassembled stream.
//!
//! Heads are parsed with httparse once complete; bodies are framed by Content-Length, chunked
//! encoding, or the end of the connection. A gap inside a body of known length is skipped
//! exactly; a gap anywhere else loses the framing, and the parser resynchronises at the next
//! thing that looks like a message start.

/// Which side of the exchange a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// One parsed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Time of its first byte.
    pub start_ns: i64,
    /// Time of its last byte.
    pub end_ns: i64,
    /// Request method (requests).
    pub method: String,
    /// Request target (requests).
    pub target: String,
    /// Status code (responses).
    pub status: u16,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: &'static str,
    /// Header fields in order, names as sent.
    pub headers: crate::Headers,
    /// Bytes of the head (start line and fields).
    pub head_size: u64,
    /// Body bytes (decoded chunk framing removed).
    pub body_size: u64,
    /// The first bytes of the body that were captured.
    pub body_preview: Vec<u8>,
    /// True when the message was cut short (connection ended or framing lost).
    pub truncated: bool,
}

impl Message {
    /// Bytes the message holds in memory, about.
    pub fn held(&self) -> usize {
        let fields = self.headers.held();
        self.method.len()
            + self.target.len()
            + self.version.len()
            + fields
            + self.body_preview.len()
            + 96
    }

    /// The value of a header field (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

/// Longest head accepted; a longer one is not HTTP (or is an attack) and loses the framing.
const MAX_HEAD: usize = 64 << 10;
/// Body bytes kept for the preview.
pub const MAX_PREVIEW: usize = 64 << 10;

#[derive(Debug)]
enum Body {
    Length(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    UntilClose,
}

#[derive(Debug)]
enum State {
    Head,
    Body(Body),
    /// Framing lost: skip to the next plausible message start.
    Resync,
    /// Switched protocols (101) or CONNECT: the rest is not HTTP/1.
    Done,
    /// Switched to h2c (`101` with `Upgrade: h2c`): the rest is HTTP/2, kept for the caller
    /// to hand over with [`Parser::take_switched`].
    Switched(Vec<u8>),
}

/// Bytes after an h2c switch held for the caller (it takes them after every segment).
const MAX_SWITCHED: usize = 1 << 20;

/// A parser for one direction.
pub struct Parser {
    role: Role,
    state: State,
    buf: Vec<u8>,
    current: Message,
    /// Finished messages, oldest first.
    pub messages: Vec<Message>,
    /// For a response parser: one entry per request not yet answered, true for HEAD (whose
    /// response has no body). Fed by the connection as requests complete.
    pub pending_requests: std::collections::VecDeque<bool>,
    /// Heads that did not parse.
    pub parse_errors: u64,
}

/// True when `bytes` start like a message of `role`. A request line is a method token (any
/// uppercase token: extension methods such as `RPC_IN_DATA` are real), a space, a target and
/// ` HTTP/1.x`; while the line is incomplete, the token and the space are enough.
pub fn looks_like(role: Role, bytes: &[u8]) -> bool {
    match role {
        Role::Request => request_line_start(bytes),
        Role::Response => {
            !bytes.is_empty() && (bytes.starts_with(b"HTTP/1.") || b"HTTP/1.".starts_with(bytes))
        }
    }
}

fn request_line_start(bytes: &[u8]) -> bool {
    let token = bytes
        .iter()
        .take_while(|b| b.is_ascii_uppercase() || matches!(b, b'_' | b'-'))
        .count();
    if token == 0 || token > 24 {
        return false;
    }
    match bytes.get(token) {
        None => return true,
        Some(b' ') => {}
        Some(_) => return false,
    }
    let line_end = bytes.iter().position(|b| *b == b'\n');
    match line_end {
        Some(end) => {
            let line = bytes[..end].strip_suffix(b"\r").unwrap_or(&bytes[..end]);
            line.ends_with(b" HTTP/1.0") || line.ends_with(b" HTTP/1.1")
        }
        None => true,
    }
}

impl Parser {
    /// A parser for messages of `role`.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            state: State::Head,
            buf: Vec::new(),
            current: Message::default(),
            messages: Vec::new(),
            pending_requests: std::collections::VecDeque::new(),
            parse_errors: 0,
        }
    }

    /// Bytes this parser holds: an unfinished head, the message being read, and finished
    /// messages not taken yet.
    pub fn buffered(&self) -> usize {
        let switched = match &self.state {
            State::Switched(held) => held.len(),
            _ => 0,
        };
        self.buf.len()
            + self.current.held()
            + switched
            + self.messages.iter().map(Message::held).sum::<usize>()
    }

    /// Returns the room of buffers that hold nothing now (a closed connection waits out its
    /// grace period holding them, thousands at a time).
    pub fn release_spare(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        if self.messages.is_empty() {
            self.messages = Vec::new();
        }
    }

    /// After a `101` to h2c: the bytes that followed it (HTTP/2 frames), once. The parser is
    /// done with the stream afterwards.
    pub fn take_switched(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::Switched(held) => Some(held),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Feeds stream bytes.
    pub fn data(&mut self, ts_ns: i64, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = match &mut self.state {
                State::Done => return,
                State::Switched(held) => {
                    let room = MAX_SWITCHED.saturating_sub(held.len());
                    held.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    return;
                }
                State::Resync => match find_start(self.role, bytes) {
                    Some(at) => {
                        self.state = State::Head;
                        at
                    }
                    None => return,
                },
                State::Head => self.head(ts_ns, bytes),
                State::Body(_) => self.body(ts_ns, bytes),
            };
            bytes = &bytes[used..];
        }
    }

    /// Feeds a hole of `len` bytes.
    pub fn gap(&mut self, ts_ns: i64, len: u64) {
        match &mut self.state {
            State::Body(Body::Length(remaining)) if len <= *remaining => {
                *remaining -= len;
                self.current.body_size += len;
                self.current.end_ns = ts_ns;
                if *remaining == 0 {
                    self.finish_message();
                }
            }
            State::Body(Body::UntilClose) => {
                self.current.body_size += len;
                self.current.end_ns = ts_ns;
            }
            State::Head if self.buf.is_empty() => {
                // A hole between messages: the next message may start right after it, or
                // we may have lost its start.
                self.state = State::Resync;
            }
            State::Done | State::Resync | State::Switched(_) => {}
            _ => {
                self.current.truncated = true;
                self.finish_message();
                self.state = State::Resync;
            }
        }
    }

    /// The connection ended: a message framed by the close, or cut short, is finished.
    pub fn close(&mut self, ts_ns: i64) {
        match &self.state {
            State::Body(Body::UntilClose) => {
                self.current.end_ns = self.current.end_ns.max(ts_ns);
                self.finish_message();
            }
            State::Body(_) => {
                self.current.truncated = true;
                self.finish_message();
            }
            _ => {}
        }
        self.state = State::Done;
    }

    fn head(&mut self, ts_ns: i64, bytes: &[u8]) -> usize {
        if self.buf.is_empty() {
            // Skip blank lines between messages (tolerated by RFC 9112).
            let skip = bytes
                .iter()
                .take_while(|b| **b == b'\r' || **b == b'\n')
                .count();
            if skip > 0 {
                return skip;
            }
            if !looks_like(self.role, bytes) {
                self.parse_errors += 1;
                self.state = State::Resync;
                return 0;
            }
            self.current = Message {
                start_ns: ts_ns,
                ..Message::default()
            };
        }
        // A head that starts in this segment is parsed where it lies; only a head split
        // across segments is gathered in `buf` (copying every segment in first copied its
        // body along with the head).
        let before = self.buf.len();
        if before > 0 {
            self.buf.extend_from_slice(bytes);
        }
        let input: &[u8] = if before > 0 { &self.buf } else { bytes };
        let parsed = match self.role {
            Role::Request => parse_request(input, &mut self.current),
            Role::Response => parse_response(input, &mut self.current),
        };
        match parsed {
            Ok(Some(head_len)) => {
                self.current.head_size = head_len as u64;
                self.current.end_ns = ts_ns;
                self.buf.clear();
                self.start_body();
                head_len - before
            }
            Ok(None) if before + bytes.len() <= MAX_HEAD => {
                if before == 0 {
                    self.buf.extend_from_slice(bytes);
                }
                bytes.len()
            }
            _ => {
                self.parse_errors += 1;
                self.buf.clear();
                self.state = State::Resync;
                bytes.len()
            }
        }
    }

    fn start_body(&mut self) {
        let m = &self.current;
        let no_body = match self.role {
            Role::Request => false,
            Role::Response => {
                self.pending_requests.front() == Some(&true)
                    || (100..200).contains(&m.status)
                    || m.status == 204
                    || m.status == 304
            }
        };
        if self.role == Role::Response && m.status == 101 {
            let h2c = is_h2c_upgrade(m);
            self.finish_message();
            self.state = if h2c {
                State::Switched(Vec::new())
            } else {
                State::Done
            };
            return;
        }
        let chunked = m
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = m
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        self.state = if no_body {
            State::Head
        } else if chunked {
            State::Body(Body::ChunkSize(Vec::new()))
        } else if let Some(n) = length {
            if n == 0 {
                State::Head
            } else {
                // The preview's final size is known: one allocation instead of one per
                // doubling as segments arrive.
                let preview = usize::try_from(n).unwrap_or(MAX_PREVIEW).min(MAX_PREVIEW);
                self.current.body_preview.reserve_exact(preview);
                State::Body(Body::Length(n))
            }
        } else if self.role == Role::Request {
            State::Head
        } else {
            State::Body(Body::UntilClose)
        };
        if matches!(self.state, State::Head) {
            self.finish_message();
        }
    }

    fn keep(&mut self, ts_ns: i64, bytes: &[u8]) {
        self.current.body_size += bytes.len() as u64;
        self.current.end_ns = ts_ns;
        let room = MAX_PREVIEW.saturating_sub(self.current.body_preview.len());
        self.current
            .body_preview
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn body(&mut self, ts_ns: i64, bytes: &[u8]) -> usize {
        let State::Body(body) = &mut self.state else {
            return bytes.len();
        };
        match body {
            Body::Length(remaining) => {
                let take = (*remaining).min(bytes.len() as u64) as usize;
                *remaining -= take as u64;
                let done = *remaining == 0;
                self.keep(ts_ns, &bytes[..take]);
                if done {
                    self.finish_message();
                }
                take
            }
            Body::UntilClose => {
                self.keep(ts_ns, bytes);
                bytes.len()
            }
            Body::ChunkSize(line) => {
                let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                    line.extend_from_slice(bytes);
                    if line.len() > 1024 {
                        self.lose_framing();
                    }
                    return bytes.len();
                };
                line.extend_from_slice(&bytes[..nl]);
                let text = String::from_utf8_lossy(line);
                let hex = text.trim().split(';').next().unwrap_or("").trim();
                match u64::from_str_radix(hex, 16) {
                    Ok(0) => *body = Body::Trailers(Vec::new()),
                    Ok(n) => *body = Body::ChunkData(n),
                    Err(_) => self.lose_framing(),
                }
                nl + 1
            }
            Body::ChunkData(remaining) => {
                let take = (*remaining).min(bytes.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    *body = Body::ChunkDataEnd(0);
                }
                self.keep(ts_ns, &bytes[..take]);
                take
            }
            Body::ChunkDataEnd(seen) => {
                // The CRLF after a chunk's data.
                let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                    *seen += bytes.len() as u8;
                    return bytes.len();
                };
                *body = Body::ChunkSize(Vec::new());
                nl + 1
            }
            Body::Trailers(line) => {
                let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                    line.extend_from_slice(bytes);
                    return bytes.len();
                };
                line.extend_from_slice(&bytes[..nl]);
                let blank = line.iter().all(|b| *b == b'\r');
                line.clear();
                if blank {
                    self.current.end_ns = ts_ns;
                    self.finish_message();
                }
                nl + 1
            }
        }
    }

    fn lose_framing(&mut self) {
        self.parse_errors += 1;
        self.current.truncated = true;
        self.finish_message();
        self.state = State::Resync;
    }

    fn finish_message(&mut self) {
        let done = std::mem::take(&mut self.current);
        if self.role == Role::Response && !(100..200).contains(&done.status) {
            self.pending_requests.pop_front();
        }
        let switching = self.role == Role::Request && done.method == "CONNECT";
        self.messages.push(done);
        self.state = if switching { State::Done } else { State::Head };
    }
}

/// True when a message names h2c in its `Upgrade` header (a request offering it, or the `101`
/// accepting it).
pub fn is_h2c_upgrade(m: &Message) -> bool {
    m.header("upgrade")
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")))
}

fn find_start(role: Role, bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find(|&i| {
        (i == 0 || bytes[i - 1] == b'\n') && {
            let rest = &bytes[i..];
            match role {
                Role::Request => rest.contains(&b'\n') && request_line_start(rest),
                Role::Response => rest.starts_with(b"HTTP/1."),
            }
        }
    })
}

/// The body preview as the application sees it: gzip and deflate content codings undone (as
/// far as the captured bytes go, at most [`MAX_PREVIEW`] bytes out). Other codings, and bodies
/// that do not decode, are returned as they were.
pub fn decoded_preview(message: &mut Message) -> Vec<u8> {
    use std::io::Read as _;
    let coding = message
        .header("content-encoding")
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if coding.is_empty() || coding == "identity" {
        return std::mem::take(&mut message.body_preview);
    }
    let body = message.body_preview.as_slice();
    let mut out = Vec::new();
    let limit = MAX_PREVIEW as u64;
    let read = match coding.as_str() {
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => {
            // "deflate" is zlib-wrapped by the RFC, raw deflate by some servers: try both.
            let zlib = flate2::read::ZlibDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out);
            if zlib.is_err() && out.is_empty() {
                flate2::read::DeflateDecoder::new(body)
                    .take(limit)
                    .read_to_end(&mut out)
            } else {
                zlib
            }
        }
        _ => return body.to_vec(),
    };
    // A body cut by the capture decodes partly: keep what decoded.
    if read.is_err() && out.is_empty() {
        return body.to_vec();
    }
    out
}

/// Copies the fields of a head (`head`, the bytes `headers` were parsed from).
fn copy_headers(headers: &[httparse::Header<'_>], head: &[u8], m: &mut Message) {
    let bytes = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut out = crate::Headers::with_capacity(headers.len(), bytes);
    // Values are almost always ASCII: the whole head is validated at once (one call per
    // value was 2% of a dissection), and each value is then its slice of that text; a value
    // that is not UTF-8 gets a lossy copy.
    let text = std::str::from_utf8(head).ok();
    let base = head.as_ptr() as usize;
    for h in headers {
        let at = (h.value.as_ptr() as usize).wrapping_sub(base);
        match text.and_then(|t| t.get(at..at.saturating_add(h.value.len()))) {
            Some(value) => out.push(h.name, value),
            None => out.push(h.name, &String::from_utf8_lossy(h.value)),
        }
    }
    m.headers = out;
}

fn version(v: Option<u8>) -> &'static str {
    match v {
        Some(0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Most header fields a head may have; more is `TooManyHeaders`, a parse error. The parsers
/// get room for them uninitialised: 128 fields made ready for every attempt at a head (4 KiB
/// of stores, again for a head that is not complete yet) were 4% of a dissection.
const MAX_FIELDS: usize = 128;

fn parse_request(buf: &[u8], m: &mut Message) -> Result<Option<usize>, httparse::Error> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers)? {
        httparse::Status::Complete(n) => {
            m.method = req.method.unwrap_or("").to_owned();
            m.target = req.path.unwrap_or("").to_owned();
            m.version = version(req.version);
            copy_headers(req.headers, &buf[..n], m);
            Ok(Some(n))
        }
        httparse::Status::Partial => Ok(None),
    }
}

fn parse_response(buf: &[u8], m: &mut Message) -> Result<Option<usize>, httparse::Error> {
    let mut headers = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    )? {
        httparse::Status::Complete(n) => {
            m.status = resp.code.unwrap_or(0);
            m.version = version(resp.version);
            copy_headers(resp.headers, &buf[..n], m);
            Ok(Some(n))
        }
        httparse::Status::Partial => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decompression bomb in a body: 50 MB of zeros in about 50 KB of gzip. The preview
    /// decodes to at most MAX_PREVIEW bytes.
    #[test]
    fn a_gzip_bomb_decodes_to_a_bounded_preview() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..50 {
            gz.write_all(&[0u8; 1 << 20]).unwrap_or_default();
        }
        let body = gz.finish().unwrap_or_default();
        assert!(body.len() < MAX_PREVIEW, "{} bytes of gzip", body.len());
        let mut m = Message {
            headers: [("Content-Encoding", "gzip")].into_iter().collect(),
            body_preview: body,
            ..Message::default()
        };
        let out = decoded_preview(&mut m);
        assert_eq!(out.len(), MAX_PREVIEW);
        assert!(out.iter().all(|b| *b == 0));
    }

    /// A head of `fields` fields (`X-<n>: <n>`), for `role`.
    fn head_with_fields(role: Role, fields: usize) -> Vec<u8> {
        let mut head = match role {
            Role::Request => b"GET /many HTTP/1.1\r\n".to_vec(),
            Role::Response => b"HTTP/1.1 204 No Content\r\n".to_vec(),
        };
        for n in 0..fields {
            head.extend_from_slice(format!("X-{n}: {n}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    #[test]
    fn heads_keep_up_to_max_fields_and_more_is_a_parse_error() {
        for role in [Role::Request, Role::Response] {
            let mut p = Parser::new(role);
            let full = head_with_fields(role, MAX_FIELDS);
            // In two parts: the first attempt at the head is partial.
            let (first, rest) = full.split_at(full.len() / 2);
            p.data(1, first);
            p.data(2, rest);
            assert_eq!(p.messages.len(), 1, "{role:?}");
            let m = &p.messages[0];
            assert_eq!(m.headers.len(), MAX_FIELDS);
            assert_eq!(m.header("x-0"), Some("0"));
            let last = (MAX_FIELDS - 1).to_string();
            assert_eq!(m.header(&format!("x-{last}")), Some(last.as_str()));
            assert_eq!(p.parse_errors, 0);

            let mut p = Parser::new(role);
            p.data(3, &head_with_fields(role, MAX_FIELDS + 1));
            p.data(4, &head_with_fields(role, 2));
            assert_eq!(p.parse_errors, 1, "{role:?}: one field too many");
            assert_eq!(p.messages.len(), 1, "{role:?}: the next head parses");
            assert_eq!(p.messages[0].headers.len(), 2);
        }
    }

    #[test]
    fn pipelined_requests_split_anywhere() {
        let text = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.0\r\n\r\n";
        for split in 1..text.len() {
            let mut p = Parser::new(Role::Request);
            p.data(1, &text[..split]);
            p.data(2, &text[split..]);
            let got: Vec<_> = p
                .messages
                .iter()
                .map(|m| (m.method.as_str(), m.target.as_str(), m.body_size))
                .collect();
            assert_eq!(
                got,
                [("GET", "/a", 0), ("POST", "/b", 5), ("GET", "/c", 0)],
                "split at {split}"
            );
        }
    }

    #[test]
    fn chunked_with_trailers_then_keep_alive() {
        let text = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n6\r\n world\r\n0\r\nGrpc-Status: 0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        let mut p = Parser::new(Role::Response);
        for b in text.iter() {
            p.data(1, std::slice::from_ref(b));
        }
        assert_eq!(p.messages.len(), 2);
        assert_eq!(p.messages[0].body_preview, b"hello world");
        assert_eq!(p.messages[1].status, 204);
    }

    #[test]
    fn gap_in_known_body_keeps_framing_and_until_close() {
        let mut p = Parser::new(Role::Response);
        p.data(1, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
        p.gap(2, 8);
        p.data(3, b"HTTP/1.0 200 OK\r\n\r\nbody until close");
        p.close(4);
        assert_eq!(p.messages.len(), 2);
        assert_eq!(p.messages[0].body_size, 10);
        assert_eq!(p.messages[0].end_ns, 2);
        assert_eq!(p.messages[1].body_preview, b"body until close");
    }

    #[test]
    fn garbage_resyncs_and_head_responses_have_no_body() {
        let mut p = Parser::new(Role::Request);
        p.data(1, b"\x16\x03\x01garbage\nGET /x HTTP/1.1\r\n\r\n");
        assert_eq!(p.messages.len(), 1);
        assert_eq!(p.parse_errors, 1);
        let mut r = Parser::new(Role::Response);
        r.pending_requests.extend([true, false]);
        r.data(1, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            r.messages.iter().map(|m| m.status).collect::<Vec<_>>(),
            [200, 404]
        );
    }

    /// A head with a value that is not UTF-8 (and one with text that is not ASCII): that value
    /// is replaced where invalid, every other field is kept as sent, in one segment or split
    /// across several.
    #[test]
    fn header_values_that_are_not_utf8_are_replaced_alone() {
        // 0xE9 is Latin-1's é, not UTF-8.
        let mut text = b"GET / HTTP/1.1\r\nHost: a.example\r\nX-Bad: caf\xe9\r\n".to_vec();
        text.extend_from_slice("X-Name: Jürgen\r\nAccept: */*\r\n\r\n".as_bytes());
        for split in [text.len(), 20, 1] {
            let mut p = Parser::new(Role::Request);
            for chunk in text.chunks(split) {
                p.data(1, chunk);
            }
            assert_eq!(p.messages.len(), 1, "split {split}");
            let fields: Vec<(&str, &str)> = p.messages[0].headers.iter().collect();
            assert_eq!(
                fields,
                [
                    ("Host", "a.example"),
                    ("X-Bad", "caf\u{fffd}"),
                    ("X-Name", "Jürgen"),
                    ("Accept", "*/*"),
                ],
                "split {split}"
            );
        }
        let mut p = Parser::new(Role::Request);
        p.data(1, "GET / HTTP/1.1\r\nX-Name: Jürgen\r\n\r\n".as_bytes());
        assert_eq!(p.messages[0].headers.get("x-name"), Some("Jürgen"));
    }
}
