"""`streamforge control-plane`: the control plane alone (API, fleet, schema registry, editor, MCP), no gateway."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, serving
from streamforge.runtime.control_plane.auth import ensure_admin
from streamforge.runtime.control_plane.credentials import TOKEN_LIFETIME_S
from streamforge.runtime.control_plane.tls import TlsFiles
from streamforge.runtime.gateway.run import stop_on_signals
from streamforge.runtime.logs import configure_logging

log = logging.getLogger("streamforge.control_plane")


async def serve_control_plane(
    data_dir: Path,
    host: str,
    port: int,
    say: Callable[[str], None],
    poll_interval_s: float = 30.0,
    tls: TlsFiles | None = None,
    token_lifetime_s: float = TOKEN_LIFETIME_S,
    trusted_proxies: Sequence[str] = (),
    named_hosts: Collection[str] = (),
) -> None:
    """Run until SIGINT/SIGTERM. Gateways register at /api/v1/gateways/register and sync from there. `named_hosts`:
    the Host names answered besides `host` (--allowed-host)."""
    stop = stop_on_signals()
    control_plane = ControlPlane.open(data_dir, load_node_types(), poll_interval_s, token_lifetime_s)
    password = ensure_admin(control_plane.store)
    if password is not None:
        say(f"first start: created user `admin` with password {password} (shown once; stored only hashed)")
    configure_logging("control-plane", log_dir=control_plane.log_dir)  # into the ring /api/v1/logs reads
    served = (tls.cert, tls.key) if tls else None
    async with serving(
        control_plane, host, port, served, named_hosts=named_hosts, trusted_proxies=trusted_proxies
    ) as url:
        pinned = {"tls_fingerprint": tls.fingerprint(), "tls_ca": str(tls.ca or tls.cert)} if tls else {}
        say(json.dumps({"event": "control_plane", "url": url, "api": f"{url}/api/v1", "mcp": f"{url}/mcp",
                        "registry": f"{url}/schemas", "health": f"{url}/health", "metrics": f"{url}/metrics",
                        **pinned}))  # fmt: skip
        log.info("control plane serving", extra={"url": url})
        await stop.wait()
    say(json.dumps({"event": "stopped"}))
