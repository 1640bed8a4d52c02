"""Supervisor: restarts a crashed broker on the same data and ports; stops restarting past the limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.sdk import Message
from streamforge.engine.serde import Decoder, encoder_for
from streamforge.runtime.kafka.clients import BatchConsumer, BatchProducer
from streamforge.runtime.kafka.supervisor import BrokerState, EmbeddedKafka
from tests.conftest import create_topic
from tests.engine.samples import SAMPLES
from tests.eventually import eventually


async def test_crash_restart_keeps_data_and_ports_then_fails_past_limit(
    tmp_path: Path, registry: CachedSchemaRegistry, unique: str
) -> None:
    async with EmbeddedKafka(tmp_path / "kafka", max_restarts=1, restart_backoff_s=0.1) as kafka:
        bootstrap, first_pid = kafka.access, kafka.pid
        assert kafka.health()["status"] == "HEALTHY"
        topic = await create_topic(kafka.access, f"{unique}.t", partitions=3)
        encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
        async with BatchProducer(kafka.access) as producer:
            report = await producer.send_records(topic, [SAMPLES["telemetry"]] * 50, encoder)
        assert len(report.delivered) == 50

        kafka.kill()
        await asyncio.sleep(0.5)
        await kafka.wait_healthy(60)
        health = kafka.health()
        assert health["restarts"] == 1 and health["pid"] != first_pid and "exited" in health["last_error"]
        assert kafka.access == bootstrap
        async with BatchConsumer(kafka.access, f"{unique}.g", [topic], Decoder(registry)) as consumer:
            got: list[Message] = []

            async def all_back() -> bool:
                got.extend((await consumer.next_batch(timeout_ms=500)).records)
                return len(got) >= 50

            await eventually(all_back, 60, 0, what="the 50 records after the restart", state=lambda: len(got))
        assert len(got) == 50

        kafka.kill()  # the second crash within the window exceeds max_restarts=1
        await eventually(lambda: kafka.health()["status"] == "FAILED", 10, what="FAILED", state=kafka.health)
    assert kafka.health()["status"] == BrokerState.STOPPED


async def test_second_boot_reuses_storage(tmp_path: Path) -> None:
    async with EmbeddedKafka(tmp_path / "kafka") as kafka:
        meta = (kafka.data_dir / "log" / "meta.properties").read_text()
        access = kafka.access
    async with EmbeddedKafka(tmp_path / "kafka") as again:
        assert (again.data_dir / "log" / "meta.properties").read_text() == meta  # not re-formatted
        assert again.access == access  # the same port and the same login
