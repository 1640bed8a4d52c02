"""`streamforge roundtrip`: embedded Kafka, registry, and a visible round trip of every record type."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from streamforge.engine.records import apply_time_rules, now_utc, telemetry
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, encoder_for
from streamforge.engine.topics import topic_spec
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.clients import BatchConsumer, BatchProducer, node_headers
from streamforge.runtime.kafka.supervisor import kafka_or_existing
from streamforge.runtime.kafka.topics import ensure_topics

Record = dict[str, Any]


def sample_records(count: int) -> dict[str, list[Record]]:
    """Spec-shaped samples of every record type, including a reading with no device_time."""
    now = now_utc()
    readings = [
        telemetry(
            f"line_1_sensor_{i % 4:02d}",
            "temperature",
            round(80 + 5 * math.sin(i / 5), 3),
            unit="celsius",
            device_time=None if i % 10 == 9 else now - timedelta(milliseconds=300),
            metadata={"adapter_id": "roundtrip", "adapter_version": "0.1.0"},
        )
        for i in range(count)
    ]
    event = {
        "asset_id": "line_1_valve_01",
        "event_type": "valve_opened",
        "value": "OPEN",
        "classification": "EVENT",
        "timestamps": {"device_time": now},
    }
    alarm = {
        "alarm_id": "overpressure|line_1_tank|pressure",
        "asset_id": "line_1_tank",
        "parameter": "pressure",
        "rule_id": "overpressure",
        "severity": "HIGH",
        "state": "ACTIVE",
        "value": 9.7,
        "threshold": 9.0,
        "message": "pressure above 9.0 bar",
        "classification": "ALARM",
        "timestamps": {"device_time": now},
    }
    for record in (event, alarm):
        apply_time_rules(record)
    aggregate = {
        "asset_id": "line_1_sensor_00",
        "parameter": "temperature",
        "resolution": "1min",
        "window_start": now.replace(second=0, microsecond=0),
        "window_end": now.replace(second=0, microsecond=0) + timedelta(minutes=1),
        "aggregates": {"avg": 80.1, "min": 75.0, "max": 85.0, "first": 79.0, "last": 81.0, "count": 60},
        "unit": "celsius",
    }
    dead_letter = {
        "source_topic": "telemetry.raw",
        "source_partition": 3,
        "source_offset": 42,
        "node_id": "validator",
        "asset_id": "line_1_sensor_02",
        "reasons": [{"code": "out_of_range", "field": "/value", "message": "512.0 > max 150.0"}],
        "payload": b"\x00\x00\x00\x00\x01",
        "failed_at": now,
    }
    return {
        "telemetry.raw": readings,
        "events.raw": [event],
        "alarms.raw": [alarm],
        "telemetry.1min": [aggregate],
        "dlq.telemetry": [dead_letter],
    }


async def round_trip(data_dir: Path, count: int, existing_kafka: KafkaAccess | None, say: Callable[[str], None]) -> int:
    """Produce samples of every record type, read them back, print what came back. Returns records read."""
    started = time.monotonic()
    store = SchemaStore(data_dir / "registry.sqlite")
    async with (
        serve_app(schema_registry_app(store)) as registry_url,
        kafka_or_existing(data_dir, existing_kafka) as kafka,
    ):
        servers = kafka.access if kafka is not None else existing_kafka
        assert servers is not None
        say(
            f"kafka ready at {servers.bootstrap} ({time.monotonic() - started:.1f}s); schema registry at {registry_url}"
        )
        created = await ensure_topics(servers)
        say(f"topics: {len(created)} created, catalogue complete")
        http_registry = HttpSchemaRegistry(registry_url)
        registry = CachedSchemaRegistry(http_registry, SchemaCache(data_dir / "schema-cache.json"))
        samples = sample_records(count)
        run = f"roundtrip-{int(time.time() * 1000)}"
        sent: Counter[str] = Counter()
        async with BatchProducer(servers) as producer:
            for topic, records in samples.items():
                spec = topic_spec(topic)
                encoder = await encoder_for(registry, spec.subject, SCHEMAS[spec.record_type])
                report = await producer.send_records(
                    topic,
                    records,
                    encoder,
                    node_headers(run, "roundtrip"),
                    key_of=lambda r: str(r.get("asset_id") or r.get("source_topic")),
                )
                sent[topic] = report.delivered_count
                say(
                    f"  produced {report.delivered_count:>6} {spec.record_type:<11} -> {topic} "
                    f"(schema id {encoder.schema_id}, acks=all)"
                )
        received: Counter[str] = Counter()
        qualities: Counter[str] = Counter()
        examples: dict[str, Record] = {}
        async with BatchConsumer(
            servers, f"{run}.reader", list(samples), Decoder(registry), upstream=[(run, "roundtrip")]
        ) as consumer:
            deadline = time.monotonic() + 60
            while sum(received.values()) < sum(sent.values()) and time.monotonic() < deadline:
                batch = await consumer.next_batch(timeout_ms=500)
                for item in batch.records:
                    received[item.topic] += 1
                    qualities[str(item.record.get("quality", "-"))] += 1
                    examples.setdefault(item.topic, item.record)
                await consumer.commit(batch)
        await http_registry.aclose()
    for topic, record in examples.items():
        say(f"  read back {received[topic]:>5} from {topic}: e.g. {_summary(record)}")
    say(f"quality of records read: {dict(qualities)}")
    say(
        f"round trip complete: {sum(received.values())}/{sum(sent.values())} records in "
        f"{time.monotonic() - started:.1f}s; data kept in {data_dir}"
    )
    return sum(received.values())


def _summary(record: Record) -> str:
    keys = ("asset_id", "parameter", "value", "quality", "state", "event_type", "aggregates", "reasons")
    return ", ".join(f"{k}={record[k]!r}" for k in keys if record.get(k) is not None)[:160]
