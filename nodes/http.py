"""`http` sink: batches POSTed as a JSON array or NDJSON (optionally gzip), with bearer or basic auth from secrets and
an idempotency key per batch; 5xx and timeouts are retried, a 4xx refusal goes to the DLQ with the response."""

from __future__ import annotations

import gzip
import hashlib
import json
import ssl
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

import httpx
from pydantic import Field, SecretStr, model_validator

from streamforge.engine.records import json_value, reason
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import (
    Message,
    PeerUnavailable,
    PlainUrl,
    Port,
    PortType,
    Record,
    SinkConfig,
    SinkNode,
    earliest_offsets,
)

RETRIED = {408, 425, 429}  # besides every 5xx: the server asks to come back later


class HttpSinkConfig(SinkConfig):
    url: PlainUrl = Field(
        pattern=r"^https?://", description="Where each batch is POSTed, e.g. https://ingest.example/v1"
    )
    format: Literal["json", "ndjson"] = Field("json", description="json: one array per request; ndjson: one per line")
    gzip: bool = Field(False, description="Compress each request (Content-Encoding: gzip)")
    batch_records: int = Field(500, ge=1, le=50_000, description="Records per request, at most")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra headers (an API key, ...); each "
                                          "value is stored as a secret")  # fmt: skip
    bearer_token: SecretStr | None = Field(None, description="Authorization: Bearer <token>; stored as a secret")
    username: str | None = Field(None, description="HTTP basic auth user")
    password: SecretStr | None = Field(None, description="HTTP basic auth password; stored as a secret")
    idempotency_header: str = Field("Idempotency-Key", min_length=1, description="Carries each batch's key")
    ca_file: str | None = Field(None, description="CA certificate (PEM) to trust for https; default: the system's")
    connection: ConnectionSettings = Field(default_factory=lambda: ConnectionSettings(timeout_s=10.0))

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> HttpSinkConfig:
        if self.bearer_token is not None and (self.username or self.password):
            raise ValueError("use bearer_token or username/password, not both")
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password")
        return self


def batch_key(node_id: str, messages: Sequence[Message]) -> str:
    """The same records at the same offsets give the same key: a retried request is recognisable as one."""
    positions = "|".join(f"{m.topic}:{m.partition}:{m.offset}" for m in messages)
    return hashlib.sha256(f"{node_id}|{positions}".encode()).hexdigest()[:32]


class HttpSink(SinkNode[HttpSinkConfig]):
    """Lifecycle: start() loads the CA (a missing file refuses the deploy); connect() opens the HTTP client; each
    write POSTs the batch in requests of `batch_records`. A 5xx, 408/425/429, a timeout or a refused connection
    raises: the runtime retries the batch (backoff, circuit breaker, DEGRADED) and commits nothing past it. Any other
    4xx is the server refusing those records for good: they become dead letters with the status and the response,
    and the batch counts as written.

    A request holds consecutive records of one Kafka partition. plan() records each request's range in the table
    `planned` (saved before anything is sent); a replay after a crash cuts the same ranges again, waiting for the
    rest of a range if the replayed batch ends inside it, so every request is repeated byte for byte with its
    idempotency key, and a receiver that honours the key stores each record once."""

    type = "http"
    category = "sinks"
    icon = "world-upload"
    description = "HTTP POST of batches (JSON or NDJSON, gzip), auth from secrets, retries, 4xx to the DLQ"
    inputs = (Port("in", PortType.ANY, description="Records of any type, POSTed as JSON"),)

    async def start(self) -> None:
        config = self.config
        try:
            self._verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True
            )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"ca_file {config.ca_file}: {getattr(exc, 'strerror', None) or exc}") from exc
        headers = {name: value.get_secret_value() for name, value in config.headers.items()}
        headers["Content-Type"] = "application/json" if config.format == "json" else "application/x-ndjson"
        if config.gzip:
            headers["Content-Encoding"] = "gzip"
        if config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token.get_secret_value()}"
        self._headers = headers
        self._auth = (
            (config.username, config.password.get_secret_value()) if config.username and config.password else None
        )
        self._client: httpx.AsyncClient | None = None
        self._planned = self.context.state.table("planned", int)  # (topic, partition, first offset) -> last offset
        self._waiting: dict[tuple[str, int, int], Message] = {}  # records of a replayed range not all here yet
        self._requests: list[list[Message]] = []  # planned, not yet answered
        self._refused: list[Record] = []  # dead letters of this batch's refused requests
        self._next: dict[tuple[str, int], int] = {}  # next offset to take per partition: a retry adds nothing

    async def connect(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.config.connection.timeout_s, verify=self._verify,
                                         headers=self._headers, auth=self._auth)  # fmt: skip

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    def body(self, messages: Sequence[Message]) -> bytes:
        records = [m.record for m in messages]  # serialised once, times and bytes by json_value
        if self.config.format == "json":
            text = json.dumps(records, separators=(",", ":"), default=json_value)
        else:
            text = "".join(json.dumps(r, separators=(",", ":"), default=json_value) + "\n" for r in records)
        data = text.encode()
        return gzip.compress(data, mtime=0) if self.config.gzip else data  # mtime 0: a retry sends the same bytes

    def retained(self) -> dict[tuple[str, int], int]:
        return earliest_offsets(((m.topic, m.partition), m.offset) for m in self._waiting.values())

    def plan(self, batch: Sequence[Message]) -> None:
        """Cut this batch (and what waits from before) into requests: planned ranges as planned, the rest in runs of
        `batch_records`, each new range recorded. Records already taken (a retry of the batch) are not taken again."""
        pending = dict(self._waiting)
        for m in batch:
            if m.offset >= self._next.get((m.topic, m.partition), -1):
                pending[m.topic, m.partition, m.offset] = m
                self._next[m.topic, m.partition] = m.offset + 1
        by_partition: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for (topic, partition, _), message in sorted(pending.items()):
            by_partition[topic, partition].append(message)
        self._waiting = {}
        for (topic, partition), messages in by_partition.items():
            # Ranges wholly below where this partition resumes were sent and committed: forget them now, not when
            # their answer came (a crash between that changelog write and the commit would cut the replay anew).
            resumes = messages[0].offset
            for key in [k for k in self._planned if k[:2] == (topic, partition) and self._planned[k] < resumes]:
                del self._planned[key]
            start = 0
            while start < len(messages):
                first = messages[start].offset
                last = self._planned.get((topic, partition, first))
                if last is None:
                    chunk = messages[start : start + self.config.batch_records]
                    self._planned[(topic, partition, first)] = chunk[-1].offset
                else:
                    end = start
                    while end < len(messages) and messages[end].offset <= last:
                        end += 1
                    chunk = messages[start:end]
                    if chunk[-1].offset < last:  # a replay that stops inside the range: wait for the rest
                        self._waiting.update(((topic, partition, m.offset), m) for m in chunk)
                        break
                self._requests.append(chunk)
                start += len(chunk)

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        assert self._client is not None  # the runtime writes only while connected
        while self._requests:
            chunk = self._requests[0]
            key = batch_key(self.context.node_id, chunk)
            try:
                response = await self._client.post(self.config.url, content=self.body(chunk),
                                                   headers={self.config.idempotency_header: key})  # fmt: skip
            except httpx.TransportError as exc:  # refused, reset, timed out, TLS: the server is not usable now
                raise PeerUnavailable(f"POST {self.config.url}: {type(exc).__name__}: {exc}") from exc
            status = response.status_code
            if status >= 300:
                answer = f"{self.config.url} answered {status} {response.reason_phrase}: {response.text[:500]}"
                if status >= 500 or status in RETRIED:
                    raise PeerUnavailable(answer)
                why = reason(f"http_{status}", answer)
                self._refused += [message.dead_letter(self.context.node_id, why) for message in chunk]
            self._requests.pop(0)
        refused, self._refused = self._refused, []  # kept across a retry: a refusal is reported once, not lost
        return refused


NODE = HttpSink
