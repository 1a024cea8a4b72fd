//! The `conns` table: one row per TCP connection, from the engine's [`Conn`].

use remora_dissect::Conn;

use crate::{
    Table,
    column::{Column, Encoding, Get},
    peer::{Peer, UNKNOWN},
};

/// One row of `conns`: a connection, the node whose recording it came from, and who each side
/// was when it opened.
pub struct ConnRow<'a> {
    /// The connection.
    pub conn: &'a Conn,
    /// The node.
    pub node: &'a str,
    /// Who the client was.
    pub src: &'a Peer,
    /// Who the server was.
    pub dst: &'a Peer,
}

use Encoding::{Default as Plain, Dictionary as Dict, Unique};
use Get::{Int64, Ip, OptStr, OptTimestamp, Str, Timestamp, UInt16, UInt32, UInt64};

/// The columns of `conns`, in file order.
#[rustfmt::skip]
pub fn columns<'a>() -> Vec<Column<ConnRow<'a>>> {
    vec![
        Column::new("conn_id", "conn_id", UInt64(|r| r.conn.conn_id), Unique, "all", "Connection id within the dissection: the number of its first packet's frame (in a capture file, as tshark numbers frames); `calls.conn_id` refers to it.", "conn_id == 12"),
        Column::new("node", "node", Str(|r| r.node), Plain, "all", "Node whose recording the connection came from.", r#"node == "worker-1""#),
        Column::new("src.ip", "src_ip", Ip(|r| r.conn.src.ip), Plain, "all", "Client address (sender of the SYN, else of the first request).", r#"src.ip == "198.18.0.1""#),
        Column::new("src.port", "src_port", UInt16(|r| r.conn.src.port), Plain, "all", "Client port.", "src.port >= 32768"),
        Column::new("dst.ip", "dst_ip", Ip(|r| r.conn.dst.ip), Plain, "all", "Server address.", r#"dst.ip == "198.18.0.2""#),
        Column::new("dst.port", "dst_port", UInt16(|r| r.conn.dst.port), Plain, "all", "Server port.", "dst.port == 443"),
        Column::new("src.name", "src_name", Str(|r| r.src.name()), Dict, "all", "Client's best name: pod, else service, else process; empty when unknown.", r#"src.name == "frontend""#),
        Column::new("src.namespace", "src_namespace", Str(|r| r.src.namespace()), Dict, "all", "Client namespace: pod's, else service's.", r#"src.namespace == "shop""#),
        Column::new("src.pod.name", "src_pod_name", Str(|r| &r.src.pod_name), Dict, "all", "Client pod.", r#"src.pod.name.startsWith("cart-")"#),
        Column::new("src.service.name", "src_service_name", Str(|r| &r.src.service_name), Dict, "all", "Client service.", r#"src.service.name == "cart""#),
        Column::new("src.node.name", "src_node_name", Str(|r| &r.src.node), Dict, "all", "Node of the client pod, or the node whose own address it is.", r#"src.node.name == "node-a""#),
        Column::new("dst.name", "dst_name", Str(|r| r.dst.name()), Dict, "all", "Server's best name: pod, else service, else process.", r#"dst.name == "postgres""#),
        Column::new("dst.namespace", "dst_namespace", Str(|r| r.dst.namespace()), Dict, "all", "Server namespace: pod's, else service's.", r#"dst.namespace == "db""#),
        Column::new("dst.pod.name", "dst_pod_name", Str(|r| &r.dst.pod_name), Dict, "all", "Server pod.", r#"dst.pod.name == "postgres-0""#),
        Column::new("dst.service.name", "dst_service_name", Str(|r| &r.dst.service_name), Dict, "all", "Server service.", r#"dst.service.name == "postgres""#),
        Column::new("dst.node.name", "dst_node_name", Str(|r| &r.dst.node), Dict, "all", "Node of the server pod, or the node whose own address it is.", r#"dst.node.name == "node-c""#),
        Column::new("src.process", "src_process", Str(|r| &r.src.process), Dict, "all", "Client process name (comm) when the socket hooks saw it.", r#"src.process == "curl""#),
        Column::new("src.pid", "src_pid", UInt32(|r| r.src.pid), Plain, "all", "Client process id when known.", "src.pid == 4242"),
        Column::new("dst.process", "dst_process", Str(|r| &r.dst.process), Dict, "all", "Server process name (comm) when known.", r#"dst.process == "postgres""#),
        Column::new("dst.pid", "dst_pid", UInt32(|r| r.dst.pid), Plain, "all", "Server process id when known.", "dst.pid == 1"),
        Column::new("first_ts", "first_ts", Timestamp(|r| r.conn.first_ns), Unique, "all", "First packet, UTC.", r#"first_ts >= timestamp("2026-11-24T10:00:00Z")"#),
        Column::new("last_ts", "last_ts", Timestamp(|r| r.conn.last_ns), Unique, "all", "Last packet, UTC.", r#"last_ts - first_ts > duration("30s")"#),
        Column::new("handshake_us", "handshake_us", Int64(|r| r.conn.handshake_us), Plain, "all", "SYN → SYN-ACK → ACK, µs; 0 when the handshake was not seen.", "handshake_us > 100000"),
        Column::new("packets_c2s", "packets_c2s", UInt64(|r| r.conn.packets[0]), Plain, "all", "Packets client → server.", "packets_c2s > 1000"),
        Column::new("packets_s2c", "packets_s2c", UInt64(|r| r.conn.packets[1]), Plain, "all", "Packets server → client.", "packets_s2c == 0"),
        Column::new("bytes_c2s", "bytes_c2s", UInt64(|r| r.conn.bytes[0]), Plain, "all", "Payload bytes client → server.", "bytes_c2s > 1048576"),
        Column::new("bytes_s2c", "bytes_s2c", UInt64(|r| r.conn.bytes[1]), Plain, "all", "Payload bytes server → client.", "bytes_s2c > 1048576"),
        Column::new("retransmissions_c2s", "retransmissions_c2s", UInt64(|r| r.conn.retransmissions[0]), Plain, "all", "Retransmitted segments client → server, fast and spurious ones included (tshark's `tcp.analysis.retransmission`).", "retransmissions_c2s > 0"),
        Column::new("retransmissions_s2c", "retransmissions_s2c", UInt64(|r| r.conn.retransmissions[1]), Plain, "all", "Retransmitted segments server → client.", "retransmissions_s2c > 0"),
        Column::new("out_of_order_c2s", "out_of_order_c2s", UInt64(|r| r.conn.out_of_order[0]), Plain, "all", "Segments client → server that went back in sequence soon after a later one (`tcp.analysis.out_of_order`).", "out_of_order_c2s > 0"),
        Column::new("out_of_order_s2c", "out_of_order_s2c", UInt64(|r| r.conn.out_of_order[1]), Plain, "all", "Out-of-order segments server → client.", "out_of_order_s2c > 0"),
        Column::new("lost_segments_c2s", "lost_segments_c2s", UInt64(|r| r.conn.lost_segments[0]), Plain, "all", "Segments client → server after a hole in the sequence (`tcp.analysis.lost_segment`: lost before the capture point, or not captured).", "lost_segments_c2s > 0"),
        Column::new("lost_segments_s2c", "lost_segments_s2c", UInt64(|r| r.conn.lost_segments[1]), Plain, "all", "Segments server → client after a hole in the sequence.", "lost_segments_s2c > 0"),
        Column::new("zero_windows_c2s", "zero_windows_c2s", UInt64(|r| r.conn.zero_windows[0]), Plain, "all", "Segments client → server advertising a zero receive window: the client could not keep up (`tcp.analysis.zero_window`).", "zero_windows_c2s > 0"),
        Column::new("zero_windows_s2c", "zero_windows_s2c", UInt64(|r| r.conn.zero_windows[1]), Plain, "all", "Segments server → client advertising a zero receive window: the server could not keep up.", "zero_windows_s2c > 0"),
        Column::new("dup_acks_c2s", "dup_acks_c2s", UInt64(|r| r.conn.dup_acks[0]), Plain, "all", "Duplicate ACKs client → server (`tcp.analysis.duplicate_ack`).", "dup_acks_c2s > 2"),
        Column::new("dup_acks_s2c", "dup_acks_s2c", UInt64(|r| r.conn.dup_acks[1]), Plain, "all", "Duplicate ACKs server → client.", "dup_acks_s2c > 2"),
        Column::new("data_rtt_us", "data_rtt_us", Int64(|r| r.conn.data_rtt_us), Plain, "all", "Mean time from a data segment to the ACK that covers it, µs (tshark's `tcp.analysis.ack_rtt`); 0 when no ACK matched a segment exactly.", "data_rtt_us > 50000"),
        Column::new("fins", "fins", UInt32(|r| r.conn.fins), Plain, "all", "FIN segments seen.", "fins == 0"),
        Column::new("resets", "resets", UInt32(|r| r.conn.resets), Plain, "all", "RST segments seen.", "resets > 0"),
        Column::new("rst_by", "rst_by", OptStr(|r| r.conn.rst_by), Plain, "all", "Who sent the first RST: `client` or `server`; empty when none.", r#"rst_by == "server""#),
        Column::new("rst_ts", "rst_ts", OptTimestamp(|r| r.conn.rst_ns), Plain, "all", "When the first RST was seen, UTC; empty when none.", r#"rst_ts > timestamp("2026-11-24T10:00:00Z")"#),
        Column::new("close", "close", Str(|r| r.conn.close), Plain, "all", "How it ended: `fin` (both sides), `half_closed` (one FIN), `rst`, `timeout` (silent past the 120 s idle timeout), `open` (still going when the capture ended), `evicted` (finished early by the engine's memory limits).", r#"close == "rst""#),
        Column::new("l7", "l7", Str(|r| r.conn.l7), Plain, "all", "Application protocol detected: `HTTP`, `HTTP/2`, `DNS`, `TLS`, or empty.", r#"l7 == "TLS""#),
    ]
}

/// The record batch of `conns` from `node`'s recording, without attribution.
pub fn batch(
    node: &str,
    conns: &[Conn],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    attributed(node, conns, &[])
}

/// The record batch of `conns` from `node`'s recording, each side attributed: `peers[i]` names
/// the client and server of the `i`-th of `conns` (missing entries: unknown).
pub fn attributed<'c, 'p>(
    node: &str,
    conns: impl IntoIterator<Item = &'c Conn>,
    peers: &[(Option<&'p Peer>, Option<&'p Peer>)],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let rows: Vec<ConnRow<'_>> = conns
        .into_iter()
        .zip(peers.iter().copied().chain(std::iter::repeat((None, None))))
        .map(|(conn, (src, dst))| ConnRow {
            conn,
            node,
            src: src.unwrap_or(&UNKNOWN),
            dst: dst.unwrap_or(&UNKNOWN),
        })
        .collect();
    crate::batch::record_batch(&columns(), Table::Conns.write_schema(), &rows)
}
