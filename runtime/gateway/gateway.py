"""The gateway: deploys execution plans atomically, supervises their nodes, and tells the truth about health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import NewTopic
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from streamforge.engine.node_types import NodeTypes
from streamforge.engine.plan import ExecutionPlan, NodePlan
from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.engine.sdk import CommandInvalid, Kind
from streamforge.engine.topics import TOPICS
from streamforge.runtime.errors import EXCEPTION_HANDLERS, ApiError, json_body
from streamforge.runtime.gateway.compiling import compile_apart
from streamforge.runtime.gateway.local_auth import RequireLocalToken, ensure_token, token_path
from streamforge.runtime.gateway.metrics import NodeMetrics, merged_exposition, worker_metrics_path
from streamforge.runtime.gateway.overflow import OverflowManager, Tier
from streamforge.runtime.gateway.runners import CommandNotDelivered, NodeStatus, RuntimeEnv, changelog_spec
from streamforge.runtime.gateway.supervisor import (
    NodeHandle,
    ProcessHandle,
    RestartPolicy,
    StartFailed,
    TaskHandle,
    WorkerSettings,
)
from streamforge.runtime.http import http_host, is_loopback
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.groups import start_new_flow_at_end
from streamforge.runtime.kafka.topics import create_topics, ensure_topics

log = logging.getLogger("streamforge.runtime")

COMMAND_TIMEOUT_S = 30.0  # an operator command's answer: its output acknowledged by Kafka, or an error


class DeployFailed(RuntimeError):
    """A deploy that was rolled back: the previous plan runs again."""

    def __init__(self, reason: str, node_id: str | None = None, flow_id: str | None = None) -> None:
        super().__init__(reason)
        self.node_id, self.flow_id = node_id, flow_id


@dataclass
class DeployReport:
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class Gateway:
    """Runs one execution plan per flow. Processors are tasks here; sources and sinks are worker processes."""

    def __init__(
        self,
        kafka: KafkaAccess,
        registry: SchemaRegistry,
        node_types: NodeTypes,
        state_dir: Path,
        registry_url: str | None = None,
        policy: RestartPolicy | None = None,
        kafka_health: Any = None,
        registry_token_file: Path | None = None,
        registry_ca_file: Path | None = None,
    ) -> None:
        self.metrics = NodeMetrics()
        self.env = RuntimeEnv(kafka, registry, self.metrics, node_types)
        self.node_types = node_types
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.policy = policy or RestartPolicy()
        token_file = str(registry_token_file) if registry_token_file else None
        ca_file = str(registry_ca_file) if registry_ca_file else None
        if kafka.credentials is not None and kafka.credentials_file is None:
            raise ValueError("the gateway's Kafka login must come from a file: its workers are given the file's path")
        kafka_credentials = str(kafka.credentials_file) if kafka.credentials_file else None
        self.worker_settings = WorkerSettings(kafka.bootstrap, registry_url, str(state_dir),
                                              registry_token_file=token_file, registry_ca_file=ca_file,
                                              kafka_credentials_file=kafka_credentials)  # fmt: skip
        self.kafka_health = kafka_health
        self.plans: dict[str, ExecutionPlan] = {}
        # Every flow this gateway started deploying since it started, running or not: what it produced (an alarm
        # raised while its deploy was still starting other nodes, or before an undeploy) is this gateway's own.
        self.flows_here: set[str] = set()
        self.handles: dict[str, dict[str, NodeHandle]] = {}
        self._lock = asyncio.Lock()
        self._topics_ready = False
        self.overflow: OverflowManager | None = None  # set beside an embedded broker, whose disk it watches

    def _handle(self, flow_id: str, plan: NodePlan) -> NodeHandle:
        if plan.kind == Kind.PROCESSOR.value:
            return TaskHandle(plan, flow_id, self.env, self.policy)
        return ProcessHandle(plan, flow_id, self.metrics, self.policy, self.worker_settings)

    async def prepare_topics(self) -> None:
        """The catalogue's topics, once: at boot, so the first deploy does not wait for them."""
        if not self._topics_ready:
            await ensure_topics(self.env.kafka)
            self._topics_ready = True

    async def _ensure_topics(self, plan: ExecutionPlan) -> None:
        await self.prepare_topics()
        known = {spec.name for spec in TOPICS}
        await create_topics(self.env.kafka, [NewTopic(topic, 12, 1) for topic in plan.topics if topic not in known])
        # Reconfigured too: changelogs an older release made were all fsynced per write.
        changelogs = [changelog_spec(plan.flow_id, node, self.node_types) for node in plan.nodes]
        await create_topics(self.env.kafka, changelogs, reconfigure=True)

    async def deploy(self, plan: ExecutionPlan, modified_only: bool = True) -> DeployReport:
        """Start `plan`; with modified_only, nodes whose fingerprint is unchanged keep running.

        Atomic: if any node fails to start, what this deploy started is stopped and the previous
        versions of what it stopped are started again, then DeployFailed is raised.
        """
        async with self._lock:
            self.flows_here.add(plan.flow_id)
            await self._ensure_topics(plan)
            previous = self.plans.get(plan.flow_id)
            if previous is None:  # first deploy here: a flow new to this Kafka skips the shared topics' history
                await start_new_flow_at_end(self.env.kafka, {
                    node.consumer_group: sorted({inp.topic for inp in node.inputs})
                    for node in plan.nodes if node.consumer_group is not None
                })  # fmt: skip
            running = self.handles.setdefault(plan.flow_id, {})
            same = plan.unchanged_since(previous) if modified_only else set()
            keep = [node.node_id for node in plan.nodes if node.node_id in same and node.node_id in running]
            to_stop = [node_id for node_id in running if node_id not in keep]
            report = DeployReport(unchanged=sorted(keep))
            stopped = {node_id: running.pop(node_id) for node_id in to_stop}
            await asyncio.gather(*(handle.stop() for handle in stopped.values()))
            report.stopped = sorted(stopped)
            started: list[NodeHandle] = []
            try:
                # Downstream first: consumers are up before the sources feeding them.
                for node in reversed(plan.nodes):
                    if node.node_id in keep:
                        continue
                    handle = self._handle(plan.flow_id, node)
                    await handle.start()
                    started.append(handle)
            except StartFailed as failure:
                await asyncio.gather(*(handle.stop() for handle in started))
                for node_id, old in stopped.items():
                    restored = self._handle(plan.flow_id, old.plan)
                    try:
                        await restored.start()
                        running[node_id] = restored
                    except StartFailed as again:
                        log.error("rollback could not restart node", extra={"node": node_id, "error": str(again)})
                log.error("deploy rolled back", extra={"flow": plan.flow_id, "node": failure.node_id,
                                                        "error": failure.reason})  # fmt: skip
                raise DeployFailed(f"deploy of flow {plan.flow_id} v{plan.version} rolled back: {failure}",
                                   failure.node_id, plan.flow_id) from failure  # fmt: skip
            for handle in started:
                running[handle.node_id] = handle
            report.started = sorted(handle.node_id for handle in started)
            self.plans[plan.flow_id] = plan
            log.info("deployed", extra={"flow": plan.flow_id, "version": plan.version, "started": report.started,
                                        "unchanged": report.unchanged})  # fmt: skip
            return report

    async def deploy_document(self, source: str | bytes, modified_only: bool = True) -> DeployReport:
        """Load, compile, then deploy. FlowInvalid (every problem, located) before anything is touched."""
        return await self.deploy(await compile_apart(source, self.node_types.includes_plugins), modified_only)

    async def command(self, flow_id: str, node_id: str, name: str, args: Any) -> dict[str, Any]:
        """An operator command (e.g. acknowledge an alarm) run inside the node's loop; the transitions it made."""
        handle = self.handles.get(flow_id, {}).get(node_id)
        if handle is None:
            raise ApiError(404, "not_found", f"flow {flow_id!r} has no running node {node_id!r}")
        runner = handle.runner if isinstance(handle, TaskHandle) else None
        status = handle.current_status()
        if runner is None or status not in (NodeStatus.RUNNING, NodeStatus.DEGRADED):
            raise ApiError(409, "not_running", f"node {node_id} is {status.value}; try again when it is RUNNING")
        if not isinstance(args, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        try:
            result = await asyncio.wait_for(runner.submit(name, args), COMMAND_TIMEOUT_S)
        except CommandInvalid as invalid:
            raise ApiError(422, "invalid_command", str(invalid), problems=invalid.problems) from None
        except ValueError as refusal:
            stale = str(refusal).startswith("stale:")  # acted on an event that is no longer the latest
            raise ApiError(409 if stale else 400, "stale" if stale else "refused", str(refusal)) from None
        except CommandNotDelivered as lost:
            raise ApiError(503, "not_delivered", str(lost)) from None
        except TimeoutError:
            raise ApiError(
                504,
                "not_acknowledged",
                f"node {node_id} has not had Kafka acknowledge the command's "
                f"output within {COMMAND_TIMEOUT_S:g} s (see its status): it may still take effect; look at "
                "what it acts on (e.g. the alarm's state) before sending it again",
            ) from None
        shown = ("alarm_id", "event_id", "state", "changed_by", "message")
        emitted = {port: [{k: r[k] for k in shown if k in r} for r in records] for port, records in result.items()}
        return {"node": node_id, "command": name, "emitted": emitted}

    async def restart_node(self, flow_id: str, node_id: str, user: str) -> dict[str, Any]:
        """An operator's restart: the node stops and starts afresh, its restart budget renewed (a FAILED node runs
        again). Its state and input offsets are kept: it resumes where it stopped, nothing is lost or repeated."""
        async with self._lock:
            old = self.handles.get(flow_id, {}).get(node_id)
            if old is None:
                raise ApiError(404, "not_found", f"flow {flow_id!r} has no running node {node_id!r}")
            before = old.current_status().value
            log.warning("node restart requested", extra={"flow": flow_id, "node": node_id, "user": user,
                                                         "status": before})  # fmt: skip
            await old.stop()
            fresh = self._handle(flow_id, old.plan)
            self.handles[flow_id][node_id] = fresh
            try:
                await fresh.start()
            except StartFailed as failure:
                why = f"node {node_id} was stopped but did not start again: {failure.reason}"
                raise ApiError(409, "restart_failed", f"{why}; see its logs, fix the cause, restart it again") from None
            return {"flow": flow_id, "node": node_id, "was": before, "now": fresh.current_status().value}

    async def undeploy(self, flow_id: str) -> None:
        async with self._lock:
            handles = self.handles.pop(flow_id, {})
            await asyncio.gather(*(handle.stop() for handle in handles.values()))
            self.plans.pop(flow_id, None)

    async def stop(self) -> None:
        for flow_id in list(self.handles):
            await self.undeploy(flow_id)

    def node_health(self) -> list[dict[str, Any]]:
        return [{"flow": flow_id, **handle.health()} for flow_id, handles in self.handles.items()
                for handle in handles.values()]  # fmt: skip

    def exposition(self) -> bytes:
        """Prometheus text of the gateway and of every worker process (their latest published files)."""
        workers = [worker_metrics_path(self.state_dir, flow_id, node_id)
                   for flow_id, handles in self.handles.items()
                   for node_id, handle in handles.items() if isinstance(handle, ProcessHandle)]  # fmt: skip
        return merged_exposition(self.metrics.registry, workers)

    def counters_taken(self) -> dict[str, float]:
        """When each worker's counters in exposition() were taken (`flow/node` -> its file's write time): a
        worker publishes every few seconds, so a rate over two pushes divides by these times, not the pushes'."""
        taken = {}
        for flow_id, handles in self.handles.items():
            for node_id, handle in handles.items():
                if isinstance(handle, ProcessHandle):
                    with contextlib.suppress(FileNotFoundError):
                        taken[f"{flow_id}/{node_id}"] = (
                            worker_metrics_path(self.state_dir, flow_id, node_id).stat().st_mtime
                        )
        return taken

    def health(self) -> dict[str, Any]:
        nodes = self.node_health()
        kafka = self.kafka_health() if self.kafka_health else {"status": "EXTERNAL"}
        statuses = {node["status"] for node in nodes}
        overflow = self.overflow
        if kafka["status"] not in ("HEALTHY", "EXTERNAL") or NodeStatus.FAILED.value in statuses:
            status = "UNHEALTHY"
        elif statuses - {NodeStatus.RUNNING.value} or (overflow and overflow.tier >= Tier.DOWNSAMPLE):
            status = "DEGRADED"
        else:
            status = "HEALTHY"
        return {"status": status, "kafka": kafka, "flows": {f: p.version for f, p in self.plans.items()},
                "nodes": nodes, **({"disk": overflow.report()} if overflow else {})}  # fmt: skip


def health_app(
    gateway: Gateway,
    extra_routes: Iterable[BaseRoute] = (),
    commands: bool = True,
    sync: Callable[[], dict[str, Any]] | None = None,
    *,
    token_dir: Path,
) -> ASGIApp:
    """`/health/live`, `/health/ready`, `/health`, `/metrics`, `/overflow` and (`commands`) node commands.

    A headless `streamforge run` gateway takes commands on its own port; a gateway under a control plane takes
    them only through the control plane's authenticated route (Operator and up), so it passes commands=False.
    `sync`: the state of its link to the control plane, shown in /health.
    Everything but the probes (and /metrics when served on loopback) wants the local token in
    `token_dir`/http.token (local_auth.py), made on first start.
    """

    async def command(request: Request) -> JSONResponse:
        flow, node, name = (request.path_params[k] for k in ("flow", "node", "command"))
        return JSONResponse(await gateway.command(flow, node, name, await json_body(request)))

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def ready(request: Request) -> JSONResponse:
        report = gateway.health()
        ok = report["status"] in ("HEALTHY", "DEGRADED")
        return JSONResponse({"ready": ok, "status": report["status"]}, status_code=200 if ok else 503)

    async def full(request: Request) -> JSONResponse:
        report = gateway.health() | ({"sync": sync()} if sync else {})
        return JSONResponse(report, status_code=200 if report["status"] != "UNHEALTHY" else 503)

    async def metrics(request: Request) -> Response:
        return Response(gateway.exposition(), media_type="text/plain; version=0.0.4")

    async def overflow(request: Request) -> JSONResponse:
        manager = gateway.overflow
        if manager is None:
            raise ApiError(404, "not_found", "this gateway's Kafka is not embedded: its disk is not managed here")
        return JSONResponse({"settings": manager.settings.model_dump(), "now": manager.report(),
                             "dry_run": await manager.dry_run()})  # fmt: skip

    routes: list[BaseRoute] = [
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/health", full),
        Route("/metrics", metrics),
        Route("/overflow", overflow),  # the disk budget: settings, tier, and what each tier would do now
    ]
    if commands:
        routes.append(Route("/api/v1/flows/{flow}/nodes/{node}/commands/{command}", command, methods=["POST"]))
    routes += extra_routes
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    token = ensure_token(token_dir)
    return RequireLocalToken(app, token, token_path(token_dir), metrics_open=is_loopback(http_host()))
