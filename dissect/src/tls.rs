//! TLS ClientHello and ServerHello (`tlsx`): versions, SNI, ALPN, cipher. Everything after the
//! hellos is encrypted and ignored.
//!
//! A hello may span several records and TCP segments; records are collected per direction until
//! the handshake message is complete (bounded at 64 KiB). Hand-written and bounded like the DNS
//! parser: truncated or malformed hellos are `None`, never a panic.

/// What the hellos of one connection said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// ClientHello legacy version (0x0303 for TLS 1.2 and 1.3).
    pub client_version: u16,
    /// ClientHello supported_versions extension (GREASE values included, as sent).
    pub supported_versions: Vec<u16>,
    /// Server name indication.
    pub sni: String,
    /// ALPN protocols the client offered.
    pub alpn: Vec<String>,
    /// ServerHello legacy version.
    pub server_version: Option<u16>,
    /// ServerHello supported_versions (the negotiated version in TLS 1.3).
    pub server_supported_version: Option<u16>,
    /// ALPN protocol the server chose.
    pub server_alpn: Option<String>,
    /// Cipher suite the server chose.
    pub cipher: Option<u16>,
}

impl TlsInfo {
    /// The negotiated version as text (`TLS 1.3`, ...), or the client's when no ServerHello.
    pub fn version_name(&self) -> &'static str {
        let v = self
            .server_supported_version
            .or(self.server_version)
            .unwrap_or(self.client_version);
        match v {
            0x0300 => "SSL 3.0",
            0x0301 => "TLS 1.0",
            0x0302 => "TLS 1.1",
            0x0303 => "TLS 1.2",
            0x0304 => "TLS 1.3",
            _ => "unknown",
        }
    }
}

/// A parsed hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// From the client.
    Client(TlsInfo),
    /// From the server: version, supported version, ALPN, cipher.
    Server {
        /// Legacy version.
        version: u16,
        /// supported_versions extension.
        supported: Option<u16>,
        /// Chosen ALPN.
        alpn: Option<String>,
        /// Chosen cipher.
        cipher: u16,
    },
}

/// True when `bytes` start with a TLS handshake record (content type 22, version 3.x).
pub fn is_handshake_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x16, 0x03, 0..=4, ..])
}

const MAX_HANDSHAKE: usize = 64 << 10;

/// Collects the handshake records of one direction until a hello is complete.
#[derive(Default)]
pub struct Collector {
    records: Vec<u8>,
    handshake: Vec<u8>,
    done: bool,
}

impl Collector {
    /// Feeds stream bytes; returns the hello once it is complete (then ignores the rest).
    pub fn data(&mut self, bytes: &[u8]) -> Option<Hello> {
        if self.done {
            return None;
        }
        self.records.extend_from_slice(bytes);
        loop {
            let rec = self.records.get(..5)?;
            if rec[0] != 0x16 {
                self.done = true;
                return None;
            }
            let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
            let fragment = self.records.get(5..5 + len)?.to_vec();
            self.records.drain(..5 + len);
            self.handshake.extend_from_slice(&fragment);
            if self.handshake.len() > MAX_HANDSHAKE {
                self.done = true;
                return None;
            }
            if let Some(h) = self.handshake.get(..4) {
                let body_len =
                    (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
                if let Some(body) = self.handshake.get(4..4 + body_len) {
                    self.done = true;
                    return match h[0] {
                        1 => client_hello(body).map(Hello::Client),
                        2 => server_hello(body),
                        _ => None,
                    };
                }
            }
        }
    }

    /// Bytes held until the hello is complete.
    pub fn buffered(&self) -> usize {
        self.records.len() + self.handshake.len()
    }

    /// True once a hello was read, or the stream turned out not to carry one.
    pub fn is_done(&self) -> bool {
        self.done
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at + n)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let s = self.take(2)?;
        Some(u16::from_be_bytes([s[0], s[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// Extensions as (type, data).
fn extensions(c: &mut Cursor<'_>) -> Vec<(u16, Vec<u8>)> {
    let Some(all) = c.vec16() else {
        return Vec::new(); // no extensions (SSL 3.0, old TLS)
    };
    let mut e = Cursor { b: all, at: 0 };
    let mut out = Vec::new();
    while let (Some(t), Some(d)) = (e.u16(), e.vec16()) {
        out.push((t, d.to_vec()));
    }
    out
}

fn alpn_list(data: &[u8]) -> Vec<String> {
    let mut c = Cursor { b: data, at: 0 };
    let Some(list) = c.vec16() else {
        return Vec::new();
    };
    let mut l = Cursor { b: list, at: 0 };
    let mut out = Vec::new();
    while let Some(p) = l.vec8() {
        out.push(String::from_utf8_lossy(p).into_owned());
    }
    out
}

fn client_hello(body: &[u8]) -> Option<TlsInfo> {
    let mut c = Cursor { b: body, at: 0 };
    let mut info = TlsInfo {
        client_version: c.u16()?,
        ..TlsInfo::default()
    };
    c.take(32)?;
    c.vec8()?;
    c.vec16()?;
    c.vec8()?;
    for (t, d) in extensions(&mut c) {
        match t {
            0 => {
                let mut s = Cursor { b: &d, at: 0 };
                if let Some(list) = s.vec16() {
                    let mut l = Cursor { b: list, at: 0 };
                    while let (Some(kind), Some(name)) = (l.u8(), l.vec16()) {
                        if kind == 0 {
                            info.sni = String::from_utf8_lossy(name).into_owned();
                            break;
                        }
                    }
                }
            }
            16 => info.alpn = alpn_list(&d),
            43 => {
                let mut s = Cursor { b: &d, at: 0 };
                if let Some(list) = s.vec8() {
                    info.supported_versions = list
                        .chunks_exact(2)
                        .map(|v| u16::from_be_bytes([v[0], v[1]]))
                        .collect();
                }
            }
            _ => {}
        }
    }
    Some(info)
}

fn server_hello(body: &[u8]) -> Option<Hello> {
    let mut c = Cursor { b: body, at: 0 };
    let version = c.u16()?;
    c.take(32)?;
    c.vec8()?;
    let cipher = c.u16()?;
    c.u8()?;
    let (mut supported, mut alpn) = (None, None);
    for (t, d) in extensions(&mut c) {
        match t {
            16 => alpn = alpn_list(&d).into_iter().next(),
            43 if d.len() == 2 => supported = Some(u16::from_be_bytes([d[0], d[1]])),
            _ => {}
        }
    }
    Some(Hello::Server {
        version,
        supported,
        alpn,
        cipher,
    })
}

/// A connection that began with a TLS handshake: the hellos seen so far.
pub(crate) struct TlsHandshake {
    pub(crate) collectors: [Collector; 2],
    /// Direction and time of the ClientHello, and what it said.
    pub(crate) client: Option<(usize, i64, TlsInfo)>,
    /// Time and content of the ServerHello.
    pub(crate) server: Option<(i64, Hello)>,
    pub(crate) emitted: bool,
    /// The connection's plaintext was read too: its calls carry the hellos, and the handshake
    /// is not a call of its own.
    pub(crate) decrypted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(handshake: &[u8]) -> Vec<u8> {
        let mut r = vec![0x16, 0x03, 0x01];
        r.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        r.extend_from_slice(handshake);
        r
    }

    #[test]
    fn client_hello_split_over_records_and_segments() {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        let sni = [0x00, 0x00, 0x00, 0x10, 0x00, 0x0e, 0x00, 0x00, 0x0b]
            .into_iter()
            .chain(*b"example.com")
            .collect::<Vec<u8>>();
        let alpn = [0x00, 0x10, 0x00, 0x0e, 0x00, 0x0c, 0x02]
            .into_iter()
            .chain(*b"h2")
            .chain([0x08])
            .chain(*b"http/1.1")
            .collect::<Vec<u8>>();
        let exts = [sni, alpn].concat();
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1, 0, 0, body.len() as u8];
        hs.extend_from_slice(&body);
        // Two records, delivered a byte at a time.
        let stream = [record(&hs[..20]), record(&hs[20..])].concat();
        let mut c = Collector::default();
        let mut got = None;
        for b in &stream {
            if let Some(h) = c.data(std::slice::from_ref(b)) {
                got = Some(h);
            }
        }
        let Some(Hello::Client(info)) = got else {
            panic!("no hello: {got:?}")
        };
        assert_eq!(info.sni, "example.com");
        assert_eq!(info.alpn, ["h2", "http/1.1"]);
        assert_eq!(info.client_version, 0x0303);
        // Truncations never panic.
        for cut in 0..stream.len() {
            let _ = Collector::default().data(&stream[..cut]);
            let _ = client_hello(&body[..cut.min(body.len())]);
        }
    }
}
