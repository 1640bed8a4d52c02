"""Serve an ASGI app with uvicorn inside the running event loop (gateway, control plane, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

from streamforge.runtime.http_guard import ErrorShield
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.protocol import PING_INTERVAL_S, PING_TIMEOUT_S


def http_host() -> str:
    """Loopback unless STREAMFORGE_HTTP_HOST says otherwise (0.0.0.0 in a container)."""
    return os.environ.get("STREAMFORGE_HTTP_HOST", "127.0.0.1")


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (a host name other than localhost: not known to be)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.asynccontextmanager
async def serve_app(
    app: ASGIApp,
    host: str | None = None,
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
    websockets: bool = False,
    trusted_proxies: Sequence[str] = (),
) -> AsyncIterator[str]:
    """Serve `app` until the block exits (on http_host() unless `host`); yields its base URL.
    `tls`: (certificate chain, private key) files: HTTPS. `websockets`: the app has WebSocket routes (the control
    plane's); without, uvicorn loads no WebSocket library (~0.7 MB in every gateway). `trusted_proxies`: addresses
    or CIDRs whose X-Forwarded-For / -Proto headers are believed; from anyone else (loopback too) they are ignored,
    so a client cannot pick the address login throttling counts it under. An exception the app lets out is one log
    line and a 500 with an error id (runtime/http_guard.ErrorShield), never a traceback in the log."""
    host = host or http_host()
    port = port or free_port(host)
    certificate, key = (str(tls[0]), str(tls[1])) if tls else (None, None)
    # Pings on every websocket: a gateway whose link died is noticed in seconds, not when TCP gives up.
    config = uvicorn.Config(ErrorShield(app), host=host, port=port, log_config=None, access_log=False, lifespan="off",
                            ssl_certfile=certificate, ssl_keyfile=key, ws="auto" if websockets else "none",
                            ws_ping_interval=PING_INTERVAL_S, ws_ping_timeout=PING_TIMEOUT_S,
                            proxy_headers=bool(trusted_proxies), forwarded_allow_ips=list(trusted_proxies))  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name=f"http-{port}")
    while not server.started:
        if task.done():
            task.result()  # re-raise the start-up error (port taken, ...)
            raise RuntimeError(f"HTTP server on {host}:{port} stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield f"{'https' if tls else 'http'}://{host}:{port}"
    finally:
        server.should_exit = True
        await task
