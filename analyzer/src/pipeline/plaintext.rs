//! TLS plaintext from the agents' `tls` slices, fed to the engines in time order with the
//! packets (`Engine::push_plaintext`, through the shard of the chunk's connection).
//!
//! A chunk names its connection by its 4-tuple when the agent saw the socket (its own end
//! `src`, the peer `dst`); otherwise by its socket's id joined through the `sockets` slices;
//! failing both (a connection older than the agent that did no I/O since), by the process and
//! TLS connection: the local address `100::<pid>:<conn>` (the IPv6 discard prefix, RFC 6666),
//! so its calls still appear, under an address that cannot be mistaken for a real one.
//!
//! The chunks of a window are held in memory (they are a small part of a snapshot); a chunk cut
//! by the agent (a call longer than its 4 × 16 KiB) is followed by a gap of the missing length.

use std::{
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
};

use arrow::array::{
    Array, AsArray, RecordBatch,
    types::{TimestampNanosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type},
};
use remora_dissect::{Endpoint, shard::Plaintext as ShardPlaintext};

/// The kind directory of TLS slices, next to `packets/` (the agent's name for it).
pub use remora_agent::tls::slices::TLS_KIND as TLS_DIR;

/// One chunk of plaintext.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// When a read returned, or a write started, UTC ns.
    pub ts_ns: i64,
    /// The process's end.
    pub local: Endpoint,
    /// The other end.
    pub peer: Endpoint,
    /// Written by the process (else read).
    pub outbound: bool,
    /// The bytes.
    pub data: Vec<u8>,
    /// Bytes of the call missing after these (the agent cut a long call).
    pub missing_after: u64,
}

/// The chunks of some nodes, in time order, consumed as packets pass their time.
#[derive(Debug, Default)]
pub struct Plaintext {
    chunks: Vec<Chunk>,
    next: usize,
    /// Chunks without any address (named by process).
    pub unattributed: u64,
}

fn opt_str(a: &arrow::array::StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn endpoint(ip: Option<&str>, port: Option<u16>) -> Option<Endpoint> {
    let ip: IpAddr = ip?.parse().ok()?;
    Some(Endpoint { ip, port: port? })
}

/// The stand-in address of a TLS connection whose socket is unknown.
fn by_process(pid: u32, conn: u64) -> (Endpoint, Endpoint) {
    let mut octets = [0u8; 16];
    octets[0] = 0x01;
    octets[8..12].copy_from_slice(&pid.to_be_bytes());
    octets[12..16].copy_from_slice(&(conn as u32).to_be_bytes());
    let local = Endpoint {
        ip: IpAddr::V6(Ipv6Addr::from(octets)),
        port: 0,
    };
    (local, Endpoint { port: 1, ..local })
}

impl Plaintext {
    /// The `tls` slices of `nodes` (`(node, packets dir)`: `tls/` is its sibling); `sockets`
    /// names the socket of a chunk that lacks its addresses.
    pub fn load(
        nodes: &[(String, PathBuf)],
        sockets: Option<&super::processes::Processes>,
    ) -> Self {
        let mut out = Self::default();
        for path in super::processes::kind_files(nodes, TLS_DIR) {
            out.read_file(&path, sockets);
        }
        // Stable: the chunks of one call keep their order.
        out.chunks.sort_by_key(|c| c.ts_ns);
        out
    }

    fn read_file(&mut self, path: &Path, sockets: Option<&super::processes::Processes>) {
        super::processes::each_batch(path, "tls", |batch| self.add(batch, sockets));
    }

    fn add(
        &mut self,
        batch: &RecordBatch,
        sockets: Option<&super::processes::Processes>,
    ) -> Option<()> {
        let col = |name: &str| batch.column_by_name(name);
        let ts = col("ts")?.as_primitive_opt::<TimestampNanosecondType>()?;
        let pid = col("pid")?.as_primitive_opt::<UInt32Type>()?;
        let direction = col("direction")?.as_primitive_opt::<UInt8Type>()?;
        let conn = col("conn_id")?.as_primitive_opt::<UInt64Type>()?;
        let socket = col("socket_id")?.as_primitive_opt::<UInt64Type>()?;
        let src_ip = col("src_ip")?.as_string_opt::<i32>()?;
        let dst_ip = col("dst_ip")?.as_string_opt::<i32>()?;
        let src_port = col("src_port")?.as_primitive_opt::<UInt16Type>()?;
        let dst_port = col("dst_port")?.as_primitive_opt::<UInt16Type>()?;
        let offset = col("chunk_offset")?.as_primitive_opt::<UInt32Type>()?;
        let call_len = col("call_len")?.as_primitive_opt::<UInt32Type>()?;
        let data = col("data")?.as_binary_opt::<i32>()?;
        for i in 0..batch.num_rows() {
            let port = |a: &arrow::array::UInt16Array| (!a.is_null(i)).then(|| a.value(i));
            let ends = endpoint(opt_str(src_ip, i), port(src_port))
                .zip(endpoint(opt_str(dst_ip, i), port(dst_port)))
                .or_else(|| {
                    let id = (!socket.is_null(i)).then(|| socket.value(i))?;
                    sockets?.ends_of_socket(id, ts.value(i))
                });
            let (local, peer) = ends.unwrap_or_else(|| {
                self.unattributed += 1;
                by_process(pid.value(i), conn.value(i))
            });
            let bytes = data.value(i);
            let end = u64::from(offset.value(i)) + bytes.len() as u64;
            self.chunks.push(Chunk {
                ts_ns: ts.value(i),
                local,
                peer,
                outbound: direction.value(i) == 1,
                data: bytes.to_vec(),
                missing_after: u64::from(call_len.value(i)).saturating_sub(end),
            });
        }
        // A call's last chunk carries the gap; earlier chunks of a split call do not.
        Some(())
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Feeds every chunk up to `ts_ns` (all when `None`) to `feed`, with its time; it stops
    /// at the first error, which it returns.
    pub fn feed_until<E>(
        &mut self,
        ts_ns: Option<i64>,
        mut feed: impl FnMut(i64, ShardPlaintext<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        while let Some(c) = self.chunks.get(self.next) {
            if ts_ns.is_some_and(|t| c.ts_ns > t) {
                return Ok(());
            }
            let missing_after = if c.missing_after > 0 && self.is_last_of_call(self.next) {
                c.missing_after
            } else {
                0
            };
            self.next += 1;
            feed(
                c.ts_ns,
                ShardPlaintext {
                    local: c.local,
                    peer: c.peer,
                    outbound: c.outbound,
                    bytes: &c.data,
                    missing_after,
                },
            )?;
        }
        Ok(())
    }

    /// Whether chunk `i` is the last recorded chunk of its call.
    fn is_last_of_call(&self, i: usize) -> bool {
        let c = &self.chunks[i];
        self.chunks
            .get(i + 1)
            .is_none_or(|n| !(n.ts_ns == c.ts_ns && n.local == c.local && n.outbound == c.outbound))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_socket_gets_a_discard_address_per_connection() {
        let (a, b) = by_process(4242, 7);
        assert_eq!(a.ip.to_string(), "100::1092:0:7");
        assert_ne!(a, b);
        assert_ne!(by_process(4242, 8).0, a);
    }
}
