"""Schema-registry client: Confluent REST API, backed by a local cache so encoding works offline."""

from __future__ import annotations

import json
import os
import ssl
import tempfile
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


class HttpSchemaRegistry:
    """Client of a Confluent-compatible registry (ours, Confluent Schema Registry, Karapace)."""

    def __init__(self, url: str, timeout_s: float = 5.0, credentials: Callable[[], str | None] | None = None,
                 verify: ssl.SSLContext | bool = True) -> None:  # fmt: skip
        """`credentials`: the current bearer token (a gateway's JWT, renewed under it), asked on every request."""
        # Imported here: a process with no remote registry (a worker beside the gateway's) is spared its ~5 MB,
        # with the click, rich and pygments its command line pulls in wherever they are installed.
        import httpx

        self._unreachable = httpx.TransportError
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, headers={"Accept": CONTENT_TYPE},
                                         verify=verify)  # fmt: skip
        self._credentials = credentials

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = await self._client.request(
                method,
                path,
                content=None if body is None else json.dumps(body),
                headers=self._headers(),
            )
        except self._unreachable as exc:
            raise SchemaRegistryUnavailable(f"schema registry at {self.url} is unreachable: {exc!r}") from exc
        if response.status_code == 404:
            raise SchemaNotFound(f"{self.url}{path}: {response.text}")
        if response.status_code >= 500:
            raise SchemaRegistryUnavailable(f"{self.url}{path} answered {response.status_code}: {response.text}")
        if response.status_code >= 400:
            raise SchemaRegistryError(f"{self.url}{path} answered {response.status_code}: {response.text}")
        return response.json()

    def _headers(self) -> dict[str, str]:
        token = self._credentials() if self._credentials else None
        return {"Content-Type": CONTENT_TYPE, **({"Authorization": f"Bearer {token}"} if token else {})}

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
    """Registry first, local cache as the fallback; every answer from the registry is cached."""

    def __init__(self, remote: SchemaRegistry | None, cache: SchemaCache) -> None:
        self.remote = remote
        self.cache = cache

    def _where(self) -> str:
        remote = getattr(self.remote, "url", None) if self.remote is not None else None
        return f"registry {remote or '(none configured)'} and cache {self.cache.path}"

    async def register(self, subject: str, schema: Schema) -> int:
        if self.remote is not None:
            try:
                schema_id = await self.remote.register(subject, schema)
            except SchemaRegistryUnavailable:
                pass
            else:
                self.cache.put(schema_id, schema, subject)
                return schema_id
        cached = self.cache.id_for(subject, schema)
        if cached is None:
            raise SchemaNotFound(
                f"schema {schema.get('name', '?')!r} for subject {subject!r} is in neither {self._where()}: "
                "connect the gateway to its control plane once so the schema can be registered and cached"
            )
        return cached

    async def schema_by_id(self, schema_id: int) -> Schema:
        cached = self.cache.by_id(schema_id)
        if cached is not None:
            return cached  # ids are immutable: a cached id never goes stale
        if self.remote is not None:
            try:
                schema = await self.remote.schema_by_id(schema_id)
            except SchemaRegistryUnavailable:
                pass
            else:
                self.cache.put(schema_id, schema)
                return schema
        raise SchemaNotFound(
            f"schema id {schema_id} is in neither {self._where()}: "
            "the record was written with a schema this gateway has never seen; reconnect to the registry"
        )
