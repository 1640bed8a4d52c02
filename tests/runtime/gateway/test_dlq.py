"""The DLQ workflow on a real broker: list dead letters with reasons, re-validate with widened rules, approve one;
every reprocessed reading lands in the clean topic exactly once, however often it is asked for."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.runtime.errors import ApiError
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.operations import GatewayOperations
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.logs import LogRing
from tests.eventually import eventually
from tests.kafka_reading import read_from

T0 = datetime(2026, 2, 1, 6, 0, tzinfo=UTC)
READINGS = 200  # per signal; every 10th is 1e6 (out of range), every 25th a duplicate


def plan(flow_id: str, version: int, max_value: float) -> ExecutionPlan:
    doc = {
        "id": flow_id, "version": version,
        "nodes": [
            {"id": "sim", "type": "simulator", "config": {
                "signals": [{"asset_id": "pump_1", "parameter": "pressure", "offset": 5, "amplitude": 1}],
                "rate_hz": 10, "realtime": False, "limit": READINGS, "start_time": T0.isoformat(), "batch_size": 50,
                "faults": {"out_of_range_every": 10, "duplicate_every": 25}}},
            {"id": "val", "type": "validator", "config": {"rules": [{"parameter": "pressure", "min": 0,
                                                                     "max": max_value}]}},
        ],
        "edges": [{"from": "sim:out", "to": "val:in"}],
    }  # fmt: skip
    return compile_flow(validate_flow(doc), load_node_types(include_plugins=False))


async def job_done(operations: GatewayOperations, job: dict[str, Any]) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        now: dict[str, Any] = await operations.run("dlq.job", {"job": job["id"]})
        return now if now["state"] != "RUNNING" else None

    return await eventually(finished, 60, 0.2, what=f"job {job['id']} to finish")


@pytest.mark.timeout(300)
async def test_revalidate_then_approve_lands_each_reading_once(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str, tmp_path: Any
) -> None:
    flow = unique.replace("-", "_")[:60]
    operations = GatewayOperations(gateway, LogRing(tmp_path / "logs"), lambda: f"test-{flow}")
    await gateway.deploy(plan(flow, 1, 10))
    out_of_range = READINGS // 10
    duplicates = sum(1 for n in range(1, READINGS + 1) if n % 25 == 0 and n % 10)  # out of range wins a tie
    clean_first = await read_from(kafka, registry, "telemetry.clean", flow, "val", READINGS - out_of_range)
    assert len(clean_first) == READINGS - out_of_range

    async def all_letters() -> dict[str, Any] | None:
        listed: dict[str, Any] = await operations.run("dlq.list", {"flow": flow})
        return listed if listed["total"] == out_of_range + duplicates else None

    listed = await eventually(all_letters, 60, 0.5, what="every refused reading in the DLQ")
    assert listed["counts_by_reason"] == {"out_of_range": out_of_range, "duplicate": duplicates}
    letter = next(r for r in listed["records"] if r["reasons"][0]["code"] == "out_of_range")
    assert letter["reading"]["value"] == 1e6 and letter["node"] == "val" and letter["source_topic"] == "telemetry.raw"
    assert letter["reasons"][0]["field"] == "/value" and "> max 10" in letter["reasons"][0]["message"]
    only = await operations.run("dlq.list", {"flow": flow, "reason": "duplicate"})
    assert only["total"] == duplicates and all(r["reasons"][0]["code"] == "duplicate" for r in only["records"])

    # Widen the range, then re-validate: the out-of-range readings pass now; the duplicates stay.
    await gateway.deploy(plan(flow, 2, 2e6))
    first = await job_done(operations, await operations.run("dlq.revalidate", {"flow": flow, "node": "val",
                                                                              "user": "olga"}))  # fmt: skip
    assert (first["state"], first["reprocessed"], first["still_failing"]) == ("DONE", out_of_range, duplicates)
    assert first["refused"] == {"duplicate": duplicates} and first["user"] == "olga"
    again = await job_done(operations, await operations.run("dlq.revalidate", {"flow": flow, "node": "val",
                                                                              "user": "olga"}))  # fmt: skip
    assert (again["reprocessed"], again["still_failing"]) == (0, duplicates)  # the reprocessed ones are not looked at

    # An operator vouches for one duplicate, twice: it lands once, flagged UNCERTAIN.
    duplicate = next(r for r in (await operations.run("dlq.list", {"flow": flow}))["records"]
                     if r["reasons"][0]["code"] == "duplicate")  # fmt: skip
    approved = await job_done(operations, await operations.run("dlq.approve", {"ids": [duplicate["id"]],
                                                                              "user": "olga"}))  # fmt: skip
    assert approved["reprocessed"] == 1
    twice = await job_done(operations, await operations.run("dlq.approve", {"ids": [duplicate["id"]], "user": "ivan"}))
    assert (twice["reprocessed"], twice["already"]) == (0, 1)
    unknown = await job_done(operations, await operations.run("dlq.approve", {"ids": ["dlq.telemetry/0/999999999"],
                                                                                "user": "olga"}))  # fmt: skip
    assert unknown["state"] == "FAILED" and "no dead letter dlq.telemetry/0/999999999" in unknown["error"]
    with pytest.raises(ApiError, match="not a validator"):
        await operations.run("dlq.revalidate", {"flow": flow, "node": "sim", "user": "olga"})

    expected = READINGS - out_of_range + out_of_range + 1
    clean = await read_from(kafka, registry, "telemetry.clean", flow, "val", expected)
    seqs = Counter(r["metadata"]["sim_seq"] for r in clean)
    assert len(clean) == expected and seqs.most_common(1)[0][1] == 2  # the approved duplicate, beside its original
    reprocessed = [r for r in clean if "sf-reprocessed" in r["metadata"]]
    assert Counter(r["quality"] for r in reprocessed) == {"GOOD": out_of_range, "UNCERTAIN": 1}
    vouched = next(r for r in reprocessed if r["quality"] == "UNCERTAIN")
    assert vouched["metadata"]["sf-approved-by"] == "olga" and vouched["metadata"]["sf-reasons"] == "duplicate"
    after = await operations.run("dlq.list", {"flow": flow})
    assert after["waiting"] == duplicates - 1 and after["counts_by_reason"] == {"duplicate": duplicates - 1}
