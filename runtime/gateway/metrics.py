"""Per-node Prometheus metrics (units in the names, as Prometheus conventions ask)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class NodeMetrics:
    """One set of series per process; every series is labelled with flow and node."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["flow", "node"]
        self.records_in = Counter("streamforge_node_records_in", "Records a node consumed", labels,
                                  registry=self.registry)  # fmt: skip
        self.records_out = Counter("streamforge_node_records_out", "Records a node produced and Kafka acknowledged",
                                   [*labels, "port"], registry=self.registry)  # fmt: skip
        self.errors = Counter("streamforge_node_errors", "Records rejected or batches failed", [*labels, "kind"],
                              registry=self.registry)  # fmt: skip
        self.lag = Gauge("streamforge_node_consumer_lag_records", "Records behind the end of the input topics",
                         labels, registry=self.registry)  # fmt: skip
        self.batch_seconds = Histogram(
            "streamforge_node_batch_duration_seconds", "Time from a batch's arrival to its commit or ack", labels,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )  # fmt: skip
        self.status = Gauge("streamforge_node_status", "1 for the node's current status", [*labels, "status"],
                            registry=self.registry)  # fmt: skip
        self.restarts = Counter("streamforge_node_restarts", "Times a node was restarted after a failure", labels,
                                registry=self.registry)  # fmt: skip
