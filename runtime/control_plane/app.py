"""The control plane's one composition root: the ASGI app (REST API, live socket, editor, /mcp, fleet, schema
registry at /schemas, health and metrics) and serving it. `streamforge control-plane` and `streamforge up` both run
exactly this; `up` adds a local gateway process that syncs from it like any other."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from streamforge.engine.node_types import NodeTypes
from streamforge.runtime.control_plane.api import control_plane_api
from streamforge.runtime.control_plane.audit import AuditTrail, caller_is
from streamforge.runtime.control_plane.auth import (
    Role,
    User,
    authenticate_header,
    bearer_token,
    require_role,
    role_guard,
)
from streamforge.runtime.control_plane.credentials import TOKEN_LIFETIME_S, TokenSigner
from streamforge.runtime.control_plane.editor import editor_routes
from streamforge.runtime.control_plane.fleet import FleetService
from streamforge.runtime.control_plane.fleet_api import fleet_routes
from streamforge.runtime.control_plane.gateway_metrics import fleet_exposition
from streamforge.runtime.control_plane.mcp_tools.server import mcp_route, mcp_server
from streamforge.runtime.control_plane.openapi import openapi_document
from streamforge.runtime.control_plane.operations import OperatorService
from streamforge.runtime.control_plane.operator_api import operator_routes
from streamforge.runtime.control_plane.schema_registry import SchemaApiError, SchemaStore, schema_registry_app
from streamforge.runtime.control_plane.service import FlowService
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import EXCEPTION_HANDLERS, ApiError
from streamforge.runtime.files import private_dir
from streamforge.runtime.http import serve_app
from streamforge.runtime.http_guard import HostAllowList, SecurityHeaders, allowed_hosts
from streamforge.runtime.limits import SMALL_BODY_BYTES, BodyLimit, LoginThrottle
from streamforge.runtime.logs import LogRing
from streamforge.runtime.protocol import REGISTRATION_BYTES

log = logging.getLogger("streamforge.control_plane")

HEARTBEAT_FLUSH_S = 5.0
PRUNE_EVERY_S = 600.0  # pushed metrics history and logs: dropped past their age and size bounds this often


@dataclass
class ControlPlane:
    store: Store
    node_types: NodeTypes
    fleet: FleetService
    schemas: SchemaStore
    operators: OperatorService
    flows: FlowService
    log_dir: Path
    throttle: LoginThrottle = field(default_factory=LoginThrottle)  # failed logins; a test may give it a clock

    @classmethod
    def open(cls, data_dir: Path, node_types: NodeTypes, poll_interval_s: float = 30.0,
             token_lifetime_s: float = TOKEN_LIFETIME_S) -> ControlPlane:  # fmt: skip
        """The control plane's state under data_dir: database (+ secrets key), signing key, schema registry."""
        private_dir(data_dir)  # 0700: the database, its key and the signing key are this user's alone
        store = Store(data_dir / "control-plane.sqlite")
        signer = TokenSigner(data_dir / "gateway-signing.pem", token_lifetime_s)
        fleet = FleetService(store, node_types, signer, poll_interval_s)
        log_dir = data_dir / "control-plane-logs"
        return cls(
            store,
            node_types,
            fleet,
            SchemaStore(data_dir / "registry.sqlite"),
            OperatorService(store, fleet, LogRing(log_dir)),
            FlowService(store, node_types, fleet),
            log_dir,
        )


def registry_guard(control_plane: ControlPlane) -> Callable[[Request, bool], None]:
    """Who may use /schemas: reads with any user's token (bearer, or HTTP basic with the token as password, as
    Confluent clients send) or a gateway's; registering needs a gateway's or an Engineer's."""
    store, fleet = control_plane.store, control_plane.fleet

    def check(request: Request, write: bool) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":  # Confluent clients send the API token as the basic-auth password
            with contextlib.suppress(ValueError):
                header = "Bearer " + base64.b64decode(value).decode().partition(":")[2]
        try:
            token = bearer_token(header, "token>, or basic auth with an API token as the password")
            if token.count(".") == 2:  # a JWT: a gateway's, good only while that gateway is approved
                caller_is(f"gateway:{fleet.gateway_of(token)['id']}", "gateway")
                return
            user = authenticate_header(store, header)
            caller_is(user.username, user.role.name.lower())
        except ApiError as refused:
            if refused.status == 403:
                raise SchemaApiError(403, 40301, refused.message) from None
            raise SchemaApiError(401, 40101, refused.message) from None
        if write:
            try:
                require_role(user, Role.ENGINEER, "registering a schema (or a gateway's token)")
            except ApiError as forbidden:
                raise SchemaApiError(403, 40301, forbidden.message) from None

    return check


def control_plane_app(control_plane: ControlPlane, extra_routes: Iterable[BaseRoute] = (),
                      hosts: Collection[str] | None = None) -> ASGIApp:  # fmt: skip
    """Every route of the control plane; `extra_routes` after the API (the editor's files, /mcp). `hosts`: the Host
    names it answers (runtime/http_guard.allowed_hosts; None: any, for a caller that bound it where that is safe).
    Every answer carries the browser security headers."""
    fleet = control_plane.fleet
    metrics = CollectorRegistry()
    gateways = Gauge("streamforge_gateways", "Gateways by health", ["health"], registry=metrics)
    seen = Gauge("streamforge_gateway_last_heartbeat_timestamp_seconds", "When each gateway last synced",
                 ["gateway", "name"], registry=metrics)  # fmt: skip
    up = Gauge("streamforge_gateway_up", "1 when the gateway's last heartbeat is recent", ["gateway", "name"],
               registry=metrics)  # fmt: skip
    linked = Gauge("streamforge_gateway_connected", "1 while the gateway's events socket is open",
                   ["gateway", "name"], registry=metrics)  # fmt: skip

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def health(request: Request) -> Response:
        rows = fleet.gateways()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["health"]] = counts.get(row["health"], 0) + 1
        return JSONResponse({"status": "HEALTHY", "component": "control-plane", "gateways": counts})

    async def exposition(request: Request) -> Response:
        for gauge in (gateways, seen, up, linked):  # a deleted, renamed or replaced gateway leaves no stale series
            gauge.clear()
        rows = fleet.gateways()
        fleet.metrics.forget({row["id"] for row in rows})
        for row in rows:
            gateways.labels(health=row["health"]).inc()
            if row["last_seen"] is not None:
                seen.labels(gateway=row["id"], name=row["name"]).set(row["last_seen"])
            up.labels(gateway=row["id"], name=row["name"]).set(1 if row["health"] not in ("OFFLINE",) else 0)
            linked.labels(gateway=row["id"], name=row["name"]).set(1 if fleet.connected(row["id"]) else 0)
        fleet_text = await asyncio.to_thread(fleet_exposition, fleet.metrics)  # every gateway's, labelled
        return Response(generate_latest(metrics) + fleet_text.encode(), media_type="text/plain; version=0.0.4")

    document: dict[str, Any] = {}

    @role_guard(control_plane.store)(Role.VIEWER)
    async def openapi(request: Request, user: User) -> Response:
        """With any user's token, as every other read of the API: only login, registration and the gateways' own
        calls answer before a credential, and the document need not be one of them."""
        return JSONResponse(document)

    registry = schema_registry_app(control_plane.schemas, registry_guard(control_plane))
    api_routes = [*fleet_routes(control_plane.store, fleet),
                  *operator_routes(control_plane.store, fleet, control_plane.operators)]  # fmt: skip
    not_rest = list(extra_routes)  # the editor's files and /mcp: not in the REST document
    api = control_plane_api(control_plane.flows, not_rest, api_routes, control_plane.throttle)
    routes: list[BaseRoute] = [
        Route("/health/live", live),
        Route("/health/ready", live),
        Route("/health", health),
        Route("/metrics", exposition),
        Route("/api/v1/openapi.json", openapi),
        Mount("/schemas", app=registry),
        Mount("/", app=api),
    ]
    app = AuditTrail(Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS), control_plane.store)
    document.update(openapi_document(routes, skip=not_rest))
    # Anyone who reaches the port can send to these two before any credential is checked.
    limited = BodyLimit(app, small={"/api/v1/auth/login": SMALL_BODY_BYTES,
                                    "/api/v1/gateways/register": REGISTRATION_BYTES})  # fmt: skip
    return SecurityHeaders(limited if hosts is None else HostAllowList(limited, hosts))


@contextlib.asynccontextmanager
async def serving(control_plane: ControlPlane, host: str, port: int, tls: tuple[Path, Path] | None = None,
                  named_hosts: Collection[str] = (),
                  trusted_proxies: Sequence[str] = ()) -> AsyncIterator[str]:  # fmt: skip
    """Serve the whole control plane (with /mcp and the editor) until the block exits; yields its base URL.
    `named_hosts`: Host names it answers besides the bound address (runtime/http_guard.allowed_hosts);
    `trusted_proxies`: CIDRs whose X-Forwarded-For is believed (see serve_app)."""
    tools = mcp_server(control_plane.flows, control_plane.operators)
    hosts = allowed_hosts(host, named_hosts)
    if hosts is None:
        log.warning("serving on every address with no --allowed-host: any Host header is answered; name the host "
                    "names clients use (--allowed-host) so a DNS-rebinding web page cannot reach the API",
                    extra={"host": host})  # fmt: skip
    routes = [mcp_route(tools, control_plane.flows, host), *editor_routes()]
    app = control_plane_app(control_plane, routes, hosts)
    async with (
        tools.session_manager.run(),
        fleet_flusher(control_plane.fleet),
        serve_app(app, host=host, port=port, tls=tls, websockets=True, trusted_proxies=trusted_proxies) as url,
    ):
        yield url


@contextlib.asynccontextmanager
async def fleet_flusher(fleet: FleetService) -> AsyncIterator[None]:
    """Persist heartbeats, pushed metrics history and logs every few seconds in one transaction each, not one
    write per message; prune the pushed history past its bounds now and then."""

    def flush() -> None:
        fleet.write_heartbeats(fleet.dirty_heartbeats())
        fleet.metrics.write_history(fleet.metrics.taken_history())
        fleet.logs.write(fleet.logs.taken())

    async def loop() -> None:
        pruned = 0.0
        while True:
            await asyncio.sleep(HEARTBEAT_FLUSH_S)
            await asyncio.to_thread(flush)
            if time.monotonic() - pruned > PRUNE_EVERY_S:
                pruned = time.monotonic()
                await asyncio.to_thread(fleet.metrics.prune)
                await asyncio.to_thread(fleet.logs.prune)

    task = asyncio.create_task(loop(), name="fleet-flush")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        flush()
