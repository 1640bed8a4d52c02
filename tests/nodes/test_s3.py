"""`s3` sink against a real S3-protocol server on localhost (moto in server mode): Parquet files that read back with
pyarrow equal to what was written, Hive-style keys, rolls by count and age, a replay that rewrites the same objects,
multipart uploads, and a missing bucket reported, not fatal."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamforge.engine.clock import ManualClock
from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.records import telemetry
from streamforge.engine.sdk import PeerUnavailable
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.s3 import S3Sink
from streamforge.runtime.gateway.gateway import Gateway
from tests.destinations import s3_objects
from tests.eventually import eventually

T0 = datetime(2026, 3, 1, 9, 58, tzinfo=UTC)
CREDENTIALS = {"region": "us-east-1", "access_key_id": "testing", "secret_access_key": "testing", "path_style": True}


def config(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint_url": endpoint, "prefix": "plant/north", **CREDENTIALS, **extra}


def readings(n: int, start: datetime = T0, step_s: float = 30.0) -> list[dict[str, Any]]:
    return [telemetry(f"pump_{i % 2}", "pressure", round(i * 0.5, 3), unit="bar",
                      device_time=start + timedelta(seconds=i * step_s), gateway_time=start,
                      metadata={"seq": str(i)}) for i in range(n)]  # fmt: skip


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
    found = await s3_objects(client, name)
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
    before = await s3_objects(client, name)
    async with NodeHarness(S3Sink, settings) as restarted:  # a crash before the commit: all of it comes again
        await restarted.write_messages(messages)
    after = await s3_objects(client, name)
    assert after == before and len(after) == 2  # the same keys, the same rows: no duplicates


async def test_a_replay_cuts_a_file_rolled_by_age_where_it_was_cut(s3_endpoint: str, bucket: tuple[str, Any]) -> None:
    name, client = bucket
    clock = ManualClock(T0)
    settings = config(s3_endpoint, name, roll_records=100, roll_age_s=60)
    async with NodeHarness(S3Sink, settings, clock=clock) as sink:
        messages = await sink.messages(readings(5, step_s=1), topic="telemetry.clean", port="in")
        await sink.write_messages(messages[:2])
        await clock.advance(61)
        await sink.sink_tick()  # [0-1] uploaded by age
        await sink.write_messages(messages[2:], crash=True)  # [2-4] open; nothing committed, say
        await sink.restart()
        await sink.write_messages(messages)  # the replay brings all five at once, long before any age
        await clock.advance(61)
        await sink.sink_tick()
    found = await s3_objects(client, name)
    assert [(key.rsplit("+", 1)[1], [r["value"] for r in rows]) for key, rows in sorted(found.items())] == [
        ("00000000000000000000.parquet", [0.0, 0.5]),
        ("00000000000000000002.parquet", [1.0, 1.5, 2.0]),
    ]


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
    assert len((await s3_objects(client, name))[key["Key"]]) == len(many)


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
        found = await s3_objects(client, name)
        return found if sum(len(rows) for rows in found.values()) >= 25 else None

    found = await eventually(all_written, 60, 0.5, what="the 25 readings in S3")  # the last 5 roll by age
    assert sorted(len(rows) for rows in found.values()) == [5, 10, 10]
    assert sorted(int(r["metadata"]["sim_seq"]) for rows in found.values() for r in rows) == list(range(25))
