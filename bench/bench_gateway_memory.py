"""Benchmark: the gateway's Python memory (RSS) with 10,000 series flowing, beside the same flow with 100 series.

Run: .venv/bin/python bench/bench_gateway_memory.py [--series 10000] [--seconds 120]

`streamforge run` of simulator -> telemetry.raw -> validator -> aggregator (1s, 1min, 1h), one reading per series
per second, as a user starts it (embedded Kafka). RSS of the gateway and its workers is sampled every second (PSS
beside it: summed RSS counts the libraries the processes share once per process); the Kafka JVM is reported apart.
The 100-series run in the same session is the baseline: (RSS at N - RSS at 100) / (N - 100) is what one more
series costs. Goal: the gateway's Python processes <= 150 MB (RSS) at 10,000 series.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_nodered import StreamForge, pss_mb, rss_mb
from bench_pipeline import keep_outcome


def memory_flow(series: int) -> dict[str, Any]:
    signals = [{"asset_id": f"line_{i // 100:03d}_sensor_{i % 100:02d}", "parameter": "temperature", "offset": 60,
                "amplitude": 5, "period_s": 60 + i % 7} for i in range(series)]  # fmt: skip
    return {"format": "streamforge.flow/v1", "id": f"memory{series}", "label": "memory", "version": 1,
            "nodes": [{"id": "sim", "type": "simulator",
                       "config": {"signals": signals, "rate_hz": 1}},
                      {"id": "val", "type": "validator", "config": {"rules": [
                          {"parameter": "temperature", "min": -50, "max": 200, "max_rate_per_s": 100}]}},
                      {"id": "agg", "type": "aggregator", "config": {"resolutions": ["1s", "1min", "1h"]}}],
            "edges": [{"from": "sim:out", "to": "val:in"}, {"from": "val:clean", "to": "agg:in"}]}  # fmt: skip


def run(series: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sf-memory-") as workdir:
        gateway = StreamForge(Path(workdir), memory_flow(series))
        gateway.start()
        try:
            started, python, proportional, jvm, main_process = time.monotonic(), [], [], [], []
            while time.monotonic() - started < seconds:
                processes = gateway.processes()
                python.append(rss_mb(processes["python"]))
                proportional.append(pss_mb(processes["python"]))
                jvm.append(rss_mb(processes["kafka_jvm"]))
                main_process.append(rss_mb(processes["python"][:1]))  # the gateway's own: the rest are workers
                time.sleep(1)
            with gateway.clean_counter() as count:
                flowed = count()
        finally:
            gateway.kill()
    last_minute, proportional_last_minute, main_last_minute = python[-60:], proportional[-60:], main_process[-60:]
    return {"series": series, "seconds": seconds, "readings_in_clean": flowed,
            "python_rss_mb": {"peak": max(python), "last_minute_avg": sum(last_minute) / len(last_minute),
                              "at_end": python[-1],
                              "gateway_process_last_minute_avg": sum(main_last_minute) / len(main_last_minute)},
            "python_pss_mb": {"peak": max(proportional),
                              "last_minute_avg": sum(proportional_last_minute) / len(proportional_last_minute)},
            "kafka_jvm_rss_mb": {"peak": max(jvm), "at_end": jvm[-1]}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    baseline, loaded = run(100, args.seconds), run(args.series, args.seconds)
    per_series_kb = ((loaded["python_rss_mb"]["last_minute_avg"] - baseline["python_rss_mb"]["last_minute_avg"])
                     * 1024 / (args.series - 100))  # fmt: skip
    keep_outcome("gateway_memory", {"baseline": baseline, "loaded": loaded, "per_series_kb": per_series_kb})
    for result in (baseline, loaded):
        rss = result["python_rss_mb"]
        print(f"{result['series']:>6} series, {result['readings_in_clean']:,} readings in telemetry.clean: gateway "
              f"Python RSS peak {rss['peak']:.0f} MB, last minute {rss['last_minute_avg']:.0f} MB (PSS "
              f"{result['python_pss_mb']['last_minute_avg']:.0f} MB; the gateway process "
              f"{rss['gateway_process_last_minute_avg']:.0f} MB, its workers the rest); "
              f"Kafka JVM {result['kafka_jvm_rss_mb']['peak']:.0f} MB")  # fmt: skip
    print(f"one more series costs {per_series_kb:.1f} KB of Python RSS (goal: <= 150 MB at 10,000 series)")


if __name__ == "__main__":
    main()
