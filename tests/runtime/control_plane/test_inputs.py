"""Issue #41, input handling: strict JSON bodies everywhere (V7), security headers and the Host allow-list (W7, W8),
private files (W8), no plaintext credentials in exports (W9), odd numbers and live messages (W10), a bad DLQ query
(D4), and the OpenAPI document that covers every route."""

from __future__ import annotations

import json
import logging
import re
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app, serving
from streamforge.runtime.control_plane.openapi import BODY_MODELS, NO_BODY
from streamforge.runtime.http_guard import CONTENT_SECURITY_POLICY, allowed_hosts
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.eventually import eventually
from tests.runtime.control_plane.test_api import Api, api, flow

__all__ = ["api"]  # the module-scoped fixture: a control plane with a real gateway on the session's Kafka

DEEP = b"[" * 10_000 + b"]" * 10_000


def _errors(records: list[logging.LogRecord]) -> list[str]:
    """What was logged as an error or with a traceback (uvicorn's "Exception in ASGI application" is both)."""
    return [record.getMessage() for record in records if record.exc_info or record.levelno >= logging.ERROR]


async def test_json_nested_10000_deep_is_a_400_on_every_route_without_a_traceback(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """V7: a body nested 10,000 deep was a 500 and a ~10 KB traceback on 13 routes, two of them unauthenticated
    (login, gateway registration); now a 400 that says so, on every route that takes a body, and nothing logged."""
    document = (await api.http.get("/openapi.json", headers=api.as_("viewer"))).json()
    taking = [
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in document["paths"].items()
        for method, spec in operations.items()
        if "requestBody" in spec
        and path.startswith("/api/v1/")
        and path not in ("/api/v1/auth/refresh", "/api/v1/auth/logout")  # read no body; logout ends the caller's
    ]
    assert ("POST", "/auth/login") in taking and ("POST", "/gateways/register") in taking and len(taking) > 20
    with caplog.at_level(logging.INFO):
        for method, path in taking:
            # A gateway that does not exist: a route that reads no body (reject, delete) must not act on the real one.
            url = path.replace("{flow}", "odd").replace("{gateway}", "gw_000000000000").replace("{version}", "1")
            url = re.sub(r"\{(\w+)\}", lambda m: {"action": "acknowledge"}.get(m.group(1), f"{m.group(1)}_x"), url)
            answer = await api.http.request(method, url, content=DEEP, headers=api.as_("admin"))
            assert answer.status_code < 500, (method, url, answer.status_code, answer.text[:200])
            if answer.status_code == 400:  # not refused earlier for another reason (401 on a gateway's own route)
                assert "nested deeper than 64 levels" in answer.json()["error"]["message"]
        for path in ("/auth/login", "/gateways/register"):  # before any credential
            answer = await api.http.post(path, content=DEEP, headers={"content-type": "application/json"})
            if answer.status_code == 413:  # registration's 16 KB bound refuses it before it is read
                continue
            assert answer.status_code == 400 and "nested deeper" in answer.json()["error"]["message"], path
    assert _errors(caplog.records) == []


async def test_an_unexpected_error_is_one_log_line_and_a_500_with_its_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """V7's last resort: an exception no handler knows is logged once, compactly (no traceback), and answered 500
    with the error id the line carries."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))

    def broken() -> list[dict[str, Any]]:
        raise ZeroDivisionError("a bug no input should reach")

    control_plane.fleet.gateways = broken  # type: ignore[method-assign]
    async with serving(control_plane, "127.0.0.1", 0) as url, httpx.AsyncClient(base_url=url) as http:
        with caplog.at_level(logging.INFO):
            answer = await http.get("/health")
    assert answer.status_code == 500
    error_id = answer.json()["error"]["error_id"]
    lines = [record for record in caplog.records if error_id in record.getMessage()]
    assert len(lines) == 1 and "ZeroDivisionError" in lines[0].getMessage() and lines[0].exc_info is None
    assert _errors(caplog.records) == [lines[0].getMessage()]  # and nothing else: no traceback from the server


async def test_nan_and_huge_numbers_in_a_flow_are_refused_where_they_are(api: Api) -> None:
    """W10: `version: NaN` or `1e26` in a flow body was a 500; NaN/Infinity are not JSON (400), 1e26 is a 422
    that points at /version."""
    engineer = api.as_("engineer")
    await api.http.post("/flows", json=flow("numbers"), headers=engineer)
    text = json.dumps(flow("numbers"))
    for odd, status, says in (("NaN", 400, "NaN is not JSON"), ("Infinity", 400, "Infinity is not JSON"),
                              ("1e26", 422, ""), ("1e400", 400, "too large"), ("9" * 30, 400, "64-bit")):  # fmt: skip
        body = text.replace('"version": 0', f'"version": {odd}')
        for method, path in (("POST", "/flows"), ("PUT", "/flows/numbers")):
            answer = await api.http.request(method, path, content=body, headers=engineer)
            assert answer.status_code == status, (odd, method, answer.text)
            error = answer.json()["error"]
            assert says in error["message"], error
            if status == 422:
                assert [p["pointer"] for p in error["problems"]] == ["/version"]


async def test_a_bad_live_message_is_answered_and_the_socket_stays(api: Api) -> None:
    """W10: a message on the live websocket that is not a JSON object (not JSON, a binary frame, nested 10,000
    deep, a list) dropped the socket with a traceback; now each gets an error message and the socket keeps serving."""
    base = str(api.http.base_url).replace("http://", "ws://").rstrip("/")
    async with websockets.connect(f"{base}/live?token={api.tokens['viewer']}", max_size=None) as socket:
        for odd in ("{nope", b"\x00\x01", DEEP.decode(), "[1, 2]", '"status"', "NaN"):
            await socket.send(odd)
            answer = json.loads(await socket.recv())
            assert answer["type"] == "error" and "subscribe" in answer["message"], (odd, answer)
        await socket.send(json.dumps({"subscribe": "status"}))
        assert json.loads(await socket.recv())["type"] == "status"


async def test_a_bad_dlq_query_is_a_400_from_the_gateway_at_once(api: Api) -> None:
    """D4: `GET /dlq?limit=abc` made the gateway's command task raise and never answer (a 60 s wait); now the
    gateway answers 400 saying what `limit` takes."""
    query = {"limit": "abc", "gateway": api.gateway_id}

    async def answered() -> httpx.Response | None:  # once the gateway's events link is up (just approved)
        answer = await api.http.get("/dlq", params=query, headers=api.as_("viewer"))
        return None if answer.status_code == 503 and "gateway_offline" in answer.text else answer

    answer = await eventually(answered, 60, what="the gateway's link")
    assert answer.status_code == 400, answer.text
    assert "`limit` is a whole number" in answer.json()["error"]["message"]


async def test_http_header_values_and_url_credentials_never_reach_an_export(api: Api) -> None:
    """W9: the http sink's `headers` values (an API key) were kept and exported in plaintext, and so was a URL's
    user:password@; header values are now secrets (references in every export), and a URL with credentials is
    refused saying where they go instead."""
    engineer = api.as_("engineer")
    document = flow("http_out")
    document["nodes"].append({"id": "out", "type": "http", "config": {
        "url": "https://ingest.example/v1", "headers": {"X-Api-Key": "k-do-not-leak"}}})  # fmt: skip
    document["edges"].append({"from": "val:clean", "to": "out:in"})
    saved = await api.http.post("/flows", json=document, headers=engineer)
    assert saved.status_code == 201 and "k-do-not-leak" not in saved.text
    exported = (await api.http.get("/flows/http_out/export", headers=engineer)).text
    assert "k-do-not-leak" not in exported and '"$secret": "http_out.out.headers.X-Api-Key"' in exported
    assert api.store.secret("http_out.out.headers.X-Api-Key") == "k-do-not-leak"

    document["id"] = "http_userinfo"
    document["nodes"][-1]["config"] = {"url": "https://user:pa55@ingest.example/v1"}
    saved = await api.http.post("/flows", json=document, headers=engineer)
    problems = [p for p in saved.json()["problems"] if p.get("node_id") == "out"]
    assert problems and "the URL holds credentials" in problems[0]["message"], saved.json()
    deployed = await api.http.post("/flows/http_userinfo/deploy", json=api.target(), headers=engineer)
    assert deployed.status_code == 422 and "use the node's username/password" in deployed.text


async def test_every_answer_carries_the_security_headers(api: Api) -> None:
    """W7: no CSP, X-Frame-Options, nosniff or Referrer-Policy on the editor and the API; now on every answer
    (a read, a refusal, a 404, health)."""
    for path, headers in (("/flows", api.as_("viewer")), ("/flows", {}), ("/no-such-route", {}), ("/../../health", {})):
        answer = await api.http.get(path, headers=headers)
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"


async def test_the_served_control_plane_answers_only_its_own_host_names(tmp_path: Path) -> None:
    """W8: any Host header was answered (a DNS-rebinding page could drive the API from a browser); bound to
    loopback it now answers only loopback names, others get 400; --allowed-host adds names."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    async with serving(control_plane, "127.0.0.1", 0, named_hosts=["cp.example"]) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            port = url.rsplit(":", 1)[1]
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "cp.example", f"[::1]:{port}"):
                assert (await http.get("/health/live", headers={"Host": host})).status_code == 200, host
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
                refused = await http.get("/health/live", headers={"Host": host})
                assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_host", host
                assert refused.headers["x-frame-options"] == "DENY"
            editor = await http.get("/", headers={"Host": f"localhost:{port}"})
            assert editor.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        ws = url.replace("http://", "ws://")
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"{ws}/api/v1/live?token=x", additional_headers={"Host": "evil.example"}):
                pass
    assert allowed_hosts("0.0.0.0", []) is None  # every address, no names: any Host, with a warning at start
    assert allowed_hosts("0.0.0.0", ["cp.example:8080"]) == frozenset({"cp.example"})
    assert allowed_hosts("10.0.0.5", []) == frozenset({"10.0.0.5"})


async def test_the_database_its_key_and_the_data_dirs_are_private(tmp_path: Path, kafka: EmbeddedKafka) -> None:
    """W8: the database file was 0644 and the embedded Kafka's log dirs readable by every local user; now the data
    dir and Kafka's are 0700, the database (and its WAL), its key and the registry 0600."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    control_plane.store.put_secret("a", "b", "admin")
    data = tmp_path / "cp"
    files = [data / "control-plane.sqlite", data / "control-plane.sqlite-wal", data / "control-plane.key",
             data / "registry.sqlite"]  # fmt: skip
    assert {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in files} == {p.name: "0o600" for p in files}
    for folder in (data, kafka.broker.data_dir, kafka.broker.log_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_the_openapi_document_lists_every_route_of_the_app(tmp_path: Path) -> None:
    """The document is generated from the route table, so it cannot go stale: every HTTP route and method of the app
    (but the editor's files and /mcp) is in it with its path parameters; each body model names a real route."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    app: Any = control_plane_app(control_plane)
    while not hasattr(app, "routes"):  # the middleware around the Starlette app
        app = app.app

    def walk(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for route in routes:
            if isinstance(route, Mount):
                found |= walk(route.routes, prefix + route.path)
            elif isinstance(route, Route):
                found |= {(method, prefix + route.path_format) for method in route.methods or () if method != "HEAD"}
        return found

    control_plane.store.create_user("reader", "x", "viewer")
    token = control_plane.store.issue_token("reader", "openapi")
    with TestClient(control_plane_app(control_plane)) as client:
        assert client.get("/api/v1/openapi.json").status_code == 401  # a read like any other: a token needed
        document = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    assert document["openapi"] == "3.1.0"
    listed = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    routes = walk(app.routes)
    assert routes == listed and len(routes) > 60
    assert set(BODY_MODELS) <= routes and routes >= NO_BODY
    flow_body = document["paths"]["/api/v1/flows"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert flow_body == {"$ref": "#/components/schemas/FlowDocument"}
    restore = document["paths"]["/api/v1/flows/{flow}/versions/{version}/restore"]["post"]["parameters"]
    assert [(p["name"], p["schema"]["type"]) for p in restore] == [("flow", "string"), ("version", "integer")]
