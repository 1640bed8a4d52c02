"""`s3` sink against a real S3-protocol server on localhost (moto in server mode): Parquet files that read back with
pyarrow equal to what was written, Hive-style keys, rolls by count and age, a replay that rewrites the same objects,
multipart uploads, and a missing bucket reported, not fatal."""

from __future__ import annotations

import io
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.parquet as pq
import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from streamforge.engine.clock import ManualClock
from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.records import telemetry
from streamforge.engine.sdk import PeerUnavailable
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.s3 import S3Sink
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.kafka.broker import free_port
from tests.eventually import eventually

T0 = datetime(2026, 3, 1, 9, 58, tzinfo=UTC)
CREDENTIALS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing", "path_style": True}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def bucket(s3_endpoint: str, unique: str) -> AsyncIterator[tuple[str, Any]]:
    name = "b" + str(abs(hash(unique)) % 10**12)
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=s3_endpoint, **keys) as client:
        await client.create_bucket(Bucket=name)
        yield name, client


def config(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint_url": endpoint, "prefix": "plant/north", **CREDENTIALS, **extra}


def readings(n: int, start: datetime = T0, step_s: float = 30.0) -> list[dict[str, Any]]:
    return [telemetry(f"pump_{i % 2}", "pressure", round(i * 0.5, 3), unit="bar",
                      device_time=start + timedelta(seconds=i * step_s), gateway_time=start,
                      metadata={"seq": str(i)}) for i in range(n)]  # fmt: skip


async def objects(client: Any, bucket: str) -> dict[str, list[dict[str, Any]]]:
    """Every object's key and its rows as pyarrow reads them back (maps as dicts again)."""
    listed = await client.list_objects_v2(Bucket=bucket)
    found = {}
    for entry in listed.get("Contents", []):
        body = await (await client.get_object(Bucket=bucket, Key=entry["Key"]))["Body"].read()
        rows = pq.read_table(io.BytesIO(body)).to_pylist()
        found[entry["Key"]] = [{**row, "metadata": dict(row["metadata"])} for row in rows]
    return found


async def test_files_read_back_equal_keys_are_hive_style_and_roll_by_count_and_age(
    s3_endpoint: str, bucket: tuple[str, Any]
) -> None:
    name, client = bucket
    clock = ManualClock()
    written = readings(10)  # 09:58 to 10:02:30: two hours
    async with NodeHarness(S3Sink, config(s3_endpoint, name, roll_records=3, roll_age_s=60), clock=clock) as sink:
        messages = await sink.messages(written, topic="telemetry.clean", port="in")
        await sink.write_messages(messages)
        assert sink.node.retained() == {("telemetry.clean", 0): 3}  # 09:59:30, alone in its file, still in memory
        await clock.advance(61)
        await sink.sink_tick()  # the last file rolls by age
        assert sink.node.retained() == {}
    found = await objects(client, name)
    assert sorted(found) == [
        "plant/north/type=telemetry/date=2026-03-01/hour=09/telemetry.clean+0+00000000000000000000.parquet",
        "plant/north/type=telemetry/date=2026-03-01/hour=09/telemetry.clean+0+00000000000000000003.parquet",
        "plant/north/type=telemetry/date=2026-03-01/hour=10/telemetry.clean+0+00000000000000000004.parquet",
        "plant/north/type=telemetry/date=2026-03-01/hour=10/telemetry.clean+0+00000000000000000007.parquet",
    ]
    back = [row for key in sorted(found, key=lambda k: k.rsplit("+", 1)[1]) for row in found[key]]
    assert back == [{**r, "timestamps": {k: v for k, v in r["timestamps"].items()}} for r in written]


async def test_a_replay_after_a_crash_rewrites_the_same_objects(s3_endpoint: str, bucket: tuple[str, Any]) -> None:
    name, client = bucket
    written = readings(7, step_s=1)
    settings = config(s3_endpoint, name, roll_records=3)
    async with NodeHarness(S3Sink, settings) as sink:
        messages = await sink.messages(written, topic="telemetry.clean", port="in")
        await sink.write_messages(messages)
        await sink.write_messages(messages)  # the runtime retrying the same batch adds nothing
        resume = sink.node.retained()[("telemetry.clean", 0)]
        assert resume == 6
    before = await objects(client, name)
    async with NodeHarness(S3Sink, settings) as restarted:  # a crash before the commit: all of it comes again
        await restarted.write_messages(messages)
    after = await objects(client, name)
    assert after == before and len(after) == 2  # the same keys, the same rows: no duplicates


async def test_a_large_file_uploads_in_parts(s3_endpoint: str, bucket: tuple[str, Any]) -> None:
    name, client = bucket
    rng = random.Random(3)
    many = [telemetry("pump_1", "vibration", rng.random(), device_time=T0 + timedelta(milliseconds=i),
                      gateway_time=T0, metadata={"noise": f"{rng.random():.15f}"}) for i in range(120_000)]  # fmt: skip
    settings = config(s3_endpoint, name, roll_records=len(many), compression="none", part_bytes=5 * 1024 * 1024)
    async with NodeHarness(S3Sink, settings) as sink:
        await sink.write_messages(await sink.messages(many, topic="telemetry.clean", port="in"))
    (key,) = (await client.list_objects_v2(Bucket=name))["Contents"]
    head = await client.head_object(Bucket=name, Key=key["Key"])
    assert head["ContentLength"] > 5 * 1024 * 1024 and "-" in head["ETag"]  # a multipart ETag: "<md5>-<parts>"
    assert len((await objects(client, name))[key["Key"]]) == len(many)


async def test_a_missing_bucket_is_reported_not_fatal(s3_endpoint: str) -> None:
    with pytest.raises(PeerUnavailable, match="bucket nowhere-to-be-found"):
        async with NodeHarness(S3Sink, config(s3_endpoint, "nowhere-to-be-found")):
            pass


async def test_in_a_gateway_files_roll_by_count_and_by_age_and_hold_their_offsets(
    gateway: Gateway, s3_endpoint: str, bucket: tuple[str, Any], unique: str
) -> None:
    name, client = bucket
    flow = "s3" + str(abs(hash(unique)) % 10**9)
    document = {
        "id": flow,
        "nodes": [
            {"id": "sim", "type": "simulator", "config": {"signals": [{"asset_id": "pump_1", "parameter": "p"}],
                                                         "realtime": False, "limit": 25, "start_time": T0.isoformat()}},
            {"id": "lake", "type": "s3", "config": config(s3_endpoint, name, roll_records=10, roll_age_s=2)},
        ],
        "edges": [{"from": "sim:out", "to": "lake:in"}],
    }  # fmt: skip
    await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))

    async def all_written() -> dict[str, list[dict[str, Any]]] | None:
        found = await objects(client, name)
        return found if sum(len(rows) for rows in found.values()) >= 25 else None

    found = await eventually(all_written, 60, 0.5, what="the 25 readings in S3")  # the last 5 roll by age
    assert sorted(len(rows) for rows in found.values()) == [5, 10, 10]
    assert sorted(int(r["metadata"]["sim_seq"]) for rows in found.values() for r in rows) == list(range(25))
