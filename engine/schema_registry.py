"""Schema-registry client: Confluent REST API, backed by a local cache so encoding works offline."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from tinydb import Query, TinyDB
from tinydb.storages import Storage

from streamforge.engine.schemas import Schema, canonical_json

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(RuntimeError):
    """The registry refused a request (bad schema, incompatible change, ...)."""


class SchemaRegistryUnavailable(SchemaRegistryError):
    """The registry could not be reached."""


class SchemaNotFound(SchemaRegistryError):
    """Neither the registry nor the local cache knows the schema asked for."""


class SchemaRegistry(Protocol):
    """What encoders and decoders need from a registry."""

    async def register(self, subject: str, schema: Schema) -> int:
        """Register (or look up) `schema` under `subject`; return its global id."""
        ...

    async def schema_by_id(self, schema_id: int) -> Schema:
        """The schema with this global id."""
        ...


class InMemorySchemaRegistry:
    """A registry in this process: for node tests and tools that need ids but no shared registry."""

    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}
        self.lookups = 0

    async def register(self, subject: str, schema: Schema) -> int:
        return self.register_now(subject, schema)

    def register_now(self, subject: str, schema: Schema) -> int:
        text = canonical_json(schema)
        known = next((i for i, s in self._schemas.items() if canonical_json(s) == text), None)
        schema_id = known or len(self._schemas) + 1
        self._schemas[schema_id] = schema
        self._ids[(subject, text)] = schema_id
        return schema_id

    async def schema_by_id(self, schema_id: int) -> Schema:
        self.lookups += 1
        try:
            return self._schemas[schema_id]
        except KeyError:
            raise SchemaNotFound(f"schema id {schema_id} is not registered in this process") from None


def bearer_from_file(path: str | Path) -> Callable[[], str | None]:
    """Credentials for HttpSchemaRegistry read from a JSON file's `token` (a gateway's, renewed in place)."""

    def current() -> str | None:
        try:
            token = json.loads(Path(path).read_text()).get("token")
        except (OSError, ValueError):
            return None
        return token if isinstance(token, str) else None

    return current


class _NotFollowed(urllib.request.HTTPRedirectHandler):
    """A redirect comes back as the registry's answer (an HTTPError with its status), not followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpSchemaRegistry:
    """Client of a Confluent-compatible registry (ours, Confluent Schema Registry, Karapace).

    On the standard library's HTTP client, each request in a thread: a process asks at start (its ports' schemas)
    and for a schema id it meets the first time, never per record. httpx with its client cost every process that
    holds one ~5 MB (its TLS context's CA bundle; the click and pygments its command line pulls in), and every
    worker holds one."""

    def __init__(self, url: str, timeout_s: float = 5.0, credentials: Callable[[], str | None] | None = None,
                 ca_file: str | Path | None = None) -> None:  # fmt: skip
        """`credentials`: the current bearer token (a gateway's JWT, renewed under it), asked on every request.
        `ca_file`: for https, the CA certificates that sign the registry's (a control plane's own CA, as a gateway
        pins it with --ca); None: the system's."""
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._credentials = credentials
        self._ca_file = None if ca_file is None else str(ca_file)
        self._opener: urllib.request.OpenerDirector | None = None

    async def aclose(self) -> None:
        """Nothing held between requests."""

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        status, text, moved_to = await asyncio.to_thread(self._exchange, method, path, body)
        if 300 <= status < 400:  # not followed: a POST would go on as a GET, without its schema
            raise SchemaRegistryError(f"{self.url}{path} answered {status}, moved to {moved_to}: give the registry's "
                                      "own URL")  # fmt: skip
        if status == 404:
            raise SchemaNotFound(f"{self.url}{path}: {text}")
        if status >= 500:
            raise SchemaRegistryUnavailable(f"{self.url}{path} answered {status}: {text}")
        if status >= 400:
            raise SchemaRegistryError(f"{self.url}{path} answered {status}: {text}")
        return json.loads(text)

    def _exchange(self, method: str, path: str, body: Mapping[str, Any] | None) -> tuple[int, str, str | None]:
        """One request, blocking: the status, the body's text and where a redirect points."""
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(self.url + path, data, self._headers(), method=method)
            with self._open().open(request, timeout=self.timeout_s) as response:
                return int(response.status), response.read().decode(errors="replace"), None
        except urllib.error.HTTPError as answered:  # a status of 300 or more: the answer is in the error
            with answered:
                return answered.code, answered.read().decode(errors="replace"), answered.headers.get("Location")
        except (urllib.error.URLError, OSError, ValueError) as unreachable:  # ValueError: an unusable URL
            why = getattr(unreachable, "reason", unreachable)
            raise SchemaRegistryUnavailable(f"schema registry at {self.url} is unreachable: {why!r}") from unreachable

    def _open(self) -> urllib.request.OpenerDirector:
        """Made at the first request (the TLS context with it, for https: reading the CAs is not free)."""
        if self._opener is None:
            handlers: list[urllib.request.BaseHandler] = [_NotFollowed()]
            if self.url.startswith("https:"):
                handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=self._ca_file)))
            self._opener = urllib.request.build_opener(*handlers)
        return self._opener

    def _headers(self) -> dict[str, str]:
        token = self._credentials() if self._credentials else None
        return {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE,
                **({"Authorization": f"Bearer {token}"} if token else {})}  # fmt: skip

    async def register(self, subject: str, schema: Schema) -> int:
        body = {"schema": canonical_json(schema), "schemaType": "AVRO"}
        answer = await self._request("POST", f"/subjects/{subject}/versions", body)
        return int(answer["id"])

    async def schema_by_id(self, schema_id: int) -> Schema:
        answer = await self._request("GET", f"/schemas/ids/{schema_id}")
        schema: Schema = json.loads(answer["schema"])
        return schema


class AtomicJSONStorage(Storage):
    """TinyDB storage that never leaves a half-written file: write a temp file, fsync, rename."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        data: dict[str, dict[str, Any]] = json.loads(text) if text else {}
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass


class SchemaCache:
    """Local copy of every schema and subject registration this gateway has used."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = TinyDB(self.path, storage=AtomicJSONStorage)
        self._schemas = self._db.table("schemas")
        self._subjects = self._db.table("subjects")

    def put(self, schema_id: int, schema: Schema, subject: str | None = None) -> None:
        text = canonical_json(schema)
        row = Query()
        self._schemas.upsert({"id": schema_id, "schema": text}, row.id == schema_id)
        if subject is not None:
            self._subjects.upsert(
                {"subject": subject, "schema": text, "id": schema_id},
                (row.subject == subject) & (row.schema == text),
            )

    def by_id(self, schema_id: int) -> Schema | None:
        found = self._schemas.get(Query().id == schema_id)
        return None if found is None else dict(json.loads(found["schema"]))

    def id_for(self, subject: str, schema: Schema) -> int | None:
        row = Query()
        found = self._subjects.get((row.subject == subject) & (row.schema == canonical_json(schema)))
        return None if found is None else int(found["id"])


class CachedSchemaRegistry:
    """Registry first, local cache as the fallback; every answer from the registry is cached. After the registry
    failed to answer, a schema the cache has is taken from it for UNREACHABLE_HOLD_S without asking again: a gateway
    booting offline does not wait a timeout per subject."""

    UNREACHABLE_HOLD_S = 30.0

    def __init__(self, remote: SchemaRegistry | None, cache: SchemaCache) -> None:
        self.remote = remote
        self.cache = cache
        self._unreachable_until = 0.0  # monotonic

    def _where(self, unreachable: SchemaRegistryUnavailable | None) -> str:
        remote = getattr(self.remote, "url", None) if self.remote is not None else None
        why = f" ({unreachable})" if unreachable is not None else ""  # a refused certificate says so here
        return f"registry {remote or '(none configured)'}{why} and cache {self.cache.path}"

    async def register(self, subject: str, schema: Schema) -> int:
        unreachable = None
        held = time.monotonic() < self._unreachable_until and self.cache.id_for(subject, schema) is not None
        if self.remote is not None and not held:
            try:
                schema_id = await self.remote.register(subject, schema)
            except SchemaRegistryUnavailable as why:
                unreachable = why
                self._unreachable_until = time.monotonic() + self.UNREACHABLE_HOLD_S
            else:
                self.cache.put(schema_id, schema, subject)
                return schema_id
        cached = self.cache.id_for(subject, schema)
        if cached is None:
            raise SchemaNotFound(
                f"schema {schema.get('name', '?')!r} for subject {subject!r} is in neither {self._where(unreachable)}: "
                "connect the gateway to its control plane once so the schema can be registered and cached"
            )
        return cached

    async def schema_by_id(self, schema_id: int) -> Schema:
        cached = self.cache.by_id(schema_id)
        if cached is not None:
            return cached  # ids are immutable: a cached id never goes stale
        unreachable = None
        if self.remote is not None:
            try:
                schema = await self.remote.schema_by_id(schema_id)
            except SchemaRegistryUnavailable as why:
                unreachable = why
            else:
                self.cache.put(schema_id, schema)
                return schema
        raise SchemaNotFound(
            f"schema id {schema_id} is in neither {self._where(unreachable)}: "
            "the record was written with a schema this gateway has never seen; reconnect to the registry"
        )
