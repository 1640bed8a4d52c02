"""Benchmark: our producer/consumer helpers against bare aiokafka on the same broker, plus Avro codec cost.

Run: .venv/bin/python bench/bench_kafka.py [--records N] [--rounds R] [--bootstrap HOST:PORT [--kafka-credentials F]]
Reports ratios against a baseline measured in the same run (absolute figures on a shared machine are noise). On a
fresh embedded broker the helpers are also run through a PLAINTEXT listener beside its SCRAM one: what the login
costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_pipeline import add_kafka_arguments, existing_kafka

from streamforge.engine.records import telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry, SchemaCache
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, encoder_for
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import PRODUCER_DEFAULTS, BatchConsumer, BatchProducer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics

BATCH = 5_000


def spec_records(count: int) -> list[dict[str, Any]]:
    """The spec's adapter-output example, varied per asset."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 29, 10, 0, 0, 123000, tzinfo=UTC)
    return [
        telemetry(
            f"line_1_sensor_{i % 200:03d}", "temperature", 85.4 + i % 17, unit="celsius",
            device_time=t0 + timedelta(milliseconds=i), gateway_time=t0 + timedelta(milliseconds=i + 333),
            metadata={"adapter_id": "adapter_modbus_001", "adapter_version": "1.2.0"},
        )
        for i in range(count)
    ]  # fmt: skip


async def bare_aiokafka(bootstrap: KafkaAccess, topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    """Baseline: pre-serialized bytes, same delivery settings, futures awaited per batch, no decoding."""
    started = time.perf_counter()
    producer = bootstrap.producer(**PRODUCER_DEFAULTS)
    await producer.start()
    for start in range(0, len(payloads), BATCH):
        futures = [await producer.send(topic, value, key=key) for key, value in payloads[start : start + BATCH]]
        await asyncio.gather(*futures)
    await producer.stop()
    consumer = bootstrap.consumer(topic, auto_offset_reset="earliest", enable_auto_commit=False,
                                  group_id=f"{topic}.bare", max_poll_records=BATCH)  # fmt: skip
    await consumer.start()
    seen = 0
    while seen < len(payloads):
        seen += sum(len(m) for m in (await consumer.getmany(timeout_ms=1000, max_records=BATCH)).values())
    await consumer.stop()
    return time.perf_counter() - started


async def helpers(
    bootstrap: KafkaAccess, topic: str, records: list[dict[str, Any]], registry: CachedSchemaRegistry
) -> float:
    """Ours: encode + batch produce (acks=all, idempotent), then batch consume + decode + manual commit."""
    started = time.perf_counter()
    encoder = await encoder_for(registry, "bench-value", SCHEMAS["telemetry"])
    async with BatchProducer(bootstrap) as producer:
        for start in range(0, len(records), BATCH):
            report = await producer.send_records(topic, records[start : start + BATCH], encoder)
            assert len(report.delivered) == min(BATCH, len(records) - start)
    async with BatchConsumer(bootstrap, f"{topic}.ours", [topic], Decoder(registry), max_poll_records=BATCH) as c:
        seen = 0
        while seen < len(records):
            batch = await c.next_batch(timeout_ms=1000, max_records=BATCH)
            seen += len(batch.records)
            await c.commit(batch)
    return time.perf_counter() - started


async def codec_costs(records: list[dict[str, Any]], registry_schema_id: int, decoder: Decoder) -> dict[str, float]:
    from streamforge.engine.serde import Encoder

    encoder = Encoder(registry_schema_id, SCHEMAS["telemetry"])
    started = time.perf_counter()
    encoded = encoder.encode_batch(records)
    encode_s = time.perf_counter() - started
    values = [value for _, value in encoded.ok]
    started = time.perf_counter()
    decoded = await decoder.decode_batch(values)
    assert len(decoded.ok) == len(values)
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    texts = [json.dumps(r, default=str).encode() for r in records]
    json_s = time.perf_counter() - started
    n = len(records)
    return {
        "encode_us_per_record": encode_s / n * 1e6,
        "decode_us_per_record": decode_s / n * 1e6,
        "json_dumps_us_per_record (reference)": json_s / n * 1e6,
        "avro_bytes_per_record": statistics.mean(len(v) for v in values),
        "json_bytes_per_record (reference)": statistics.mean(len(t) for t in texts),
    }


async def main(records_n: int, rounds: int, bootstrap: KafkaAccess | None) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="sf-bench-"))
    registry = CachedSchemaRegistry(None, SchemaCache(workdir / "cache.json"))
    # No registry server in the loop: seed the cache so the id lookup is local, as on a gateway.
    registry.cache.put(1, SCHEMAS["telemetry"], "bench-value")
    records = spec_records(records_n)
    decoder = Decoder(registry)
    encoder = await encoder_for(registry, "bench-value", SCHEMAS["telemetry"])
    payloads = [(r["asset_id"].encode(), encoder.encode(r)) for r in records]

    async def measure(servers: KafkaAccess, plaintext: KafkaAccess | None = None) -> dict[str, Any]:
        runs: list[tuple[str, Callable[[str], Awaitable[float]]]] = [
            ("bare", lambda topic: bare_aiokafka(servers, topic, payloads)),
            ("ours", lambda topic: helpers(servers, topic, records, registry)),
        ]
        if plaintext is not None:
            runs.append(("ours_plaintext", lambda topic: helpers(plaintext, topic, records, registry)))
        timings: dict[str, list[float]] = {name: [] for name, _ in runs}
        for round_no in range(rounds):
            for name, run in runs if round_no % 2 == 0 else runs[::-1]:  # alternate order against drift
                topic = f"bench.{name}.{time.time_ns()}"
                from aiokafka.admin import NewTopic

                await create_topics(servers, [NewTopic(topic, 12, 1)])
                timings[name].append(await run(topic))
        bare, ours = statistics.median(timings["bare"]), statistics.median(timings["ours"])
        login = {} if plaintext is None else {
            "helpers_plaintext_records_per_s": records_n / statistics.median(timings["ours_plaintext"]),
            "throughput_ratio_scram_vs_plaintext": statistics.median(timings["ours_plaintext"]) / ours,
        }  # fmt: skip
        return {
            **login,
            "records": records_n,
            "rounds": rounds,
            "bare_aiokafka_records_per_s": records_n / bare,
            "helpers_records_per_s": records_n / ours,
            "throughput_ratio_helpers_vs_bare": bare / ours,
            "timings_s": timings,
        }

    if bootstrap:
        result = await measure(bootstrap)
    else:
        host, port, controller, plain = "127.0.0.1", free_port(), free_port(), free_port()
        protocols = "SASL_PLAINTEXT:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
        listeners = {  # the SCRAM listener every client uses, and one without a login for this comparison only
            "listeners": f"SASL_PLAINTEXT://{host}:{port},PLAINTEXT://{host}:{plain},CONTROLLER://{host}:{controller}",
            "advertised.listeners": f"SASL_PLAINTEXT://{host}:{port},PLAINTEXT://{host}:{plain}",
            "listener.security.protocol.map": protocols,
        }
        async with EmbeddedKafka(workdir / "kafka", port=port, controller_port=controller,
                                 broker_properties=listeners) as kafka:  # fmt: skip
            result = await measure(kafka.access, KafkaAccess(f"{host}:{plain}"))
    result["codec"] = await codec_costs(records, encoder.schema_id, decoder)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    add_kafka_arguments(parser)
    args = parser.parse_args()
    outcome = asyncio.run(main(args.records, args.rounds, existing_kafka(args)))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "kafka.json").write_text(json.dumps(outcome, indent=2))
    print(f"produce+consume, {outcome['records']} spec-sized records, median of {outcome['rounds']} rounds:")
    print(f"  bare aiokafka (no encoding): {outcome['bare_aiokafka_records_per_s']:>10,.0f} records/s")
    print(f"  streamforge helpers (Avro):  {outcome['helpers_records_per_s']:>10,.0f} records/s")
    print(f"  ratio helpers / bare:        {outcome['throughput_ratio_helpers_vs_bare']:>10.2f}")
    if "throughput_ratio_scram_vs_plaintext" in outcome:
        print(f"  helpers over PLAINTEXT:      {outcome['helpers_plaintext_records_per_s']:>10,.0f} records/s")
        print(f"  ratio SCRAM / PLAINTEXT:     {outcome['throughput_ratio_scram_vs_plaintext']:>10.2f}")
    for name, value in outcome["codec"].items():
        print(f"  {name:<40} {value:8.2f}")
