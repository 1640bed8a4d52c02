"""Records per second of each node, from the counters a gateway serves on /metrics, sampled by the control plane."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streamforge.runtime.errors import ApiError

if TYPE_CHECKING:
    from streamforge.runtime.control_plane.fleet import FleetService

WINDOW_S = 10.0  # a rate is the counters' rise over about the last ten seconds
MIN_INTERVAL_S = 1.0  # however many tabs ask, a gateway is sampled at most once a second
COUNTERS = {"streamforge_node_records_in_total": "in_per_s", "streamforge_node_records_out_total": "out_per_s"}

Totals = dict[tuple[str, str, str], float]  # (flow, node, "in_per_s" | "out_per_s") -> counter


async def fetch_exposition(fleet: FleetService, gateway_id: str) -> bytes:
    """The gateway's and its workers' Prometheus text, from where the gateway said it serves /metrics."""
    _, report = fleet.report(gateway_id)
    url = (report or {}).get("metrics_url")
    if not url:
        raise ApiError(503, "gateway_unknown", f"gateway {gateway_id} has not reported its metrics URL")
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(str(url))
    except httpx.HTTPError as exc:
        raise ApiError(502, "gateway_unreachable", f"gateway {gateway_id}'s metrics at {url}: {exc}") from None
    return response.content


def totals(exposition: bytes) -> Totals:
    found: Totals = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            direction = COUNTERS.get(sample.name)
            if direction is not None:
                key = (sample.labels.get("flow", ""), sample.labels.get("node", ""), direction)
                found[key] = found.get(key, 0.0) + sample.value  # summed over ports
    return found


class NodeRates:
    """Per gateway, the last ~10 s of counter samples; `of()` answers each node's in/out rate over them."""

    def __init__(self, fleet: FleetService) -> None:
        self.fleet = fleet
        self._samples: dict[str, deque[tuple[float, Totals]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def of(self, gateway_id: str) -> dict[str, dict[str, float]]:
        """`{"flow/node": {"in_per_s", "out_per_s", "window_s"}}`; empty until two samples exist."""
        samples = self._samples.setdefault(gateway_id, deque())
        async with self._locks.setdefault(gateway_id, asyncio.Lock()):
            now = time.monotonic()
            if not samples or now - samples[-1][0] >= MIN_INTERVAL_S:
                samples.append((now, totals(await fetch_exposition(self.fleet, gateway_id))))
                while len(samples) > 2 and now - samples[1][0] >= WINDOW_S:
                    samples.popleft()
        if len(samples) < 2:
            return {}
        (start, first), (end, last) = samples[0], samples[-1]
        seconds = end - start
        rates: dict[str, dict[str, float]] = {}
        for (flow, node, direction), value in last.items():
            rise = max(0.0, value - first.get((flow, node, direction), 0.0))  # a restarted worker counts from 0
            rates.setdefault(f"{flow}/{node}", {"window_s": round(seconds, 1)})[direction] = round(rise / seconds, 2)
        return rates
