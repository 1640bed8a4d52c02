"""Benchmark: the aggregator's memory for 1 h windows stays flat however many readings a window holds (issue #15).

Run: .venv/bin/python bench/bench_aggregator_memory.py [--series 10000] [--readings 360]

Drives the real Aggregator node (1s, 1min and 1h windows) with `--readings` readings per series, in batches, and
reports the Python heap it holds (tracemalloc) after each fifth of them, next to what keeping every reading of the
open windows costs (one float per device time per window, as the aggregator did before), measured in the same
run on the same readings. There is no Kafka: this is the node's own state. The harness's own ceiling is the
readings list it builds, reported apart and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

from streamforge.engine.records import telemetry
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.aggregator import WINDOW_MS, Aggregator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 5_000
CONFIG = {"resolutions": ["1s", "1min", "1h"], "allowed_lateness_s": 0, "idle_close_s": 3600, "checkpoint_s": 3600}


def batch(series: int, first: int, count: int) -> list[dict[str, Any]]:
    return [telemetry(f"sensor_{n % series:05d}", "temperature", 20 + (n % 97) / 10,
                      device_time=T0 + timedelta(seconds=n // series), gateway_time=T0)
            for n in range(first, first + count)]  # fmt: skip


def every_reading_bytes(series: int, readings: int) -> int:
    """The former state: per open window, a dict of device time -> value (1 h windows keep them all)."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    windows: dict[tuple[str, str], dict[int, float]] = {}
    for n in range(series * readings):
        at_ms = (n // series) * 1000
        for resolution in ("1min", "1h"):  # the 1s windows close each second and hold little
            key = (f"sensor_{n % series:05d}", resolution)
            window = windows.get(key)
            if window is None or at_ms - next(iter(window)) >= WINDOW_MS[resolution]:
                window = windows[key] = {}
            window[at_ms] = 20 + (n % 97) / 10
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held


async def aggregator_bytes(series: int, readings: int) -> list[tuple[int, int]]:
    """(readings per series so far, heap the node holds) after each fifth of the run."""
    marks: list[tuple[int, int]] = []
    total = series * readings
    async with NodeHarness(Aggregator, CONFIG) as h:
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        sent = 0
        while sent < total:
            records = batch(series, sent, min(BATCH, total - sent))
            await h.process(records)
            sent += len(records)
            h.captured.clear()  # what was emitted left the node (Kafka has it): not the node's memory
            del records
            if sent % (total // 5) < BATCH:
                gc.collect()
                marks.append((sent // series, tracemalloc.get_traced_memory()[0] - base))
        tracemalloc.stop()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--readings", type=int, default=360, help="per series, one a second (device time)")
    args = parser.parse_args()
    marks = asyncio.run(aggregator_bytes(args.series, args.readings))
    former = every_reading_bytes(args.series, args.readings)
    tracemalloc.start()
    ceiling = batch(args.series, 0, BATCH)
    harness = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del ceiling
    report = {
        "series": args.series, "readings_per_series": args.readings,
        "aggregator_bytes_per_series": [{"readings": r, "bytes": round(b / args.series)} for r, b in marks],
        "every_reading_bytes_per_series": round(former / args.series),
        "ratio_to_every_reading": round(marks[-1][1] / former, 3),
        "growth_last_to_first_fifth": round(marks[-1][1] / marks[0][1], 2),
        "harness_batch_bytes": harness,
    }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
