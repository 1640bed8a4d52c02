"""Worker process entry point: runs one source or sink node; reports its status as JSON lines on stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

from streamforge.engine.compiler import node_plan_from_dict
from streamforge.engine.registry import load_registry
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners import NodeRunner, RuntimeEnv
from streamforge.runtime.logs import configure_logging


def _say(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve(spec: dict[str, Any]) -> None:
    plan = node_plan_from_dict(spec["plan"])
    settings = spec["settings"]
    remote = HttpSchemaRegistry(settings["registry_url"]) if settings.get("registry_url") else None
    cache = SchemaCache(Path(settings["state_dir"]) / "schema-cache" / f"{spec['flow_id']}.{plan.node_id}.json")
    env = RuntimeEnv(settings["bootstrap"], CachedSchemaRegistry(remote, cache), NodeMetrics(), load_registry())
    runner = NodeRunner(plan, spec["flow_id"], env)
    run = asyncio.create_task(runner.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopping = asyncio.create_task(stop.wait())
    reported = None
    try:
        while not run.done() and not stop.is_set():
            if runner.status != reported:
                reported = runner.status
                _say({"status": reported.value, "error": runner.last_error})
            await asyncio.wait({run, stopping}, timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()  # a failure exits non-zero with the traceback on stderr
    finally:
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run
        stopping.cancel()
        if remote is not None:
            await remote.aclose()


def main() -> None:
    spec = json.loads(sys.stdin.readline())
    configure_logging(f"worker:{spec['plan']['node_id']}")
    asyncio.run(serve(spec))


if __name__ == "__main__":
    main()
