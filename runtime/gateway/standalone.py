"""`streamforge gateway`: a gateway of its own (embedded Kafka, nodes, cache) synced from a control plane."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamforge.runtime.gateway.agent import SyncAgent
from streamforge.runtime.gateway.gateway import health_app
from streamforge.runtime.gateway.local_auth import token_path
from streamforge.runtime.gateway.run import gateway_stack, stop_on_signals
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import KafkaAccess


def identify_logs(agent: SyncAgent) -> None:
    """Every log line of this gateway carries its gateway id once it has one (its workers get it through the
    environment they inherit)."""

    class Identify(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.gateway_id = agent.status.gateway_id or "unregistered"
            return True

    for handler in logging.getLogger().handlers:
        handler.addFilter(Identify())


async def run_gateway(
    control_plane: str,
    data_dir: Path,
    name: str,
    labels: dict[str, str],
    say: Callable[[str], None],
    existing_kafka: KafkaAccess | None = None,
    port: int = 0,
    enrolment_key: str | None = None,
    poll_interval_s: float = 30.0,
    ca_file: Path | None = None,
    registry_url: str | None = None,
) -> None:
    """Boot from the local cache first (no network), then sync; run until SIGINT/SIGTERM."""
    stop = stop_on_signals()
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    sync_dir = data_dir / "sync"
    schemas = registry_url or f"{control_plane.rstrip('/')}/schemas"
    # The control plane's registry trusts and is trusted as the control plane is; a cluster's own: its own.
    token_file, registry_ca = (None, None) if registry_url else (sync_dir / "credentials.json", ca_file)
    async with gateway_stack(data_dir, existing_kafka, schemas, token_file, registry_ca) as gateway:
        agent = SyncAgent(gateway, control_plane, data_dir, name, labels, enrolment_key, poll_interval_s, verify,
                          version=version("streamforge"))  # fmt: skip
        identify_logs(agent)

        async def sync_status(request: Request) -> JSONResponse:
            return JSONResponse(agent.status.to_dict())

        async def logs(request: Request) -> JSONResponse:
            """The ring, read where the gateway runs (the control plane's /api/v1/logs asks every gateway)."""
            return JSONResponse(await agent.operations.run("logs", dict(request.query_params)))

        routes = [Route("/sync", sync_status), Route("/api/v1/logs", logs)]
        app = health_app(gateway, routes, commands=False, sync=agent.status.to_dict, token_dir=data_dir)
        async with serve_app(app, port=port) as url:
            await agent.boot()
            say(json.dumps({"event": "gateway", "health": f"{url}/health", "metrics": f"{url}/metrics",
                            "sync": f"{url}/sync", "token_file": str(token_path(data_dir)),
                            "kafka": gateway.env.kafka.bootstrap, "flows": agent.running(),
                            "instance_id": agent.identity.instance_id}))  # fmt: skip
            syncing = asyncio.create_task(agent.run(), name="sync")
            try:
                await stop.wait()
            finally:
                syncing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncing
                await agent.aclose()
    say(json.dumps({"event": "stopped"}))
