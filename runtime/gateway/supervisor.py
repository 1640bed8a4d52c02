"""Node supervision: each node runs as an asyncio task or in a worker process, restarted by one policy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamforge.engine.plan import NodePlan
from streamforge.engine.retry import Backoff, RestartWindow
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners import NodeRunner, NodeStatus, RuntimeEnv, runner_for
from streamforge.runtime.process import die_with_parent, terminate

log = logging.getLogger("streamforge.runtime")


class StartFailed(RuntimeError):
    """A node did not reach RUNNING; the deploy that started it is rolled back."""

    def __init__(self, node_id: str, reason: str) -> None:
        super().__init__(f"node {node_id} failed to start: {reason}")
        self.node_id, self.reason = node_id, reason


@dataclass(frozen=True)
class RestartPolicy:
    """Spec: auto-restart at most 5 times in 5 minutes, then FAILED (needs a person)."""

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0


class NodeHandle(ABC):
    """Start, supervise and stop one node; `status` and `health()` tell the truth about it."""

    def __init__(self, plan: NodePlan, flow_id: str, metrics: NodeMetrics, policy: RestartPolicy) -> None:
        self.plan, self.flow_id, self.metrics, self.policy = plan, flow_id, metrics, policy
        self.status = NodeStatus.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        self._window = RestartWindow(policy.max_restarts, policy.window_s)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def node_id(self) -> str:
        return self.plan.node_id

    @abstractmethod
    async def _attempt(self) -> None:
        """Run the node once; set self._ready when it is RUNNING; raise when it fails."""

    @abstractmethod
    def _live_status(self) -> NodeStatus:
        """RUNNING or DEGRADED while an attempt runs."""

    async def start(self, timeout_s: float = 60.0) -> None:
        """Start and wait for RUNNING; StartFailed if the first attempt fails or times out."""
        self.status = NodeStatus.STARTING
        self._task = asyncio.create_task(self._supervise(), name=f"node-{self.flow_id}-{self.node_id}")
        ready = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            reason = self.last_error or f"not running after {timeout_s:.0f}s"
            await self.stop()
            raise StartFailed(self.node_id, reason)

    async def _supervise(self) -> None:
        backoff = Backoff(self.policy.backoff_s, self.policy.max_backoff_s)
        while True:
            try:
                await self._attempt()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the node: the restart policy decides
                self.last_error = f"{type(exc).__name__}: {exc}"
            if not self._ready.is_set():
                self.status = NodeStatus.FAILED
                log.error("node failed to start", extra={"flow": self.flow_id, "node": self.node_id,
                                                          "error": self.last_error})  # fmt: skip
                return
            if not self._window.allows(time.monotonic()):
                self.status = NodeStatus.FAILED
                log.error("node FAILED: restart limit reached", extra={"flow": self.flow_id, "node": self.node_id,
                                                                        "error": self.last_error})  # fmt: skip
                return
            self.restarts += 1
            self.metrics.restarts.labels(flow=self.flow_id, node=self.node_id).inc()
            self.status = NodeStatus.DEGRADED
            where = {"flow": self.flow_id, "node": self.node_id}
            log.warning(
                "node crashed; restarting", extra={**where, "error": self.last_error, "restarts": self.restarts}
            )
            await asyncio.sleep(backoff.next_delay())

    def current_status(self) -> NodeStatus:
        if self.status in (NodeStatus.FAILED, NodeStatus.STOPPED) or self._task is None or self._task.done():
            return self.status if self.status is not NodeStatus.STARTING else NodeStatus.FAILED
        if not self._ready.is_set():
            return NodeStatus.STARTING
        live = self._live_status()
        return NodeStatus.DEGRADED if self.status is NodeStatus.DEGRADED and live is NodeStatus.STARTING else live

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.status = NodeStatus.STOPPED

    def health(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "type": self.plan.type,
            "process": self.plan.process,
            "status": self.current_status().value,
            "restarts": self.restarts,
            "last_error": self._live_error() or self.last_error,
            **self.detail(),
        }

    def detail(self) -> dict[str, Any]:
        """The running node's lag and circuit state, as its runner last said."""
        return {}

    def _live_error(self) -> str | None:
        """The running node's current problem, where the handle sees its runner directly."""
        return None


class TaskHandle(NodeHandle):
    """A processor: an asyncio task in the gateway process."""

    def __init__(self, plan: NodePlan, flow_id: str, env: RuntimeEnv, policy: RestartPolicy) -> None:
        super().__init__(plan, flow_id, env.metrics, policy)
        self.env = env
        self._runner: NodeRunner | None = None

    async def _attempt(self) -> None:
        self._runner = runner_for(self.plan, self.flow_id, self.env)
        waiter = asyncio.create_task(self._runner.ready.wait())
        try:
            run = asyncio.create_task(self._runner.run())
            await asyncio.wait({waiter, run}, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                self.status = NodeStatus.RUNNING
                self._ready.set()
            await run
        finally:
            waiter.cancel()

    def _live_status(self) -> NodeStatus:
        return self._runner.status if self._runner is not None else NodeStatus.STARTING

    def _live_error(self) -> str | None:
        runner = self._runner
        return runner.last_error if runner is not None and runner.status is NodeStatus.DEGRADED else None

    @property
    def runner(self) -> NodeRunner | None:
        return self._runner

    def detail(self) -> dict[str, Any]:
        return self._runner.detail() if self._runner is not None else {}


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs besides its node plan."""

    bootstrap: str
    registry_url: str | None
    state_dir: str
    memory_limit_mb: int = 1024
    metrics_dir: str | None = None
    registry_token_file: str | None = None  # the gateway's credentials, when the registry wants them
    registry_ca_file: str | None = None  # the CA the registry's certificate is signed by, when not the system's
    kafka_credentials_file: str | None = None  # the broker's 0600 login file: a path, never the password itself


class ProcessHandle(NodeHandle):
    """A source or sink: its own worker process (the bulkhead), with a memory limit."""

    def __init__(
        self, plan: NodePlan, flow_id: str, metrics: NodeMetrics, policy: RestartPolicy, settings: WorkerSettings
    ) -> None:
        super().__init__(plan, flow_id, metrics, policy)
        self.settings = settings
        self.pid: int | None = None
        self._arm_death_signal = die_with_parent()  # SIGKILL: a worker never outlives its gateway
        self._worker_status = NodeStatus.STARTING
        self._detail: dict[str, Any] = {}

    def _limits(self) -> None:
        self._arm_death_signal()
        limit = self.settings.memory_limit_mb * 1024 * 1024
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    async def _attempt(self) -> None:
        self._worker_status = NodeStatus.STARTING
        env = dict(os.environ)
        if self.settings.metrics_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.settings.metrics_dir
        stderr_path = Path(self.settings.state_dir) / f"{self.flow_id}.{self.node_id}.stderr"
        with stderr_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "streamforge.runtime.gateway.worker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                preexec_fn=self._limits, env=env,
                # Its own session, as the broker's: a terminal's Ctrl-C reaches the whole foreground group, and a
                # worker interrupted with it died mid-batch and was "restarted" while the gateway stopped. The
                # gateway stops its workers itself (SIGTERM, a clean drain); the parent-death signal still holds.
                start_new_session=True,
            )  # fmt: skip
        self.pid = process.pid
        assert process.stdin is not None and process.stdout is not None
        # Not a local: the coroutine lives as long as the worker, and a 10,000-signal plan is megabytes.
        process.stdin.write(json.dumps({"flow_id": self.flow_id, "plan": self.plan.to_wire(),
                                        "settings": asdict(self.settings)}).encode() + b"\n")  # fmt: skip
        await process.stdin.drain()
        process.stdin.close()
        try:
            async for line in process.stdout:
                event = json.loads(line)
                if event.get("status"):
                    self._worker_status = NodeStatus(event["status"])
                    self.last_error = event.get("error") or self.last_error
                if isinstance(event.get("detail"), dict):
                    self._detail = event["detail"]
                if event.get("ready") and not self._ready.is_set():
                    self.status = NodeStatus.RUNNING
                    self._ready.set()
            code = await process.wait()
        except asyncio.CancelledError:
            await terminate(process)
            raise
        tail = stderr_path.read_bytes()[-1500:].decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"worker exited with code {code}" + (f": {tail[-1]}" if tail else ""))

    def _live_status(self) -> NodeStatus:
        return self._worker_status

    def detail(self) -> dict[str, Any]:
        return self._detail

    def health(self) -> dict[str, Any]:
        return {**super().health(), "pid": self.pid}
