//! The tools: Kubeshark's names and argument names, each mapped onto an analyzer route.

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError,
    model::{JsonObject, Tool, ToolAnnotations},
};
use serde_json::{Value, json};

use super::{RemoraMcp, bound};
use crate::cli::client::encode;

/// A tool's input schema: `properties`, and `max_result_bytes`, which every tool takes.
fn schema(mut properties: Value, required: &[&str]) -> Arc<JsonObject> {
    if let Some(p) = properties.as_object_mut() {
        p.insert(
            "max_result_bytes".into(),
            json!({"type": "integer", "description": "Largest result in bytes of JSON, default 20000, at most 1000000; longer results are cut (pages at a call, with next_cursor) and say so in result_cut"}),
        );
    }
    let v = json!({"type": "object", "properties": properties, "required": required});
    Arc::new(v.as_object().cloned().unwrap_or_default())
}

fn tool(
    name: &'static str,
    description: &'static str,
    input: Arc<JsonObject>,
    read_only: bool,
) -> Tool {
    let annotations = ToolAnnotations::new()
        .read_only(read_only)
        .destructive(false);
    Tool::new(name, description, input).annotate(annotations)
}

const DB: &str =
    "Dissection result to query: \"<snapshot>/<dissection>\" (from start_snapshot_dissection).";
const KFL: &str = "KFL filter, e.g. `src.pod contains \"frontend\"`, `response.status==503`, `http && elapsed_time > 1000000` (µs). Empty = all calls. describe_fields lists the fields.";

/// Every tool, with its input schema.
pub fn definitions() -> Vec<Tool> {
    vec![
        tool(
            "get_data_boundaries",
            "The recorded time window per node and overall (unix ms). Start here.",
            schema(json!({}), &[]),
            true,
        ),
        tool(
            "create_snapshot",
            "Freeze a time window of recorded traffic for analysis. Returns status in_progress; poll get_snapshot until completed.",
            schema(
                json!({
                    "name": {"type": "string", "description": "New snapshot name: letters, digits, . _ -"},
                    "duration": {"type": "string", "description": "Window ending now, e.g. \"15m\", \"1h\""},
                    "start": {"type": "integer", "description": "Window start, unix ms (instead of duration)"},
                    "end": {"type": "integer", "description": "Window end, unix ms (default now)"}
                }),
                &["name"],
            ),
            false,
        ),
        tool(
            "get_snapshot",
            "A snapshot's status (in_progress, completed, failed), packets and bytes.",
            schema(
                json!({"id": {"type": "string", "description": "Snapshot name"}}),
                &["id"],
            ),
            true,
        ),
        tool(
            "list_snapshots",
            "Every snapshot with its status.",
            schema(json!({}), &[]),
            true,
        ),
        tool(
            "start_snapshot_dissection",
            "Dissect a completed snapshot into API calls (HTTP, HTTP/2, gRPC, DNS, TLS). Poll get_snapshot_dissection_status; the result is the db \"<snapshot_id>/<name>\".",
            schema(
                json!({
                    "snapshot_id": {"type": "string", "description": "Snapshot name"},
                    "name": {"type": "string", "description": "Name for this dissection, e.g. analysis-1"}
                }),
                &["snapshot_id", "name"],
            ),
            false,
        ),
        tool(
            "get_snapshot_dissection_status",
            "A dissection's status, progress (0-100), packets processed and calls found.",
            schema(
                json!({
                    "snapshot_id": {"type": "string", "description": "Snapshot name"},
                    "name": {"type": "string", "description": "Dissection name"}
                }),
                &["snapshot_id", "name"],
            ),
            true,
        ),
        tool(
            "list_snapshot_dissections",
            "Dissections, of one snapshot or of all.",
            schema(
                json!({"snapshot_id": {"type": "string", "description": "Only this snapshot's (optional)"}}),
                &[],
            ),
            true,
        ),
        tool(
            "list_api_calls",
            "API calls of a dissection matching a KFL filter: {calls, total, truncated, next_cursor}. Compact rows by default; pass cursor to page.",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "kfl": {"type": "string", "description": KFL},
                    "limit": {"type": "integer", "description": "Rows, default 20, at most 1000; a page that would pass max_result_bytes is cut, with next_cursor"},
                    "cursor": {"type": "string", "description": "next_cursor of the previous page"},
                    "format": {"type": "string", "enum": ["compact", "full", "raw"], "description": "compact (default), full (headers, no bodies), raw"},
                    "start": {"type": "integer", "description": "Only calls from this unix ms"},
                    "end": {"type": "integer", "description": "Only calls until this unix ms"}
                }),
                &["db"],
            ),
            true,
        ),
        tool(
            "get_api_call",
            "One call in full: headers, bodies (redacted secrets), timings.",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "id": {"type": "string", "description": "Call id from list_api_calls, e.g. node-1/12/1"},
                    "max_payload_size": {"type": "integer", "description": "Body bytes to return, default 8192"}
                }),
                &["db", "id"],
            ),
            true,
        ),
        tool(
            "get_api_stats",
            "Count, error rate, status classes and latency P50/P90/P99 (µs) of the calls a KFL filter selects, optionally per group.",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "kfl": {"type": "string", "description": KFL},
                    "group_by": {"type": "string", "description": "path, dst.service.name, src.pod.name, status_code, minute, or any string/int field"}
                }),
                &["db"],
            ),
            true,
        ),
        tool(
            "analyze_calls",
            "Computed analyses, one per call. Without `analysis`: count, error rate, status distribution, latency P50/P90/P99 overall, per path and per peer, the slowest calls, a per-minute timeline. With `analysis`: retries (identical requests repeated within window_ms, per client → server, with spacing), churn (new TCP connections per minute per destination, any protocol), resets (each reset connection, when, which side), correlation (share of requests without a correlation id per service, and which headers carry one), nesting (calls a pod makes while serving a call: synchronous dependencies and their share of its latency), errors_503 (each 503 paired with the slowest downstream call behind it), dependencies (service map: rate, errors, P50/P99 per edge), journey (ordered calls per correlation id, or by=client), timeline (resolution second|minute), compare (windows a_start..a_end vs b_start..b_end, per path).",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "kfl": {"type": "string", "description": "KFL filter (over connections for churn and resets, over calls otherwise)"},
                    "analysis": {"type": "string", "enum": ["overview", "retries", "churn", "resets", "correlation", "nesting", "errors_503", "dependencies", "journey", "timeline", "compare"], "description": "Which analysis; overview (default) is the summary"},
                    "limit": {"type": "integer", "description": "Rows per part, default 20"},
                    "window_ms": {"type": "integer", "description": "retries: longest gap between repeats of one storm, default 1000"},
                    "by": {"type": "string", "description": "journey: correlation (default) or client; correlation: dst (default) or src"},
                    "resolution": {"type": "string", "enum": ["second", "minute"], "description": "timeline resolution"},
                    "a_start": {"type": "integer", "description": "compare: window A start, unix ms"},
                    "a_end": {"type": "integer", "description": "compare: window A end, unix ms"},
                    "b_start": {"type": "integer", "description": "compare: window B start, unix ms"},
                    "b_end": {"type": "integer", "description": "compare: window B end, unix ms"}
                }),
                &["db"],
            ),
            true,
        ),
        tool(
            "export_snapshot_pcap",
            "Where to get a snapshot's packets as a pcapng file for Wireshark: the analyzer streams it at the returned path (GET with the bearer token); the answer has the curl and remora commands and the packet count, not the file.",
            schema(
                json!({
                    "snapshot_id": {"type": "string", "description": "Snapshot (completed)"},
                    "nodes": {"type": "string", "description": "Only these nodes, comma-separated (optional)"},
                    "start": {"type": "integer", "description": "From this unix ms (optional)"},
                    "end": {"type": "integer", "description": "Until this unix ms, inclusive (optional)"},
                    "bpf_filter": {"type": "string", "description": "Capture filter in libpcap (tcpdump) syntax, e.g. `tcp port 5432 and host 198.18.0.2` (optional)"},
                    "kfl": {"type": "string", "description": "Only the packets of the calls this KFL filter matches: their TCP connections and UDP exchanges, e.g. `response.status == 503` (optional; needs a completed dissection)"},
                    "dissection": {"type": "string", "description": "Dissection the kfl runs over (default: the snapshot's only completed one)"}
                }),
                &["snapshot_id"],
            ),
            true,
        ),
        tool(
            "list_l4_flows",
            "TCP connections of a dissection, any protocol (also ones Remora cannot dissect): endpoints and names, packets, bytes, handshake and data RTT (µs), retransmissions, out-of-order and lost segments, zero windows, duplicate ACKs per direction, resets and who sent them, how each closed (fin, rst, half_closed, timeout, open). {flows, total, truncated, next_cursor}.",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "kfl": {"type": "string", "description": "KFL over connections, e.g. `retransmissions_s2c > 0`, `close == \"rst\" and rst_by == \"server\"`, `dst.port == 5432`, `data_rtt_us > 50000`"},
                    "limit": {"type": "integer", "description": "Rows, default 20, at most 1000"},
                    "cursor": {"type": "string", "description": "next_cursor of the previous page"},
                    "order": {"type": "string", "enum": ["time", "retransmissions", "rtt", "handshake", "bytes", "duration"], "description": "time (default, oldest first) or the largest first"}
                }),
                &["db"],
            ),
            true,
        ),
        tool(
            "get_l4_flow_summary",
            "TCP health summed over connections: count, packets, bytes, retransmissions and their rate, out-of-order, lost segments, zero windows, duplicate ACKs, resets (by client/server), handshake and data RTT P50/P99 (µs), how connections closed; overall and per group. group_by=dst,minute gives new connections per minute per destination (connection churn).",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "kfl": {"type": "string", "description": "KFL over connections (see list_l4_flows)"},
                    "group_by": {"type": "string", "description": "edge (default: client → server:port), dst, src, pod, src.pod, namespace, service, node, minute, second, or a connection field; comma-separated for up to 3"},
                    "limit": {"type": "integer", "description": "Groups, default 50"}
                }),
                &["db"],
            ),
            true,
        ),
        tool(
            "run_sql",
            "Read-only SQL (DataFusion dialect) over a dissection and its snapshot. Tables: calls (one row per API call), conns (one per TCP connection: handshake, retransmissions, resets, close), packets (every recorded packet), workloads (who each address was); kfl('<filter>') and kfl('conns', '<filter>') are tables of the rows a KFL filter selects. Only SELECT/WITH/EXPLAIN/DESCRIBE. Aggregate in SQL: rows are capped (max_rows, default 200). Example: SELECT dst_name, count(*), approx_percentile_cont(elapsed_time, 0.99) FROM kfl('http') GROUP BY 1 ORDER BY 2 DESC",
            schema(
                json!({
                    "db": {"type": "string", "description": DB},
                    "snapshot": {"type": "string", "description": "A snapshot alone, without a dissection (tables packets, sockets, tls, workloads)"},
                    "query": {"type": "string", "description": "One SELECT, WITH, EXPLAIN or DESCRIBE statement; SHOW TABLES and information_schema.columns list what exists"},
                    "max_rows": {"type": "integer", "description": "Rows returned, default 200"},
                    "timeout_ms": {"type": "integer", "description": "Time limit, default 30000"}
                }),
                &["query"],
            ),
            true,
        ),
        tool(
            "list_workloads",
            "Workloads (pods, services, nodes) with the addresses they held and when (from, to, unix ms): from the live Kubernetes history, or with snapshot_id as the snapshot froze it. {workloads:[{name, namespace, kind, labels, node, service, ips:[{ip, timestamp, from, to}]}], total, truncated}.",
            schema(
                json!({
                    "snapshot_id": {"type": "string", "description": "A snapshot's frozen records instead of the live history"},
                    "name": {"type": "string", "description": "One workload by name (a service's name also finds the pods behind it)"},
                    "namespace": {"type": "string", "description": "The namespace of `name`"},
                    "namespaces": {"type": "array", "items": {"type": "string"}, "description": "Only these namespaces"},
                    "name_regex": {"type": "string", "description": "Regular expression on the name"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels that must all match, e.g. {\"app\": \"checkout\"}"},
                    "type": {"type": "string", "enum": ["pod", "service", "node", "host"], "description": "Only this kind"},
                    "timestamp": {"type": "integer", "description": "Unix ms: what held at that moment"},
                    "limit": {"type": "integer", "description": "Workloads, default 100, at most 1000"}
                }),
                &[],
            ),
            true,
        ),
        tool(
            "list_ips",
            "Addresses with who held them when (pod, service, node; from, to in unix ms), so an IP reused by a later pod is told apart. {ips:[{ip, records:[{name, namespace, kind, from, to, pod, service, node}]}], total, truncated}.",
            schema(
                json!({
                    "snapshot_id": {"type": "string", "description": "A snapshot's frozen records instead of the live history"},
                    "ip": {"type": "string", "description": "One address"},
                    "namespaces": {"type": "array", "items": {"type": "string"}, "description": "Only these namespaces"},
                    "name_regex": {"type": "string", "description": "Regular expression on the holder's name"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Labels that must all match"},
                    "timestamp": {"type": "integer", "description": "Unix ms: who held it then"},
                    "limit": {"type": "integer", "description": "Addresses, default 100"}
                }),
                &[],
            ),
            true,
        ),
        tool(
            "get_coverage",
            "What Remora records and names: nodes recording and since when, pods on recorded nodes and pods on nodes without a recorder, where workload names come from (Kubernetes watches and their state, a file, or none). Call it before concluding that a workload had no traffic.",
            schema(json!({}), &[]),
            true,
        ),
        tool(
            "get_tls_status",
            "Whether TLS traffic is decrypted, per node and process, and if not why: library not hooked, statically linked (OpenSSL/BoringSSL, Go), unsupported stack (Java, rustls, GnuTLS, NSS). A process whose TLS is not decrypted shows only TLS handshakes and connections, never HTTP calls: call this before concluding that a service had no HTTPS traffic.",
            schema(json!({}), &[]),
            true,
        ),
        tool(
            "describe_fields",
            "The KFL fields (name, type, description) and aliases, for writing filters.",
            schema(json!({}), &[]),
            true,
        ),
    ]
}

fn arg<'a>(args: &'a JsonObject, key: &str) -> Option<&'a Value> {
    args.get(key).filter(|v| !v.is_null())
}

fn text(args: &JsonObject, key: &str) -> Option<String> {
    arg(args, key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

fn required(args: &JsonObject, key: &str, tool: &str) -> Result<String, McpError> {
    text(args, key).ok_or_else(|| {
        McpError::invalid_params(
            format!("{tool} needs `{key}`; tools/list shows its arguments"),
            None,
        )
    })
}

fn query(args: &JsonObject, keys: &[&str]) -> String {
    keys.iter()
        .filter_map(|k| text(args, k).map(|v| format!("&{k}={}", encode(&v))))
        .collect()
}

/// What to do next after an error, by kind.
fn hint(kind: &str, tool: &str) -> &'static str {
    match (kind, tool) {
        ("not_found", _) => "call list_snapshots / list_snapshot_dissections to see what exists",
        ("not_ready", _) => {
            "wait: poll get_snapshot / get_snapshot_dissection_status until completed"
        }
        ("exists", _) => "choose another name, or use the existing one",
        (
            "unknown_field" | "type" | "parse" | "unknown_function" | "regex" | "value"
            | "unsupported",
            _,
        ) => "fix the KFL filter at the caret; describe_fields lists every field",
        ("invalid_sql", _) => {
            "fix the SQL; SHOW TABLES and SELECT * FROM information_schema.columns list the tables and columns"
        }
        ("not_read_only", _) => "only SELECT, WITH, EXPLAIN and DESCRIBE run",
        ("timeout" | "memory_limit", _) => {
            "aggregate or filter earlier (WHERE on timestamp, kfl(...)), or add a LIMIT"
        }
        ("busy", _) => {
            "the analyzer is at its limit of concurrent work: wait a second and call again"
        }
        ("insufficient_storage", _) => {
            "the node's disk is nearly full: old snapshots must be deleted (remora snapshot delete NAME) or space freed first"
        }
        _ => "check the arguments against tools/list",
    }
}

async fn get(mcp: &RemoraMcp, path: &str, tool: &str) -> (Value, bool) {
    into_result(mcp.request("GET", path, None).await, tool)
}

fn into_result((status, body): (u16, Value), tool: &str) -> (Value, bool) {
    if status < 400 {
        return (body, false);
    }
    let kind = body["error"]["kind"].as_str().unwrap_or("error").to_owned();
    let mut err = body["error"].clone();
    if err.is_object() {
        err["next"] = json!(hint(&kind, tool));
    }
    (json!({"error": err}), true)
}

/// Checks argument types against the tool's schema (JSON-RPC invalid params otherwise).
fn check_types(name: &str, args: &JsonObject) -> Result<(), McpError> {
    let Some(def) = definitions().into_iter().find(|t| t.name == name) else {
        return Err(McpError::invalid_params(
            format!("unknown tool `{name}`; tools/list shows the tools"),
            None,
        ));
    };
    let props = def
        .input_schema
        .get("properties")
        .and_then(Value::as_object);
    for (key, value) in args {
        let want = props
            .and_then(|p| p.get(key))
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str);
        let ok = match want {
            Some("string") => value.is_string() || value.is_null(),
            Some("integer") => value.is_i64() || value.is_u64() || value.is_null(),
            Some(_) => true,
            None => {
                return Err(McpError::invalid_params(
                    format!("{name} has no argument `{key}`; tools/list shows its arguments"),
                    None,
                ));
            }
        };
        if !ok {
            return Err(McpError::invalid_params(
                format!(
                    "{name}: `{key}` must be {}, got {value}",
                    want.unwrap_or("?")
                ),
                None,
            ));
        }
    }
    Ok(())
}

/// Runs a tool; `(result, is_error)`. Unknown tools, unknown arguments, wrong types and
/// missing arguments are JSON-RPC errors (invalid params); everything else is a result.
pub async fn call(
    mcp: &RemoraMcp,
    name: &str,
    args: &JsonObject,
) -> Result<(Value, bool), McpError> {
    check_types(name, args)?;
    let budget = bound::budget(arg(args, "max_result_bytes").and_then(Value::as_u64));
    let (mut value, is_error) = match name {
        "get_data_boundaries" => get(mcp, "/mcp/data-boundaries", name).await,
        "create_snapshot" => {
            let body = json!({
                "name": required(args, "name", name)?,
                "duration": text(args, "duration"),
                "start": arg(args, "start"), "end": arg(args, "end"),
            });
            into_result(
                mcp.request("POST", "/mcp/snapshots", Some(&body)).await,
                name,
            )
        }
        "get_snapshot" => {
            let id = required(args, "id", name)?;
            get(mcp, &format!("/mcp/snapshots/{}", encode(&id)), name).await
        }
        "list_snapshots" => get(mcp, "/mcp/snapshots", name).await,
        "start_snapshot_dissection" => {
            let body = json!({"snapshot": required(args, "snapshot_id", name)?, "name": required(args, "name", name)?});
            into_result(
                mcp.request("POST", "/mcp/dissections", Some(&body)).await,
                name,
            )
        }
        "get_snapshot_dissection_status" => {
            let (s, n) = (
                required(args, "snapshot_id", name)?,
                required(args, "name", name)?,
            );
            get(
                mcp,
                &format!("/mcp/dissections/{}/{}", encode(&s), encode(&n)),
                name,
            )
            .await
        }
        "list_snapshot_dissections" => {
            let q = text(args, "snapshot_id")
                .map(|s| format!("?snapshot={}", encode(&s)))
                .unwrap_or_default();
            get(mcp, &format!("/mcp/dissections{q}"), name).await
        }
        "list_api_calls" => {
            let db = required(args, "db", name)?;
            // A large limit gives a bounded page with a cursor, never an error.
            let limit = arg(args, "limit")
                .and_then(Value::as_u64)
                .unwrap_or(20)
                .min(crate::api::MAX_LIMIT as u64);
            let offset = text(args, "cursor")
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(0);
            let path = format!(
                "/mcp/calls?db={}&limit={limit}{}",
                encode(&db),
                query(args, &["kfl", "cursor", "format", "start", "end"])
            );
            let (mut v, err) = get(mcp, &path, name).await;
            if !err {
                bound::page(&mut v, offset, budget);
            }
            if !err && v["truncated"] == true {
                v["note"] = json!(format!(
                    "{} more calls: call again with cursor = next_cursor, or narrow the kfl filter",
                    v["total"].as_u64().unwrap_or(0).saturating_sub(
                        v["next_cursor"]
                            .as_str()
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0)
                    )
                ));
            }
            (v, err)
        }
        "get_api_call" => {
            let (db, id) = (required(args, "db", name)?, required(args, "id", name)?);
            let payload = arg(args, "max_payload_size")
                .and_then(Value::as_u64)
                .unwrap_or(8192);
            let path = format!(
                "/mcp/calls/{id}?db={}&max_payload_size={payload}",
                encode(&db)
            );
            get(mcp, &path, name).await
        }
        "get_api_stats" => {
            let db = required(args, "db", name)?;
            get(
                mcp,
                &format!(
                    "/mcp/stats?db={}{}",
                    encode(&db),
                    query(args, &["kfl", "group_by"])
                ),
                name,
            )
            .await
        }
        "analyze_calls" if text(args, "analysis").is_some_and(|a| a != "overview") => {
            let db = required(args, "db", name)?;
            let limit = arg(args, "limit").and_then(Value::as_u64).unwrap_or(20);
            let path = format!(
                "/mcp/insights?db={}&limit={limit}{}",
                encode(&db),
                query(
                    args,
                    &[
                        "analysis",
                        "kfl",
                        "window_ms",
                        "by",
                        "resolution",
                        "a_start",
                        "a_end",
                        "b_start",
                        "b_end"
                    ]
                )
            );
            get(mcp, &path, name).await
        }
        "analyze_calls" => {
            let db = required(args, "db", name)?;
            let base = format!("/mcp/stats?db={}{}", encode(&db), query(args, &["kfl"]));
            let (overall, err) = get(mcp, &base, name).await;
            if err {
                return Ok((overall, true));
            }
            let mut out = overall;
            for (key, group) in [
                ("by_path", "path"),
                ("by_peer", "dst.name"),
                ("timeline", "minute"),
            ] {
                let (v, _) = get(
                    mcp,
                    &format!("{base}&group_by={}&limit=20", encode(group)),
                    name,
                )
                .await;
                out[key] = v["groups"].clone();
            }
            let slow = format!(
                "/mcp/calls?db={}&limit=5&order=slowest{}",
                encode(&db),
                query(args, &["kfl"])
            );
            let (v, _) = get(mcp, &slow, name).await;
            out["slowest"] = v["calls"].clone();
            // What the calls cannot show: TLS that is not decrypted.
            let (tls, _) = get(mcp, "/mcp/tls-status", name).await;
            let mut summary = tls["summary"].clone();
            if let Some(s) = summary.as_object_mut() {
                // Counts only here; `get_tls_status` lists the processes.
                s.remove("not_decrypted");
            }
            out["tls_status"] = summary;
            (out, false)
        }
        "export_snapshot_pcap" => {
            let id = required(args, "snapshot_id", name)?;
            let (snap, err) = get(mcp, &format!("/mcp/snapshots/{}", encode(&id)), name).await;
            if err {
                return Ok((snap, true));
            }
            if snap["status"] != "completed" {
                return Ok((
                    json!({"error": {"kind": "not_ready", "message": format!("snapshot `{id}` is {}; poll get_snapshot until it is completed", snap["status"]), "next": "get_snapshot"}}),
                    true,
                ));
            }
            const KEYS: [&str; 6] = ["nodes", "start", "end", "bpf_filter", "kfl", "dissection"];
            let params = query(args, &KEYS);
            let path = format!(
                "/mcp/snapshots/{}/pcap?{}",
                encode(&id),
                params.trim_start_matches('&')
            );
            // Filters are checked (and the calls counted) now, so a mistake is reported here
            // rather than as a failed download.
            let (check, err) = get(
                mcp,
                &format!("/mcp/snapshots/{}/pcap?check=true{params}", encode(&id)),
                name,
            )
            .await;
            if err {
                return Ok((check, true));
            }
            let file = format!("{id}.pcapng");
            let mut cli = format!("remora pcap {id} --out {file}");
            for key in KEYS {
                if let Some(v) = arg(args, key).filter(|v| !v.is_null()) {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    let flag = key.replace('_', "-");
                    cli.push_str(&format!(" --{flag} '{}'", v.replace('\'', "'\\''")));
                }
            }
            (
                json!({
                    "snapshot": id,
                    "path": path,
                    "packets_in_snapshot": snap["packets"],
                    "kfl_calls": check["kfl_calls"],
                    "kfl_flows": check["kfl_flows"],
                    "download": format!("curl -sf -H \"Authorization: Bearer $(cat remora-data/token)\" \"http://127.0.0.1:8898{path}\" -o {file}"),
                    "cli": cli,
                    "format": "pcapng, one interface per node, raw IP (link type 101), nanosecond timestamps, packets cut at the recorder's snaplen",
                }),
                false,
            )
        }
        "list_l4_flows" => {
            let db = required(args, "db", name)?;
            let limit = arg(args, "limit")
                .and_then(Value::as_u64)
                .unwrap_or(20)
                .min(crate::api::MAX_FLOWS as u64);
            let path = format!(
                "/mcp/flows?db={}&limit={limit}{}",
                encode(&db),
                query(args, &["kfl", "cursor", "order"])
            );
            get(mcp, &path, name).await
        }
        "get_l4_flow_summary" => {
            let db = required(args, "db", name)?;
            let limit = arg(args, "limit").and_then(Value::as_u64).unwrap_or(50);
            let path = format!(
                "/mcp/flows/summary?db={}&limit={limit}{}",
                encode(&db),
                query(args, &["kfl", "group_by"])
            );
            get(mcp, &path, name).await
        }
        "run_sql" => {
            let body = json!({
                "query": required(args, "query", name)?,
                "db": text(args, "db"),
                "snapshot": text(args, "snapshot"),
                "max_rows": arg(args, "max_rows").and_then(Value::as_u64).unwrap_or(200),
                "timeout_ms": arg(args, "timeout_ms"),
            });
            into_result(mcp.request("POST", "/sql", Some(&body)).await, name)
        }
        "list_workloads" | "list_ips" => {
            let route = if name == "list_workloads" {
                "workloads"
            } else {
                "ips"
            };
            let mut q = query(
                args,
                &[
                    "snapshot_id",
                    "name",
                    "namespace",
                    "name_regex",
                    "type",
                    "timestamp",
                    "ip",
                    "limit",
                ],
            );
            if let Some(Value::Array(list)) = arg(args, "namespaces") {
                let list: Vec<String> = list
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect();
                q.push_str(&format!("&namespaces={}", encode(&list.join(","))));
            } else if let Some(ns) = text(args, "namespaces") {
                q.push_str(&format!("&namespaces={}", encode(&ns)));
            }
            match arg(args, "labels") {
                Some(Value::Object(labels)) => {
                    let pairs: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                            )
                        })
                        .collect();
                    q.push_str(&format!("&labels={}", encode(&pairs.join(","))));
                }
                Some(other) => {
                    let text = other
                        .as_str()
                        .map_or_else(|| other.to_string(), str::to_owned);
                    q.push_str(&format!("&labels={}", encode(&text)));
                }
                None => {}
            }
            let q = q.strip_prefix('&').unwrap_or(&q).to_owned();
            get(mcp, &format!("/mcp/resolve/{route}?{q}"), name).await
        }
        "get_coverage" => get(mcp, "/mcp/coverage", name).await,
        "get_tls_status" => {
            let (mut v, err) = get(mcp, "/mcp/tls-status", name).await;
            // Processes without any TLS library say nothing about decryption: counted, not
            // listed, and the rest fitted to the budget.
            for node in v["nodes"].as_array_mut().into_iter().flatten() {
                if let Some(list) = node["processes"].as_array_mut() {
                    let before = list.len();
                    list.retain(|p| p["stack"] != "none");
                    node["processes_without_tls"] = json!(before - list.len());
                }
            }
            super::bound::bound(&mut v, super::bound::DEFAULT_BUDGET);
            (v, err)
        }
        "describe_fields" => {
            let (v, err) = get(mcp, "/mcp/fields", name).await;
            // Compact: name, type, description; a model reads every byte.
            let fields: Vec<Value> = v["calls"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|f| json!([f["name"], f["type"], f["description"]]))
                        .collect()
                })
                .unwrap_or_default();
            (
                json!({"calls_fields [name, type, description]": fields, "aliases": v["aliases"]}),
                err,
            )
        }
        other => {
            return Err(McpError::invalid_params(
                format!("unknown tool `{other}`; tools/list shows the tools"),
                None,
            ));
        }
    };
    if !is_error {
        bound::bound(&mut value, budget);
    }
    Ok((value, is_error))
}
