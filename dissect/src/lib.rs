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
mod dedup;
mod defrag;
pub mod dns;
pub mod engine;
pub mod error;
mod flow;
pub mod headers;
pub mod hpack;
pub mod http1;
pub mod http2;
mod huffman;
mod nat;
pub mod net;
pub mod output;
mod pairing;
pub mod reassembly;
pub mod recorded;
pub mod shard;
pub mod tcp_analysis;
pub mod tls;
mod udp_flows;

pub use call::{Call, Conn, Endpoint, Translated};
pub use engine::{Engine, Limits};
pub use error::DissectError;
pub use headers::Headers;
pub use nat::{NatViews, ViewChange};
pub use output::{Output, Stats, TakenRows};
pub use shard::{Router, ShardRange, Sharded};
pub use udp_flows::UdpDatagram;

/// Dissects a whole pcap/pcapng file held in memory (frames in file order), split by flow as
/// `remora dissect` does on any number of threads ([`shard`]): the same rows in the same order.
pub fn dissect_capture(file: &[u8]) -> Result<Output, DissectError> {
    let mut reader = capture::CaptureReader::new(file)?;
    let mut sharded = Sharded::default();
    let mut taken = TakenRows::new();
    let (mut calls, mut conns) = (Vec::new(), Vec::new());
    while let Some((info, data)) = reader.next_frame()? {
        if let Some(l3) = capture::l3_of(info.linktype, data) {
            let l2 = (data.len() - l3.len()) as u32;
            sharded.push(info.ts_ns, l3, info.orig_len.saturating_sub(l2));
            if sharded.frames().is_multiple_of(shard::EPOCH_FRAMES) {
                sharded.take_rows(&mut taken);
                taken.move_into(&mut calls, &mut conns);
                sharded.give_back(&mut taken);
            }
        }
    }
    let stats = sharded.finish_into(&mut taken);
    taken.move_into(&mut calls, &mut conns);
    let out = Output {
        calls,
        conns,
        stats,
    };
    Ok(out)
}

/// Feeds one captured frame to the engine (link header removed, wire length adjusted).
pub fn feed_frame(engine: &mut Engine, info: capture::FrameInfo, data: &[u8]) {
    if let Some(l3) = capture::l3_of(info.linktype, data) {
        let l2 = data.len() - l3.len();
        engine.push(info.ts_ns, l3, info.orig_len.saturating_sub(l2 as u32));
    }
}
