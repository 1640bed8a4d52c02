"""Per-node Prometheus metrics (units in the names, as Prometheus conventions ask)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

METRICS_INTERVAL_S = 2.0  # how often a worker process publishes its metrics to the gateway


class NodeMetrics:
    """One set of series per process; every series is labelled with flow and node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["flow", "node"]
        self.records_in = Counter("streamforge_node_records_in", "Records a node consumed", labels,
                                  registry=self.registry)  # fmt: skip
        self.records_out = Counter("streamforge_node_records_out", "Records a node produced and Kafka acknowledged",
                                   [*labels, "port"], registry=self.registry)  # fmt: skip
        self.errors = Counter("streamforge_node_errors", "Failures by kind: connection (a failed or lost connection), "
                              "device (a failed read), write (a failed sink write), circuit (a sink's breaker "
                              "opened), kafka (not acknowledged), encode, decode, refused (to the DLQ)",
                              [*labels, "kind"], registry=self.registry)  # fmt: skip
        self.lag = Gauge("streamforge_node_consumer_lag_records", "Records past the committed offset",
                         labels, registry=self.registry)  # fmt: skip
        self.batch_seconds = Histogram(
            "streamforge_node_batch_duration_seconds", "Time from a batch's arrival to its commit or ack", labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.status = Gauge("streamforge_node_status", "1 for the node's current status", [*labels, "status"],
                            registry=self.registry)  # fmt: skip
        self.source_readings = Counter(
            "streamforge_source_readings", "Readings a source node took from its device, by quality (BAD: a failed "
            "read)", [*labels, "quality"], registry=self.registry,
        )  # fmt: skip
        self.source_poll_seconds = Histogram(
            "streamforge_source_poll_duration_seconds", "Time a source's poll took (device reads, or waiting for "
            "pushed data)", labels, buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.source_last_reading = Gauge(
            "streamforge_source_last_reading_timestamp_seconds", "When a source last produced a reading (Unix time)",
            labels, registry=self.registry,
        )  # fmt: skip
        self.sink_circuit_state = Gauge(
            "streamforge_sink_circuit_state", "A sink's circuit breaker: 0 closed, 1 open (not writing), 2 half-open "
            "(one trial write)", labels, registry=self.registry,
        )  # fmt: skip
        self.sink_write_seconds = Histogram(
            "streamforge_sink_write_duration_seconds", "Time one successful batch write took", labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.restarts = Counter("streamforge_node_restarts", "Times a node was restarted after a failure", labels,
                                registry=self.registry)  # fmt: skip


def worker_metrics_path(state_dir: Path, flow_id: str, node_id: str) -> Path:
    return state_dir / "metrics" / f"{flow_id}.{node_id}.prom"


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def merged_exposition(registry: CollectorRegistry, worker_files: Iterable[Path]) -> bytes:
    """The gateway's own series plus each worker's latest, merged by family (one HELP/TYPE per name)."""
    families: dict[str, Metric] = {}
    texts = [generate_latest(registry).decode()]
    for path in worker_files:
        try:
            texts.append(path.read_text())
        except FileNotFoundError:
            continue  # the worker is starting or just stopped
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name in families:
                families[family.name].samples.extend(family.samples)
            else:
                families[family.name] = family
    merged = CollectorRegistry(auto_describe=False)
    merged.register(_Families(families.values()))
    return generate_latest(merged)


COUNTER_FIELDS = {
    "streamforge_node_records_in_total": "records_in",
    "streamforge_node_records_out_total": "records_out",
}


def node_counters(exposition: bytes) -> dict[str, dict[str, float]]:
    """Each node's record counters (`flow/node` -> {"records_in", "records_out"}), summed over ports."""
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            field = COUNTER_FIELDS.get(sample.name)
            if field is not None:
                counters = found.setdefault(f"{sample.labels.get('flow', '')}/{sample.labels.get('node', '')}", {})
                counters[field] = counters.get(field, 0.0) + sample.value
    return found
