"""Gateway identity against a real control plane (issue 41: V1, W3, W6): possession of a gateway's registration
secret, not its instance id, is who it is; an identity that cannot prove it is a new pending one beside the old, which
an Admin replaces, rejects or deletes; registration is bounded; a gateway's token is good only while it is approved."""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from nacl.public import PrivateKey, SealedBox

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app
from streamforge.runtime.control_plane.auth import ensure_admin, hash_password
from streamforge.runtime.control_plane.live import UNAUTHORIZED
from streamforge.runtime.http import serve_app


@dataclass
class Plane:
    control_plane: ControlPlane
    url: str
    http: httpx.AsyncClient  # as the Admin
    viewer: dict[str, str]


@dataclass
class FakeGateway:
    """A gateway as the control plane sees it: its instance id, its secret and its X25519 key."""

    instance_id: str
    name: str = "press"
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key: PrivateKey = field(default_factory=PrivateKey.generate)
    token: str | None = None
    gateway_id: str | None = None

    def registration(self, enrolment_key: str | None = None) -> dict[str, Any]:
        return {"name": self.name, "instance_id": self.instance_id, "secret": self.secret,
                "public_key": base64.b64encode(bytes(self.key.public_key)).decode(), "labels": {"site": "north"},
                "node_types": {"simulator": None, "validator": None, "postgres": None},
                "enrolment_key": enrolment_key}  # fmt: skip

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def unseal(self, sealed: str) -> str:
        return SealedBox(self.key).decrypt(base64.b64decode(sealed)).decode()


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[Plane]:
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False), poll_interval_s=5)
    ensure_admin(control_plane.store)
    token = control_plane.store.issue_token("admin", "test")
    control_plane.store.create_user("viewer", hash_password("viewer-password-123"), "viewer")
    viewer = {"Authorization": f"Bearer {control_plane.store.issue_token('viewer', 'test')}"}
    async with (
        serve_app(control_plane_app(control_plane), websockets=True) as url,
        httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30, headers={"Authorization": f"Bearer {token}"}) as http,
    ):
        yield Plane(control_plane, url, http, viewer)


async def register(plane: Plane, gateway: FakeGateway, enrolment_key: str | None = None) -> httpx.Response:
    answer = await plane.http.post("/gateways/register", json=gateway.registration(enrolment_key),
                                   headers={"Authorization": ""})  # fmt: skip
    if answer.status_code in (200, 202):
        gateway.gateway_id = answer.json()["gateway_id"]
        gateway.token = answer.json().get("token") or gateway.token
    return answer


async def enrolment_key(plane: Plane) -> str:
    return str((await plane.http.post("/enrolment-keys", json={"labels": {}})).json()["enrolment_key"])


async def sync(plane: Plane, gateway: FakeGateway) -> httpx.Response:
    return await plane.http.post(f"/gateways/{gateway.gateway_id}/sync", json={}, headers=gateway.auth())


async def flow_with_a_secret(plane: Plane, flow_id: str) -> None:
    document = {
        "format": "streamforge.flow/v1", "id": flow_id, "version": 0,
        "nodes": [{"id": "sim", "type": "simulator", "config": {"signals": [{"asset_id": "a", "parameter": "p"}]}},
                  {"id": "val", "type": "validator", "config": {}},
                  {"id": "db", "type": "postgres", "config": {"dsn": "postgresql://u:hunter2@db/x"}}],
        "edges": [{"from": "sim:out", "to": "val:in"}, {"from": "val:clean", "to": "db:telemetry"}],
    }  # fmt: skip
    assert (await plane.http.post("/flows", json=document)).status_code == 201


async def approved_victim(plane: Plane) -> FakeGateway:
    """An approved gateway running a flow with a secret, synced once."""
    victim = FakeGateway("plant-7-press", name="press_7")
    assert (await register(plane, victim, await enrolment_key(plane))).status_code == 200
    await flow_with_a_secret(plane, "line_7")
    assigned = await plane.http.post("/assignments", json={"flow": "line_7", "version": 1,
                                                          "gateway": victim.gateway_id})  # fmt: skip
    assert assigned.status_code == 201, assigned.text
    synced = await sync(plane, victim)
    assert synced.status_code == 200 and victim.unseal(synced.json()["secrets"]["line_7.db.dsn"]).endswith("@db/x")
    return victim


def public_key_of(plane: Plane, gateway_id: str | None) -> str:
    row = plane.control_plane.store.db.execute("SELECT public_key FROM gateways WHERE id = ?", (gateway_id,))
    return str(row.fetchone()[0])


async def test_v1_a_known_instance_id_without_its_secret_never_touches_the_gateway(plane: Plane) -> None:
    """V1: an attacker re-registering with an approved gateway's instance id and a valid enrolment key, without its
    secret, is a new pending identity; the victim keeps its key, its approval, its secrets and its sync."""
    victim = await approved_victim(plane)
    victim_key = public_key_of(plane, victim.gateway_id)
    instance_id = (await plane.http.get(f"/gateways/{victim.gateway_id}", headers=plane.viewer)).json()["instance_id"]
    key = await enrolment_key(plane)
    attacker = FakeGateway(instance_id, name="press_7")
    answer = await register(plane, attacker, key)
    assert answer.status_code == 202, answer.text
    assert answer.json()["claims"] == victim.gateway_id and "token" not in answer.json()
    assert attacker.gateway_id != victim.gateway_id and attacker.token is None

    assert public_key_of(plane, victim.gateway_id) == victim_key
    rows = {row["id"]: row for row in (await plane.http.get("/gateways")).json()}
    assert rows[victim.gateway_id]["status"] == "approved" and rows[victim.gateway_id]["claims"] is None
    assert rows[attacker.gateway_id]["status"] == "pending" and rows[attacker.gateway_id]["claims"] == victim.gateway_id
    assert rows[attacker.gateway_id]["name"] == "press_7-2"  # names stay unique
    synced = await sync(plane, victim)  # the real gateway's next sync: its state, its secrets, sealed to its key
    assert synced.status_code == 200 and victim.unseal(synced.json()["secrets"]["line_7.db.dsn"]).endswith("@db/x")
    assert (await sync(plane, attacker)).status_code == 401  # no token, no state

    # Again and again, with or without a key: still pending, still nothing touched; the key was not spent.
    assert (await register(plane, attacker, key)).status_code == 202
    assert (await register(plane, FakeGateway(instance_id))).status_code == 202
    assert (await register(plane, FakeGateway("a-fresh-instance"), key)).status_code == 200
    assert public_key_of(plane, victim.gateway_id) == victim_key
    trail = plane.control_plane.store.audit_trail(tool="gateway.register")
    assert any(row["target"] == attacker.gateway_id and row["detail"] == f"claims the instance id of gateway "
               f"{victim.gateway_id}" and row["outcome"] == "pending" for row in trail)  # fmt: skip


async def test_v1_the_real_gateway_restarting_with_its_secret_is_accepted_as_before(plane: Plane) -> None:
    """V1: re-registration with the gateway's own secret (a restart, a lost token) is the same gateway: approved at
    once with a new token, no new identity, no key spent."""
    victim = await approved_victim(plane)
    first_token = victim.token
    again = await register(plane, victim, "sfe_not-a-key-at-all")  # a retry needs no key: it is not even read
    assert again.status_code == 200 and again.json()["gateway_id"] == victim.gateway_id
    assert victim.token != first_token and (await sync(plane, victim)).status_code == 200
    assert [row["id"] for row in (await plane.http.get("/gateways")).json()] == [victim.gateway_id]


async def test_v1_an_admin_replaces_the_old_gateway_with_the_rebuilt_one_and_it_is_audited(plane: Plane) -> None:
    """V1: a gateway rebuilt after a disk loss (new secret, same instance id) waits beside the old one; an Admin's
    replace moves the old one's name, labels and assignments to it and retires the old, whose token and secret are
    refused from then on."""
    victim = await approved_victim(plane)
    assert (await plane.http.put(f"/gateways/{victim.gateway_id}/labels",
                                 json={"labels": {"site": "south", "line": "7"}})).status_code == 200  # fmt: skip
    rebuilt = FakeGateway(victim.instance_id, name="press_7")
    assert (await register(plane, rebuilt)).status_code == 202
    as_viewer = await plane.http.post(f"/gateways/{rebuilt.gateway_id}/replace", headers=plane.viewer,
                                      json={"replaces": victim.gateway_id})  # fmt: skip
    assert as_viewer.status_code == 403
    itself = await plane.http.post(f"/gateways/{rebuilt.gateway_id}/replace", json={"replaces": rebuilt.gateway_id})
    assert itself.status_code == 422 and "cannot replace itself" in itself.json()["error"]["message"]
    replaced = await plane.http.post(f"/gateways/{rebuilt.gateway_id}/replace", json={"replaces": victim.gateway_id})
    assert replaced.status_code == 200, replaced.text
    new = replaced.json()
    assert new["status"] == "approved" and new["name"] == "press_7" and new["claims"] is None
    assert new["labels"] == {"site": "south", "line": "7"} and new["desired"] == {"line_7": 1}
    old = (await plane.http.get(f"/gateways/{victim.gateway_id}")).json()
    assert old["status"] == "retired" and old["replaced_by"] == rebuilt.gateway_id and old["desired"] == {}

    refused = await sync(plane, victim)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "replaced"
    again = await register(plane, victim)
    assert again.status_code == 403 and rebuilt.gateway_id in again.json()["error"]["message"]
    assert (await register(plane, rebuilt)).status_code == 200  # its next retry gets its token
    synced = await sync(plane, rebuilt)
    assert synced.status_code == 200 and [f["id"] for f in synced.json()["flows"]] == ["line_7"]
    assert rebuilt.unseal(synced.json()["secrets"]["line_7.db.dsn"]).endswith("@db/x")
    trail = plane.control_plane.store.audit_trail(tool="gateway.replace")
    assert [(row["identity"], row["target"], row["outcome"]) for row in trail] == [
        ("admin", rebuilt.gateway_id, "ok"), ("admin", rebuilt.gateway_id, "refused")]  # newest first  # fmt: skip
    assert trail[0]["detail"] == f"replaces {victim.gateway_id}"
    twice = await plane.http.post(f"/gateways/{rebuilt.gateway_id}/replace", json={"replaces": victim.gateway_id})
    assert twice.status_code == 409 and "already retired" in twice.json()["error"]["message"]


async def test_w3_registration_is_rate_limited_per_client_address(plane: Plane) -> None:
    """W3: new identities from one address are rate limited (429 saying when to retry); a known gateway's
    retries are not new identities and go on."""
    known = FakeGateway("known-one")
    assert (await register(plane, known)).status_code == 202
    answers = [await register(plane, FakeGateway(f"flood-{n}")) for n in range(12)]
    codes = [answer.status_code for answer in answers]
    assert codes[:9] == [202] * 9 and set(codes[9:]) == {429}, codes
    assert "try again in" in answers[-1].json()["error"]["message"]
    assert len((await plane.http.get("/gateways")).json()) == 10
    assert (await register(plane, known)).status_code == 202  # a retry: no new row, still answered


async def test_w3_registration_is_json_only_and_bounded_in_size(plane: Plane) -> None:
    """W3: a cross-origin text/plain POST is refused (415), a 40 KB body is refused (413), an oversized field is a
    422 naming it."""
    gateway = FakeGateway("bounded-one")
    as_text = await plane.http.post("/gateways/register", content=httpx.Response(200, json=gateway.registration())
                                    .content, headers={"Content-Type": "text/plain"})  # fmt: skip
    assert as_text.status_code == 415 and "application/json" in as_text.json()["error"]["message"]
    huge = {**gateway.registration(), "hostname": "h", "node_types": {f"type_{n}": "x" * 30 for n in range(1000)}}
    assert (await plane.http.post("/gateways/register", json=huge)).status_code == 413
    large = {**gateway.registration(), "node_types": {f"type_{n}": "x" * 30 for n in range(300)}}
    refused = await plane.http.post("/gateways/register", json=large)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["problems"][0]["pointer"] == "/node_types"
    assert "at most 8192 bytes" in refused.json()["error"]["message"]
    assert (await plane.http.get("/gateways")).json() == []


async def test_w3_names_are_unique_a_later_gateway_gets_a_suffix(plane: Plane) -> None:
    """W3: names are unique among live gateways: a second `press` is `press-2` (never a refusal a squatter could
    cause)."""
    names = []
    for n in range(3):
        answer = await register(plane, FakeGateway(f"named-{n}", name="press"))
        names.append((await plane.http.get(f"/gateways/{answer.json()['gateway_id']}")).json()["name"])
    assert names == ["press", "press-2", "press-3"]


async def test_w3_admins_delete_gateways_and_reject_pending_ones_in_bulk(plane: Plane) -> None:
    """W3: an Admin deletes a pending gateway, an approved one only once it runs nothing (or with force), and
    rejects pending ones in bulk by id or all at once; each is audited."""
    pending = [FakeGateway(f"pending-{n}") for n in range(4)]
    for gateway in pending:
        assert (await register(plane, gateway)).status_code == 202
    ids = [str(gateway.gateway_id) for gateway in pending]
    assert (await plane.http.post("/gateways/reject", json={"all_pending": True}, headers=plane.viewer)).status_code \
        == 403  # fmt: skip
    bad = await plane.http.post("/gateways/reject", json={})
    assert bad.status_code == 422 and "all_pending" in bad.json()["error"]["message"]
    victim = await approved_victim(plane)
    mixed = await plane.http.post("/gateways/reject", json={"gateways": [ids[0], victim.gateway_id]})
    assert mixed.status_code == 409 and victim.gateway_id in mixed.json()["error"]["message"]
    two = await plane.http.post("/gateways/reject", json={"gateways": ids[:2]})
    assert two.status_code == 200 and two.json() == {"rejected": sorted(ids[:2])}
    rest = await plane.http.post("/gateways/reject", json={"all_pending": True})
    assert rest.json() == {"rejected": sorted(ids[2:])}
    statuses = {row["id"]: row["status"] for row in (await plane.http.get("/gateways")).json()}
    assert [statuses[i] for i in ids] == ["rejected"] * 4 and statuses[victim.gateway_id] == "approved"

    assert (await plane.http.delete(f"/gateways/{ids[0]}", headers=plane.viewer)).status_code == 403
    assert (await plane.http.delete(f"/gateways/{ids[0]}")).status_code == 204
    assert (await plane.http.get(f"/gateways/{ids[0]}")).status_code == 404
    busy = await plane.http.delete(f"/gateways/{victim.gateway_id}")
    assert busy.status_code == 409 and "line_7" in busy.json()["error"]["message"]
    assert (await plane.http.delete(f"/gateways/{victim.gateway_id}?force=yes")).status_code == 400
    assert (await plane.http.delete(f"/gateways/{victim.gateway_id}?force=true")).status_code == 204
    gone = await sync(plane, victim)
    assert gone.status_code == 401 and gone.json()["error"]["code"] == "gateway_unknown"
    assert (await plane.http.get("/assignments")).json() == []
    trail = plane.control_plane.store.audit_trail()
    assert [row["outcome"] for row in trail if row["tool"] == "gateway.delete"] == ["ok", "refused", "ok"]
    assert sorted(row["target"] for row in trail if row["tool"] == "gateway.reject") == sorted(ids)


async def test_w6_a_rejected_gateways_token_is_refused_everywhere(plane: Plane) -> None:
    """W6: a gateway's JWT is good only while the gateway is approved: once rejected, /schemas (read and write),
    sync, token renewal, the alarm uplink and the events socket all refuse it, saying why."""
    gateway = await approved_victim(plane)
    events = plane.url.replace("http://", "ws://") + f"/api/v1/gateways/{gateway.gateway_id}/events"
    link = await websockets.connect(events, additional_headers=gateway.auth())
    schema = {"schema": '{"type": "record", "name": "Probe", "fields": [{"name": "v", "type": "int"}]}'}
    async with httpx.AsyncClient(base_url=f"{plane.url}/schemas", headers=gateway.auth()) as registry:
        assert (await registry.get("/subjects")).status_code == 200
        assert (await registry.post("/subjects/probe-value/versions", json=schema)).status_code == 200
        assert (await plane.http.post(f"/gateways/{gateway.gateway_id}/reject")).status_code == 200
        for refused in (await registry.get("/subjects"), await registry.post("/subjects/probe-value/versions",
                                                                             json=schema)):  # fmt: skip
            assert refused.status_code == 403 and "rejected" in refused.json()["message"], refused.text
    for path, body in (("sync", {}), ("token", None), ("alarms", {"events": []})):
        answer = await plane.http.post(f"/gateways/{gateway.gateway_id}/{path}", json=body, headers=gateway.auth())
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "rejected", (path, answer.text)
    with pytest.raises(websockets.ConnectionClosed):  # the link open before the rejection ends with it
        await asyncio.wait_for(link.recv(), 30)
    assert link.close_code == UNAUTHORIZED and "rejected" in str(link.close_reason)
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(events, additional_headers=gateway.auth()):
            pass
