"""Rates from what gateways push: over the time each worker's counters were taken, and for a node deployed since the
oldest push, from its own first push; history points at most one per step; every gateway's series on /metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamforge.runtime.control_plane.gateway_metrics import HISTORY_STEP_S, GatewayMetrics, fleet_exposition
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.protocol import MetricsPush, NodeCounters

EXPOSITION = "# TYPE streamforge_node_records_out counter\n"


def push(at: float, **nodes: tuple[float, float]) -> MetricsPush:
    """nodes: name -> (records_out, when the worker took it)."""
    counters = {f"f/{name}": NodeCounters(records_out=out, at=taken) for name, (out, taken) in nodes.items()}
    return MetricsPush(at=at, exposition=EXPOSITION, nodes=counters)


def test_rates_divide_by_when_counters_were_taken_and_new_nodes_count_from_their_own_start(tmp_path: Path) -> None:
    metrics = GatewayMetrics(Store(tmp_path / "cp.sqlite"))
    assert metrics.rates("gw") == {}
    # Pushed every 5 s, but the worker publishes every 2 s: its counters are older than each push.
    metrics.push("gw", push(1000.0, sim=(0.0, 998.0)))
    metrics.push("gw", push(1005.0, sim=(80.0, 1002.0), late=(0.0, 1004.0)))
    metrics.push("gw", push(1010.0, sim=(200.0, 1008.0), late=(30.0, 1010.0)))
    rates = metrics.rates("gw")
    assert rates["f/sim"]["out_per_s"] == 20.0 and rates["f/sim"]["window_s"] == 10.0  # 200 over 998 -> 1008
    assert rates["f/late"]["out_per_s"] == 5.0  # 30 over its own 6 s, not over the 10 s before it existed
    assert [at for _, at, _ in metrics.taken_history()] == [1000.0]  # one point per HISTORY_STEP_S
    metrics.push("gw", push(1000.0 + HISTORY_STEP_S, sim=(600.0, 1000.0 + HISTORY_STEP_S)))
    assert len(metrics.taken_history()) == 1


def test_every_gateways_counters_and_gauges_are_on_the_control_planes_metrics_with_its_label(tmp_path: Path) -> None:
    node = NodeMetrics()
    node.records_out.labels("f", "sim", "out").inc(7)
    node.lag.labels("f", "val").set(3)
    node.batch_seconds.labels("f", "val").observe(0.01)
    node.errors.labels("f", "sim", "device").inc()
    text = generate_latest(node.registry).decode()
    metrics = GatewayMetrics(Store(tmp_path / "cp.sqlite"))
    for gateway in ("gw_a", "gw_b"):
        metrics.push(gateway, MetricsPush(at=1.0, exposition=text))
    fleet = fleet_exposition(metrics)
    families = {family.name: family for family in text_string_to_metric_families(fleet)}  # valid text format
    out = families["streamforge_node_records_out"].samples
    assert {(s.labels["gateway"], s.labels["port"], s.value) for s in out} == {
        ("gw_a", "out", 7.0),
        ("gw_b", "out", 7.0),
    }
    assert {s.labels["gateway"] for s in families["streamforge_node_consumer_lag_records"].samples} == {"gw_a", "gw_b"}
    assert "streamforge_node_batch_duration_seconds" not in families  # histograms stay on the gateway's own
    assert "_created" not in fleet and fleet.count("# TYPE streamforge_node_records_out") == 1
    metrics.forget({"gw_a"})
    assert 'gateway="gw_b"' not in fleet_exposition(metrics)
