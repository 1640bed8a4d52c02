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

from bench_pipeline import on_broker, print_rates, run_cli

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.registry import load_registry
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.engine.serde import Decoder
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.http import serve_app
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
    """Baseline: subscribe, forward each payload to Kafka (acks=all, idempotent) in batches, nothing else.
    Timed from the first message, like the pipeline: connecting is not forwarding."""
    target = f"{topic.replace('/', '.')}.bare"
    await create_topics(bootstrap, [NewTopic(target, 12, 1)])
    await queue_for(port, f"{target}-sub", topic, count)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_DEFAULTS)
    await producer.start()
    started: float | None = None
    done = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"{target}-sub", clean_session=False) as client:
        batch = []
        async for message in client.messages:
            started = started or time.perf_counter()
            batch.append(await producer.send(target, message.payload if isinstance(message.payload, bytes) else b""))
            if len(batch) >= 2000 or done + len(batch) >= count:
                await asyncio.gather(*batch)
                done += len(batch)
                batch = []
                if done >= count:
                    break
    assert started is not None
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def streamforge_pipeline(port: int, bootstrap: str, topic: str, count: int) -> tuple[float, dict[str, int]]:
    """A flow mqtt -> validator deployed on a real Gateway, as `streamforge up` runs it: the source in its own
    worker process, the validator in the gateway. Timed from the first record out of the validator to the last
    (sustained rate: the worker's start-up is not the pipeline's speed)."""
    flow_id = f"benchmq{time.time_ns() % 10**9}"
    flow = {"id": flow_id, "nodes": [
        {"id": "mq", "type": "mqtt", "config": {
            "host": "127.0.0.1", "port": port, "client_id": f"{flow_id}-sub", "batch_size": 5000,
            "subscriptions": [{"topic": f"{topic}/+", "qos": 1, "points": [
                {"asset_id": "{3}", "parameter": "v", "value": "/v", "device_time": "/ts"}]}]}},
        {"id": "val", "type": "validator", "config": {}}],
        "edges": [{"from": "mq:out", "to": "val:in"}]}  # fmt: skip
    await queue_for(port, f"{flow_id}-sub", topic, count)
    state = Path(tempfile.mkdtemp(prefix="sf-bench-gw-"))
    async with serve_app(schema_registry_app(SchemaStore())) as registry_url:
        remote = HttpSchemaRegistry(registry_url)
        registry = CachedSchemaRegistry(remote, SchemaCache(state / "schemas.json"))
        gateway = Gateway(bootstrap, registry, load_registry(False), state, registry_url)
        counts = {"clean": 0, "dlq": 0}
        seen: set[int] = set()
        started: float | None = None
        first = 0
        try:
            await gateway.deploy(compile_flow(validate_flow(flow), gateway.node_types))
            async with BatchConsumer(bootstrap, f"{flow_id}.reader", ["telemetry.clean", "dlq.telemetry"],
                                     Decoder(registry), upstream=[(flow_id, "val")]) as consumer:  # fmt: skip
                while len(seen) + counts["dlq"] < count:
                    batch = await consumer.next_batch(timeout_ms=500)
                    if started is None and batch.records:
                        started, first = time.perf_counter(), len(batch.records)
                    for message in batch.records:
                        if message.topic == "telemetry.clean":
                            counts["clean"] += 1
                            seen.add(int(message.record["timestamps"]["device_time"].timestamp() * 1000) - T0_MS)
                        else:
                            counts["dlq"] += 1
            assert started is not None
            return (time.perf_counter() - started) * count / (count - first), counts
        finally:
            await gateway.stop()
            await remote.aclose()


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
