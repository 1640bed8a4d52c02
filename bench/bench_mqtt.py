"""Benchmark: MQTT -> Kafka raw -> validator -> clean, against a bare aiomqtt -> aiokafka forwarder.

Run: .venv/bin/python bench/bench_mqtt.py [--messages N] [--bootstrap HOST:PORT]
Both read the same number of QoS 1 messages from a real Mosquitto. The messages are queued in the broker for
the subscriber's persistent session before it connects: the offered rate is unbounded, so what is measured is
the sustained drain rate, and the excess waits in the broker. Every published message must then be found in
telemetry.clean or the DLQ (zero loss). The report gives both rates and their ratio (same broker, same run).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.peers: the same Mosquitto the tests use

from bench_pipeline import FLOW, node_plan, on_broker, print_rates, run_cli

from streamforge.engine.registry import load_registry
from streamforge.engine.schema_registry import InMemorySchemaRegistry
from streamforge.engine.serde import Decoder
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners import NodeRunner, RuntimeEnv
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import PRODUCER_DEFAULTS, BatchConsumer
from streamforge.runtime.kafka.topics import create_topics
from tests.peers import start_mosquitto

T0_MS = 1769680800000


async def queue_for(port: int, client_id: str, topic: str, count: int) -> None:
    """Create the persistent session, then publish `count` QoS 1 messages it will find waiting."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as session:
        await session.subscribe(f"{topic}/#", qos=1)
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"{client_id}-pub", max_inflight_messages=1000) as pub:
        for start in range(0, count, 500):
            await asyncio.gather(*(
                pub.publish(f"{topic}/line_{i % 8}", json.dumps({"v": i % 1000, "seq": i, "ts": T0_MS + i}), qos=1)
                for i in range(start, min(count, start + 500))
            ))  # fmt: skip


async def bare_forwarder(port: int, bootstrap: str, topic: str, count: int) -> float:
    """Baseline: subscribe, forward each payload to Kafka (acks=all, idempotent) in batches, nothing else."""
    target = f"{topic.replace('/', '.')}.bare"
    await create_topics(bootstrap, [NewTopic(target, 12, 1)])
    await queue_for(port, f"{target}-sub", topic, count)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    await producer.start()
    started = time.perf_counter()
    done = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"{target}-sub", clean_session=False) as client:
        batch = []
        async for message in client.messages:
            batch.append(await producer.send(target, message.payload if isinstance(message.payload, bytes) else b""))
            if len(batch) >= 2000 or done + len(batch) >= count:
                await asyncio.gather(*batch)
                done += len(batch)
                batch = []
                if done >= count:
                    break
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def streamforge_pipeline(port: int, bootstrap: str, topic: str, count: int) -> tuple[float, dict[str, int]]:
    """The mqtt source and the validator as NodeRunners (the gateway's code), until all N are accounted for."""
    registry = InMemorySchemaRegistry()
    source_id = f"mq{time.time_ns() % 10**9}"
    config = {"host": "127.0.0.1", "port": port, "client_id": f"{source_id}-sub",
              "subscriptions": [{"topic": f"{topic}/+", "qos": 1, "points": [
                  {"asset_id": "{2}", "parameter": "v", "value": "/v", "device_time": "/ts"}]}]}  # fmt: skip
    source = await node_plan(bootstrap, "mqtt", source_id, None, config)
    raw = source.outputs[0].topic
    validator = await node_plan(bootstrap, "validator", f"{source_id}v", raw, {}, upstream=source_id)
    await queue_for(port, f"{source_id}-sub", topic, count)
    env = RuntimeEnv(bootstrap, registry, NodeMetrics(), load_registry(False))
    runners = [NodeRunner(plan, FLOW, env) for plan in (source, validator)]
    started = time.perf_counter()
    tasks = [asyncio.create_task(runner.run()) for runner in runners]
    seen: set[int] = set()
    counts = {"clean": 0, "dlq": 0}
    readers = {"clean": validator.outputs[0].topic, "dlq": validator.outputs[1].topic}
    try:
        async with BatchConsumer(bootstrap, f"{source_id}.reader", list(readers.values()), Decoder(registry),
                                 upstream=[(FLOW, validator.node_id)]) as consumer:  # fmt: skip
            while len(seen) < count:
                for task in tasks:
                    if task.done():
                        task.result()
                batch = await consumer.next_batch(timeout_ms=500)
                for message in batch.records:
                    kind = "clean" if message.topic == readers["clean"] else "dlq"
                    counts[kind] += 1
                    if kind == "clean":
                        seen.add(int(message.record["timestamps"]["device_time"].timestamp() * 1000) - T0_MS)
        return time.perf_counter() - started, counts
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def main(count: int, bootstrap: str | None) -> dict[str, Any]:
    port = free_port()
    mosquitto = start_mosquitto(Path(tempfile.mkdtemp(prefix="sf-bench-mqtt-")), port)

    async def measure(servers: str) -> dict[str, Any]:
        bare = await bare_forwarder(port, servers, f"bench/{time.time_ns()}/bare", count)
        elapsed, counts = await streamforge_pipeline(port, servers, f"bench/{time.time_ns()}/sf", count)
        rates = {"bare_forwarder": count / bare, "streamforge": count / elapsed}
        return {"messages": count, "points_per_s": rates, "ratio": rates["streamforge"] / rates["bare_forwarder"],
                "accounted": counts, "lost": count - counts["clean"] - counts["dlq"]}  # fmt: skip

    try:
        return await on_broker(bootstrap, measure)
    finally:
        mosquitto.terminate()


if __name__ == "__main__":
    outcome = run_cli(__doc__, "--messages", main, "mqtt")
    title = f"{outcome['messages']:,} QoS 1 messages queued in Mosquitto, drained by each (same brokers, same run):"
    print_rates(title, outcome["points_per_s"], "points/s")
    print(f"  streamforge / bare forwarder: {outcome['ratio']:.2f}   (goal: >= 12,000 points/s sustained)")
    print(f"  accounted for: {outcome['accounted']}, lost: {outcome['lost']}")
