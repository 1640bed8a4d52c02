"""Benchmark: the validator's cost per reading stays flat however many readings it has seen (issue #15).

Run: .venv/bin/python bench/bench_validator_memory.py [--readings 3000000] [--memory 64]

The validator's duplicate memory holds the last `--memory` device times of each series. A memory of all series
together once evicted with `del d[next(iter(d))]`, which walks every slot deleted before it, so each reading cost
more than the last one. This drives the real Validator node in batches of 5,000 distinct readings of 500 series.
It reports the time per reading in each million, as a ratio to the first million measured in the same run, and
beside it the same eviction loop written the old way. There is no Kafka: this is the node's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from streamforge.engine.records import telemetry
from streamforge.engine.sdk import Message
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.validator import Validator

BATCH = 5_000
FORMER_MEMORY = 200_000  # readings of all series the former memory held, by default
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def old_eviction_us(readings: int, memory: int, every: int) -> list[float]:
    """The former loop alone: microseconds per reading for each `every` readings."""
    seen: dict[int, None] = {}
    marks, started = [], time.perf_counter()
    for n in range(readings):
        seen[n] = None
        if len(seen) > memory:
            del seen[next(iter(seen))]
        if n % every == every - 1:
            marks.append((time.perf_counter() - started) / every * 1e6)
            started = time.perf_counter()
    return marks


async def validator_us(readings: int, memory: int, every: int) -> list[float]:
    marks: list[float] = []
    async with NodeHarness(Validator, {"duplicate_memory_per_series": memory}) as harness:
        node = harness.node
        spent, counted = 0.0, 0
        for start in range(0, readings, BATCH):
            records: list[dict[str, Any]] = [
                telemetry(f"asset_{n % 500}", "temperature", 20.0,
                          device_time=T0 + timedelta(milliseconds=n), gateway_time=T0 + timedelta(milliseconds=n))
                for n in range(start, start + BATCH)
            ]  # fmt: skip
            batch = [Message(record, "telemetry.raw", 0, start + i, "sim") for i, record in enumerate(records)]
            began = time.perf_counter()
            await node.process(batch)  # the node's own work, without the harness's Avro round trip
            spent, counted = spent + time.perf_counter() - began, counted + BATCH
            if counted >= every:
                marks.append(spent / counted * 1e6)
                spent, counted = 0.0, 0
    return marks


async def main(readings: int, memory: int) -> dict[str, Any]:
    every = 1_000_000 if readings >= 2_000_000 else max(readings // 4, BATCH)
    ours = await validator_us(readings, memory, every)
    old = old_eviction_us(min(readings, 1_000_000), FORMER_MEMORY, 100_000)
    return {"readings": readings, "duplicate_memory_per_series": memory, "per": every,
            "validator_us_per_reading": [round(v, 2) for v in ours],
            "validator_ratio_to_first": [round(v / ours[0], 2) for v in ours],
            "old_eviction_us_per_reading_per_100k": [round(v, 2) for v in old],
            "old_eviction_ratio_to_first": [round(v / old[0], 1) for v in old]}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=3_000_000)
    parser.add_argument("--memory", type=int, default=64)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.readings, args.memory)), indent=2))
