"""Registry client with local cache: works offline from the cache; says which schema is missing otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from streamforge.engine.schema_registry import (
    CachedSchemaRegistry,
    HttpSchemaRegistry,
    SchemaCache,
    SchemaNotFound,
    SchemaRegistryError,
    SchemaRegistryUnavailable,
)
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, encoder_for
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.broker import free_port
from tests.engine.samples import SAMPLES


async def test_offline_encode_and_decode_from_cache(tmp_path: Path) -> None:
    cache_path = tmp_path / "cache.json"
    async with serve_app(schema_registry_app(SchemaStore())) as url:
        online = CachedSchemaRegistry(HttpSchemaRegistry(url), SchemaCache(cache_path))
        encoder = await encoder_for(online, "telemetry.raw-value", SCHEMAS["telemetry"])
        value = encoder.encode(SAMPLES["telemetry"])
    # The registry is gone now: a fresh gateway process with only the cache file.
    offline = CachedSchemaRegistry(HttpSchemaRegistry(url, timeout_s=1), SchemaCache(cache_path))
    again = await encoder_for(offline, "telemetry.raw-value", SCHEMAS["telemetry"])
    assert again.schema_id == encoder.schema_id
    assert again.encode(SAMPLES["telemetry"]) == value
    decoded = await Decoder(offline).decode_batch([value])
    assert decoded.ok[0][1] == SAMPLES["telemetry"]


async def test_neither_registry_nor_cache_names_the_missing_schema(tmp_path: Path) -> None:
    dead = HttpSchemaRegistry(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(SchemaRegistryUnavailable):
        await dead.schema_by_id(1)
    registry = CachedSchemaRegistry(dead, SchemaCache(tmp_path / "empty.json"))
    # Which schema, where it was looked for, and why the registry did not answer.
    missing = r"schema 'Alarm' for subject 'alarms.raw-value'.*unreachable: ConnectionRefused.*empty.json"
    with pytest.raises(SchemaNotFound, match=missing):
        await encoder_for(registry, "alarms.raw-value", SCHEMAS["alarm"])
    with pytest.raises(SchemaNotFound, match=r"schema id 7 is in neither registry http://127.0.0.1"):
        await Decoder(registry).decode_batch([b"\x00\x00\x00\x00\x07\x02"])


def test_cache_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = SchemaCache(tmp_path / "cache.json")
    cache.put(1, SCHEMAS["telemetry"], "telemetry.raw-value")
    before = (tmp_path / "cache.json").read_text()

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(2, SCHEMAS["event"], "events.raw-value")
    monkeypatch.undo()
    assert (tmp_path / "cache.json").read_text() == before
    assert json.loads(before)  # still a whole document
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]  # no temp file left behind
    assert SchemaCache(tmp_path / "cache.json").by_id(1) == SCHEMAS["telemetry"]


async def test_a_registry_that_redirects_or_fails_says_so_and_is_not_followed() -> None:
    asked: list[str] = []

    async def moved(request: Request) -> Response:
        asked.append(f"{request.method} {request.url.path}")
        return RedirectResponse("https://registry.plant.example/schemas" + request.url.path, status_code=301)

    async def broken(request: Request) -> Response:
        return PlainTextResponse("database is locked", status_code=503)

    routes = [Route("/moved/{path:path}", moved, methods=["GET", "POST"]), Route("/broken/{path:path}", broken)]
    async with serve_app(Starlette(routes=routes)) as url:
        with pytest.raises(SchemaRegistryError, match=r"answered 301, moved to https://registry.plant.example/schemas"):
            await HttpSchemaRegistry(f"{url}/moved").register("telemetry.raw-value", SCHEMAS["telemetry"])
        assert asked == ["POST /moved/subjects/telemetry.raw-value/versions"]  # once, and not on to the new place
        with pytest.raises(SchemaRegistryUnavailable, match="answered 503: database is locked"):
            await HttpSchemaRegistry(f"{url}/broken").schema_by_id(1)


async def test_after_the_registry_failed_cached_schemas_are_taken_without_asking_again(tmp_path: Path) -> None:
    cache_path = tmp_path / "cache.json"
    subjects = {f"telemetry.{name}-value": SCHEMAS["telemetry"] for name in ("raw", "clean", "late")}
    async with serve_app(schema_registry_app(SchemaStore())) as url:
        online = CachedSchemaRegistry(HttpSchemaRegistry(url), SchemaCache(cache_path))
        ids = {subject: await online.register(subject, schema) for subject, schema in subjects.items()}
    asked: list[str] = []

    async def unavailable(request: Request) -> Response:
        asked.append(request.url.path)
        return PlainTextResponse("down for maintenance", status_code=503)

    down = Starlette(routes=[Route("/{path:path}", unavailable, methods=["GET", "POST"])])
    async with serve_app(down) as url:
        offline = CachedSchemaRegistry(HttpSchemaRegistry(url, timeout_s=1), SchemaCache(cache_path))
        assert {subject: await offline.register(subject, schema) for subject, schema in subjects.items()} == ids
        assert len(asked) == 1  # one failed answer, then the cache: a gateway booting offline waits once
        offline._unreachable_until = 0.0  # the hold is over: the registry is asked again
        await offline.register("telemetry.raw-value", SCHEMAS["telemetry"])
        assert len(asked) == 2
