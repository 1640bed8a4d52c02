"""A SIGKILLed gateway leaves nothing behind: its broker and workers die with it, and a restart never runs a
second broker on the same data directory (issue 17). Real `streamforge run` processes, each with its own
embedded Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.serde import Decoder
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import Broker, process_alive
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.kafka.install import distribution
from tests.stack import GatewayProcess

T0 = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
RATE_HZ, READINGS = 200, 5000  # per signal: 25 s of production, so every kill lands mid-stream


def simulator_flow(flow_id: str) -> dict[str, object]:
    signals = [{"asset_id": "press_1", "parameter": "force"}, {"asset_id": "press_2", "parameter": "force"}]
    return {
        "format": "streamforge.flow/v1", "id": flow_id, "version": 1, "edges": [],
        "nodes": [{"id": "sim", "type": "simulator", "config": {
            "signals": signals, "rate_hz": RATE_HZ, "limit": READINGS, "start_time": T0.isoformat(), "batch_size": 50,
        }}],
    }  # fmt: skip


@dataclass
class BrokerCensus:
    """What ran on one data directory, sampled every 50 ms: the most brokers at once, and any moment the lock
    was held by a process that was not one of them."""

    most: int = 0
    samples: int = 0
    foreign_holders: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def census(broker: Broker) -> AsyncIterator[BrokerCensus]:
    seen = BrokerCensus()

    async def sample() -> None:
        while True:
            running = set(await asyncio.to_thread(broker.broker_processes))
            holder = broker.lock_holder()
            seen.most, seen.samples = max(seen.most, len(running)), seen.samples + 1
            if holder is not None and holder not in running | set(await asyncio.to_thread(broker.broker_processes)):
                seen.foreign_holders.append(holder)  # held by something that is not a broker on this directory
            await asyncio.sleep(0.05)

    task = asyncio.create_task(sample())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def readings(
    bootstrap: KafkaAccess, registry: CachedSchemaRegistry, flow_id: str, expected: int
) -> set[tuple[str, str]]:
    """The distinct (asset, device time) readings `sim` wrote to telemetry.raw, once all `expected` are there."""
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 120
    consumer = BatchConsumer(bootstrap, None, ["telemetry.raw"], Decoder(registry), upstream=[(flow_id, "sim")])
    async with consumer:
        while len(seen) < expected and time.monotonic() < deadline:
            for message in (await consumer.next_batch(timeout_ms=500)).records:
                seen.add((message.record["asset_id"], message.record["timestamps"]["device_time"].isoformat()))
    return seen


def expected_readings() -> set[tuple[str, str]]:
    return {(asset, (T0 + timedelta(seconds=n / RATE_HZ)).isoformat())
            for asset in ("press_1", "press_2") for n in range(READINGS)}  # fmt: skip


async def wait_for(condition: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition() if callable(condition) else condition:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up after {timeout_s} s waiting for {what}")


def simulated_gateway(tmp_path: Path, registry_url: str, unique: str) -> tuple[str, GatewayProcess, Broker]:
    """A `streamforge run` of the simulator flow with its own embedded broker under tmp_path/gateway."""
    flow_id = unique.replace("-", "_")[:50]
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps(simulator_flow(flow_id)))
    data = tmp_path / "gateway"
    return flow_id, GatewayProcess(flow, data, registry_url), Broker(distribution(), data / "kafka")


async def test_group_sigkill_and_restart_three_times_keeps_one_broker_and_every_reading(
    tmp_path: Path, registry_url: str, registry: CachedSchemaRegistry, unique: str
) -> None:
    flow_id, gateway, broker = simulated_gateway(tmp_path, registry_url, unique)
    data = tmp_path / "gateway"
    async with census(broker) as seen:
        await gateway.start()
        for _ in range(3):
            await asyncio.sleep(3)  # mid-stream: the simulator is producing
            kafka = (await gateway.health())["kafka"]
            assert kafka["pid"] == broker.lock_holder() and broker.broker_processes() == [kafka["pid"]]
            await gateway.kill(group=True)  # kill -9 -PGID: the broker runs in a session of its own
            await gateway.start()  # at once, as systemd would
        kafka = (await gateway.health())["kafka"]
        assert kafka["status"] == "HEALTHY" and kafka["pid"] == broker.lock_holder()
        got = await readings(gateway.kafka, registry, flow_id, 2 * READINGS)
        await gateway.stop()
    assert seen.samples > 100 and seen.most == 1 and seen.foreign_holders == []
    assert got == expected_readings()  # every acknowledged reading read back, resumed at the acknowledged position
    broker_log = "".join(p.read_text(errors="replace") for p in (data / "kafka").glob("broker*"))
    assert "CorruptRecordException" not in broker_log
    assert "Truncating" not in broker_log and "truncat" not in broker_log.lower().replace("truncated=false", "")


async def test_sigkill_of_the_gateway_pid_alone_takes_its_broker_and_workers_down(
    tmp_path: Path, registry_url: str, unique: str
) -> None:
    _, gateway, broker = simulated_gateway(tmp_path, registry_url, unique)
    await gateway.start()
    health = await gateway.health()
    kafka_pid = health["kafka"]["pid"]
    workers = [node["pid"] for node in health["nodes"] if node.get("pid")]
    assert workers and kafka_pid == broker.lock_holder()
    await gateway.kill(group=False)  # only the gateway's own pid; its children are not signalled by us

    await wait_for(lambda: not any(map(process_alive, workers)), "the worker processes to exit", 10)
    await wait_for(lambda: not process_alive(kafka_pid) and broker.lock_holder() is None, "the broker to exit", 60)
    assert broker.broker_processes() == []


async def test_first_start_logs_no_error_and_ctrl_c_stops_it_cleanly_its_workers_stopped_by_the_gateway(
    tmp_path: Path, registry_url: str, unique: str
) -> None:
    _, gateway, broker = simulated_gateway(tmp_path, registry_url, unique)
    await gateway.start()
    workers = [node["pid"] for node in (await gateway.health())["nodes"] if node.get("pid")]
    assert workers
    await asyncio.sleep(2)  # mid-stream
    assert await gateway.interrupt() == 0
    log = gateway.log.read_text()
    assert "node crashed" not in log and "Traceback" not in log
    assert '"level": "ERROR"' not in log  # a first start: its topics are created before anything reads them
    worker_logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "gateway").rglob("*.stderr"))
    assert "KeyboardInterrupt" not in worker_logs
    assert not any(map(process_alive, workers)) and broker.broker_processes() == []


def test_a_worker_process_loads_its_plan_without_the_compiler() -> None:
    """One worker per source and sink: each imports only what runs a node. networkx alone is ~13 MB of RSS in
    every worker (issue #15's gateway memory), and the compiler is the gateway's job."""
    probe = "import sys, streamforge.runtime.gateway.worker; print(sorted({'networkx', 'streamforge.engine.compiler'} & set(sys.modules)))"  # noqa: E501
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
