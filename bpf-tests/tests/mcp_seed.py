"""Drives Remora's MCP server with the official MCP Python SDK through the seed's flow.

argv: <mcp url | stdio:<remora binary>> <token or token file> <expected json> <snapshot name>;
expected = {"filters": {"<kfl>": total, ...}, "errors": n, "calls": n}. With `stdio:` the
client starts `remora mcp --url http://127.0.0.1:8898 --token-file <token file>` itself.
Prints one JSON object: the bytes each step returned and the wall time. Exits non-zero with a
message on any mismatch.
"""
import asyncio
import json
import sys
import time

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

URL, TOKEN, EXPECT, SNAP = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
TOOLS = {
    "get_data_boundaries", "create_snapshot", "get_snapshot", "list_snapshots",
    "start_snapshot_dissection", "get_snapshot_dissection_status", "list_snapshot_dissections",
    "list_api_calls", "get_api_call", "get_api_stats", "analyze_calls", "describe_fields",
    "export_snapshot_pcap", "run_sql", "list_l4_flows", "get_l4_flow_summary",
    "list_workloads", "list_ips", "get_coverage", "get_tls_status",
}
sizes = {}


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


async def call(s, step, name, args):
    r = await s.call_tool(name, args)
    text = "".join(c.text for c in r.content if getattr(c, "type", "") == "text")
    sizes[step] = sizes.get(step, 0) + len(text.encode())
    return r.is_error if hasattr(r, "is_error") else r.isError, text


async def poll(s, step, name, args, key="status", until=("completed", "failed", "cancelled")):
    for _ in range(300):
        err, text = await call(s, step, name, args)
        check(not err, f"{name}: {text}")
        v = json.loads(text)
        if v.get(key) in until:
            return v
        await asyncio.sleep(0.2)
    check(False, f"{name} never finished")


async def main():
    started = time.monotonic()
    if URL.startswith("stdio:"):
        params = StdioServerParameters(
            command=URL[len("stdio:"):],
            args=["mcp", "--url", "http://127.0.0.1:8898", "--token-file", TOKEN,
                  "--redact-pattern", '"items": [0-9]+'],
        )
        transport = stdio_client(params)
    else:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
        transport = streamable_http_client(URL, http_client=http)
    async with transport as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            check("get_data_boundaries" in (s.instructions or ""), "instructions teach the flow")
            tools = (await s.list_tools()).tools
            names = {t.name for t in tools}
            check(names == TOOLS, f"tools: {sorted(names)}")
            for t in tools:
                schema = t.input_schema if hasattr(t, "input_schema") else t.inputSchema
                for prop, spec in schema.get("properties", {}).items():
                    check(spec.get("description"), f"{t.name}.{prop} has no description")
                check(t.description, f"{t.name} has no description")
            prompts = {p.name for p in (await s.list_prompts()).prompts}
            check(prompts == {"investigate_errors", "latency_analysis", "trace_request"}, f"prompts {prompts}")
            p = await s.get_prompt("investigate_errors", {"service": "frontend"})
            check("create_snapshot" in p.messages[0].content.text, "prompt teaches the flow")

            err, text = await call(s, "1 boundaries", "get_data_boundaries", {})
            check(not err and json.loads(text)["nodes"][0]["name"] == "test", text)
            err, text = await call(s, "2 snapshot", "create_snapshot", {"name": SNAP, "duration": "2m"})
            check(not err and json.loads(text)["status"] == "in_progress", text)
            snap = await poll(s, "3 snapshot status", "get_snapshot", {"id": SNAP})
            check(snap["status"] == "completed", snap)
            err, text = await call(s, "3 pcap", "export_snapshot_pcap", {"snapshot_id": SNAP})
            v = json.loads(text)
            check(not err and v["path"].startswith(f"/mcp/snapshots/{SNAP}/pcap"), text)
            if not URL.startswith("stdio:"):
                # The path the tool gives streams a pcapng with the snapshot's packets.
                import urllib.request
                base = URL.rsplit("/mcp", 1)[0]
                req = urllib.request.Request(base + v["path"], headers={"Authorization": f"Bearer {TOKEN}"})
                r = await asyncio.to_thread(urllib.request.urlopen, req)
                body = r.read()
                check(r.status == 200 and body[:4] == b"\x0a\x0d\x0d\x0a" and len(body) > 1000,
                      f"pcap download: {r.status}, {len(body)} bytes")
            err, text = await call(s, "4 dissection", "start_snapshot_dissection", {"snapshot_id": SNAP, "name": "m1"})
            check(not err, text)
            done = await poll(s, "5 dissection status", "get_snapshot_dissection_status", {"snapshot_id": SNAP, "name": "m1"})
            check(done["status"] == "completed", done)
            db = f"{SNAP}/m1"
            for i, (kfl, want) in enumerate(EXPECT["filters"].items()):
                err, text = await call(s, f"{6 + i} calls", "list_api_calls", {"db": db, "kfl": kfl, "limit": 1000})
                v = json.loads(text)
                check(not err and v["total"] == want and len(v["calls"]) == want, f"{kfl}: want {want}, got {text[:300]}")
            err, text = await call(s, "10 analyze", "analyze_calls", {"db": db, "kfl": "http"})
            v = json.loads(text)
            check(not err and v["count"] == EXPECT["calls"] and v["errors"] == EXPECT["errors"], text[:400])
            check(len(v["slowest"]) == 5 and v["by_path"] and v["timeline"], text[:400])
            # What the calls cannot show is said with them.
            check("processes_decrypted" in v["tls_status"], text[:400])
            err, text = await call(s, "10 tls", "get_tls_status", {})
            check(not err and "nodes" in json.loads(text), text[:300])
            slowest = v["slowest"][0]["elapsed_time"]
            check(all(c.get("elapsed_time", 0) <= slowest for c in v["slowest"]), "slowest first")
            err, text = await call(s, "11 stats", "get_api_stats", {"db": db, "kfl": "http", "group_by": "path"})
            check(not err and json.loads(text)["count"] == EXPECT["calls"], text[:300])

            # TCP flows: every connection of the snapshot, summed per edge.
            err, text = await call(s, "11 flows", "get_l4_flow_summary", {"db": db})
            v = json.loads(text)
            check(not err and v["connections"] >= 1 and v["groups"], text[:300])
            err, text = await call(s, "11 flows", "list_l4_flows", {"db": db, "limit": 5})
            check(not err and json.loads(text)["total"] == v["connections"], text[:300])

            # SQL composes with KFL and agrees with the stats tool.
            err, text = await call(s, "11 sql", "run_sql", {"db": db, "query": "SELECT count(*) AS n, count(DISTINCT path) AS paths FROM kfl('http')"})
            check(not err and json.loads(text)["rows"][0]["n"] == EXPECT["calls"], text[:300])
            err, text = await call(s, "11 sql", "run_sql", {"db": db, "query": "DELETE FROM calls"})
            check(err and "not_read_only" in text, text[:300])

            # Redaction: the call that carried a secret shows it masked, and it appears nowhere.
            err, text = await call(s, "12 call", "list_api_calls", {"db": db, "kfl": "\"authorization\" in request.headers", "format": "full"})
            v = json.loads(text)
            check(not err and v["total"] == 1, text[:300])
            check(v["calls"][0]["request.headers"]["authorization"] == "[REDACTED]", text[:500])
            check("s3cret" not in text, "secret leaked through list_api_calls")
            err, text = await call(s, "12 call", "get_api_call", {"db": db, "id": v["calls"][0]["id"]})
            check(not err and "s3cret" not in text and "[REDACTED]" in text, text[:500])
            # A configured pattern masks body text too (remora started with --redact-pattern).
            check(json.loads(text)["response_body"] == "{[REDACTED]}\n", text[:800])

            # Errors a model can act on.
            err, text = await call(s, "errors", "list_api_calls", {"db": db, "kfl": "dst.servce.name == \"x\""})
            check(err and "dst.service.name" in text and "^" in text, text)
            err, text = await call(s, "errors", "get_snapshot", {"id": "no-such"})
            check(err and "list_snapshots" in text, text)
            try:
                await s.call_tool("no_such_tool", {})
                check(False, "unknown tool accepted")
            except Exception as e:  # noqa: BLE001 - the SDK raises the JSON-RPC error
                check("unknown tool" in str(e), str(e))
            try:
                await s.call_tool("list_api_calls", {"db": db, "limit": "many"})
                check(False, "wrong argument type accepted")
            except Exception as e:  # noqa: BLE001
                check("limit" in str(e), str(e))
    print(json.dumps({"wall_s": round(time.monotonic() - started, 3), "bytes": sizes}))


asyncio.run(main())
