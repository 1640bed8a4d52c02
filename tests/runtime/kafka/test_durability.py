"""Durability: 100,000 records produced while the broker is SIGKILLed three times and restarted."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path

import pytest

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, encoder_for
from streamforge.runtime.kafka.clients import BatchConsumer, BatchProducer
from streamforge.runtime.kafka.supervisor import BrokerState, EmbeddedKafka
from tests.conftest import create_topic
from tests.engine.samples import SAMPLES

TOTAL = 100_000
BATCH = 1_000
KILL_AFTER = (20_000, 45_000, 70_000)  # acknowledged records at which the broker is killed

log = logging.getLogger(__name__)


@pytest.mark.slow
async def test_acknowledged_records_survive_three_sigkills(
    tmp_path: Path, registry: CachedSchemaRegistry, unique: str
) -> None:
    async with EmbeddedKafka(tmp_path / "kafka", restart_backoff_s=0.2) as kafka:
        topic = await create_topic(kafka.access, f"{unique}.telemetry")
        encoder = await encoder_for(registry, f"{topic}-value", SCHEMAS["telemetry"])
        acked: dict[int, tuple[int, int]] = {}  # seq -> (partition, offset) as Kafka acknowledged it
        failed: set[int] = set()
        kills = list(KILL_AFTER)
        killed = 0

        async with BatchProducer(kafka.access, request_timeout_ms=60_000) as producer:
            for start in range(0, TOTAL, BATCH):
                records = [
                    dict(SAMPLES["telemetry"], asset_id=f"asset_{seq % 97}", value=float(seq))
                    for seq in range(start, start + BATCH)
                ]
                send = asyncio.create_task(producer.send_records(topic, records, encoder))
                if kills and len(acked) >= kills[0]:
                    kills.pop(0)
                    await asyncio.sleep(0.005)  # let the batch reach the wire, then pull the plug
                    kafka.kill()
                    killed += 1
                report = await send
                for delivered in report.delivered:
                    acked[start + delivered.index] = (delivered.partition, delivered.offset)
                failed.update(start + index for index, _ in report.failed)
                assert not report.rejected
        assert killed == 3
        await kafka.wait_healthy()
        assert kafka.restarts == 3 and kafka.state is BrokerState.HEALTHY

        seen: Counter[int] = Counter()
        located: dict[int, tuple[int, int]] = {}
        async with BatchConsumer(kafka.access, f"{unique}.verify", [topic], Decoder(registry)) as consumer:
            idle = 0
            while idle < 3:
                batch = await consumer.next_batch(timeout_ms=1000, max_records=20_000)
                idle = idle + 1 if not batch.records else 0
                for item in batch.records:
                    seq = int(item.record["value"])
                    seen[seq] += 1
                    located[seq] = (item.partition, item.offset)
        duplicates = sum(count - 1 for count in seen.values() if count > 1)
        lost = sorted(set(acked) - set(seen))
        misplaced = [seq for seq, where in acked.items() if located.get(seq) != where]
        log.warning(
            "durability: acked=%d failed=%d read=%d duplicates=%d lost=%d",
            len(acked),
            len(failed),
            sum(seen.values()),
            duplicates,
            len(lost),
        )
        print(
            f"\ndurability: sent={TOTAL} acked={len(acked)} unacked={len(failed)} "
            f"read={sum(seen.values())} duplicates={duplicates} lost={len(lost)} restarts={kafka.restarts}"
        )
        assert lost == [], f"{len(lost)} acknowledged records lost, e.g. {lost[:10]}"
        assert duplicates == 0
        # Nothing unacknowledged is claimed as sent: every acknowledgement points at exactly its record.
        assert set(acked).isdisjoint(failed)
        assert len(acked) + len(failed) == TOTAL
        assert misplaced == []
        assert set(seen) <= set(range(TOTAL))
