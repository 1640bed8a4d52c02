"""The registry speaks Confluent's REST API: ids, versions, lookups, BACKWARD checks, error shapes."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from streamforge.engine.schemas import TELEMETRY, canonical_json
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.http import serve_app

CT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(schema_registry_app(SchemaStore())) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def _body(schema: object) -> str:
    return json.dumps({"schema": json.dumps(schema)})


async def test_register_versions_and_ids(client: httpx.AsyncClient) -> None:
    first = await client.post("/subjects/telemetry.raw-value/versions", content=_body(TELEMETRY), headers=CT)
    assert first.status_code == 200
    schema_id = first.json()["id"]
    again = await client.post("/subjects/telemetry.raw-value/versions", content=_body(TELEMETRY), headers=CT)
    assert again.json()["id"] == schema_id  # idempotent
    other = await client.post("/subjects/telemetry.clean-value/versions", content=_body(TELEMETRY), headers=CT)
    assert other.json()["id"] == schema_id  # ids are global per schema
    assert (await client.get("/subjects")).json() == ["telemetry.clean-value", "telemetry.raw-value"]
    assert (await client.get("/subjects/telemetry.raw-value/versions")).json() == [1]
    latest = (await client.get("/subjects/telemetry.raw-value/versions/latest")).json()
    assert latest["version"] == 1 and latest["id"] == schema_id
    by_id = (await client.get(f"/schemas/ids/{schema_id}")).json()
    assert json.loads(by_id["schema"]) == json.loads(canonical_json(TELEMETRY))
    found = await client.post("/subjects/telemetry.raw-value", content=_body(TELEMETRY), headers=CT)
    assert found.json()["id"] == schema_id


async def test_backward_compatible_evolution_and_refusal(client: httpx.AsyncClient) -> None:
    subject = "/subjects/telemetry.raw-value/versions"
    await client.post(subject, content=_body(TELEMETRY), headers=CT)
    evolved = copy.deepcopy(TELEMETRY)
    evolved["fields"].append({"name": "site", "type": "string", "default": "north"})
    check = await client.post(
        "/compatibility/subjects/telemetry.raw-value/versions/latest", content=_body(evolved), headers=CT
    )
    assert check.json()["is_compatible"] is True
    assert (await client.post(subject, content=_body(evolved), headers=CT)).status_code == 200
    assert (await client.get(subject)).json() == [1, 2]
    broken = copy.deepcopy(evolved)
    broken["fields"].append({"name": "line", "type": "int"})
    refused = await client.post(subject, content=_body(broken), headers=CT)
    assert refused.status_code == 409
    assert refused.json()["error_code"] == 409
    assert "/line: new field has no default" in refused.json()["message"]
    await client.put("/config/telemetry.raw-value", json={"compatibility": "NONE"})
    assert (await client.get("/config/telemetry.raw-value")).json() == {"compatibilityLevel": "NONE"}
    assert (await client.post(subject, content=_body(broken), headers=CT)).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/schemas/ids/999", None, 404, 40403),
        ("POST", "/subjects/x/versions", json.dumps({"schema": "{not json"}), 422, 42201),
        ("POST", "/subjects/x/versions", json.dumps({"schema": json.dumps({"type": "record"})}), 422, 42201),
        ("POST", "/subjects/x/versions", "[]", 422, 42201),
        ("PUT", "/config", json.dumps({"compatibility": "SIDEWAYS"}), 422, 42203),
        ("PUT", "/config", "{oops", 400, 400),
    ],
)
async def test_errors_have_confluent_shape(
    client: httpx.AsyncClient, method: str, path: str, body: str | None, status: int, code: int
) -> None:
    response = await client.request(method, path, content=body, headers=CT)
    assert response.status_code == status
    assert response.json()["error_code"] == code
    assert response.json()["message"]


@pytest.mark.parametrize(
    ("schema", "pointer"),
    [
        ({"type": "record", "name": "Bad-Name", "fields": []}, "/name"),
        ({"type": "record", "name": "R", "namespace": "io.1x", "fields": []}, "/namespace"),
        ({"type": "record", "name": "R", "fields": [{"name": "x'] + y + ['", "type": "long"}]}, "/fields/0/name"),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "s", "type": ["null", {"type": "enum", "name": "E 1", "symbols": ["OK"]}]}],
            },
            "/fields/0/type/1/name",
        ),
        ({"type": "record", "name": "R", "fields": [{"name": 5, "type": "long"}]}, "/fields/0/name"),
    ],
)
async def test_names_the_avro_spec_refuses_are_refused_where_they_are(
    client: httpx.AsyncClient, schema: dict[str, object], pointer: str
) -> None:
    """As a Confluent registry (Avro's Java parser) refuses them; fastavro accepts any string, and gateways compile
    their readers from what is registered here."""
    response = await client.post("/subjects/names-value/versions", content=_body(schema), headers=CT)
    assert response.status_code == 422 and response.json()["error_code"] == 42201
    assert f" at {pointer} is not an Avro name" in response.json()["message"]
