"""Worker process entry point: runs one source or sink node; reports its status as JSON lines on stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from streamforge.engine.node_types import node_types_for
from streamforge.engine.plan import node_plan_from_dict
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache, bearer_from_file
from streamforge.runtime.gateway.metrics import METRICS_INTERVAL_S, NodeMetrics, worker_metrics_path, write_atomically
from streamforge.runtime.gateway.overflow import producers_blocked
from streamforge.runtime.gateway.runners import NodeStatus, RuntimeEnv, runner_for
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.logs import configure_logging
from streamforge.runtime.process import return_freed_memory


def _say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve(spec: dict[str, Any]) -> None:
    plan = node_plan_from_dict(spec.pop("plan"))  # not kept here: the runner keeps what it needs of it
    settings = spec["settings"]
    token_file = settings.get("registry_token_file")
    credentials = bearer_from_file(token_file) if token_file else None
    remote = (
        HttpSchemaRegistry(settings["registry_url"], credentials=credentials, ca_file=settings.get("registry_ca_file"))
        if settings.get("registry_url")
        else None
    )
    state_dir = Path(settings["state_dir"])
    cache = SchemaCache(state_dir / "schema-cache" / f"{spec['flow_id']}.{plan.node_id}.json")
    metrics = NodeMetrics()
    kafka = KafkaAccess.load(settings["bootstrap"], settings.get("kafka_credentials_file"))
    env = RuntimeEnv(kafka, CachedSchemaRegistry(remote, cache), metrics, node_types_for(plan.type),
                     producers_blocked=lambda: producers_blocked(state_dir))  # fmt: skip
    metrics_file = worker_metrics_path(state_dir, spec["flow_id"], plan.node_id)
    runner = runner_for(plan, spec["flow_id"], env)
    del plan
    run = asyncio.create_task(runner.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopping = asyncio.create_task(stop.wait())
    reported: tuple[NodeStatus, bool, str | None] | None = None
    detail: dict[str, Any] = {}
    next_metrics = next_detail = 0.0
    try:
        while not run.done() and not stop.is_set():
            # `ready` travels on its own: a node that degrades right after starting (its device is away) has
            # started, though RUNNING may never be sampled here.
            if (runner.status, runner.ready.is_set(), runner.last_error) != reported:  # a new problem is news too
                reported = (runner.status, runner.ready.is_set(), runner.last_error)
                _say({"status": runner.status.value, "error": runner.last_error, "ready": runner.ready.is_set()})
            if time.monotonic() >= next_detail:  # lag and circuit, at most once a second, when they change
                next_detail, current = time.monotonic() + 1.0, runner.detail()
                if current != detail:
                    detail = current
                    _say({"detail": detail})
            if time.monotonic() >= next_metrics:  # the gateway's /metrics serves this file with its own
                next_metrics = time.monotonic() + METRICS_INTERVAL_S
                write_atomically(metrics_file, generate_latest(metrics.registry))
            await asyncio.wait({run, stopping}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # a failure exits non-zero with the traceback on stderr
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        stopping.cancel()
        metrics_file.unlink(missing_ok=True)
        if remote is not None:
            await remote.aclose()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    node_id = spec["plan"]["node_id"]
    configure_logging(f"worker:{node_id}", file_stem=f"worker-{spec['flow_id']}.{node_id}")
    return_freed_memory()
    asyncio.run(serve(spec))


if __name__ == "__main__":
    main()
