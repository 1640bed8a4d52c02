"""The role-by-route matrix, generated from the app's own routes: a new route cannot be left out of it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app
from streamforge.runtime.control_plane.auth import Role, hash_password
from streamforge.runtime.control_plane.editor import editor_routes

# Routes that authenticate otherwise, each with why: gateways prove themselves with their JWT (tested in test_fleet),
# the schema registry takes a user's or a gateway's token (test_schema_registry_api), /mcp its own bearer check
# (test_mcp); login and registration are where a credential is obtained; liveness, health and the editor's static
# files reveal nothing.
AUTHENTICATED_OTHERWISE = {
    "POST /api/v1/gateways/register", "POST /api/v1/gateways/{gateway}/sync", "POST /api/v1/gateways/{gateway}/token",
    "POST /api/v1/gateways/{gateway}/alarms", "POST /api/v1/auth/login", "GET /health/live", "GET /health/ready",
    "GET /health", "GET /metrics", "POST /mcp", "GET /mcp", "DELETE /mcp",
}  # fmt: skip
REGISTRY_PREFIX = "/schemas/"


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(method, full path template, endpoint) of every HTTP route, through mounts; websockets are left to their
    tests (their credential is a query token or a gateway's JWT)."""
    for route in routes:
        if isinstance(route, Mount) and route.routes:
            yield from walk(list(route.routes), prefix + route.path)
        elif isinstance(route, Route) and not isinstance(route, WebSocketRoute):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    yield method, prefix + route.path, route.endpoint


def concrete(template: str) -> str:
    """A path for a template: every parameter a plausible value that names nothing stored."""
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: "1" if m.group(2) == ":int" else f"{m.group(1)}_x1", template)


Plane = tuple[Any, httpx.AsyncClient, Callable[[Role], str]]  # the app, a client of it, a fresh token per role


@pytest.fixture(scope="module")
async def plane(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Plane]:
    control_plane = ControlPlane.open(tmp_path_factory.mktemp("roles") / "cp", load_node_types(False))
    for role in Role:
        name = role.name.lower()
        control_plane.store.create_user(name, hash_password(f"{name}-password-123"), name)

    def token(role: Role) -> str:
        """A session of its own for each request: a route may end the caller's (logout)."""
        return control_plane.store.issue_token(role.name.lower(), "matrix", "session", 3600, 50)

    app = control_plane_app(control_plane, editor_routes())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cp", timeout=30) as http:
        yield app, http, token


def inner_routes(app: Any) -> list[BaseRoute]:
    while not hasattr(app, "routes"):  # through the middleware (body limit, audit) to the Starlette app
        app = app.app
    return list(app.routes)


async def test_every_route_declares_its_role_or_says_how_else_it_authenticates(plane: Plane) -> None:
    app, _, _ = plane
    undeclared = [f"{method} {path}" for method, path, endpoint in walk(inner_routes(app))
                  if getattr(endpoint, "required_role", None) is None and not path.startswith(REGISTRY_PREFIX)
                  and f"{method} {path}" not in AUTHENTICATED_OTHERWISE and path != "/{path:path}"]  # fmt: skip
    assert undeclared == [], "each route needs @requires(Role....) or a reason in AUTHENTICATED_OTHERWISE"


async def test_no_route_serves_a_missing_bad_or_lower_credential(plane: Plane) -> None:
    """For every role-guarded route: 401 without a token and with a bad one, 403 for each role below it, and the
    role itself gets past the check (whatever the action then answers for ids that do not exist)."""
    app, http, token = plane
    checked = 0
    for method, template, endpoint in walk(inner_routes(app)):
        needed: Role | None = getattr(endpoint, "required_role", None)
        if needed is None:
            continue
        path, where = concrete(template), f"{method} {template}"
        assert (await http.request(method, path)).status_code == 401, where
        bad = await http.request(method, path, headers={"Authorization": "Bearer sf_not-a-token"})
        assert bad.status_code == 401, where
        for role in Role:
            answer = await http.request(method, path, json={}, headers={"Authorization": f"Bearer {token(role)}"})
            if role < needed:
                assert answer.status_code == 403, (where, role)
                assert f"needs {needed.name.lower()} or higher" in answer.json()["error"]["message"], where
            else:
                assert answer.status_code not in (401, 403) or answer.json()["error"]["code"] not in (
                    "unauthenticated", "forbidden"), (where, role, answer.text)  # fmt: skip
                assert answer.status_code < 500, (where, role, answer.text)
        checked += 1
    assert checked >= 45  # the API's routes, not an empty walk


def test_the_matrix_walk_reaches_mounted_apis(tmp_path: Path) -> None:
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    found = {f"{m} {p}" for m, p, _ in walk(inner_routes(control_plane_app(control_plane)))}
    assert {"POST /api/v1/flows/{flow}/deploy", "POST /api/v1/alarms/{action}", "PUT /api/v1/gateways/{gateway}/labels",
            "GET /schemas/subjects"} <= found  # fmt: skip
