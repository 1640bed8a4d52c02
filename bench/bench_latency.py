"""Benchmark: raw->clean latency through a validator at a ladder of offered rates, several rounds each.

Run: .venv/bin/python bench/bench_latency.py [--rates 13000,22000] [--rounds 3] [--seconds 10] [--bootstrap HOST:PORT]

bench_pipeline measures latency at half the validator's own maximum only; this shows how the tail moves with the
offered rate on the same broker in the same run. Each round is bench_pipeline's `latency`: a new validator, the load
generator and the reader in a process of their own, both topics stamped by the broker's clock, and beside it the
harness's own append->read floor (its producer and reader alone). A first round at the lowest rate warms the broker
and is not reported.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from bench_pipeline import add_kafka_arguments, existing_kafka, keep_outcome, latency, on_broker

from streamforge.engine.schema_registry import InMemorySchemaRegistry
from streamforge.runtime.kafka.access import KafkaAccess


async def main(rates: list[float], rounds: int, seconds: float, bootstrap: KafkaAccess | None) -> dict[str, Any]:
    async def measure(servers: KafkaAccess) -> dict[str, Any]:
        registry = InMemorySchemaRegistry()
        await latency(servers, registry, min(rates), seconds)  # warm-up, not reported
        return {f"{rate:.0f}": [await latency(servers, registry, rate, seconds) for _ in range(rounds)]
                for rate in rates}  # fmt: skip

    return await on_broker(bootstrap, measure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="13000,22000", help="offered readings per second, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    add_kafka_arguments(parser)
    args = parser.parse_args()
    rates = [float(rate) for rate in args.rates.split(",")]
    outcome = keep_outcome("latency", asyncio.run(main(rates, args.rounds, args.seconds, existing_kafka(args))))
    print("raw->clean on the broker clock (in raw -> in clean), per round; harness floor = append -> read alone")
    for rate, rounds_at_rate in outcome.items():
        for number, lat in enumerate(rounds_at_rate, 1):
            stage, floor = lat["validator"], lat["harness"]
            print(
                f"  {int(rate):>7,}/s round {number}: p50 {stage['stage_p50_ms']:.0f} ms, "
                f"p99 {stage['stage_p99_ms']:.0f} ms, p999 {stage['stage_p999_ms']:.0f} ms; "
                f"{stage['arrived']:,} of {stage['offered']:,} arrived; floor p99 {floor['read_p99_ms']:.0f} ms"
            )
