"""Gateways apart from the control plane (issue 11), as real processes: one `streamforge control-plane`, two
`streamforge gateway`s, each with its own embedded Kafka. Registration and approval, assignment by label, push,
offline autonomy across a SIGKILLed control plane, boot from cache, rollback, and the gateway JWT's edges."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.engine.serde import Decoder
from streamforge.runtime.kafka.access import CREDENTIALS_FILE, KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import BatchConsumer
from tests.eventually import eventually
from tests.stack import ServiceProcess

POLL_S = 2.0  # the gateways' poll interval here (30 s in production): OFFLINE after 3 missed
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
RATE_HZ, READINGS = 20, 3600  # per gateway: 180 s of device time, so every test of the module sees it producing


def flow_document(flow_id: str, extra_nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "format": "streamforge.flow/v1", "id": flow_id, "label": "fleet test", "version": 1, "edges": [],
        "nodes": [{"id": "sim", "type": "simulator", "config": {
            "signals": [{"asset_id": "kiln_1", "parameter": "temperature", "offset": 900, "amplitude": 5}],
            "rate_hz": RATE_HZ, "limit": READINGS, "start_time": T0.isoformat(), "batch_size": 10}},
            *(extra_nodes or [])],
    }  # fmt: skip


@dataclass
class Fleet:
    control_plane: ServiceProcess
    gateways: dict[str, ServiceProcess]
    admin: httpx.AsyncClient
    root: Path

    async def gateway(self, name: str) -> dict[str, Any]:
        rows = (await self.admin.get("/gateways")).json()
        return next(row for row in rows if row["name"] == name)

    async def gateway_health(self, name: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            gateway = self.gateways[name]
            return dict((await http.get(gateway.event["health"], headers=gateway.local_token())).json())

    def kafka(self, name: str) -> KafkaAccess:
        """Gateway `name`'s embedded broker, with the login kept in its data dir."""
        return KafkaAccess.load(str(self.gateways[name].event["kafka"]), self.root / name / "kafka" / CREDENTIALS_FILE)


def control_plane_process(root: Path, port: int) -> ServiceProcess:
    return ServiceProcess(["control-plane", "--data-dir", str(root / "cp"), "--port", str(port),
                           "--poll-interval", str(POLL_S)], root / "cp.stderr", "control_plane")  # fmt: skip


def gateway_process(root: Path, name: str, url: str) -> ServiceProcess:
    return ServiceProcess(["gateway", "--control-plane", url, "--name", name, "--label", "site=north",
                           "--data-dir", str(root / name), "--poll-interval", str(POLL_S)],
                          root / f"{name}.stderr", "gateway")  # fmt: skip


@pytest.fixture(scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    control_plane = control_plane_process(root, free_port())
    await control_plane.start()
    password = next(line for line in control_plane.lines if "password " in line).split("password ")[1].split()[0]
    gateways = {name: gateway_process(root, name, control_plane.event["url"]) for name in ("north_a", "north_b")}
    await asyncio.gather(*(g.start() for g in gateways.values()))
    async with httpx.AsyncClient(base_url=control_plane.event["api"], timeout=30) as admin:
        login = await admin.post("/auth/login", json={"username": "admin", "password": password})
        admin.headers["Authorization"] = f"Bearer {login.json()['token']}"
        try:
            yield Fleet(control_plane, gateways, admin, root)
        finally:
            await asyncio.gather(*(g.stop() for g in gateways.values()), return_exceptions=True)
            await control_plane.stop()


async def distinct_readings(fleet: Fleet, name: str, flow_id: str, timeout_s: float = 5.0) -> set[str]:
    """Device times of `sim`'s readings in gateway `name`'s own Kafka."""
    remote = HttpSchemaRegistry(f"{fleet.control_plane.event['url']}/schemas",
                                credentials=lambda: fleet.admin.headers["Authorization"].split()[1])  # fmt: skip
    registry = CachedSchemaRegistry(remote, SchemaCache(fleet.root / "reader-schemas.json"))  # works offline too
    seen: set[str] = set()
    consumer = BatchConsumer(fleet.kafka(name), None, ["telemetry.raw"], Decoder(registry), upstream=[(flow_id, "sim")])
    try:
        async with consumer:
            deadline, idle = time.monotonic() + timeout_s, 0
            while time.monotonic() < deadline and idle < 3:
                batch = await consumer.next_batch(timeout_ms=300)
                idle = 0 if batch.records else idle + 1
                seen.update(m.record["timestamps"]["device_time"].isoformat() for m in batch.records)
    finally:
        await remote.aclose()
    return seen


async def save_flow(admin: httpx.AsyncClient, document: dict[str, Any]) -> int:
    existing = await admin.get(f"/flows/{document['id']}")
    if existing.status_code == 200:
        saved = await admin.put(f"/flows/{document['id']}", json={**document, "version": existing.json()["version"]})
    else:
        saved = await admin.post("/flows", json=document)
    assert saved.status_code in (200, 201), saved.text
    return int(saved.json()["version"])


async def test_registration_approval_assignment_and_offline_autonomy(fleet: Fleet) -> None:
    # Both registered and pending: no token, so no config.
    rows = await eventually(lambda: _pending(fleet), 30, what="both gateways pending")
    assert {row["name"] for row in rows} == {"north_a", "north_b"}
    unauthenticated = await fleet.admin.post(f"/gateways/{rows[0]['id']}/sync", json={}, headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    for row in rows:
        approved = await fleet.admin.post(f"/gateways/{row['id']}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
    for name in fleet.gateways:
        await eventually(functools.partial(_sync, fleet, name, "approval", "approved"), 15, what=f"{name} approved")
        await eventually(functools.partial(_sync, fleet, name, "push_connected", True), 15, what=f"{name}'s push link")

    flow_id = "kiln_line"
    version = await save_flow(fleet.admin, flow_document(flow_id))
    pushes = {name: (await fleet.gateway_health(name))["sync"]["pushes"] for name in fleet.gateways}
    assigned_at = time.monotonic()
    assigned = await fleet.admin.post("/assignments", json={"flow": flow_id, "version": version,
                                                           "labels": {"site": "north"}})  # fmt: skip
    assert assigned.status_code == 201, assigned.text
    assert len(assigned.json()["gateways"]) == 2
    for name in fleet.gateways:
        await eventually(functools.partial(_running, fleet, name, flow_id, version), 10, what=f"{name} running v1")
    print(f"assignment to running on both gateways: {time.monotonic() - assigned_at:.2f} s")
    for name in fleet.gateways:  # told at once over the events socket, not left to the next poll
        assert (await fleet.gateway_health(name))["sync"]["pushes"] > pushes[name]

    # The control plane dies; both gateways keep producing.
    before = {name: len(await distinct_readings(fleet, name, flow_id)) for name in fleet.gateways}
    await fleet.control_plane.kill()
    await asyncio.sleep(3)
    during = {name: len(await distinct_readings(fleet, name, flow_id)) for name in fleet.gateways}
    assert all(during[name] > before[name] for name in fleet.gateways), (before, during)
    assert (await fleet.gateway_health("north_a"))["sync"]["reachable"] is False

    # A gateway restarted while the control plane is down boots from its cache and produces again.
    await fleet.gateways["north_a"].stop()
    event = await fleet.gateways["north_a"].start()
    assert event["flows"] == {flow_id: version}
    after_restart = len(await distinct_readings(fleet, "north_a", flow_id))
    await eventually(
        lambda: _grew(fleet, "north_a", flow_id, after_restart), 30, what="north_a producing from its cache"
    )

    # The control plane comes back: heartbeats resume, both HEALTHY; nothing lost in either Kafka.
    await fleet.control_plane.start()
    for name in fleet.gateways:
        await eventually(functools.partial(_health, fleet, name, "HEALTHY"), 20, what=f"{name} HEALTHY again")
    expected = {(T0 + timedelta(seconds=n / RATE_HZ)).isoformat() for n in range(READINGS)}
    for name in fleet.gateways:
        got = await distinct_readings(fleet, name, flow_id)
        assert got <= expected and len(got) >= during[name]
        assert sorted(got) == sorted(expected)[: len(got)], f"{name}: a gap in the readings"  # a prefix: no hole


async def _pending(fleet: Fleet) -> list[dict[str, Any]] | None:
    rows: list[dict[str, Any]] = (await fleet.admin.get("/gateways")).json()
    return rows if len(rows) == 2 and all(row["status"] == "pending" for row in rows) else None


async def _sync(fleet: Fleet, name: str, key: str, wanted: Any) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return bool((await fleet.gateway_health(name))["sync"][key] == wanted)
    return False


async def _running(fleet: Fleet, name: str, flow_id: str, version: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return bool((await fleet.gateway_health(name))["flows"].get(flow_id) == version)
    return False


async def _grew(fleet: Fleet, name: str, flow_id: str, than: int) -> bool:
    # The same budget as the count it is compared with: a shorter read of a grown topic would stop short.
    return len(await distinct_readings(fleet, name, flow_id)) > than


async def _health(fleet: Fleet, name: str, wanted: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return bool((await fleet.gateway(name))["health"] == wanted)
    return False


async def test_a_version_whose_node_cannot_start_is_rolled_back_and_reported(fleet: Fleet) -> None:
    flow_id = "kiln_line"
    row = await fleet.gateway("north_b")
    good = row["running"][flow_id]
    before = len(await distinct_readings(fleet, "north_b", flow_id))
    broken = {"id": "broker_in", "type": "mqtt", "config": {
        "host": "127.0.0.1", "port": free_port(),
        "subscriptions": [{"topic": "plant/#", "points": [{"asset_id": "kiln_1", "parameter": "door"}]}],
        "tls": {"ca_file": str(fleet.root / "missing-ca.pem")}}}  # fmt: skip
    bad = await save_flow(fleet.admin, flow_document(flow_id, [broken]))
    assigned = await fleet.admin.post("/assignments", json={"flow": flow_id, "version": bad, "gateway": row["id"]})
    assert assigned.status_code == 201, assigned.text

    async def reported() -> dict[str, Any] | None:
        last = (await fleet.gateway("north_b"))["last_apply"] or {}
        return last if last.get("wanted", {}).get(flow_id) == bad else None

    last = await eventually(reported, 30, what="north_b to report the apply")
    assert last["result"] == "NOT_APPLIED" and last["node"] == "broker_in" and last["flow"] == flow_id
    assert "missing-ca.pem" in last["cause"]
    assert (await fleet.gateway("north_b"))["running"] == {flow_id: good}
    await eventually(lambda: _grew(fleet, "north_b", flow_id, before), 30, what="the previous flow to keep producing")
    assert (await fleet.gateway("north_b"))["health"] == "DEGRADED"  # its last apply failed
    logged = [json.loads(line) for line in (fleet.root / "north_b.stderr").read_text().splitlines()
              if line.startswith("{") and "desired state not_applied" in line]  # fmt: skip
    assert logged and logged[-1]["gateway_id"] == row["id"] and logged[-1]["node"] == "broker_in"

    back = await fleet.admin.post(f"/gateways/{row['id']}/rollback", json={"flow": flow_id})
    assert back.status_code == 409  # it still runs `good`: nothing to return to

    # #41 D2: the rolled-back version is marked failed on this gateway, its pin falls back to what runs, and the
    # next deploy of another flow there is not rolled back with its error.
    failed = (await fleet.gateway("north_b"))["failed"]
    assert failed[flow_id]["version"] == bad and "missing-ca.pem" in failed[flow_id]["cause"]
    other = f"{flow_id}_other"
    other_version = await save_flow(fleet.admin, flow_document(other))
    added = await fleet.admin.post("/assignments", json={"flow": other, "version": other_version, "gateway": row["id"]})
    assert added.status_code == 201, added.text

    async def both_run() -> dict[str, Any] | None:
        found = await fleet.gateway("north_b")
        return found if found["running"] == {flow_id: good, other: other_version} else None

    now = await eventually(both_run, 30, what="the other flow to run beside the good version")
    assert now["last_apply"]["result"] == "APPLIED" and now["health"] == "DEGRADED"  # the failure stays shown
    assert (await fleet.admin.request("DELETE", "/assignments", json={"flow": other, "gateway": row["id"]})).is_success
    fixed = await fleet.admin.post("/assignments", json={"flow": flow_id, "version": good, "gateway": row["id"]})
    assert fixed.status_code == 201
    assert (await fleet.gateway("north_b"))["failed"] == {}  # a new assignment is the engineer's retry


async def test_sigkill_in_the_middle_of_an_apply_leaves_the_old_or_the_new_state(fleet: Fleet) -> None:
    flow_id = "kiln_line"
    row = await fleet.gateway("north_a")
    old = row["running"][flow_id]
    extra = {"id": "sim2", "type": "simulator", "config": {"signals": [{"asset_id": "kiln_2", "parameter": "t"}],
                                                           "rate_hz": 5}}  # fmt: skip
    new = await save_flow(fleet.admin, flow_document(flow_id, [extra]))
    gateway = fleet.gateways["north_a"]
    state = fleet.root / "north_a" / "sync" / "state"
    assigned = await fleet.admin.post("/assignments", json={"flow": flow_id, "version": new, "gateway": row["id"]})
    assert assigned.status_code == 201
    await eventually(lambda: (state / "staging.json").exists(), 10, what="the apply to be staged")
    await gateway.kill()  # mid-apply: staged, not yet promoted
    current = json.loads((state / "current.json").read_text())
    assert {f["id"]: f["version"] for f in current["flows"]}[flow_id] in (old, new)
    event = await gateway.start()
    assert event["flows"][flow_id] in (old, new)
    await eventually(lambda: _running(fleet, "north_a", flow_id, new), 30, what="north_a to finish applying")
    await eventually(
        lambda: json.loads((state / "current.json").read_text())["flows"][0]["version"] == new,
        10,
        what="the new state to be promoted",
    )


async def test_gateway_tokens_forged_expired_none_and_foreign_are_refused(fleet: Fleet) -> None:
    a, b = await fleet.gateway("north_a"), await fleet.gateway("north_b")
    key_file = fleet.root / "cp" / "gateway-signing.pem"
    real_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(real_key, Ed25519PrivateKey)
    now = int(time.time())
    claims = {"iss": "streamforge-control-plane", "aud": "streamforge-gateway", "sub": a["id"], "iat": now,
              "exp": now + 3600, "jti": "test"}  # fmt: skip
    forged = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, real_key, algorithm="EdDSA")
    unsigned = jwt.encode(claims, "", algorithm="none")
    own = jwt.encode(claims, real_key, algorithm="EdDSA")
    sync = fleet.admin.post
    for token, status in [(forged, 401), (expired, 401), (unsigned, 401), (own, 200)]:
        answer = await sync(f"/gateways/{a['id']}/sync", json={}, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, (status, answer.text)
    foreign = await sync(f"/gateways/{b['id']}/sync", json={}, headers={"Authorization": f"Bearer {own}"})
    assert foreign.status_code == 403 and a["id"] in foreign.json()["error"]["message"]

    # The control plane's key changes (every gateway's token now answers 401): flows keep running, and the
    # gateway gets a new token by registering again with its own secret.
    flow_id = "kiln_line"
    await fleet.control_plane.stop()
    key_file.unlink()
    await fleet.control_plane.start()
    before = len(await distinct_readings(fleet, "north_b", flow_id))
    await eventually(lambda: _grew(fleet, "north_b", flow_id, before), 30, what="north_b to keep producing after a 401")
    await eventually(lambda: _health(fleet, "north_b", "HEALTHY"), 30, what="north_b back in sync with a new token")


async def test_the_schema_registry_wants_credentials_and_registering_wants_an_engineer_or_a_gateway(
    fleet: Fleet,
) -> None:
    registry = f"{fleet.control_plane.event['url']}/schemas"
    admin_token = fleet.admin.headers["Authorization"].split()[1]
    viewer = await fleet.admin.post("/users", json={"username": "schema_viewer", "password": "viewer-password-1",
                                                    "role": "viewer"})  # fmt: skip
    assert viewer.status_code == 201
    login = await fleet.admin.post("/auth/login", json={"username": "schema_viewer", "password": "viewer-password-1"})
    viewer_token = login.json()["token"]
    schema = {"schema": json.dumps({"type": "record", "name": "Probe", "fields": [{"name": "v", "type": "int"}]})}
    async with httpx.AsyncClient(base_url=registry) as http:
        assert (await http.get("/subjects")).status_code == 401
        assert (await http.get("/subjects", headers={"Authorization": f"Bearer {admin_token}"})).status_code == 200
        basic = httpx.BasicAuth("schema_viewer", viewer_token)  # what Confluent clients send
        assert (await http.get("/subjects", auth=basic)).status_code == 200
        refused = await http.post("/subjects/probe-value/versions", json=schema, auth=basic)
        assert refused.status_code == 403 and "engineer" in refused.json()["message"]
        key_file = fleet.root / "cp" / "gateway-signing.pem"
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        now = int(time.time())
        claims = {"iss": "streamforge-control-plane", "aud": "streamforge-gateway", "iat": now, "exp": now + 60,
                  "jti": "r"}  # fmt: skip
        gateway_jwt = jwt.encode({**claims, "sub": (await fleet.gateway("north_a"))["id"]}, key, algorithm="EdDSA")
        registered = await http.post("/subjects/probe-value/versions", json=schema,
                                     headers={"Authorization": f"Bearer {gateway_jwt}"})  # fmt: skip
        assert registered.status_code == 200 and isinstance(registered.json()["id"], int)
        unknown = jwt.encode({**claims, "sub": "gw_any"}, key, algorithm="EdDSA")  # signed, of no gateway (W6)
        refused = await http.get("/subjects", headers={"Authorization": f"Bearer {unknown}"})
        assert refused.status_code == 401 and "not registered" in refused.json()["message"]


async def test_v1_an_impostor_with_the_instance_id_and_an_enrolment_key_leaves_the_real_gateway_running(
    fleet: Fleet,
) -> None:
    """V1: a registration with north_a's instance id (any Viewer reads it) and a valid enrolment key, without
    north_a's secret, is a new pending identity; the real gateway stays approved and keeps syncing throughout."""
    real = (await fleet.admin.get(f"/gateways/{(await fleet.gateway('north_a'))['id']}")).json()
    polls = (await fleet.gateway_health("north_a"))["sync"]["polls"]
    key = (await fleet.admin.post("/enrolment-keys", json={"labels": {"site": "north"}})).json()["enrolment_key"]
    impostor = await fleet.admin.post("/gateways/register", headers={"Authorization": ""}, json={
        "name": "north_a", "instance_id": real["instance_id"], "secret": "the attacker's own", "public_key": PUBLIC_KEY,
        "labels": {"site": "north"}, "node_types": {"simulator": None}, "enrolment_key": key})  # fmt: skip
    assert impostor.status_code == 202 and impostor.json()["claims"] == real["id"], impostor.text
    assert "token" not in impostor.json()
    await eventually(
        lambda: _polled_since(fleet, "north_a", polls + 2), 30, what="north_a to go on syncing after the attack"
    )
    after = (await fleet.admin.get(f"/gateways/{real['id']}")).json()
    assert after["status"] == "approved" and after["health"] == "HEALTHY" and after["running"] == real["running"]
    sync = (await fleet.gateway_health("north_a"))["sync"]
    assert sync["approval"] == "approved" and sync["last_error"] is None
    shown = (await fleet.admin.get(f"/gateways/{impostor.json()['gateway_id']}")).json()
    assert shown["status"] == "pending" and shown["claims"] == real["id"] and shown["name"] == "north_a-2"
    assert (await fleet.admin.delete(f"/gateways/{shown['id']}")).status_code == 204


async def _polled_since(fleet: Fleet, name: str, polls: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return bool((await fleet.gateway_health(name))["sync"]["polls"] >= polls)
    return False


async def test_a_gateway_rebuilt_after_a_disk_loss_is_a_new_identity_an_admin_puts_in_its_place(
    fleet: Fleet,
) -> None:
    """V1: a gateway rebuilt after a disk loss cannot prove it is the old one: it waits as a new pending identity
    claiming the old one's instance id; an Admin's replace gives it the old one's name, labels and flows."""
    before = await fleet.gateway("north_b")
    gateway = fleet.gateways["north_b"]
    data = fleet.root / "north_b"
    credentials = data / "sync" / "credentials.json"
    for private in (credentials, data / "sync" / "identity.json", data / "sync" / "state" / "current.json"):
        assert private.stat().st_mode & 0o777 == 0o600, private
    old_token = json.loads(credentials.read_text())["token"]
    await gateway.stop()
    for path in sorted(data.rglob("*"), reverse=True):  # the disk is gone: identity, credentials, cache, Kafka
        path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    await gateway.start()
    rebuilt = await eventually(lambda: _status(fleet, "north_b-2", "pending"), 30, what="north_b pending again")
    assert rebuilt["id"] != before["id"] and rebuilt["claims"] == before["id"]  # beside the old one, not it
    assert (await fleet.gateway("north_b"))["status"] == "approved"  # the old one is untouched until an Admin acts
    assert (await fleet.gateway_health("north_b"))["flows"] == {}  # no config before a person approves it
    replaced = await fleet.admin.post(f"/gateways/{rebuilt['id']}/replace", json={"replaces": before["id"]})
    assert replaced.status_code == 200 and replaced.json()["name"] == "north_b", replaced.text
    stale = await fleet.admin.post(f"/gateways/{before['id']}/sync", json={},
                                   headers={"Authorization": f"Bearer {old_token}"})  # fmt: skip
    assert stale.status_code == 403 and stale.json()["error"]["code"] == "replaced"
    await eventually(
        functools.partial(_running, fleet, "north_b", "kiln_line", before["running"]["kiln_line"]),
        30,
        what="north_b to pull its config again",
    )
    assert (await fleet.gateway("north_b"))["id"] == rebuilt["id"]
    await eventually(lambda: _health(fleet, "north_b", "HEALTHY"), 30, what="the new north_b HEALTHY in the fleet")


async def _status(fleet: Fleet, name: str, wanted: str) -> dict[str, Any] | None:
    rows = (await fleet.admin.get("/gateways")).json()
    return next((row for row in rows if row["name"] == name and row["status"] == wanted), None)


async def test_fleet_metrics_and_an_assignment_refused_for_a_missing_node_type(fleet: Fleet) -> None:
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(fleet.control_plane.event["metrics"])).text
    for name in fleet.gateways:
        row = await fleet.gateway(name)
        assert f'streamforge_gateway_up{{gateway="{row["id"]}",name="{name}"}} 1.0' in metrics
    # A gateway that has no `simulator` installed: the assignment is refused, naming it and the type.
    key = (await fleet.admin.post("/enrolment-keys", json={"labels": {"site": "south"}})).json()["enrolment_key"]
    bare = await fleet.admin.post("/gateways/register", json={
        "name": "south_1", "instance_id": "south-1", "secret": "s", "public_key": PUBLIC_KEY, "node_types": {},
        "enrolment_key": key})  # fmt: skip
    assert bare.status_code == 200
    refused = await fleet.admin.post("/assignments", json={"flow": "kiln_line", "version": 1,
                                                          "labels": {"site": "south"}})  # fmt: skip
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "node_types_missing"
    assert "south_1" in refused.json()["error"]["message"] and "simulator" in refused.json()["error"]["message"]


PUBLIC_KEY = "9n0t2vFMW7Df9N2qRSdp8yzZ2rT1RWf/VpXNl3Q6uzY="  # any 32 bytes: a registration's X25519 key
