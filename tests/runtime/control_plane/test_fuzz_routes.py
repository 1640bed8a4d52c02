"""Property-based fuzz of every REST route of the control plane (the routes its OpenAPI document lists, which a test
holds to the app's route table): schema-driven cases by schemathesis, then odd raw input by hypothesis (bodies
nested deep, NaN, numbers past 64 bits, broken UTF-8, half surrogate pairs, control characters; odd query strings
and path parameters). Bounded per route; the answer is never a 5xx."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from starlette.testclient import TestClient

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app
from streamforge.runtime.control_plane.auth import ensure_admin
from streamforge.runtime.http_guard import ErrorShield

SCHEMA_EXAMPLES = 25  # per route with anything to vary (a route with no parameters and no body: 1)
ODD_EXAMPLES = 12  # per route
SOURCES = Path(__file__).resolve().parents[3] / "runtime"
FLOW = "fuzzed"  # a flow that exists, so path parameters reach past the 404s too


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip


@dataclass
class Fuzzed:
    app: Any
    headers: dict[str, str]
    document: dict[str, Any]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    """Its own control plane (own store and data dir: nothing it leaves behind reaches another test), served
    in-process behind the same error shield as on a port, with an Admin token and one saved flow."""
    control_plane = ControlPlane.open(tmp_path_factory.mktemp("fuzz") / "cp", load_node_types(False))
    ensure_admin(control_plane.store)
    headers = {"Authorization": f"Bearer {control_plane.store.issue_token('admin', 'fuzz')}"}
    app = ErrorShield(control_plane_app(control_plane))
    with TestClient(app) as client:
        document = client.get("/api/v1/openapi.json", headers=headers).json()
    yield Fuzzed(app, headers, document)


def _varies(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def test_schema_driven_cases_never_get_a_5xx(fuzzed: Fuzzed) -> None:
    """V7, W10, and every 500 the fuzz found: schemathesis' cases from the published document, per route."""
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzzed.app, headers=fuzzed.headers)
    failures: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document itself is valid OpenAPI
        operation = result.ok()
        spec = fuzzed.document["paths"][operation.path][operation.method.lower()]

        @_settings(SCHEMA_EXAMPLES if _varies(spec) else 1)
        @given(case=operation.as_strategy())
        def answers_below_500(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers=fuzzed.headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} {str(case.body)[:120]!r}: "
                                f"{response.status_code} {response.text[:200]}")  # fmt: skip

        answers_below_500()
    assert not failures, "\n".join(failures[:20])


# -- odd raw input -----------------------------------------------------------------------------------------------


def _query_names() -> list[str]:
    """Every query (and query-like argument) name the routes read, from their source: no hand list to go stale."""
    names: set[str] = set()
    for path in [*SOURCES.glob("control_plane/*.py"), SOURCES / "logs.py", SOURCES / "gateway" / "dlq.py"]:
        text = path.read_text()
        names |= set(re.findall(r"""(?:query_params|params|args)\.(?:get|pop)\(\s*["']([a-z_]+)["']""", text))
    return sorted(names)


def _nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


odd_text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "abc", "-1", "0", "1e999", "NaN", "9" * 40, "1.5", "true", "\x00", "../../etc/passwd", "%", "💥", FLOW]
)
odd_value: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=12,
)  # fmt: skip
ODD_BODIES = [b"NaN", b'{"version": NaN}', b'{"version": 1e26}', b'{"x": -Infinity}', b"1e400",
              b'{"version": ' + b"9" * 5000 + b"}", b"\xff\xfe{", b'"\\ud800"', b'{"a": "\\udc00"}', b"{", b"",
              b"null", b"[]", b'{"a": "\x01\x1f"}', b"\x00" * 64]  # fmt: skip
odd_body = st.one_of(
    st.builds(_nested, st.integers(60, 20_000)),  # V7: past the depth limit, and past Python's recursion limit
    st.sampled_from(ODD_BODIES),
    st.builds(lambda value: json.dumps(value).encode(), odd_value),
    st.builds(lambda value: json.dumps(value).encode(), st.dictionaries(st.sampled_from(_query_names()), odd_value)),
)


def _seed(client: TestClient, headers: dict[str, str]) -> None:
    """The flow FLOW exists (again, if a fuzzed DELETE took it), so path parameters reach past the 404s too."""
    if client.get(f"/api/v1/flows/{FLOW}", headers=headers).status_code == 404:
        flow = {"id": FLOW, "nodes": [{"id": "sim", "type": "simulator", "config": {}}], "edges": []}
        assert client.post("/api/v1/flows", json=flow, headers=headers).status_code == 201


def _odd_cases(client: TestClient, headers: dict[str, str], method: str, path: str, spec: dict[str, Any],
               failures: list[str]) -> None:  # fmt: skip
    """ODD_EXAMPLES requests to one route: odd path parameters (an existing flow among them), query, body."""
    integer = {p["name"] for p in spec.get("parameters", []) if p["schema"]["type"] == "integer"}
    values = {p["name"]: st.integers(0, 2**70).map(str) if p["name"] in integer else odd_text | st.just(FLOW)
              for p in spec.get("parameters", []) if p["in"] == "path"}  # fmt: skip
    names = _query_names()
    # A few names with odd values each, or every name the routes read set to one odd value (`?limit=abc&version=abc..`)
    every = odd_text.map(lambda odd: dict.fromkeys(names, odd))
    query = st.dictionaries(st.sampled_from(names), odd_text, max_size=6) | every

    @_settings(ODD_EXAMPLES)
    @given(params=st.fixed_dictionaries(values), query=query, body=odd_body)
    def answers_below_500(params: dict[str, str], query: dict[str, str], body: bytes) -> None:
        url = path.format(**{name: quote(value, safe="") or "x" for name, value in params.items()})
        response = client.request(method, url, params=query, content=body,
                                  headers={**headers, "Content-Type": "application/json"})  # fmt: skip
        if response.status_code >= 500:
            failures.append(f"{method} {url} {query} {body[:80]!r}: {response.status_code} {response.text[:200]}")

    answers_below_500()


def test_odd_bodies_query_strings_and_path_parameters_never_get_a_5xx(fuzzed: Fuzzed) -> None:
    """V7 (JSON 10,000 deep, the two unauthenticated routes included), W10 (NaN, 1e26 in a flow), D4-like query
    strings (`?limit=abc`): every route of the document, each with odd bodies, query strings and path parameters."""
    failures: list[str] = []
    with TestClient(fuzzed.app, raise_server_exceptions=False) as client:
        for path, operations in fuzzed.document["paths"].items():
            for method, spec in operations.items():
                _seed(client, fuzzed.headers)
                _odd_cases(client, fuzzed.headers, method.upper(), path, spec, failures)
    assert not failures, "\n".join(failures[:20])
