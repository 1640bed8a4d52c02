"""Confluent-compatible schema-registry API (subjects, versions, ids, BACKWARD compatibility) on SQLite."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamforge.engine.compatibility import backward_problems
from streamforge.engine.json_input import JsonRefused, parse_json
from streamforge.engine.schema_registry import CONTENT_TYPE, SchemaNotFound
from streamforge.engine.schemas import canonical_json
from streamforge.runtime.control_plane.store import SQLITE_INTEGERS
from streamforge.runtime.errors import unexpected_error
from streamforge.runtime.files import private_file

LEVELS = {"NONE", "BACKWARD", "BACKWARD_TRANSITIVE"}


class SchemaApiError(Exception):
    """An error in Confluent's shape: HTTP status, error_code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class SchemaStore:
    """Schemas with global ids, subject versions, and per-subject compatibility levels."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        if str(path) != ":memory:":
            private_file(Path(path))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.executescript(
            """
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS schemas (id INTEGER PRIMARY KEY AUTOINCREMENT, schema TEXT UNIQUE NOT NULL);
            CREATE TABLE IF NOT EXISTS versions (
                subject TEXT NOT NULL, version INTEGER NOT NULL, schema_id INTEGER NOT NULL REFERENCES schemas(id),
                PRIMARY KEY (subject, version));
            CREATE TABLE IF NOT EXISTS config (subject TEXT PRIMARY KEY, level TEXT NOT NULL);
            """
        )

    def level(self, subject: str | None) -> str:
        row = None
        if subject is not None:
            row = self._db.execute("SELECT level FROM config WHERE subject=?", (subject,)).fetchone()
        row = row or self._db.execute("SELECT level FROM config WHERE subject=''").fetchone()
        return row[0] if row else "BACKWARD"

    def set_level(self, subject: str | None, level: str) -> None:
        if level not in LEVELS:
            raise SchemaApiError(422, 42203, f"invalid compatibility level {level!r}; use one of {sorted(LEVELS)}")
        self._db.execute("INSERT OR REPLACE INTO config VALUES (?, ?)", (subject or "", level))

    def subjects(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT subject FROM versions ORDER BY subject")]

    def versions(self, subject: str) -> list[tuple[int, int, str]]:
        rows = self._db.execute(
            "SELECT v.version, v.schema_id, s.schema FROM versions v JOIN schemas s ON s.id=v.schema_id "
            "WHERE v.subject=? ORDER BY v.version",
            (subject,),
        ).fetchall()
        if not rows:
            raise SchemaApiError(404, 40401, f"Subject '{subject}' not found.")
        return [(int(v), int(i), str(s)) for v, i, s in rows]

    def version(self, subject: str, version: str) -> tuple[int, int, str]:
        rows = self.versions(subject)
        if version == "latest":
            return rows[-1]
        for row in rows:
            if str(row[0]) == version:
                return row
        raise SchemaApiError(404, 40402, f"Version {version} not found.")

    def by_id(self, schema_id: int) -> str:
        row = None
        if schema_id in SQLITE_INTEGERS:  # an id past 64 bits was never given: not found, not an overflow
            row = self._db.execute("SELECT schema FROM schemas WHERE id=?", (schema_id,)).fetchone()
        if row is None:
            raise SchemaApiError(404, 40403, f"Schema {schema_id} not found")
        return str(row[0])

    def problems(self, subject: str, schema: dict[str, Any], version: str | None = None) -> list[str]:
        level = self.level(subject)
        try:
            existing = self.versions(subject)
        except SchemaApiError:
            return []
        if level == "NONE":
            return []
        if version is not None:
            existing = [self.version(subject, version)]
        elif level == "BACKWARD":
            existing = existing[-1:]
        problems = []
        for number, _, text in existing:
            problems += [f"version {number}: {p}" for p in backward_problems(schema, json.loads(text))]
        return problems

    def register(self, subject: str, text: str) -> int:
        schema = _parse(text)
        canonical = canonical_json(schema)
        with self._lock:
            for _, schema_id, existing in self._safe_versions(subject):
                if existing == canonical:
                    return schema_id
            problems = self.problems(subject, schema)
            if problems:
                raise SchemaApiError(
                    409,
                    409,
                    f"Schema being registered is incompatible with an earlier schema for subject "
                    f"'{subject}' ({self.level(subject)}): " + "; ".join(problems),
                )
            self._db.execute("INSERT OR IGNORE INTO schemas(schema) VALUES (?)", (canonical,))
            schema_id = int(self._db.execute("SELECT id FROM schemas WHERE schema=?", (canonical,)).fetchone()[0])
            latest = self._db.execute("SELECT MAX(version) FROM versions WHERE subject=?", (subject,)).fetchone()[0]
            self._db.execute("INSERT INTO versions VALUES (?, ?, ?)", (subject, (latest or 0) + 1, schema_id))
            return schema_id

    def _safe_versions(self, subject: str) -> list[tuple[int, int, str]]:
        try:
            return self.versions(subject)
        except SchemaApiError:
            return []


def _parse(text: str) -> dict[str, Any]:
    try:
        schema = parse_json(text)
        fastavro.parse_schema(schema)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise SchemaApiError(422, 42201, f"Invalid Avro schema: {exc}") from exc
    if not isinstance(schema, dict):
        raise SchemaApiError(422, 42201, "Invalid Avro schema: top level must be a record")
    bad = next(_invalid_names(schema, ""), None)
    if bad is not None:
        pointer, name = bad
        raise SchemaApiError(422, 42201, f"Invalid Avro schema: {name!r} at {pointer} is not an Avro name (a letter "
                                         "or _, then letters, digits or _; dots only between the parts of a full "
                                         "name)")  # fmt: skip
    return schema


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _simple_name(value: Any) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _full_name(value: Any) -> bool:
    return isinstance(value, str) and all(map(_simple_name, value.split(".")))


def _invalid_names(node: Any, pointer: str) -> Iterator[tuple[str, str]]:
    """(JSON pointer, name) of every type name, namespace and field name that the Avro spec refuses, as a Confluent
    registry (Avro's Java parser) does: fastavro checks enum symbols but accepts any string as a name, and gateways
    compile readers from these schemas."""
    if isinstance(node, list):
        for index, branch in enumerate(node):
            yield from _invalid_names(branch, f"{pointer}/{index}")
        return
    if not isinstance(node, dict):
        return
    if node.get("type") in ("record", "error", "enum", "fixed"):
        if not _full_name(node.get("name")):
            yield f"{pointer}/name", str(node.get("name"))
        if node.get("namespace") not in (None, "") and not _full_name(node["namespace"]):  # "": the null namespace
            yield f"{pointer}/namespace", str(node["namespace"])
    for index, field in enumerate(node.get("fields", []) if node.get("type") in ("record", "error") else []):
        if not _simple_name(field["name"]):  # fastavro parsed it first: a record's fields are objects with names
            yield f"{pointer}/fields/{index}/name", str(field["name"])
        yield from _invalid_names(field["type"], f"{pointer}/fields/{index}/type")
    for key in ("type", "items", "values"):
        if isinstance(node.get(key), dict | list):
            yield from _invalid_names(node[key], f"{pointer}/{key}")


def _answer(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=CONTENT_TYPE)


async def _json(request: Request) -> Any:
    try:
        return parse_json(await request.body())
    except JsonRefused as refused:
        raise SchemaApiError(400, 400, f"request body: {refused}") from None


async def _body(request: Request) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise SchemaApiError(422, 42201, "body must be an object with a string field 'schema'")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise SchemaApiError(422, 42201, f"schemaType {body['schemaType']!r} is not supported; only AVRO")
    return body


Guard = Callable[[Request, bool], None]  # (request, is_write): raises SchemaApiError to refuse


def schema_registry_app(store: SchemaStore, guard: Guard | None = None) -> Starlette:
    """The registry as an ASGI app, to mount under the control plane or serve on its own.

    `guard` is asked before every request (reads and writes told apart); without one, everyone may do anything,
    which only a registry on loopback for a single `streamforge run` should accept.
    """

    async def subjects(request: Request) -> JSONResponse:
        return _answer(store.subjects())

    async def versions(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        if request.method == "POST":
            body = await _body(request)
            return _answer({"id": store.register(subject, body["schema"])})
        return _answer([number for number, _, _ in store.versions(subject)])

    async def version(request: Request) -> JSONResponse:
        subject, wanted = request.path_params["subject"], request.path_params["version"]
        number, schema_id, text = store.version(subject, wanted)
        return _answer({"subject": subject, "version": number, "id": schema_id, "schema": text})

    async def lookup(request: Request) -> JSONResponse:
        subject = request.path_params["subject"]
        canonical = canonical_json(_parse((await _body(request))["schema"]))
        for number, schema_id, text in store.versions(subject):
            if text == canonical:
                return _answer({"subject": subject, "version": number, "id": schema_id, "schema": text})
        raise SchemaApiError(404, 40403, "Schema not found")

    async def by_id(request: Request) -> JSONResponse:
        return _answer({"schema": store.by_id(int(request.path_params["schema_id"]))})

    async def config(request: Request) -> JSONResponse:
        subject = request.path_params.get("subject")
        if request.method == "PUT":
            body = await _json(request)
            level = body.get("compatibility") if isinstance(body, dict) else None
            store.set_level(subject, str(level))
            return _answer({"compatibility": store.level(subject)})
        return _answer({"compatibilityLevel": store.level(subject)})

    async def compatibility(request: Request) -> JSONResponse:
        subject, wanted = request.path_params["subject"], request.path_params["version"]
        schema = _parse((await _body(request))["schema"])
        problems = store.problems(subject, schema, None if wanted == "latest" else wanted)
        return _answer({"is_compatible": not problems, "messages": problems})

    async def registry_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SchemaApiError)
        return _answer({"error_code": exc.code, "message": exc.message}, exc.status)

    def guarded(endpoint: Callable[[Request], Awaitable[JSONResponse]]) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def checked(request: Request) -> JSONResponse:
            if guard is not None:
                # Writes: registering a version, setting compatibility. A lookup or check by POST only reads.
                registers = request.method == "POST" and request.url.path.rstrip("/").endswith("/versions")
                guard(request, registers or request.method == "PUT")
            return await endpoint(request)

        return checked

    routes = [
        Route("/subjects", guarded(subjects)),
        Route("/subjects/{subject}/versions", guarded(versions), methods=["GET", "POST"]),
        Route("/subjects/{subject}/versions/{version}", guarded(version)),
        Route("/subjects/{subject}", guarded(lookup), methods=["POST"]),
        Route("/schemas/ids/{schema_id:int}", guarded(by_id)),
        Route("/config", guarded(config), methods=["GET", "PUT"]),
        Route("/config/{subject}", guarded(config), methods=["GET", "PUT"]),
        Route("/compatibility/subjects/{subject}/versions/{version}", guarded(compatibility), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={SchemaApiError: registry_error, Exception: unexpected_error})


class LocalSchemaRegistry:
    """The SchemaRegistry protocol over this process's own SchemaStore (the control plane decoding a debug tap)."""

    def __init__(self, store: SchemaStore) -> None:
        self.store = store

    async def register(self, subject: str, schema: dict[str, Any]) -> int:
        return self.store.register(subject, canonical_json(schema))

    async def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        try:
            schema: dict[str, Any] = json.loads(self.store.by_id(schema_id))
        except SchemaApiError as missing:
            raise SchemaNotFound(missing.message) from None
        return schema
