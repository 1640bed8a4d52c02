"""Destinations as the sinks' tests read them back: an HTTP receiver that fails on purpose and honours idempotency
keys, the Parquet objects of an S3 bucket, and a customer Kafka topic read as its consumers read it."""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

import pyarrow.parquet as pq
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from streamforge.runtime.kafka.supervisor import EmbeddedKafka

REFUSED_ASSET = "pump_unknown"
CUSTOMER_USERS = {"gateway": "gateway-secret-1"}  # the customer Kafka's SASL users


@dataclass
class Receiver:
    """Records every request; answers 503 while `down`, the statuses in `failures` first, then 400 to a batch naming
    REFUSED_ASSET."""

    failures: list[int] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    async def ingest(self, request: Request) -> Response:
        raw = await request.body()
        body = gzip.decompress(raw) if request.headers.get("content-encoding") == "gzip" else raw
        ndjson = request.headers.get("content-type") == "application/x-ndjson"
        records = [json.loads(line) for line in body.splitlines()] if ndjson else json.loads(body)
        status = 503 if self.down else self.failures.pop(0) if self.failures else 202
        if status == 202 and any(r["asset_id"] == REFUSED_ASSET for r in records):
            status = 400
        self.requests.append({"status": status, "headers": dict(request.headers), "query": request.url.query,
                              "records": records})  # fmt: skip
        if status == 400:
            return PlainTextResponse(f"unknown asset {REFUSED_ASSET}", status_code=400)
        return Response(status_code=status)

    def accepted(self) -> list[dict[str, Any]]:
        """What the server keeps: accepted requests, a repeated idempotency key counted once."""
        seen: dict[str, dict[str, Any]] = {}
        for request in self.requests:
            if request["status"] < 300:
                seen.setdefault(request["headers"]["idempotency-key"], request)
        return [r for request in seen.values() for r in request["records"]]


async def s3_objects(client: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every object's key and its rows as pyarrow reads them back (maps as dicts again)."""
    listed = await client.list_objects_v2(Bucket=bucket)
    found = {}
    for entry in listed.get("Contents", []):
        body = await (await client.get_object(Bucket=bucket, Key=entry["Key"]))["Body"].read()
        rows = pq.read_table(io.BytesIO(body)).to_pylist()
        found[entry["Key"]] = [{**row, "metadata": dict(row["metadata"])} for row in rows]
    return found


async def committed_records(kafka: EmbeddedKafka, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of every committed record of the topic once `count` arrived and 1 s more brought nothing, read
    through the customer broker's own SCRAM listener as its consumers read (isolation.level=read_committed)."""
    consumer = kafka.access.consumer(topic, auto_offset_reset="earliest",
                                     enable_auto_commit=False, isolation_level="read_committed")  # fmt: skip
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=10_000 if len(got) < count else 1000)
            if not batches:
                assert len(got) >= count, f"{topic}: only {len(got)} of {count} records arrived"
                return got
            got += [(m.key, m.value) for records in batches.values() for m in records]
    finally:
        await consumer.stop()


@dataclass
class Services:
    """Stand-ins for SaaS alert endpoints (Slack, PagerDuty's Events API, a webhook) as real HTTP: what each
    path received; `fail` answers the next requests to a path with these statuses."""

    received: dict[str, list[Any]] = field(default_factory=lambda: {"slack": [], "pagerduty": [], "hook": []})
    fail: dict[str, list[int]] = field(default_factory=dict)

    async def endpoint(self, request: Request) -> Response:
        path = request.path_params["path"]
        failures = self.fail.get(path, [])
        if failures:
            status = failures.pop(0)
            return PlainTextResponse(f"{path} says no ({status})", status_code=status)
        self.received[path].append(await request.json())
        return JSONResponse({"status": "success"}, status_code=202)


@dataclass
class Mailbox:
    """What a real SMTP server (aiosmtpd) was given: (recipients, message) per e-mail."""

    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"
