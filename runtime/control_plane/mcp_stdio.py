"""`streamforge mcp`: the MCP tools over stdio for a local agent, relayed to the control plane's /mcp as one
named token (scope `mcp`: it works only there), so every call runs the same tools with that token's role and lands in
the same audit trail."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from mcp_types import CallToolRequestParams, CallToolResult, ListToolsResult, PaginatedRequestParams


async def serve_stdio(url: str, token: str, ca_file: Path | None = None) -> None:
    """Relay until stdin closes; `url` is the control plane (e.g. http://127.0.0.1:8080). `ca_file`: the CA its
    TLS certificate must chain to (pinned), for a control plane with its own CA (`--tls auto`)."""
    headers = {"Authorization": f"Bearer {token}"}
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(120), verify=verify) as http,
        Client(streamable_http_client(f"{url.rstrip('/')}/mcp", http_client=http)) as upstream,
    ):

        async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
            return await upstream.list_tools(cursor=params.cursor if params else None)

        async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
            return await upstream.call_tool(params.name, params.arguments or {})

        relay: Server[Any] = Server("streamforge", instructions=upstream.instructions,
                                    on_list_tools=list_tools, on_call_tool=call_tool)  # fmt: skip
        async with stdio_server() as (read, write):
            await relay.run(read, write, relay.create_initialization_options())
