"""Control-plane REST API: roles on every endpoint, versions with 409 on stale saves, import/export, deploy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from streamforge.engine.flow import MAX_DOCUMENT_BYTES, MAX_NODES, dump_flow, validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.problems import MAX_PROBLEMS
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app, fleet_flusher
from streamforge.runtime.control_plane.auth import Role, ensure_admin, hash_password
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.up import local_gateway
from tests.engine.samples import fully_wired


@dataclass
class Api:
    http: httpx.AsyncClient
    tokens: dict[str, str]
    store: Store
    database: Path
    gateway_dir: Path  # the gateway process's data dir: cache, credentials
    gateway_id: str

    def target(self, **body: Any) -> dict[str, Any]:
        """A deploy's body naming the gateway (the first deploy of a flow must say where)."""
        return {"gateway": self.gateway_id, **body}

    def as_(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture(scope="module")
async def api(kafka: EmbeddedKafka, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    """The control plane, and a real gateway process (on the session's Kafka) that it deploys to."""
    root = tmp_path_factory.mktemp("api")
    control_plane = ControlPlane.open(root / "cp", load_node_types(False))
    store = control_plane.store
    admin_password = ensure_admin(store)
    assert admin_password and ensure_admin(store) is None  # only on first start
    tokens = {"admin": store.issue_token("admin", "test")}
    for role in Role:
        if role is not Role.ADMIN:
            name = role.name.lower()
            store.create_user(name, hash_password(f"{name}-password-123"), name)
            tokens[name] = store.issue_token(name, "test")
    app = control_plane_app(control_plane)
    async with fleet_flusher(control_plane.fleet), serve_app(app, websockets=True) as url:
        key = control_plane.fleet.create_enrolment_key({}, "test")
        async with local_gateway(url, root / "gateway", key, kafka.access, None) as gateway:
            gateway_id = await control_plane.fleet.approved(gateway.event["instance_id"])
            async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=90) as http:
                yield Api(http, tokens, store, root / "cp" / "control-plane.sqlite", root / "gateway", gateway_id)


def flow(flow_id: str, rate: float = 10, **extra: Any) -> dict[str, Any]:
    return {
        "format": "streamforge.flow/v1", "id": flow_id, "label": "API test", "version": 0,
        "nodes": [
            {"id": "sim", "type": "simulator", "x": 10, "y": 20, "config": {
                "signals": [{"asset_id": "a", "parameter": "p"}], "rate_hz": rate, "realtime": False, "limit": 50,
                "start_time": datetime(2026, 1, 29, tzinfo=UTC).isoformat()}},
            {"id": "val", "type": "validator", "x": 200, "y": 20, "config": {}},
        ],
        "edges": [{"from": "sim:out", "to": "val:in"}],
        **extra,
    }  # fmt: skip


async def test_login_and_api_tokens(api: Api) -> None:
    wrong = await api.http.post("/auth/login", json={"username": "viewer", "password": "nope-nope-nope"})
    assert wrong.status_code == 401
    session = (
        await api.http.post("/auth/login", json={"username": "viewer", "password": "viewer-password-123"})
    ).json()
    assert session["role"] == "viewer"
    headers = {"Authorization": f"Bearer {session['token']}"}
    assert (await api.http.get("/flows", headers=headers)).status_code == 200
    assert (await api.http.post("/flows", json=flow("x"), headers=headers)).status_code == 403  # a viewer cannot save
    token = (await api.http.post("/tokens", json={"name": "script"}, headers=headers)).json()["token"]
    assert (await api.http.get("/node-types", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    row = api.store.user("viewer")
    assert row is not None and row["password_hash"].startswith("$argon2")


async def test_versions_stale_save_diff_and_restore(api: Api) -> None:
    engineer = api.as_("engineer")
    created = (await api.http.post("/flows", json=flow("line_a"), headers=engineer)).json()
    assert created["version"] == 1 and created["problems"] == [] and created["saved_by"] == "engineer"
    mine, theirs = dict(created, label="mine"), dict(created, label="theirs")
    assert (await api.http.put("/flows/line_a", json=mine, headers=engineer)).json()["version"] == 2
    stale = await api.http.put("/flows/line_a", json=theirs, headers=engineer)
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
    assert "is at version 2, not 1" in stale.json()["error"]["message"]
    moved = (await api.http.get("/flows/line_a", headers=engineer)).json()
    moved["nodes"][0]["x"] = 500
    moved["nodes"][1]["config"] = {"gap_factor": 4}
    assert (await api.http.put("/flows/line_a", json=moved, headers=engineer)).json()["version"] == 3
    versions = (await api.http.get("/flows/line_a/versions", headers=api.as_("viewer"))).json()
    assert [v["version"] for v in versions] == [1, 2, 3]
    diff = (await api.http.get("/flows/line_a/diff?from=2&to=3", headers=api.as_("viewer"))).json()
    assert diff["nodes"]["changed"] == {"val": [{"field": "config/gap_factor", "old": None, "new": 4}]}  # not the move
    restored = (await api.http.post("/flows/line_a/versions/1/restore", headers=engineer)).json()
    assert restored["version"] == 4 and restored["restored_from"] == 1 and restored["label"] == "API test"


async def test_invalid_import_lists_every_problem_and_stores_nothing(api: Api) -> None:
    engineer = api.as_("engineer")
    broken = flow("broken")
    broken["nodes"].append({"id": "x", "type": "teleporter"})
    broken["nodes"][0]["config"]["rate_hz"] = -5
    broken["nodes"] += [{"id": "v2", "type": "validator"}, {"id": "v3", "type": "validator"}]
    broken["edges"] += [
        {"from": "val:dlq", "to": "x:in"},
        {"from": "v2:clean", "to": "v3:in"},
        {"from": "v3:clean", "to": "v2:in"},  # a cycle
        {"from": "val:clean", "to": "ghost:in"},  # a wire to a node that is not there
        {"from": "val:nope", "to": "v2:in"},  # a port the validator does not have
    ]
    before = (await api.http.get("/flows", headers=engineer)).json()
    refused = await api.http.post("/flows/import", content=json.dumps(broken), headers=engineer)
    assert refused.status_code == 422
    problems = refused.json()["error"]["problems"]
    assert {"/nodes/0/config/rate_hz", "/nodes/2/type"} <= {p["pointer"] for p in problems}
    assert {"invalid_config", "unknown_type", "cycle", "unknown_node", "unknown_port"} <= {p["code"] for p in problems}
    assert (await api.http.get("/flows", headers=engineer)).json() == before
    malformed = await api.http.post("/flows/import", content=b"{nope", headers=engineer)
    assert malformed.status_code == 422 and malformed.json()["error"]["problems"][0]["code"] == "malformed_json"


async def test_export_is_canonical_and_imports_back_unchanged(api: Api) -> None:
    engineer = api.as_("engineer")
    imported = await api.http.post("/flows/import", content=json.dumps(flow("line_b")), headers=engineer)
    assert imported.status_code == 201
    exported = (await api.http.get("/flows/line_b/export", headers=api.as_("viewer"))).text
    assert exported == dump_flow(validate_flow(json.loads(exported)))
    again = await api.http.post("/flows/import", content=exported, headers=engineer)
    assert again.status_code == 201
    assert (await api.http.get("/flows/line_b/export", headers=engineer)).text.replace('"version": 2', '"version": 1') \
        == exported  # fmt: skip


async def test_a_deploy_that_does_not_compile_leaves_the_running_flow_untouched(api: Api, unique: str) -> None:
    engineer = api.as_("engineer")
    flow_id = unique.replace("-", "_")[:60]
    saved = (await api.http.post("/flows", json=flow(flow_id), headers=engineer)).json()
    unplaced = await api.http.post(f"/flows/{flow_id}/deploy", headers=engineer)
    assert unplaced.status_code == 409 and unplaced.json()["error"]["code"] == "no_target", unplaced.text
    assert "say where to deploy it" in unplaced.json()["error"]["message"]
    deployed = await api.http.post(f"/flows/{flow_id}/deploy", json=api.target(mode="full"), headers=engineer)
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["started"] == ["sim", "val"]
    broken = dict(saved, nodes=[*saved["nodes"], {"id": "x", "type": "teleporter"}])
    stored = (await api.http.put(f"/flows/{flow_id}", json=broken, headers=engineer)).json()
    assert stored["version"] == 2 and stored["problems"][0]["code"] == "unknown_type"  # drafts may be saved
    refused = await api.http.post(f"/flows/{flow_id}/deploy", headers=engineer)
    assert refused.status_code == 422 and refused.json()["error"]["problems"][0]["pointer"] == "/nodes/2/type"
    status = (await api.http.get(f"/flows/{flow_id}/status", headers=api.as_("viewer"))).json()
    assert status["deployed_version"] == 1
    assert {n["status"] for n in status["nodes"]} == {"RUNNING"}
    operator = await api.http.post(f"/flows/{flow_id}/deploy", headers=api.as_("operator"))
    assert operator.status_code == 403


async def test_secrets_never_leave_except_into_a_deploy(api: Api, postgres_dsn: str, unique: str,
                                                        tmp_path: Path) -> None:  # fmt: skip
    engineer = api.as_("engineer")
    flow_id = unique.replace("-", "_")[:60]
    dsn = postgres_dsn.replace("streamforge@", "streamforge:hunter2-do-not-leak@")  # trust auth accepts any password
    document = flow(flow_id)
    document["nodes"].append({"id": "db", "type": "postgres", "config": {"dsn": dsn, "table_prefix": "sec_"}})
    document["edges"].append({"from": "val:clean", "to": "db:telemetry"})
    saved = await api.http.post("/flows", json=document, headers=engineer)
    assert saved.status_code == 201 and "hunter2" not in saved.text
    assert saved.json()["problems"] == []
    exported = (await api.http.get(f"/flows/{flow_id}/export", headers=engineer)).text
    assert "hunter2" not in exported and f'"$secret": "{flow_id}.db.dsn"' in exported
    names = (await api.http.get("/secrets", headers=api.as_("viewer"))).json()
    assert [n["name"] for n in names] == [f"{flow_id}.db.dsn"] and "hunter2" not in json.dumps(names)
    assert b"hunter2" not in api.database.read_bytes()  # encrypted at rest
    assert api.store.secret(f"{flow_id}.db.dsn") == dsn
    deployed = await api.http.post(f"/flows/{flow_id}/deploy", json=api.target(), headers=engineer)
    assert deployed.status_code == 200, deployed.text  # the sink connected with the resolved DSN
    assert deployed.json()["gateways"][api.gateway_id]["result"] == "APPLIED"
    status = (await api.http.get(f"/flows/{flow_id}/status", headers=engineer)).json()
    assert {n["node"]: n["status"] for n in status["nodes"]}["db"] == "RUNNING"
    # The gateway got it sealed to its own key: its cached state holds ciphertext, never the value.
    cached = (api.gateway_dir / "sync" / "state" / "current.json").read_text()
    assert f"{flow_id}.db.dsn" in json.loads(cached)["secrets"] and "hunter2" not in cached
    assert not [p for p in api.gateway_dir.rglob("*") if p.is_file() and b"hunter2" in p.read_bytes()]
    assert (await api.http.delete(f"/secrets/{flow_id}.db.dsn", headers=api.as_("viewer"))).status_code == 403


async def test_a_flow_reads_only_its_own_secrets_unless_an_admin_grants_one(api: Api, postgres_dsn: str,
                                                                             unique: str) -> None:  # fmt: skip
    """#41 V4: an Engineer named another flow's secret in a node of their own flow (an http sink's bearer token) and
    the deploy sent it to their server. A flow now resolves only `<flow>.*` secrets and those an Admin granted it;
    the grant is the shared historian's case (many flows, one DSN)."""
    engineer, admin = api.as_("engineer"), api.as_("admin")
    owner, borrower = f"{unique.replace('-', '_')[:50]}_own", f"{unique.replace('-', '_')[:50]}_use"
    shared = f"{owner}.historian.dsn"
    assert (await api.http.put(f"/secrets/{shared}", json={"value": postgres_dsn}, headers=engineer)).status_code == 204
    document = flow(borrower)
    document["nodes"].append({"id": "db", "type": "postgres", "config": {"dsn": {"$secret": shared},
                                                                        "table_prefix": "grant_"}})  # fmt: skip
    document["edges"].append({"from": "val:clean", "to": "db:telemetry"})
    saved = (await api.http.post("/flows", json=document, headers=engineer)).json()
    (problem,) = saved["problems"]
    assert (problem["code"], problem["pointer"], problem["node_id"]) == ("secret_not_granted", "/nodes/2/config/dsn",
                                                                         "db")  # fmt: skip
    assert f"PUT /api/v1/secrets/{shared}/grants/{borrower}" in problem["hint"]
    refused = await api.http.post(f"/flows/{borrower}/deploy", json=api.target(), headers=engineer)
    assert refused.status_code == 422 and "secret_not_granted" in refused.text
    assert not (await api.http.get(f"/flows/{borrower}/status", headers=engineer)).json()["nodes"]  # nothing runs
    cached = (api.gateway_dir / "sync" / "state" / "current.json").read_text()
    assert shared not in json.loads(cached)["secrets"]  # never sealed to the gateway
    grant = f"/secrets/{shared}/grants/{borrower}"
    assert (await api.http.put(grant, headers=engineer)).status_code == 403  # only an Admin grants
    assert (await api.http.put(f"/secrets/{shared}/grants/no_such_flow", headers=admin)).status_code == 404
    assert (await api.http.put(grant, headers=admin)).status_code == 204
    listed = {s["name"]: s for s in (await api.http.get("/secrets", headers=engineer)).json()}
    assert listed[shared]["granted_to"] == [borrower]
    deployed = await api.http.post(f"/flows/{borrower}/deploy", json=api.target(), headers=engineer)
    assert deployed.status_code == 200 and deployed.json()["gateways"][api.gateway_id]["result"] == "APPLIED"
    assert (await api.http.delete(grant, headers=admin)).status_code == 204
    again = (await api.http.put(f"/flows/{borrower}", json={**document, "version": 1}, headers=engineer)).json()
    assert [p["code"] for p in again["problems"]] == ["secret_not_granted"]
    assert (await api.http.post(f"/flows/{borrower}/undeploy", headers=engineer)).status_code == 200


async def test_live_status_and_debug_tap_over_the_websocket(api: Api, unique: str) -> None:
    engineer = api.as_("engineer")
    flow_id = unique.replace("-", "_")[:60]
    document = flow(flow_id)
    document["nodes"][0]["config"].update(realtime=True, limit=None, rate_hz=50)  # keeps producing
    await api.http.post("/flows", json=document, headers=engineer)
    assert (await api.http.post(f"/flows/{flow_id}/deploy", json=api.target(), headers=engineer)).status_code == 200
    base = str(api.http.base_url).replace("http://", "ws://").rstrip("/")
    with pytest.raises(websockets.exceptions.ConnectionClosedError) as refused:
        async with websockets.connect(f"{base}/live?token=sf_bogus") as socket:
            await socket.recv()
    assert refused.value.rcvd is not None and refused.value.rcvd.code == 4401
    async with websockets.connect(f"{base}/live?token={api.tokens['viewer']}") as socket:
        await socket.send(json.dumps({"subscribe": "status"}))
        await socket.send(json.dumps({"tap": {"flow": flow_id, "node": "val", "port": "clean"}}))
        seen: dict[str, list[dict[str, Any]]] = {"status": [], "tapped": [], "record": []}
        while len(seen["record"]) < 5 or not seen["status"]:
            message = json.loads(await asyncio.wait_for(socket.recv(), 30))
            seen.setdefault(message["type"], []).append(message)
    nodes = {n["node"]: n["status"] for n in seen["status"][-1]["nodes"] if n["flow"] == flow_id}
    assert nodes == {"sim": "RUNNING", "val": "RUNNING"}
    assert seen["tapped"][0]["topic"] == "telemetry.clean"
    record = seen["record"][0]["record"]
    assert record["asset_id"] == "a" and record["quality"] == "GOOD" and "T" in record["timestamps"]["device_time"]


async def test_request_bodies_are_bounded_before_they_are_read(api: Api) -> None:
    huge = b"x" * (65 * 1024)  # over the 64 KiB the unauthenticated login may send
    declared = await api.http.post("/auth/login", content=huge, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "too_large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked transfer
        for _ in range(100):
            yield b"y" * 1024

    chunked = await api.http.post("/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413
    small = await api.http.post("/auth/login", json={"username": "admin", "password": "not it"})
    assert small.status_code == 401  # a body under the limit is read and judged as usual


async def test_failed_logins_are_throttled_per_user_and_address(api: Api) -> None:
    api.store.create_user("throttled", hash_password("throttled-password-1"), "viewer")
    for _ in range(5):
        wrong = await api.http.post("/auth/login", json={"username": "throttled", "password": "guess-123456"})
        assert wrong.status_code == 401
    locked = await api.http.post("/auth/login", json={"username": "throttled", "password": "throttled-password-1"})
    assert locked.status_code == 429 and "try again in" in locked.json()["error"]["message"]
    other = await api.http.post("/auth/login", json={"username": "viewer", "password": "viewer-password-123"})
    assert other.status_code == 200  # another user from the same address is not locked out


async def test_malformed_bodies_and_parameters_get_the_error_shape_never_a_500(api: Api) -> None:
    engineer, admin = api.as_("engineer"), api.as_("admin")
    await api.http.post("/flows", json=flow("odd_inputs"), headers=engineer)
    asked = [
        ("GET", "/flows/odd_inputs?version=latest", None, engineer, 400, "version must be a whole number"),
        ("GET", "/flows/odd_inputs/diff?from=1&to=two", None, engineer, 400, "to must be a whole number"),
        ("GET", "/flows/odd_inputs/diff", None, engineer, 400, "give two versions"),
        ("GET", "/audit?limit=lots", None, engineer, 400, "limit must be a whole number"),
        ("POST", "/flows/odd_inputs/deploy", b"[1, 2]", engineer, 400, "must be a JSON object, not list"),
        ("POST", "/flows/odd_inputs/deploy", b"{nope", engineer, 400, "not JSON"),
        ("POST", "/auth/login", b'"admin"', None, 400, "must be a JSON object, not str"),
        ("POST", "/users", b"null", admin, 400, "must be a JSON object, not NoneType"),
        ("PUT", "/flows/odd_inputs", b"7", engineer, 422, "the document's id must be"),
        ("POST", "/flows", b"[]", engineer, 422, "problem"),
        ("POST", "/gateways/register", b'["x"]', {"Content-Type": "application/json"}, 400, ""),
    ]
    for method, path, body, headers, status, says in asked:
        answer = await api.http.request(method, path, content=body, headers=headers or {})
        assert answer.status_code == status, (method, path, answer.status_code, answer.text)
        error = answer.json()["error"]
        assert set(error) >= {"code", "message"} and says in error["message"], (path, error)


async def test_changes_of_a_fully_wired_flow_is_one_cycle_problem_in_a_bounded_answer(api: Api) -> None:
    """V3: 9 fully wired validators (3.3 KB) made a Viewer's /changes answer 23.6 MB of cycles after 5.6 s; 12 now
    answer one problem for their one strongly connected component."""
    answer = await api.http.post("/flows/wired/changes", json=fully_wired("wired", 12), headers=api.as_("viewer"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["modified"] is None and [p["code"] for p in body["problems"]] == ["cycle"]
    assert body["problems"][0]["message"].startswith("cycle v00 -> v00: records would loop forever; 12 nodes ")
    assert len(answer.content) < 2_000


async def test_a_flow_over_the_node_cap_is_refused_located_wherever_it_comes_in(api: Api) -> None:
    """V3: 50,000 nodes in a Viewer's /changes held the control plane 238 s; every way in now refuses a flow over
    the cap by its count, with the limit and where, and stores nothing."""
    viewer, engineer = api.as_("viewer"), api.as_("engineer")
    huge = {"id": "huge", "nodes": [{"id": f"n{i}", "type": "validator"} for i in range(50_000)], "edges": []}
    over = {**huge, "nodes": huge["nodes"][: MAX_NODES + 1]}
    for method, path, body, headers in (
        ("POST", "/flows/huge/changes", huge, viewer),
        ("POST", "/flows", over, engineer),
        ("PUT", "/flows/huge", over, engineer),
        ("POST", "/flows/import", over, engineer),
    ):
        refused = await api.http.request(method, path, content=json.dumps(body), headers=headers)
        assert refused.status_code == 422, (path, refused.text)
        count = len(body["nodes"])
        assert refused.json()["error"]["problems"] == [{
            "code": "too_many_nodes", "message": f"the flow has {count:,} nodes; a flow holds at most {MAX_NODES:,}",
            "pointer": "/nodes", "hint": "split it into several flows"}], path  # fmt: skip
    assert "huge" not in {f["id"] for f in (await api.http.get("/flows", headers=viewer)).json()}
    padded = json.dumps({**huge, "label": "x" * MAX_DOCUMENT_BYTES})  # refused by its length, before it is decoded
    refused = await api.http.post("/flows/huge/changes", content=padded, headers=viewer)
    assert refused.status_code == 422 and refused.json()["error"]["problems"][0]["code"] == "too_large"


async def test_an_import_of_many_broken_nodes_answers_a_bounded_list(api: Api) -> None:
    """V3: the problems of an import are listed up to MAX_PROBLEMS, then one entry counting the rest."""
    broken = {"id": "broken_many", "nodes": [{"id": f"v{i:04d}", "type": "validator"} for i in range(MAX_NODES)]}
    refused = await api.http.post("/flows/import", content=json.dumps(broken), headers=api.as_("engineer"))
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["message"] == f"{MAX_NODES} problem(s) in the flow" and len(error["problems"]) == MAX_PROBLEMS + 1
    assert error["problems"][-1] == {"code": "more_problems",
                                     "message": f"{MAX_NODES - MAX_PROBLEMS:,} more problems not shown "
                                     f"({MAX_NODES:,} in all)", "pointer": "",
                                     "hint": "fix these first; the rest are listed once they fit"}  # fmt: skip


async def test_changes_are_what_a_deploy_would_restart_by_the_compilers_fingerprints(api: Api) -> None:
    engineer = api.as_("engineer")
    doc = flow("changes_flow")
    doc["nodes"].append({"id": "val2", "type": "validator", "x": 400, "y": 20, "config": {}})
    doc["edges"].append({"from": "sim:out", "to": "val2:in"})
    created = await api.http.post("/flows", json=doc, headers=engineer)
    assert created.status_code == 201, created.text
    assert (await api.http.post("/flows/changes_flow/deploy", json=api.target(), headers=engineer)).status_code == 200

    async def changes(edit: Any) -> dict[str, Any]:
        document = json.loads(json.dumps(doc))
        edit(document)
        answer = await api.http.post("/flows/changes_flow/changes", json=document, headers=api.as_("viewer"))
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def rename(d: dict[str, Any]) -> None:
        d["nodes"][0]["name"], d["nodes"][0]["x"] = "Press line 1", 999  # a rename and a move restart nothing

    assert (await changes(rename))["modified"] == []

    def rewire(d: dict[str, Any]) -> None:
        d["edges"] = [{"from": "sim:out", "to": "val:in"}]  # val2 loses its input

    rewired = await changes(rewire)
    assert rewired["modified"] == [] or rewired["problems"]  # val2 unwired: it would not deploy
    assert rewired["modified"] is None and rewired["problems"][0]["node_id"] == "val2"

    def reconfigure_and_remove(d: dict[str, Any]) -> None:
        d["nodes"][1]["config"] = {"rules": [{"max": 5}]}
        d["nodes"] = [n for n in d["nodes"] if n["id"] != "val2"]
        d["edges"] = [e for e in d["edges"] if e["to"] != "val2:in"]

    changed = await changes(reconfigure_and_remove)
    assert changed["modified"] == ["val"] and changed["removed"] == ["val2"] and changed["problems"] == []
