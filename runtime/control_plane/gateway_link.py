"""The control plane's view of one gateway: what its heartbeats say (health, nodes, its Kafka), operator commands
relayed over its events socket, and its metrics read from where it serves them."""

from __future__ import annotations

from typing import Any

from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.runtime.control_plane.fleet import FleetService
from streamforge.runtime.control_plane.rates import fetch_exposition
from streamforge.runtime.errors import ApiError


class GatewayLink:
    """One gateway, as the control plane knows it. Everything here is what the gateway last reported; nothing
    reaches into its process."""

    def __init__(self, fleet: FleetService, gateway_id: str, registry: SchemaRegistry) -> None:
        self.fleet, self.gateway_id, self.registry = fleet, gateway_id, registry

    def _report(self) -> dict[str, Any]:
        _, report = self.fleet.report(self.gateway_id)
        return report or {}

    def health(self) -> dict[str, Any]:
        report = self._report()
        return {"gateway": self.gateway_id, "status": self.fleet.health_of(self.gateway_id),
                "kafka": {"status": report.get("kafka", "UNKNOWN"), "bootstrap": report.get("kafka_bootstrap")},
                "flows": report.get("flows", {}), "nodes": report.get("nodes", []),
                "last_apply": report.get("last_apply")}  # fmt: skip

    def node_health(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self._report().get("nodes", [])
        return nodes

    def running_version(self, flow_id: str) -> int | None:
        version = self._report().get("flows", {}).get(flow_id)
        return None if version is None else int(version)

    @property
    def bootstrap(self) -> str:
        """The gateway's Kafka, as it reported it: reachable from here in local mode (`streamforge up`)."""
        bootstrap = self._report().get("kafka_bootstrap")
        if not bootstrap:
            raise ApiError(503, "gateway_unknown", f"gateway {self.gateway_id} has not reported its Kafka yet")
        return str(bootstrap)

    async def command(self, flow_id: str, node_id: str, name: str, args: Any) -> dict[str, Any]:
        return await self.fleet.command(self.gateway_id, {"flow": flow_id, "node": node_id, "name": name,
                                                          "args": args})  # fmt: skip

    async def exposition(self) -> bytes:
        """The gateway's and its workers' Prometheus text, from its own /metrics."""
        return await fetch_exposition(self.fleet, self.gateway_id)

    async def rates(self) -> dict[str, dict[str, float]]:
        """Each node's records in and out per second over about the last ten seconds."""
        return await self.fleet.rates.of(self.gateway_id)
