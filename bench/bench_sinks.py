"""Benchmark: each sink's write path against a bare client writing the same records to the same destination, in the
same run (these machines are noisy: only the ratios mean something).

Run: .venv/bin/python bench/bench_sinks.py [--records N]
- http: the `http` sink (batches of 2,000, JSON) vs one httpx POST per batch, to the same local server.
- s3: the `s3` sink (files of 10,000, zstd Parquet) vs pyarrow + one PUT per file, to the same moto S3 server.
- postgres: the `postgres` sink (COPY into a staging table, then INSERT ... ON CONFLICT) vs asyncpg's COPY into a
  plain table of the same columns, on the same local PostgreSQL (scripts/local-postgres.sh). TimescaleDB is the same
  code (nodes/protocols/sql.py) plus hypertables; the extension is not packaged for this machine, so it is not run.
- kafka: the `kafka` sink (JSON; exactly once: one transaction per batch with its source offsets; and with
  exactly_once off) vs aiokafka's producer (idempotent, acks=all, send() per record, one await per batch), to the
  same topic-per-run on a second embedded broker.
- alert_router: the `alert_router` sink (a webhook destination: one request per transition) vs one httpx POST per
  transition, to the same local server.
The records are built and encoded before any timing (as Kafka would hand them over). The harness ceiling is the same
batching loop with no destination at all: a sink figure near it measures the loop, not the sink.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
from aiobotocore.session import get_session
from aiokafka.admin import NewTopic
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streamforge.engine.records import json_safe, telemetry
from streamforge.engine.sdk import Message
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.alert_router import AlertRouter
from streamforge.nodes.http import HttpSink
from streamforge.nodes.kafka import KafkaSink
from streamforge.nodes.postgres import Postgres
from streamforge.nodes.protocols.sql import TABLES
from streamforge.nodes.s3 import S3Sink, arrow_schema
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics

BATCH = 2000
FILE = 10_000
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
KEYS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def readings(count: int) -> list[dict[str, Any]]:
    return [telemetry(f"pump_{i % 50}", "pressure", float(i), unit="bar", device_time=T0 + timedelta(milliseconds=i),
                      gateway_time=T0, metadata={"seq": str(i)}) for i in range(count)]  # fmt: skip


async def timed(batches: Sequence[Any], write: Callable[[Any], Awaitable[Any]]) -> float:
    """Records per second of `write` over every batch (each batch a sequence of records or messages)."""
    started = time.perf_counter()
    for batch in batches:
        await write(batch)
    return sum(len(b) for b in batches) / (time.perf_counter() - started)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def bench_http(records: list[dict[str, Any]]) -> dict[str, float]:
    received = [0]

    async def ingest(request: Request) -> Response:
        received[0] += len(json.loads(await request.body()))
        return Response(status_code=202)

    async with serve_app(Starlette(routes=[Route("/in", ingest, methods=["POST"])])) as url:
        async with NodeHarness(HttpSink, {"url": f"{url}/in", "batch_records": BATCH}, "bench") as sink:
            messages = await sink.messages(records, topic="telemetry.clean", port="in")
            node = await timed(chunks(messages, BATCH), sink.write_messages)
        async with httpx.AsyncClient() as client:

            async def post(batch: Sequence[dict[str, Any]]) -> None:
                (await client.post(f"{url}/in", json=[json_safe(r) for r in batch])).raise_for_status()

            bare = await timed(chunks(records, BATCH), post)
    assert received[0] == 2 * len(records), received
    return {"sink": node, "bare": bare}


async def bench_s3(records: list[dict[str, Any]]) -> dict[str, float]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=endpoint, **KEYS) as s3:
            await s3.create_bucket(Bucket="bench")
            settings = {"bucket": "bench", "endpoint_url": endpoint, "region": "us-east-1", "path_style": True,
                        "access_key_id": "bench", "secret_access_key": "bench", "roll_records": FILE}  # fmt: skip
            async with NodeHarness(S3Sink, settings, "bench") as sink:
                messages: list[Message] = await sink.messages(records, topic="telemetry.clean", port="in")
                node = await timed(chunks(messages, BATCH), sink.write_messages)
            schema = arrow_schema("telemetry")

            async def put(batch: Sequence[dict[str, Any]]) -> None:
                out = io.BytesIO()
                pq.write_table(pa.Table.from_pylist(list(batch), schema=schema), out, compression="zstd")
                await s3.put_object(Bucket="bench", Key=f"bare/{batch[0]['metadata']['seq']}.parquet",
                                    Body=out.getvalue())  # fmt: skip

            bare = await timed(chunks(records, FILE), put)
    finally:
        server.stop()
    return {"sink": node, "bare": bare}


async def bench_postgres(records: list[dict[str, Any]], dsn: str) -> dict[str, float]:
    async with NodeHarness(Postgres, {"dsn": dsn, "table_prefix": "bench_"}, "bench") as sink:
        messages = await sink.messages(records, topic="telemetry.clean", port="telemetry")
        node = await timed(chunks(messages, BATCH), sink.write_messages)
    table = TABLES["telemetry"]
    connection = await asyncpg.connect(dsn)
    try:
        columns = ", ".join(f'"{name}" {sql}' for name, sql in table.columns)
        await connection.execute(f"CREATE TABLE bare_telemetry ({columns})")

        async def copy(batch: Sequence[dict[str, Any]]) -> None:
            await connection.copy_records_to_table("bare_telemetry", records=[table.row(r) for r in batch],
                                                   columns=table.names)  # fmt: skip

        bare = await timed(chunks(records, BATCH), copy)
    finally:
        await connection.close()
    return {"sink": node, "bare": bare}


async def bench_kafka(records: list[dict[str, Any]]) -> dict[str, float]:
    async with EmbeddedKafka(Path(tempfile.mkdtemp(prefix="bench-customer-")) / "kafka") as kafka:
        names = ("bench.sink", "bench.sink_at_least_once", "bench.bare")
        await create_topics(kafka.access, [NewTopic(name, 12, 1) for name in names])  # the customer's topics
        rates: dict[str, float] = {}
        for name, exactly_once in (("sink", True), ("sink_at_least_once", False)):
            login = kafka.access.credentials
            assert login is not None
            settings = {"bootstrap": kafka.bootstrap, "security_protocol": "SASL_PLAINTEXT",
                        "exactly_once": exactly_once, "sasl_mechanism": login.mechanism,
                        "username": login.username, "password": login.password,
                        "topics": {"telemetry": f"bench.{name}"}}  # fmt: skip
            async with NodeHarness(KafkaSink, settings, f"bench-{name}") as sink:
                messages = await sink.messages(records, topic="telemetry.clean", port="in")
                rates[name] = await timed(chunks(messages, BATCH), sink.write_messages)
        producer = kafka.access.producer(acks="all", enable_idempotence=True,
                                         linger_ms=5, max_batch_size=512 * 1024)  # fmt: skip
        await producer.start()
        try:

            async def send(batch: Sequence[dict[str, Any]]) -> None:
                futures = [await producer.send("bench.bare", json.dumps(json_safe(r)).encode(),
                                               key=str(r["asset_id"]).encode()) for r in batch]  # fmt: skip
                await asyncio.gather(*futures)

            rates["bare"] = await timed(chunks(records, BATCH), send)
        finally:
            await producer.stop()
    return rates


def transitions(count: int) -> list[dict[str, Any]]:
    states = ("ACTIVE", "ACKNOWLEDGED", "CLEARED")
    return [{"alarm_id": f"hi|pump_{i // 3}|temp", "asset_id": f"pump_{i // 3}", "parameter": "temp", "rule_id": "hi",
             "severity": "CRITICAL", "state": states[i % 3], "value": 90.0, "threshold": 80.0, "message": "temp high",
             "changed_by": None, "quality": "GOOD", "classification": "ALARM",
             "timestamps": {"device_time": T0 + timedelta(seconds=i), "gateway_time": T0}, "clock_skew_ms": None,
             "metadata": {}} for i in range(count)]  # fmt: skip


async def bench_alert_router(count: int) -> dict[str, float]:
    alarms, received = transitions(count), [0]

    async def hook(request: Request) -> Response:
        await request.body()
        received[0] += 1
        return Response(status_code=202)

    async with serve_app(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as url:
        settings = {"destinations": {"sms": {"kind": "webhook", "url": f"{url}/hook"}},
                    "routes": [{"severities": ["CRITICAL"], "destinations": ["sms"]}]}  # fmt: skip
        async with NodeHarness(AlertRouter, settings, "bench") as sink:
            messages = await sink.messages(alarms, topic="alarms.clean", port="in")
            node = await timed(chunks(messages, 100), sink.write_messages)
        async with httpx.AsyncClient() as client:

            async def post(batch: Sequence[dict[str, Any]]) -> None:
                for alarm in batch:
                    (await client.post(f"{url}/hook", json=json_safe(alarm))).raise_for_status()

            bare = await timed(chunks(alarms, 100), post)
    assert received[0] == 2 * count, received
    return {"sink": node, "bare": bare}


async def ceiling(records: list[dict[str, Any]]) -> float:
    async def nothing(batch: Sequence[dict[str, Any]]) -> None:
        await asyncio.sleep(0)

    return await timed(chunks(records, BATCH), nothing)


async def main(count: int, dsn: str) -> dict[str, Any]:
    records = readings(count)
    results = {"http": await bench_http(records), "s3": await bench_s3(records),
               "postgres": await bench_postgres(records, dsn), "kafka": await bench_kafka(records),
               "alert_router": await bench_alert_router(max(300, count // 50))}  # fmt: skip
    return {"records": count, "harness_ceiling": await ceiling(records), "sinks": results}


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """A PostgreSQL of its own for the run (the tests' script); yields its DSN."""
    data, port = tempfile.mkdtemp(prefix="bench-pg-"), str(free_port())
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "local-postgres.sh")
    started = subprocess.run([script, "start", data, port], capture_output=True, text=True, check=True)
    try:
        yield started.stdout.strip()
    finally:
        subprocess.run([script, "stop", data, port], capture_output=True, check=False)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    with local_postgres() as postgres:
        outcome = asyncio.run(main(parser.parse_args().records, postgres))
    print(f"{outcome['records']:,} telemetry records; harness ceiling {outcome['harness_ceiling']:,.0f} records/s")
    for name, rates in outcome["sinks"].items():
        for variant, rate in rates.items():
            if variant != "bare":
                print(f"  {name:<12} {variant:<19} {rate:>10,.0f}/s   bare client {rates['bare']:>10,.0f}/s   "
                      f"ratio {rate / rates['bare']:.2f}")  # fmt: skip
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sinks.json").write_text(json.dumps(outcome, indent=2))
