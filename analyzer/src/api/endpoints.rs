//! `/mcp/endpoints` (discovery) and `/openapi.json`, from one table of the API's routes.

use axum::Json;
use serde_json::{Map, Value, json};

/// One route: method, path, query parameters (name, required, description), JSON body fields,
/// and what it does.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    params: &'static [(&'static str, bool, &'static str)],
    body: &'static [(&'static str, bool, &'static str)],
    summary: &'static str,
}

const DB: (&str, bool, &str) = (
    "db",
    true,
    "`<snapshot>/<dissection>` of a completed dissection",
);
const KFL: (&str, bool, &str) = ("kfl", false, "KFL filter (docs/kfl.md); empty = every call");

#[rustfmt::skip]
static ENDPOINTS: &[Endpoint] = &[
    Endpoint { method: "get", path: "/healthz", params: &[], body: &[], summary: "Liveness." },
    Endpoint { method: "get", path: "/mcp/endpoints", params: &[], body: &[], summary: "This list." },
    Endpoint { method: "get", path: "/mcp/data-boundaries", params: &[], body: &[], summary: "Recorded time window per node and overall (unix ms)." },
    Endpoint { method: "get", path: "/mcp/snapshots", params: &[], body: &[], summary: "Every snapshot." },
    Endpoint { method: "post", path: "/mcp/snapshots", params: &[], body: &[("name", true, "snapshot name"), ("duration", false, "how far back from now, e.g. 1h"), ("start", false, "unix ms"), ("end", false, "unix ms, default now"), ("nodes", false, "only these nodes")], summary: "Start a snapshot of a time window (202 in_progress)." },
    Endpoint { method: "get", path: "/mcp/snapshots/{name}", params: &[("verify", false, "true: recompute the checksums of its files and say whether they match (verified, verify_error)")], body: &[], summary: "A snapshot's status and contents." },
    Endpoint { method: "delete", path: "/mcp/snapshots/{name}", params: &[], body: &[], summary: "Delete a snapshot and its dissections." },
    Endpoint { method: "get", path: "/mcp/snapshots/{name}/pcap", params: &[("nodes", false, "only these nodes, comma-separated"), ("start", false, "unix ms"), ("end", false, "unix ms, inclusive"), ("bpf_filter", false, "libpcap capture filter, e.g. tcp port 443"), ("kfl", false, "only the packets of the calls this KFL matches (their TCP connections, UDP exchanges)"), ("dissection", false, "the dissection kfl runs over (default: the only completed one)"), ("check", false, "true: check the filters and count the matched calls and flows instead of exporting")], body: &[], summary: "The snapshot's packets as pcapng (streamed; one interface per node, raw IP, ns timestamps)." },
    Endpoint { method: "post", path: "/delayed_dissection.DelayedDissection/Start", params: &[], body: &[("snapshot_name", true, "snapshot"), ("dissection_name", true, "name of the result")], summary: "Start dissecting a snapshot (202)." },
    Endpoint { method: "get", path: "/delayed_dissection.DelayedDissection/GetStatus", params: &[("snapshot_name", false, "snapshot"), ("dissection_name", false, "dissection (with snapshot_name)")], body: &[], summary: "One dissection's status, or every dissection." },
    Endpoint { method: "get", path: "/mcp/dissections", params: &[("snapshot", false, "only this snapshot's")], body: &[], summary: "Every dissection." },
    Endpoint { method: "post", path: "/mcp/dissections", params: &[], body: &[("snapshot", true, "snapshot"), ("name", true, "dissection name")], summary: "Start dissecting a snapshot (202)." },
    Endpoint { method: "get", path: "/mcp/dissections/{snapshot}/{name}", params: &[("verify", false, "true: recompute the tables' checksums and say whether they match (verified, verify_error)")], body: &[], summary: "A dissection's status and progress." },
    Endpoint { method: "delete", path: "/mcp/dissections/{snapshot}/{name}", params: &[], body: &[], summary: "Delete a finished dissection (409 while it runs: stop it first)." },
    Endpoint { method: "post", path: "/mcp/dissections/{snapshot}/{name}/stop", params: &[], body: &[], summary: "Cancel a running dissection." },
    Endpoint { method: "get", path: "/mcp/calls", params: &[DB, KFL, ("limit", false, "rows per page, default 100, at most 1000"), ("cursor", false, "next_cursor of the previous page"), ("offset", false, "rows to skip"), ("start", false, "unix ms"), ("end", false, "unix ms"), ("format", false, "compact (default), full, raw"), ("explain", false, "true: include the SQL the filter became")], body: &[], summary: "API calls matching a KFL filter: {calls, total, truncated, next_cursor}." },
    Endpoint { method: "get", path: "/mcp/calls/{id}", params: &[DB, ("max_payload_size", false, "body bytes, default 65536")], body: &[], summary: "One call with everything, bodies included." },
    Endpoint { method: "get", path: "/mcp/stats", params: &[DB, KFL, ("group_by", false, "path, dst.service.name, src.pod.name, status_code, edge, minute, second, or any string/int field"), ("limit", false, "groups, default 100"), ("start", false, "unix ms"), ("end", false, "unix ms, inclusive")], body: &[], summary: "Count, error rate, status classes and latency P50/P90/P99, overall and per group." },
    Endpoint { method: "get", path: "/mcp/insights", params: &[DB, ("analysis", true, "retries, churn, resets, correlation, nesting, errors_503, dependencies, journey, timeline, compare"), ("kfl", false, "KFL filter (conns fields for churn and resets)"), ("limit", false, "rows per part, default 50"), ("window_ms", false, "retries: longest gap between repeats, default 1000"), ("by", false, "journey: correlation|client; correlation: dst|src"), ("resolution", false, "timeline: second|minute"), ("a_start", false, "compare: unix ms"), ("a_end", false, "compare: unix ms"), ("b_start", false, "compare: unix ms"), ("b_end", false, "compare: unix ms"), ("sql", false, "true: include the SQL each part ran")], body: &[], summary: "One of the seed's analyses, computed: retry storms, connection churn, resets, correlation-id coverage, call nesting, 503 causes, dependency map, journeys, timeline, window comparison." },
    Endpoint { method: "get", path: "/mcp/flows", params: &[DB, ("kfl", false, "KFL over connections (conns fields)"), ("limit", false, "rows per page, default 100, at most 1000"), ("cursor", false, "next_cursor of the previous page"), ("order", false, "time (default), retransmissions, rtt, handshake, bytes, duration")], body: &[], summary: "TCP connections with their TCP analysis: {flows, total, truncated, next_cursor}." },
    Endpoint { method: "get", path: "/mcp/flows/summary", params: &[DB, ("kfl", false, "KFL over connections"), ("group_by", false, "edge (default), dst, src, pod, src.pod, namespace, service, node, minute, second, or a conns field; up to 3, comma-separated"), ("limit", false, "groups, default 100")], body: &[], summary: "TCP health summed overall and per group: connections, retransmissions, out-of-order, lost, zero windows, dup ACKs, resets, RTT percentiles, closes." },
    Endpoint { method: "get", path: "/mcp/resolve/workloads", params: &[("snapshot_id", false, "a snapshot's frozen records instead of the live history"), ("name", false, "one workload (a service's name also finds its pods)"), ("namespace", false, "with name"), ("namespaces", false, "comma-separated"), ("name_regex", false, "regular expression"), ("labels", false, "k=v,k2=v2 (all must match)"), ("type", false, "pod, service, node or host"), ("timestamp", false, "unix ms: what held then"), ("limit", false, "default 100, at most 1000")], body: &[], summary: "Workloads with their addresses over time (from, to): Kubeshark's list_workloads." },
    Endpoint { method: "get", path: "/mcp/resolve/ips", params: &[("snapshot_id", false, "a snapshot's frozen records"), ("ip", false, "one address"), ("namespaces", false, "comma-separated"), ("name_regex", false, "regular expression"), ("labels", false, "k=v,k2=v2"), ("type", false, "pod, service, node or host"), ("timestamp", false, "unix ms"), ("limit", false, "default 100")], body: &[], summary: "Addresses with who held them when: Kubeshark's list_ips." },
    Endpoint { method: "get", path: "/mcp/tls-status", params: &[], body: &[], summary: "Per node and process: is its TLS decrypted (uprobes on its library), and if not why (library not hooked, statically linked, Go, Java, rustls, GnuTLS, NSS). Read it before concluding a service had no HTTPS calls." },
    Endpoint { method: "get", path: "/mcp/coverage", params: &[], body: &[], summary: "What is recorded and watched: nodes recording and since when, pods on recorded nodes and not, the workload source and each watch's state. Read it before concluding \"no traffic\"." },
    Endpoint { method: "post", path: "/sql", params: &[], body: &[("db", false, "`<snapshot>/<dissection>`: tables calls, conns, packets, sockets, tls, workloads"), ("snapshot", false, "a snapshot alone: tables packets, sockets, tls, workloads"), ("query", true, "one SELECT, WITH, EXPLAIN or DESCRIBE; kfl('<filter>') and kfl('conns', '<filter>') are tables"), ("format", false, "json (default), csv, arrow (IPC stream)"), ("max_rows", false, "rows returned, default 10000, at most 1000000"), ("timeout_ms", false, "time limit, default 30000, at most 55000"), ("memory_mb", false, "memory limit, default 1024"), ("max_payload_size", false, "json: bytes kept of each binary value, default 256")], summary: "Read-only SQL over a snapshot and its dissection: {columns, rows, row_count, truncated, elapsed_ms}." },
    Endpoint { method: "get", path: "/mcp/fields", params: &[], body: &[], summary: "The KFL field catalog." },
    Endpoint { method: "get", path: "/metrics", params: &[], body: &[], summary: "Prometheus metrics." },
];

/// `GET /mcp/endpoints`.
pub async fn endpoints() -> Json<Value> {
    let list: Vec<Value> = ENDPOINTS
        .iter()
        .map(|e| {
            json!({
                "method": e.method.to_uppercase(),
                "path": e.path,
                "summary": e.summary,
                "params": e.params.iter().map(|(n, r, d)| json!({"name": n, "required": r, "description": d})).collect::<Vec<_>>(),
                "body": e.body.iter().map(|(n, r, d)| json!({"name": n, "required": r, "description": d})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(
        json!({"endpoints": list, "prefixes": ["", "/api"], "auth": "Authorization: Bearer <token>"}),
    )
}

/// `GET /openapi.json`: OpenAPI 3.1 for the same routes.
pub async fn openapi() -> Json<Value> {
    let mut paths = Map::new();
    for e in ENDPOINTS {
        let entry = paths.entry(e.path).or_insert_with(|| json!({}));
        let mut params: Vec<Value> = e
            .params
            .iter()
            .map(|(n, r, d)| json!({"name": n, "in": "query", "required": r, "description": d, "schema": {"type": "string"}}))
            .collect();
        for seg in e
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            params.push(
                json!({"name": seg, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
        let mut op = json!({
            "summary": e.summary,
            "parameters": params,
            "responses": {
                "200": {"description": "JSON result"},
                "400": {"description": "bad input: {error: {kind, message}}"},
                "401": {"description": "missing or wrong bearer token"},
                "404": {"description": "unknown snapshot, db or call"},
                "409": {"description": "exists or not ready"}
            },
            "security": [{"bearer": []}],
        });
        if !e.body.is_empty() {
            let props: Map<String, Value> = e
                .body
                .iter()
                .map(|(n, _, d)| ((*n).to_owned(), json!({"description": d})))
                .collect();
            let required: Vec<&str> = e
                .body
                .iter()
                .filter(|(_, r, _)| *r)
                .map(|(n, _, _)| *n)
                .collect();
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": props, "required": required}}}});
        }
        entry[e.method] = op;
    }
    Json(json!({
        "openapi": "3.1.0",
        "info": {"title": "Remora analyzer API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }))
}
