"""The audit trail: every state-changing REST call leaves one row saying who, as what, did what, to what, how."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app
from streamforge.runtime.control_plane.auth import Role, hash_password


@dataclass
class Plane:
    http: httpx.AsyncClient
    tokens: dict[str, str]

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def trail(self, **query: Any) -> list[dict[str, Any]]:
        answer = await self.http.get("/audit", params=query, headers=self.as_("engineer"))
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    """The whole control plane app, no gateway: what is audited does not depend on one."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    store = control_plane.store
    tokens = {}
    for role in Role:
        name = role.name.lower()
        store.create_user(name, hash_password(f"{name}-password-123"), name)
        tokens[name] = store.issue_token(name, "test")
    transport = httpx.ASGITransport(app=control_plane_app(control_plane), client=("10.1.2.3", 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://cp/api/v1") as http:
        yield Plane(http, tokens)


def document(flow_id: str) -> dict[str, Any]:
    return {"format": "streamforge.flow/v1", "id": flow_id, "label": "audited", "version": 0,
            "nodes": [{"id": "val", "type": "validator", "x": 0, "y": 0, "config": {}}], "edges": []}  # fmt: skip


async def test_every_state_changing_rest_call_is_audited_once(plane: Plane) -> None:
    """#41 W4: REST saves, deletes, secrets, grants and users were not in /audit at all (only MCP tools were)."""
    engineer, admin = plane.as_("engineer"), plane.as_("admin")
    body = httpx.Request("POST", "http://x", json=document("line_a")).content
    created = await plane.http.post("/flows", content=body, headers={**engineer, "content-type": "application/json"})
    assert created.status_code == 201
    assert (await plane.http.put("/secrets/line_a.db.dsn", json={"value": "postgresql://x"},
                                 headers=engineer)).status_code == 204  # fmt: skip
    assert (await plane.http.put("/secrets/line_a.db.dsn/grants/line_a", headers=admin)).status_code == 204
    assert (await plane.http.post("/users", json={"username": "eve", "password": "a-long-password-1",
                                                   "role": "viewer"}, headers=admin)).status_code == 201  # fmt: skip
    assert (await plane.http.delete("/flows/line_a", headers=engineer)).status_code == 204
    rows = await plane.trail(channel="rest")
    assert [(r["identity"], r["role"], r["tool"], r["target"], r["outcome"]) for r in reversed(rows)] == [
        ("engineer", "engineer", "POST /api/v1/flows", None, "ok"),
        ("engineer", "engineer", "PUT /api/v1/secrets/{name}", "name=line_a.db.dsn", "ok"),
        ("admin", "admin", "PUT /api/v1/secrets/{name}/grants/{flow}", "flow=line_a,name=line_a.db.dsn", "ok"),
        ("admin", "admin", "user.create", "eve", "ok"),  # written by its handler, with the user it made
        ("engineer", "engineer", "DELETE /api/v1/flows/{flow}", "flow=line_a", "ok"),
    ]
    assert rows[-1]["arguments_digest"] == hashlib.sha256(body).hexdigest()  # an auditor recomputes it
    assert "postgresql://x" not in str(rows) and "a-long-password-1" not in str(rows)  # digests, never values
    assert await plane.trail(identity="admin", tool="user.create") == [rows[1]]


async def test_refusals_are_audited_with_their_reason_but_anonymous_noise_is_not(plane: Plane) -> None:
    """#41 W4: a Viewer trying to deploy is on the trail as refused, with the status and error code; a request
    with no valid credential names nobody and is left out (anyone could fill the trail with them)."""
    assert (await plane.http.post("/flows/x/deploy", headers=plane.as_("viewer"))).status_code == 403
    assert (await plane.http.post("/flows/x/deploy")).status_code == 401
    assert (await plane.http.post("/flows/x/deploy", headers={"Authorization": "Bearer sf_nope"})).status_code == 401
    assert (await plane.http.post("/flows/x/changes", json=document("x"), headers=plane.as_("viewer"))).is_success
    (row,) = await plane.trail()
    assert (row["identity"], row["role"], row["tool"], row["outcome"], row["detail"]) == (
        "viewer",
        "viewer",
        "POST /api/v1/flows/{flow}/deploy",
        "refused",
        "403 forbidden",
    )


async def test_a_handler_that_audits_itself_is_not_audited_twice(plane: Plane) -> None:
    """The operator service writes its own row (with what it did); the HTTP layer then adds none, but the row still
    says it came over REST and as which role."""
    approved = await plane.http.post("/action-approvals", json={"action": "acknowledge_alarm", "arguments": {
        "event_id": "rule|a|p#1.1"}}, headers=plane.as_("operator"))  # fmt: skip
    assert approved.status_code == 201
    (row,) = await plane.trail()
    assert (row["tool"], row["identity"], row["role"], row["channel"]) == ("approve_action", "operator", "operator",
                                                                          "rest")  # fmt: skip
