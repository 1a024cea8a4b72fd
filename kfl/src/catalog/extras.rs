//! The fields KFL adds to the stored columns (which `remora-tables` defines): protocol flags and
//! other rules over columns, legacy spellings, and the aliases. One line per field so that the
//! list reads as a table.

use super::field::{Alias, Field, FieldType, Source};
use FieldType::{Int, Timestamp};

const fn col(
    name: &'static str,
    column: &'static str,
    ty: FieldType,
    protocols: &'static str,
    description: &'static str,
    example: &'static str,
) -> Field {
    Field {
        name,
        ty,
        source: Source::Column(column),
        protocols,
        description,
        example,
    }
}

const fn flag(
    name: &'static str,
    source: Source,
    description: &'static str,
    example: &'static str,
) -> Field {
    Field {
        name,
        ty: FieldType::Bool,
        source,
        protocols: "all",
        description,
        example,
    }
}

/// The fields of `calls` beyond its stored columns, in the order docs list them.
#[rustfmt::skip]
pub static CALL_EXTRAS: &[Field] = &[
    flag("http", Source::Protocols(&["HTTP", "HTTP/2", "gRPC"]), "HTTP/1.x, HTTP/2 and gRPC calls.", "http && status_code >= 500"),
    flag("http2", Source::Protocols(&["HTTP/2", "gRPC"]), "HTTP/2 calls, gRPC included.", "http2 && method == \"POST\""),
    flag("grpc", Source::Protocols(&["gRPC"]), "gRPC calls.", "grpc && grpc_status != 0"),
    flag("dns", Source::Protocols(&["DNS"]), "DNS queries and answers.", "dns && status_code != 0"),
    flag("tlsx", Source::Protocols(&["TLS"]), "TLS handshakes (ClientHello/ServerHello).", "tlsx && tlsx_version == \"TLS 1.0\""),
    flag("tls", Source::Equals("capture_source", "ebpf_tls"), "Calls read from TLS plaintext (uprobes).", "tls && http"),
    flag("tcp", Source::Equals("transport", "tcp"), "Calls carried over TCP.", "dns && tcp"),
    flag("udp", Source::Equals("transport", "udp"), "Calls carried over UDP.", "dns && udp"),
    flag("dns_request", Source::DnsAnd("has_request"), "DNS call whose query was seen.", "dns_request && !dns_response"),
    flag("dns_response", Source::DnsAnd("has_response"), "DNS call whose answer was seen.", "dns && dns_response && status_code != 0"),
    flag("error", Source::NotEmpty("error_type"), "Legacy: the call has an error_type.", "http && error"),
    flag("redis", Source::Protocols(&["Redis"]), "Redis commands (when that dissector exists).", "redis"),
    flag("kafka", Source::Protocols(&["Kafka"]), "Kafka requests (when that dissector exists).", "kafka"),
    flag("amqp", Source::Protocols(&["AMQP"]), "AMQP methods (when that dissector exists).", "amqp"),
    flag("postgresql", Source::Protocols(&["PostgreSQL"]), "PostgreSQL messages (when that dissector exists).", "postgresql"),
    flag("mysql", Source::Protocols(&["MySQL"]), "MySQL commands (when that dissector exists).", "mysql"),
    flag("mongodb", Source::Protocols(&["MongoDB"]), "MongoDB commands (when that dissector exists).", "mongodb"),
    flag("ws", Source::Protocols(&["WebSocket"]), "WebSocket messages (when that dissector exists).", "ws"),
    flag("ldap", Source::Protocols(&["LDAP"]), "LDAP operations (when that dissector exists).", "ldap"),
    Field {
        name: "elapsedTime",
        ty: Int,
        source: Source::Millis("elapsed_time"),
        protocols: "all",
        description: "Legacy: latency in milliseconds (`elapsed_time / 1000`).",
        example: "elapsedTime > 1000",
    },
];

/// The fields of `conns` beyond its stored columns.
#[rustfmt::skip]
pub static CONN_EXTRAS: &[Field] = &[
    col("timestamp", "first_ts", Timestamp, "all", "First packet, UTC (same as `first_ts`).", r#"timestamp > now() - duration("1m")"#),
    flag("tcp", Source::Const(true), "Every connection row is TCP.", "tcp && resets > 0"),
    flag("udp", Source::Const(false), "No UDP rows in `conns` yet.", "udp"),
    flag("conn", Source::Const(true), "Every row of `conns`.", "conn"),
    flag("tcp_conn", Source::Const(true), "Every row of `conns`.", "tcp_conn"),
    flag("http", Source::Protocols(&["HTTP", "HTTP/2"]), "Connections carrying HTTP/1.x or HTTP/2.", "http && resets > 0"),
    flag("dns", Source::Protocols(&["DNS"]), "Connections carrying DNS over TCP.", "dns"),
    flag("tlsx", Source::Protocols(&["TLS"]), "Connections that began with a TLS handshake.", "tlsx"),
];

/// Legacy and Kubeshark spellings, and what they stand for.
#[rustfmt::skip]
pub static ALIASES: &[Alias] = &[
    Alias { name: "request.path", target: "path" },
    Alias { name: "request.method", target: "method" },
    Alias { name: "request.url", target: "url" },
    Alias { name: "request.host", target: "host" },
    Alias { name: "request.queryString", target: "query_string" },
    Alias { name: "response.status", target: "status_code" },
    Alias { name: "response.latency", target: "elapsedTime" },
    Alias { name: "src.pod", target: "src.pod.name" },
    Alias { name: "dst.pod", target: "dst.pod.name" },
    Alias { name: "src.svc", target: "src.service.name" },
    Alias { name: "dst.svc", target: "dst.service.name" },
    Alias { name: "src.ns", target: "src.namespace" },
    Alias { name: "dst.ns", target: "dst.namespace" },
    Alias { name: "node_name", target: "node" },
    Alias { name: "node.name", target: "node" },
    Alias { name: "protocol.abbr", target: "protocol" },
    Alias { name: "protocol.name", target: "protocol" },
];
