//! The seed's analyses that need more than counting: each is one read-only SQL statement over
//! the rows a KFL filter selects (`kfl('<filter>')`, see [`super::sql`]), so an analysis is
//! exactly as trustworthy as the SQL it prints, and a user can run that SQL to check it.
//!
//! - retries: identical requests (client, server, method, path, body) repeated within a window;
//! - churn: new TCP connections per minute per destination, any protocol (`conns`);
//! - resets: every reset connection, when and by which side (`conns`);
//! - correlation: the share of requests without a correlation id, per service, and which
//!   headers carry one;
//! - nesting: calls a pod makes while it serves a call (synchronous dependencies) and their
//!   share of the inbound latency;
//! - errors_503: each 503 linked to the call its server waited longest for while serving it
//!   (the downstream call that ran into a timeout, `downstream_exceeded` when the server gave
//!   up before it answered);
//! - journey: the ordered calls of each correlation id, or of each client.

/// An analysis that is one SQL statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    /// Retry storms.
    Retries,
    /// Connection churn.
    Churn,
    /// TCP resets.
    Resets,
    /// Correlation-id coverage.
    Correlation,
    /// Synchronous call nesting.
    Nesting,
    /// 503s paired with the downstream call behind them.
    Errors503,
    /// Ordered calls per correlation id or client.
    Journey,
}

impl Analysis {
    /// Every SQL analysis with its name.
    pub const ALL: [(&'static str, Analysis); 7] = [
        ("retries", Self::Retries),
        ("churn", Self::Churn),
        ("resets", Self::Resets),
        ("correlation", Self::Correlation),
        ("nesting", Self::Nesting),
        ("errors_503", Self::Errors503),
        ("journey", Self::Journey),
    ];

    /// The analysis called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    /// Whether `kfl` filters `conns` (connections) rather than `calls`.
    pub fn over_conns(self) -> bool {
        matches!(self, Self::Churn | Self::Resets)
    }
}

/// What shapes an analysis besides the filter.
#[derive(Debug, Clone)]
pub struct Params {
    /// KFL over the analysis' table.
    pub kfl: String,
    /// Rows of the answer.
    pub limit: usize,
    /// Retries: the longest gap between two repeats of a storm, ms.
    pub window_ms: u64,
    /// Journey: `correlation` (default) or `client`; correlation: `dst` (default) or `src`.
    pub by: String,
}

/// SQL string literal.
fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The KFL-selected table as a SQL table expression.
fn source(a: Analysis, kfl: &str) -> String {
    if a.over_conns() {
        format!("kfl('conns', {})", quoted(kfl))
    } else {
        format!("kfl({})", quoted(kfl))
    }
}

/// HTTP-like calls with nanosecond bounds and display names (a peer's name, else its address).
fn calls_cte(from: &str) -> String {
    format!(
        "c AS (
  SELECT id, timestamp, CAST(timestamp AS BIGINT) AS t0,
         CAST(timestamp AS BIGINT) + coalesce(elapsed_time, 0) * 1000 AS t1,
         coalesce(elapsed_time, 0) AS elapsed, has_response,
         src_ip, dst_ip, dst_port,
         coalesce(nullif(CAST(src_name AS VARCHAR), ''), CAST(src_ip AS VARCHAR)) AS src,
         coalesce(nullif(CAST(dst_name AS VARCHAR), ''),
                  CAST(dst_ip AS VARCHAR) || ':' || CAST(dst_port AS VARCHAR)) AS dst,
         CAST(method AS VARCHAR) AS method, CAST(path AS VARCHAR) AS path, status_code,
         correlation_id, request_headers, request_body, request_body_size
  FROM {from}
  WHERE has_request AND protocol IN ('HTTP', 'HTTP/2', 'gRPC')
)"
    )
}

/// Destination of a connection: its name, else its address, and the port.
const CONN_DST: &str = "coalesce(nullif(CAST(dst_name AS VARCHAR), ''), CAST(dst_ip AS VARCHAR)) || ':' || CAST(dst_port AS VARCHAR)";
const CONN_SRC: &str = "coalesce(nullif(CAST(src_name AS VARCHAR), ''), CAST(src_ip AS VARCHAR))";

/// Correlation headers, in the order the dissector prefers them (`remora_dissect::call`).
const CORRELATION_HEADERS: [&str; 6] = [
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "x-b3-traceid",
    "x-amzn-trace-id",
    "grpc-trace-bin",
];

/// Pairs of an inbound call and a call its server made while serving it: the outbound call
/// leaves the inbound call's server address and starts within its window. A server serving
/// several calls at once makes that ambiguous, so each outbound call belongs to one inbound
/// call: the one with the same correlation id, else the latest that started before it (a
/// server calls its dependencies right after a request arrives). `waited` is how long the
/// server waited for it: its latency, cut at the inbound answer when the server gave up first
/// (a timeout); `exceeded` says the server answered before the outbound call did.
const NESTED: &str = "candidates AS (
  SELECT i.id AS inbound_id, i.timestamp AS inbound_time, i.dst AS service, i.path AS path,
         i.method AS method, i.status_code AS inbound_status, i.elapsed AS inbound_us,
         o.id AS outbound_id, o.dst AS dependency, o.method AS dependency_method,
         o.path AS dependency_path, o.status_code AS dependency_status,
         o.has_response AS answered,
         NOT o.has_response OR o.t1 > i.t1 AS exceeded,
         CASE WHEN o.has_response AND o.t1 <= i.t1 THEN o.elapsed ELSE (i.t1 - o.t0) / 1000 END
           AS waited,
         row_number() OVER (
           PARTITION BY o.id
           ORDER BY CASE WHEN o.correlation_id <> '' AND o.correlation_id = i.correlation_id
                         THEN 0 ELSE 1 END,
                    i.t0 DESC, i.id) AS parent_rank
  FROM c i JOIN c o ON o.src_ip = i.dst_ip
  WHERE i.has_response AND o.id <> i.id AND o.t0 >= i.t0 AND o.t0 <= i.t1
),
nested AS (SELECT * FROM candidates WHERE parent_rank = 1)";

/// The SQL statements of `a` (one or more, each answering one part), named.
pub fn statements(a: Analysis, p: &Params) -> Vec<(&'static str, String)> {
    let from = source(a, &p.kfl);
    let limit = p.limit;
    match a {
        Analysis::Retries => {
            let key = "src_ip, dst_ip, dst_port, method, path, request_body_size, request_body";
            let window_ns = p.window_ms.saturating_mul(1_000_000);
            let bursts = format!(
                "WITH {c},
r AS (SELECT *, lag(t0) OVER (PARTITION BY {key} ORDER BY t0, id) AS prev FROM c),
b AS (SELECT *, sum(CASE WHEN prev IS NULL OR t0 - prev > {window_ns} THEN 1 ELSE 0 END)
        OVER (PARTITION BY {key} ORDER BY t0, id ROWS UNBOUNDED PRECEDING) AS burst FROM r),
bursts AS (
  SELECT min(src) AS src, min(dst) AS dst, min(method) AS method, min(path) AS path,
         count(*) AS requests, min(timestamp) AS first, min(t0) AS first_ns, max(t0) AS last_ns
  FROM b GROUP BY {key}, burst HAVING count(*) >= 2
)",
                c = calls_cte(&from)
            );
            vec![
                (
                    "by_edge",
                    format!(
                        "{bursts}
SELECT src, dst, count(*) AS storms, sum(requests) AS requests,
       sum(requests) - count(*) AS retries, max(requests) AS max_repeats,
       round(sum(last_ns - first_ns) / 1e6 / (sum(requests) - count(*)), 3) AS mean_spacing_ms,
       round(max((last_ns - first_ns) / 1e6 / (requests - 1)), 3) AS max_spacing_ms
FROM bursts GROUP BY src, dst ORDER BY retries DESC, src, dst LIMIT {limit}"
                    ),
                ),
                (
                    "storms",
                    format!(
                        "{bursts}
SELECT first, src, dst, method, path, requests,
       round((last_ns - first_ns) / 1e6 / (requests - 1), 3) AS spacing_ms
FROM bursts ORDER BY requests DESC, first LIMIT {limit}"
                    ),
                ),
            ]
        }
        Analysis::Churn => {
            let per_minute = format!(
                "WITH n AS (SELECT {CONN_DST} AS dst, CAST(first_ts AS BIGINT) / 60000000000 AS minute,
                  CAST(last_ts AS BIGINT) - CAST(first_ts AS BIGINT) AS lived_ns FROM {from}),
m AS (SELECT dst, minute, count(*) AS new, median(lived_ns) AS lived FROM n GROUP BY dst, minute)"
            );
            vec![
                (
                    "by_destination",
                    format!(
                        "{per_minute}
SELECT dst, sum(new) AS connections, count(*) AS minutes, max(new) AS peak_per_minute,
       round(sum(new) * 1.0 / count(*), 2) AS mean_per_minute,
       round(median(lived) / 1e6, 3) AS median_lifetime_ms
FROM m GROUP BY dst ORDER BY peak_per_minute DESC, dst LIMIT {limit}"
                    ),
                ),
                (
                    "per_minute",
                    format!(
                        "{per_minute}
SELECT to_timestamp_seconds(minute * 60) AS minute, dst, new FROM m
ORDER BY minute, new DESC, dst LIMIT {limit}"
                    ),
                ),
            ]
        }
        Analysis::Resets => vec![
            (
                "by_destination",
                format!(
                    "SELECT {CONN_DST} AS dst, count(*) AS resets,
       sum(CASE WHEN rst_by = 'server' THEN 1 ELSE 0 END) AS by_server,
       sum(CASE WHEN rst_by = 'client' THEN 1 ELSE 0 END) AS by_client
FROM {from} WHERE resets > 0 GROUP BY 1 ORDER BY resets DESC, dst LIMIT {limit}"
                ),
            ),
            (
                "resets",
                format!(
                    "SELECT rst_ts AS time, rst_by AS sent_by, {CONN_SRC} AS src, {CONN_DST} AS dst,
       CAST(src_port AS BIGINT) AS src_port, l7, first_ts,
       packets_c2s + packets_s2c AS packets
FROM {from} WHERE resets > 0 ORDER BY rst_ts, conn_id LIMIT {limit}"
                ),
            ),
        ],
        Analysis::Correlation => {
            let side = if p.by == "src" { "src" } else { "dst" };
            let headers: Vec<String> = CORRELATION_HEADERS
                .iter()
                .map(|h| {
                    format!(
                        "sum(CASE WHEN array_has(map_keys(request_headers), '{h}') THEN 1 ELSE 0 END) AS \"{h}\""
                    )
                })
                .collect();
            vec![(
                "by_service",
                format!(
                    "WITH {c}
SELECT {side} AS service, count(*) AS requests,
       sum(CASE WHEN correlation_id = '' THEN 1 ELSE 0 END) AS without_id,
       round(sum(CASE WHEN correlation_id = '' THEN 1 ELSE 0 END) * 1.0 / count(*), 4) AS share_without,
       {headers}
FROM c GROUP BY {side} ORDER BY share_without DESC, requests DESC, service LIMIT {limit}",
                    c = calls_cte(&from),
                    headers = headers.join(",\n       ")
                ),
            )]
        }
        Analysis::Nesting => vec![(
            "dependencies",
            format!(
                "WITH {c}, {NESTED}
SELECT service, method, path, dependency, dependency_method, dependency_path,
       count(*) AS calls, count(DISTINCT inbound_id) AS inbound_calls,
       round(avg(waited)) AS dependency_mean_us, round(avg(inbound_us)) AS inbound_mean_us,
       round(sum(waited) * 1.0 / sum(inbound_us), 4) AS share_of_latency
FROM nested GROUP BY 1, 2, 3, 4, 5, 6
ORDER BY share_of_latency DESC, calls DESC, service, path LIMIT {limit}",
                c = calls_cte(&from)
            ),
        )],
        Analysis::Errors503 => {
            let ranked = format!(
                "WITH {c}, {NESTED},
ranked AS (SELECT *, row_number() OVER (PARTITION BY inbound_id ORDER BY waited DESC, outbound_id) AS rank
           FROM nested WHERE inbound_status = 503),
e AS (SELECT id, timestamp, dst, path, elapsed FROM c WHERE status_code = 503),
paired AS (
  SELECT e.id AS upstream_id, e.timestamp AS time, e.dst AS service, e.path AS path,
         e.elapsed AS upstream_us, r.outbound_id AS downstream_id, r.dependency AS downstream,
         r.dependency_path AS downstream_path, r.waited AS downstream_us,
         r.dependency_status AS downstream_status, r.answered AS downstream_answered,
         r.exceeded AS downstream_exceeded
  FROM e LEFT JOIN ranked r ON r.inbound_id = e.id AND r.rank = 1
)",
                c = calls_cte(&from)
            );
            vec![
                (
                    "by_downstream",
                    format!(
                        "{ranked}
SELECT service, downstream, count(*) AS errors_503,
       sum(CASE WHEN downstream_exceeded THEN 1 ELSE 0 END) AS downstream_exceeded,
       round(median(downstream_us)) AS median_downstream_us, round(median(upstream_us)) AS median_upstream_us
FROM paired GROUP BY 1, 2 ORDER BY errors_503 DESC, service LIMIT {limit}"
                    ),
                ),
                (
                    "pairs",
                    format!("{ranked}\nSELECT * FROM paired ORDER BY time, upstream_id LIMIT {limit}"),
                ),
            ]
        }
        Analysis::Journey => {
            let key = if p.by == "client" {
                "src"
            } else {
                "correlation_id"
            };
            vec![(
                "journeys",
                format!(
                    "WITH {c}
SELECT {key} AS key, count(*) AS calls, min(timestamp) AS first,
       round((max(t1) - min(t0)) / 1e3) AS span_us,
       array_slice(array_agg(src || ' → ' || dst || ' ' || method || ' ' || path || ' ' ||
                             CAST(status_code AS VARCHAR) ORDER BY t0, id), 1, 30) AS steps
FROM c WHERE {key} <> '' GROUP BY {key} ORDER BY first, key LIMIT {limit}",
                    c = calls_cte(&from)
                ),
            )]
        }
    }
}
