"""Calls MCP tools with the official MCP Python SDK over Streamable HTTP and prints the results.

argv: <mcp url> <token>; stdin: a JSON list of [tool, arguments]; stdout: a JSON list of
{"is_error": bool, "result": <the tool's JSON>} in the same order.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

URL, TOKEN = sys.argv[1], sys.argv[2]
CALLS = json.load(sys.stdin)


async def main():
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    out = []
    async with streamable_http_client(URL, http_client=http) as streams:
        async with ClientSession(streams[0], streams[1]) as s:
            await s.initialize()
            for name, args in CALLS:
                r = await s.call_tool(name, args)
                text = "".join(c.text for c in r.content if getattr(c, "type", "") == "text")
                err = r.is_error if hasattr(r, "is_error") else r.isError
                out.append({"is_error": bool(err), "result": json.loads(text)})
    print(json.dumps(out))


asyncio.run(main())
