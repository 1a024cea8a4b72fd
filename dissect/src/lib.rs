//! Remora's dissection engine: packets in, API calls and connections out.
//!
//! Pure: no I/O. Callers feed packets in time order ([`Engine::push`]) and take the rows at the
//! end ([`Engine::finish`]). [`capture`] turns pcap/pcapng bytes into packets for tests and for
//! `remora dissect`; the recorder's slices are fed by the analyzer.
//!
//! Pipeline: IP ([`net`]) → TCP reassembly per direction with explicit gaps ([`reassembly`]) →
//! protocol detection by content → HTTP/1 ([`http1`]), DNS ([`dns`]) → pairing → rows ([`call`]).

pub mod call;
pub mod capture;
pub mod dns;
pub mod engine;
pub mod error;
pub mod http1;
pub mod http2;
pub mod net;
pub mod reassembly;
pub mod tls;

pub use call::{Call, Conn, Endpoint};
pub use engine::{Engine, Output, Stats};
pub use error::DissectError;

/// Dissects a whole pcap/pcapng file held in memory.
pub fn dissect_capture(file: &[u8]) -> Result<Output, DissectError> {
    let mut frames = capture::frames(file)?;
    // Captures are nearly always in time order; a stable sort fixes the rest cheaply.
    frames.sort_by_key(|f| f.ts_ns);
    let mut engine = Engine::new();
    for frame in frames {
        if let Some(l3) = capture::l3_of(frame.linktype, frame.data) {
            let l2 = frame.data.len() - l3.len();
            engine.push(frame.ts_ns, l3, frame.orig_len.saturating_sub(l2 as u32));
        }
    }
    Ok(engine.finish())
}
