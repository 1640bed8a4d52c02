"""Benchmark: MQTT -> Kafka raw -> validator -> clean, against a bare aiomqtt -> aiokafka forwarder; then an
offer above twice what the pipeline sustains.

Run: .venv/bin/python bench/bench_mqtt.py [--messages N] [--bootstrap HOST:PORT]
1. Drain: both read the same number of QoS 1 messages from a real Mosquitto, queued in the broker for the
   subscriber's persistent session before it connects (the offered rate is unbounded; what is measured is the
   sustained drain rate). The pipeline is timed from end offsets of telemetry.clean, so measuring costs it no
   CPU; the records are read and checked afterwards.
2. Overload: with the flow still running, publish in one-second rounds at 2.5 times the best rate it drained
   (tests.load.offer_overload), so the offer stays above twice its rate; report offered and drained rates over
   the second half of the rounds and the most Mosquitto held at once.
Every published message must then be in telemetry.clean or the DLQ (zero loss). The report gives both rates
and their ratio (same broker, same run).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.peers, tests.load: the tests' own peers

from bench_pipeline import on_broker, print_rates, run_cli

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.engine.serde import Decoder
from streamforge.engine.topics import TOPICS
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import PRODUCER_DEFAULTS, BatchConsumer
from streamforge.runtime.kafka.topics import create_topics, ensure_topics
from tests.load import BulkPublisher, Offer, numbered, offer_overload, watch_broker_queue
from tests.peers import start_mosquitto

OUTPUTS = ["telemetry.clean", "dlq.telemetry"]


async def queue_for(port: int, client_id: str, prefix: str, count: int) -> None:
    """Create the persistent session, then publish `count` QoS 1 messages it will find waiting."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as session:
        await session.subscribe(f"{prefix}/+/data", qos=1)
    async with BulkPublisher("127.0.0.1", port) as publisher:
        await publisher.publish(numbered(prefix, i) for i in range(count))


class Landed:
    """How many records reached the flow's outputs since entry, from their end offsets: no fetch and no
    decode, so counting takes no CPU from the pipeline it watches."""

    def __init__(self, bootstrap: KafkaAccess) -> None:
        self.bootstrap = bootstrap
        self.consumer = bootstrap.consumer(group_id=None, enable_auto_commit=False)
        self.partitions = [TopicPartition(s.name, p) for s in TOPICS if s.name in OUTPUTS for p in range(s.partitions)]

    async def __aenter__(self) -> Landed:
        await ensure_topics(self.bootstrap)  # as the gateway would on deploy: counting starts before it
        await self.consumer.start()
        self.base = await self.consumer.end_offsets(self.partitions)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.consumer.stop()

    async def count(self) -> int:
        ends = await self.consumer.end_offsets(self.partitions)
        return sum(ends[tp] - self.base[tp] for tp in self.partitions)


async def bare_forwarder(port: int, bootstrap: KafkaAccess, prefix: str, count: int) -> float:
    """Baseline: subscribe, forward each payload to Kafka (acks=all, idempotent) in batches, nothing else.
    Timed from the first message, like the pipeline: connecting is not forwarding."""
    target = f"{prefix.replace('/', '.')}.bare"
    await create_topics(bootstrap, [NewTopic(target, 12, 1)])
    await queue_for(port, f"{target}-sub", prefix, count)
    producer = bootstrap.producer(**PRODUCER_DEFAULTS)
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


async def streamforge_pipeline(port: int, bootstrap: KafkaAccess, prefix: str, count: int) -> dict[str, Any]:
    """A flow mqtt -> validator deployed on a real Gateway, as `streamforge up` runs it: the source in its own
    worker process, the validator in the gateway. Drains `count` queued messages (timed from the first record
    in telemetry.clean to the last: the worker's start-up is not the pipeline's speed), then takes the overload."""
    flow_id = f"benchmq{time.time_ns() % 10**9}"
    flow = {"id": flow_id, "nodes": [
        {"id": "mq", "type": "mqtt", "config": {
            "host": "127.0.0.1", "port": port, "client_id": f"{flow_id}-sub", "batch_size": 5000,
            "subscriptions": [{"topic": f"{prefix}/+/data", "qos": 1, "points": [
                {"asset_id": "{3}", "parameter": "seq", "value": "/seq", "device_time": "/ts"}]}]}},
        {"id": "val", "type": "validator", "config": {}}],
        "edges": [{"from": "mq:out", "to": "val:in"}]}  # fmt: skip
    await queue_for(port, f"{flow_id}-sub", prefix, count)
    state = Path(tempfile.mkdtemp(prefix="sf-bench-gw-"))
    async with serve_app(schema_registry_app(SchemaStore())) as registry_url:
        remote = HttpSchemaRegistry(registry_url)
        registry = CachedSchemaRegistry(remote, SchemaCache(state / "schemas.json"))
        gateway = Gateway(bootstrap, registry, load_node_types(False), state, registry_url)
        try:
            async with Landed(bootstrap) as landed:
                await gateway.deploy(compile_flow(validate_flow(flow), gateway.node_types))
                drain_rate = await sustained_rate(landed, count)
                async with (
                    BulkPublisher("127.0.0.1", port) as publisher,
                    watch_broker_queue("127.0.0.1", port) as queue,
                ):
                    await asyncio.sleep(0.2)  # $SYS values are retained: the first sample is the queue before
                    before = queue.samples[0] if queue.samples else 0
                    offer = await offer_overload(publisher, prefix, landed.count, rounds=10, first=count)
            total = count + offer.published
            accounted = await read_back(bootstrap, registry, flow_id, total)
        finally:
            await gateway.stop()
            await remote.aclose()
    return {"drain_rate": drain_rate, "offer": offer, "broker_held": queue.peak - before, "total": total,
            "accounted": accounted}  # fmt: skip


async def sustained_rate(landed: Landed, count: int) -> float:
    """Records per second into telemetry.clean/DLQ from the first landed to the `count`-th."""
    first: tuple[float, int] | None = None
    while (landed_now := await landed.count()) < count:
        if first is None and landed_now:
            first = (time.perf_counter(), landed_now)
        await asyncio.sleep(0.05)
    assert first is not None, "everything landed between two looks: use more messages"
    return (count - first[1]) / (time.perf_counter() - first[0])


async def read_back(bootstrap: KafkaAccess, registry: CachedSchemaRegistry, flow_id: str, total: int) -> dict[str, int]:
    """Read every output of the flow: each sequence number 0..total-1 must be in clean (or the DLQ)."""
    seen: set[int] = set()
    dlq = 0
    deadline = time.monotonic() + 300
    async with BatchConsumer(bootstrap, f"{flow_id}.reader", OUTPUTS, Decoder(registry),
                             upstream=[(flow_id, "mq"), (flow_id, "val")]) as consumer:  # fmt: skip
        while len(seen) + dlq < total and time.monotonic() < deadline:
            for message in (await consumer.next_batch(timeout_ms=500)).records:
                if message.topic == "telemetry.clean":
                    seen.add(int(message.record["value"]))
                else:
                    dlq += 1
    return {"clean": len(seen & set(range(total))), "dlq": dlq}


async def main(count: int, bootstrap: KafkaAccess | None) -> dict[str, Any]:
    port = free_port()
    mosquitto = start_mosquitto(Path(tempfile.mkdtemp(prefix="sf-bench-mqtt-")), port)

    async def measure(servers: KafkaAccess) -> dict[str, Any]:
        bare = await bare_forwarder(port, servers, f"bench/{time.time_ns()}/bare", count)
        run = await streamforge_pipeline(port, servers, f"bench/{time.time_ns()}/sf", count)
        rates = {"bare_forwarder": count / bare, "streamforge": run["drain_rate"]}
        offer: Offer = run["offer"]
        return {"messages": count, "points_per_s": rates, "ratio": rates["streamforge"] / rates["bare_forwarder"],
                "overload": {"offered_per_s": offer.rate("offered"), "drained_per_s": offer.rate("drained"),
                             "factor": offer.ratio, "published": offer.published, "broker_held": run["broker_held"]},
                "accounted": run["accounted"], "lost": run["total"] - sum(run["accounted"].values())}  # fmt: skip

    try:
        return await on_broker(bootstrap, measure)
    finally:
        mosquitto.terminate()


if __name__ == "__main__":
    outcome = run_cli(__doc__, "--messages", main, "mqtt")
    title = f"{outcome['messages']:,} QoS 1 messages queued in Mosquitto, drained by each (same brokers, same run):"
    print_rates(title, outcome["points_per_s"], "points/s")
    print(f"  streamforge / bare forwarder: {outcome['ratio']:.2f}   (goal: >= 12,000 points/s sustained)")
    over = outcome["overload"]
    print(f"then {over['published']:,} more offered in one-second rounds, aiming at 2.5x the best drained rate:")
    print(f"  offered {over['offered_per_s']:,.0f}/s, drained {over['drained_per_s']:,.0f}/s (x{over['factor']:.2f});"
          f" Mosquitto held up to {over['broker_held']:,} messages")  # fmt: skip
    print(f"accounted for: {outcome['accounted']}, lost: {outcome['lost']}")
