"""End to end on real Kafka and PostgreSQL, with kill -9: the database ends exactly as after a clean run.

simulator (faults) -> validator -> aggregator -> postgres. One uninterrupted reference run; one run whose
gateway is SIGKILLed mid-stream and restarted; one whose postgres sink worker is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.serde import Decoder
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.simulator import Simulator
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.eventually import eventually
from tests.stack import GatewayProcess

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)
RATE_HZ, READINGS = 100, 1200  # 12 s of real time per run
FAULTS = {"out_of_range_every": 40, "spike_every": 35, "duplicate_every": 45, "missing_device_time_every": 60}


def flow_document(flow_id: str, dsn: str, prefix: str) -> dict[str, Any]:
    return {
        "format": "streamforge.flow/v1",
        "id": flow_id,
        "label": "crash consistency",
        "version": 1,
        "nodes": [
            {
                "id": "sim",
                "type": "simulator",
                "config": {
                    "signals": [
                        {"asset_id": "pump_1", "parameter": "pressure", "offset": 5, "amplitude": 1},
                        {
                            "asset_id": "pump_2",
                            "parameter": "flow",
                            "shape": "random_walk",
                            "offset": 100,
                            "amplitude": 10,
                        },
                    ],
                    "rate_hz": RATE_HZ,
                    "limit": READINGS,
                    "start_time": T0.isoformat(),
                    "batch_size": 50,
                    "faults": FAULTS,
                },
            },
            {
                "id": "val",
                "type": "validator",
                "config": {
                    "rules": [
                        {"parameter": "pressure", "min": 0, "max": 100, "max_rate_per_s": 100},
                        {"parameter": "flow", "min": 0, "max": 200, "max_rate_per_s": 1000},
                    ]
                },
            },
            {
                "id": "agg",
                "type": "aggregator",
                "config": {"resolutions": ["1s"], "allowed_lateness_s": 0.5, "idle_close_s": 2},
            },
            {"id": "db", "type": "postgres", "config": {"dsn": dsn, "table_prefix": prefix}},
        ],
        "edges": [
            {"from": a, "to": b}
            for a, b in [
                ("sim:out", "val:in"),
                ("val:clean", "agg:in"),
                ("val:clean", "db:telemetry"),
                ("agg:agg_1s", "db:aggregates"),
            ]
        ],
    }


async def table_rows(dsn: str, prefix: str) -> tuple[set[tuple[Any, ...]], dict[tuple[Any, ...], tuple[Any, ...]]]:
    connection = await asyncpg.connect(dsn)
    try:
        telemetry = {
            tuple(r)
            for r in await connection.fetch(f"SELECT asset_id, parameter, time, value, quality FROM {prefix}telemetry")
        }
        aggregates = {
            (r[0], r[1], r[2]): tuple(r[3:])
            for r in await connection.fetch(
                f"SELECT asset_id, parameter, window_start, avg, min, max, first, last, count FROM {prefix}aggregates"
            )
        }
    except asyncpg.UndefinedTableError:
        return set(), {}
    finally:
        await connection.close()
    return telemetry, aggregates


async def settled(dsn: str, prefix: str, rows: int, timeout_s: float = 120) -> tuple[set[Any], dict[Any, Any]]:
    """The tables once they hold all `rows` good readings and nothing changed for 4 s (the last windows closed)."""
    deadline = time.monotonic() + timeout_s
    previous: tuple[int, int] = (-1, -1)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        telemetry, aggregates = await table_rows(dsn, prefix)
        sizes = (len(telemetry), len(aggregates))
        if sizes != previous:
            previous, quiet_since = sizes, time.monotonic()
        elif time.monotonic() - quiet_since > 4 and sizes[0] >= rows:
            return telemetry, aggregates
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{prefix} tables still changing after {timeout_s}s: {previous}")


async def run_to_completion(
    tmp: Path, name: str, kafka: EmbeddedKafka, registry_url: str, dsn: str, chaos: Any = None
) -> tuple[set[Any], dict[Any, Any], str]:
    flow_id = f"{name}_{os.getpid()}_{time.time_ns() % 10**9}"
    prefix = f"{name}_{time.time_ns() % 10**9}_"
    flow_path = tmp / f"{flow_id}.json"
    flow_path.write_text(json.dumps(flow_document(flow_id, dsn, prefix)))
    gateway = GatewayProcess(flow_path, tmp / flow_id, registry_url, kafka.access)
    await gateway.start()
    try:
        if chaos is not None:
            gateway = await chaos(gateway, dsn, prefix)
        injected = await injected_faults()
        good = 2 * READINGS - sum(n for (_, fault), n in injected.items() if fault in ("spike", "out_of_range"))
        telemetry, aggregates = await settled(dsn, prefix, good)
    finally:
        await gateway.stop()
    return telemetry, aggregates, flow_id


async def wait_rows(dsn: str, prefix: str, at_least: int) -> None:
    async def enough() -> bool:
        return len((await table_rows(dsn, prefix))[0]) >= at_least

    await eventually(enough, 30, what=f"{prefix}telemetry with {at_least} rows")


async def kill_gateway(gateway: GatewayProcess, dsn: str, prefix: str) -> GatewayProcess:
    await wait_rows(dsn, prefix, 2 * READINGS // 3)
    await gateway.kill()  # SIGKILL: no clean shutdown, no final commit; its workers die with it
    await asyncio.sleep(1)
    await gateway.start()  # same data dir: changelogs, offsets and the simulator's position are in Kafka
    return gateway


async def kill_sink_worker(gateway: GatewayProcess, dsn: str, prefix: str) -> GatewayProcess:
    async def sink() -> dict[str, Any]:
        return next(n for n in (await gateway.health())["nodes"] if n["node"] == "db")

    await wait_rows(dsn, prefix, 2 * READINGS // 3)
    os.kill((await sink())["pid"], signal.SIGKILL)

    async def restarted() -> bool:
        health = await sink()
        return bool(health["restarts"] == 1 and health["status"] == "RUNNING")

    await eventually(restarted, 20, 0.2, what="the sink worker restarted and RUNNING")
    return gateway


@pytest.fixture(scope="module")
async def reference(
    kafka: EmbeddedKafka, registry_url: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[set[Any], dict[Any, Any], str]]:
    yield await run_to_completion(tmp_path_factory.mktemp("reference"), "ref", kafka, registry_url, postgres_dsn)


async def test_uninterrupted_run_is_complete_and_correct(
    reference: tuple[set[Any], dict[Any, Any], str], kafka: EmbeddedKafka, registry: CachedSchemaRegistry
) -> None:
    telemetry, aggregates, flow_id = reference
    # Independently of the aggregator: group the stored readings into 1 s windows ourselves.
    windows: dict[tuple[str, str, datetime], list[float]] = defaultdict(list)
    for asset, parameter, at, value, _quality in telemetry:
        windows[(asset, parameter, at.replace(microsecond=0))].append(value)
    assert set(aggregates) == set(windows)
    for key, values in windows.items():
        avg, low, high, _first, _last, count = aggregates[key]
        assert count == len(values) and low == min(values) and high == max(values)
        assert abs(avg - sum(values) / len(values)) < 1e-9
    # Every injected fault is in the DLQ with its reason; every good reading is in the table.
    injected = await injected_faults()
    dead: Counter[str] = Counter()
    async with BatchConsumer(
        kafka.access, f"{flow_id}.dlq-check", ["dlq.telemetry"], Decoder(registry), upstream=[(flow_id, "val")]
    ) as consumer:
        idle = 0
        while idle < 3:
            batch = await consumer.next_batch(timeout_ms=500)
            idle = 0 if batch.records else idle + 1
            dead.update(m.record["reasons"][0]["code"] for m in batch.records)
    # Pressure spikes (55 bar) are in range but too steep; flow spikes (600 m3/h) are out of range.
    assert dead == {
        "out_of_range": injected["pressure", "out_of_range"]
        + injected["flow", "out_of_range"]
        + injected["flow", "spike"],
        "rate_of_change": injected["pressure", "spike"],
        "duplicate": (injected["pressure", "duplicate"] + injected["flow", "duplicate"]) // 2,
    }
    bad = sum(count for (_, fault), count in injected.items() if fault in ("spike", "out_of_range"))
    assert len(telemetry) == 2 * READINGS - bad  # every good reading, once
    uncertain = [row for row in telemetry if row[4] == "UNCERTAIN"]
    assert len(uncertain) == injected["pressure", "missing_device_time"] + injected["flow", "missing_device_time"]


async def injected_faults() -> Counter[tuple[str, str]]:
    """What the simulator injects with this config, per (parameter, fault): run it on its own."""
    config = flow_document("x", "postgresql://unused", "x_")["nodes"][0]["config"]
    async with NodeHarness(Simulator, {**config, "realtime": False}) as simulator:
        while not simulator.node.exhausted:
            await simulator.poll()
    return Counter(
        (r["parameter"], r["metadata"]["sim_fault"]) for r in simulator.captured["out"] if "sim_fault" in r["metadata"]
    )


@pytest.mark.parametrize("chaos", [kill_gateway, kill_sink_worker], ids=["gateway-sigkill", "sink-worker-sigkill"])
async def test_sigkill_mid_stream_changes_nothing(
    reference: tuple[set[Any], dict[Any, Any], str],
    kafka: EmbeddedKafka,
    registry_url: str,
    postgres_dsn: str,
    tmp_path: Path,
    chaos: Any,
) -> None:
    telemetry, aggregates, _ = await run_to_completion(tmp_path, "chaos", kafka, registry_url, postgres_dsn, chaos)
    assert telemetry == reference[0]
    assert aggregates == reference[1]
