//! The `conns` table: one row per TCP connection, from the engine's [`Conn`].

use remora_dissect::Conn;

use crate::{
    Table,
    column::{Column, Encoding, Get},
};

/// One row of `conns`: a connection and the node whose recording it came from.
pub struct ConnRow<'a> {
    /// The connection.
    pub conn: &'a Conn,
    /// The node.
    pub node: &'a str,
}

use Encoding::{Default as Plain, Unique};
use Get::{Int64, Ip, OptStr, Str, Timestamp, UInt16, UInt32, UInt64};

/// The columns of `conns`, in file order.
#[rustfmt::skip]
pub fn columns<'a>() -> Vec<Column<ConnRow<'a>>> {
    vec![
        Column::new("conn_id", "conn_id", UInt64(|r| r.conn.conn_id), Unique, "all", "Connection number within the dissection; `calls.conn_id` refers to it.", "conn_id == 12"),
        Column::new("node", "node", Str(|r| r.node), Plain, "all", "Node whose recording the connection came from.", r#"node == "worker-1""#),
        Column::new("src.ip", "src_ip", Ip(|r| r.conn.src.ip), Plain, "all", "Client address (sender of the SYN, else of the first request).", r#"src.ip == "198.18.0.1""#),
        Column::new("src.port", "src_port", UInt16(|r| r.conn.src.port), Plain, "all", "Client port.", "src.port >= 32768"),
        Column::new("dst.ip", "dst_ip", Ip(|r| r.conn.dst.ip), Plain, "all", "Server address.", r#"dst.ip == "198.18.0.2""#),
        Column::new("dst.port", "dst_port", UInt16(|r| r.conn.dst.port), Plain, "all", "Server port.", "dst.port == 443"),
        Column::new("first_ts", "first_ts", Timestamp(|r| r.conn.first_ns), Unique, "all", "First packet, UTC.", r#"first_ts >= timestamp("2026-11-24T10:00:00Z")"#),
        Column::new("last_ts", "last_ts", Timestamp(|r| r.conn.last_ns), Unique, "all", "Last packet, UTC.", r#"last_ts - first_ts > duration("30s")"#),
        Column::new("handshake_us", "handshake_us", Int64(|r| r.conn.handshake_us), Plain, "all", "SYN → SYN-ACK → ACK, µs; 0 when the handshake was not seen.", "handshake_us > 100000"),
        Column::new("packets_c2s", "packets_c2s", UInt64(|r| r.conn.packets[0]), Plain, "all", "Packets client → server.", "packets_c2s > 1000"),
        Column::new("packets_s2c", "packets_s2c", UInt64(|r| r.conn.packets[1]), Plain, "all", "Packets server → client.", "packets_s2c == 0"),
        Column::new("bytes_c2s", "bytes_c2s", UInt64(|r| r.conn.bytes[0]), Plain, "all", "Payload bytes client → server.", "bytes_c2s > 1048576"),
        Column::new("bytes_s2c", "bytes_s2c", UInt64(|r| r.conn.bytes[1]), Plain, "all", "Payload bytes server → client.", "bytes_s2c > 1048576"),
        Column::new("retransmissions_c2s", "retransmissions_c2s", UInt64(|r| r.conn.retransmissions[0]), Plain, "all", "Retransmitted segments client → server.", "retransmissions_c2s > 0"),
        Column::new("retransmissions_s2c", "retransmissions_s2c", UInt64(|r| r.conn.retransmissions[1]), Plain, "all", "Retransmitted segments server → client.", "retransmissions_s2c > 0"),
        Column::new("fins", "fins", UInt32(|r| r.conn.fins), Plain, "all", "FIN segments seen.", "fins == 0"),
        Column::new("resets", "resets", UInt32(|r| r.conn.resets), Plain, "all", "RST segments seen.", "resets > 0"),
        Column::new("rst_by", "rst_by", OptStr(|r| r.conn.rst_by), Plain, "all", "Who sent the first RST: `client` or `server`; empty when none.", r#"rst_by == "server""#),
        Column::new("l7", "l7", Str(|r| r.conn.l7), Plain, "all", "Application protocol detected: `HTTP`, `HTTP/2`, `DNS`, `TLS`, or empty.", r#"l7 == "TLS""#),
    ]
}

/// The record batch of `conns` from `node`'s recording.
pub fn batch(
    node: &str,
    conns: &[Conn],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let rows: Vec<ConnRow<'_>> = conns.iter().map(|conn| ConnRow { conn, node }).collect();
    crate::batch::record_batch(&columns(), Table::Conns.schema(), &rows)
}
