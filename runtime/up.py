"""`streamforge up`: control plane, gateway and embedded Kafka on one machine (the spec's Pattern B)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path

from starlette.routing import Mount

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import load_flow, validate_flow
from streamforge.engine.problems import FlowInvalid
from streamforge.engine.registry import load_registry
from streamforge.engine.secrets import externalize, resolve
from streamforge.runtime.control_plane.api import control_plane_api
from streamforge.runtime.control_plane.auth import ensure_admin
from streamforge.runtime.control_plane.editor import editor_routes
from streamforge.runtime.control_plane.mcp_server import RecentLogs, mcp_route, mcp_server
from streamforge.runtime.control_plane.service import FlowService
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.demo_devices import demo_devices
from streamforge.runtime.gateway.gateway import DeployFailed, Gateway, health_app
from streamforge.runtime.gateway.run import gateway_stack, stop_on_signals
from streamforge.runtime.http import http_host, serve_app

log = logging.getLogger("streamforge.up")


def seed_demo(store: Store, demo: Path) -> str | None:
    """On first start only, store the demo flow and mark it to be deployed; returns its id."""
    if store.list_flows() or not demo.exists():
        return None
    document = load_flow(demo.read_bytes())
    keep = functools.partial(store.put_secret, user="streamforge")
    saved = store.save_flow(externalize(document.model_dump(by_alias=True), load_registry(), keep), None, "streamforge")
    store.mark_deployed(saved.flow_id, saved.version)
    return saved.flow_id


async def redeploy(store: Store, gateway: Gateway) -> list[str]:
    """Start every flow at the version last deployed: a restart resumes where the gateway was."""
    started = []
    for flow in store.list_flows():
        if flow["deployed_version"] is None:
            continue
        version = store.get_flow(flow["id"], flow["deployed_version"])
        try:
            document = validate_flow(resolve(version.document, store.secret))
            await gateway.deploy(compile_flow(document, gateway.node_types))
        except (FlowInvalid, DeployFailed) as exc:  # one bad flow must not keep the others down
            log.error("flow not started", extra={"flow": flow["id"], "error": str(exc)})
            continue
        started.append(flow["id"])
    return started


async def up(
    data_dir: Path,
    bootstrap: str | None,
    port: int,
    demo: Path | None,
    say: Callable[[str], None],
    registry_url: str | None = None,
    devices: bool = False,
) -> None:
    """Run until SIGINT/SIGTERM; the next `up` on the same data dir resumes with the same data.

    `devices`: also run the simulated Modbus PLC and OPC UA server the demo flow reads (runtime/demo_devices.py).
    """
    stop = stop_on_signals()
    store = Store(data_dir / "control-plane.sqlite")  # secrets' key beside it, 0600
    password = ensure_admin(store)
    if password is not None:
        say(f"first start: created user `admin` with password {password} (shown once; stored only hashed)")
    seeded = seed_demo(store, demo) if demo else None
    logs = RecentLogs()
    logging.getLogger("streamforge").addHandler(logs)
    async with (
        demo_devices() if devices else contextlib.nullcontext() as simulated,
        gateway_stack(data_dir, bootstrap, registry_url) as gateway,
    ):
        if simulated is not None:
            say(json.dumps({"event": "demo_devices", "modbus": simulated.modbus, "opcua": simulated.opcua}))
        node_types = load_registry()
        flows = FlowService(store, node_types, gateway)
        tools = mcp_server(flows, logs)
        routes = [mcp_route(tools, flows, http_host()), *editor_routes()]
        api = control_plane_api(store, node_types, gateway, routes)
        async with (
            tools.session_manager.run(),
            serve_app(health_app(gateway, [Mount("/", app=api)], commands=False), port=port) as url,
        ):
            started = await redeploy(store, gateway)
            say(json.dumps({"event": "up", "editor": f"{url}/", "api": f"{url}/api/v1", "mcp": f"{url}/mcp",
                            "health": f"{url}/health", "metrics": f"{url}/metrics", "kafka": gateway.env.bootstrap,
                            "flows": started, "seeded": seeded, "url": url}))  # fmt: skip
            await stop.wait()
    say(json.dumps({"event": "stopped"}))
