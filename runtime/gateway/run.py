"""`streamforge run FLOW.json`: embedded Kafka, local schema registry, a gateway running the flow, health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from streamforge.engine.node_types import load_node_types
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache, bearer_from_file
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.gateway.gateway import Gateway, health_app
from streamforge.runtime.gateway.local_auth import token_path
from streamforge.runtime.gateway.overflow import load_settings, watching_disk
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.supervisor import kafka_or_existing


@contextlib.asynccontextmanager
async def registry_or_existing(data_dir: Path, url: str | None) -> AsyncIterator[str]:
    """The control plane's registry when `url` is given, else a local one on data_dir/registry.sqlite."""
    if url:
        yield url
        return
    async with serve_app(schema_registry_app(SchemaStore(data_dir / "registry.sqlite"))) as local:
        yield local


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: Ctrl-C and service managers stop the gateway cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


@contextlib.asynccontextmanager
async def gateway_stack(
    data_dir: Path,
    existing_kafka: KafkaAccess | None,
    registry_url: str | None,
    registry_token_file: Path | None = None,
    registry_ca_file: Path | None = None,
) -> AsyncIterator[Gateway]:
    """Schema registry, Kafka (embedded unless `existing_kafka`) and a gateway; all stopped cleanly on exit.

    `registry_token_file`: the gateway's credentials file, whose token the registry wants (the control plane's).
    `registry_ca_file`: the CA that signs the registry's certificate, when not one the system trusts (the control
    plane's own, which the gateway pins).
    """
    state_dir = data_dir / "gateway"
    async with (
        registry_or_existing(data_dir, registry_url) as schemas_url,
        kafka_or_existing(data_dir, existing_kafka) as kafka,
    ):
        access = kafka.access if kafka is not None else existing_kafka
        assert access is not None
        credentials = bearer_from_file(registry_token_file) if registry_token_file else None
        remote = HttpSchemaRegistry(schemas_url, credentials=credentials, ca_file=registry_ca_file)
        registry = CachedSchemaRegistry(remote, SchemaCache(state_dir / "schema-cache" / "gateway.json"))
        gateway = Gateway(access, registry, load_node_types(deferred=True), state_dir, schemas_url,
                          kafka_health=kafka.health if kafka else None,
                          registry_token_file=registry_token_file, registry_ca_file=registry_ca_file)  # fmt: skip
        try:
            # Before anything looks at them: the overflow manager's first turn read the offsets of catalogue topics
            # that did not exist yet on a first start, and aiokafka logged a false ERROR for each.
            await gateway.prepare_topics()
            if kafka is None:  # another's cluster: its disk is not this gateway's to manage
                yield gateway
            else:
                settings = load_settings(data_dir)
                async with watching_disk(access, kafka.broker.log_dir, state_dir, settings,
                                         gateway.metrics.registry, registry) as gateway.overflow:  # fmt: skip
                    yield gateway
        finally:
            with contextlib.suppress(Exception):
                await gateway.stop()
            await remote.aclose()


async def run_plan(
    plan: ExecutionPlan,
    data_dir: Path,
    existing_kafka: KafkaAccess | None,
    port: int,
    say: Callable[[str], None],
    registry_url: str | None = None,
) -> None:
    """Run until SIGINT/SIGTERM, then stop every node and the broker cleanly."""
    stop = stop_on_signals()
    async with (
        gateway_stack(data_dir, existing_kafka, registry_url) as gateway,
        serve_app(health_app(gateway, token_dir=data_dir), port=port) as health_url,
    ):
        report = await gateway.deploy(plan)
        say(json.dumps({"event": "running", "flow": plan.flow_id, "version": plan.version,
                        "kafka": gateway.env.kafka.bootstrap, "health": f"{health_url}/health",
                        "metrics": f"{health_url}/metrics", "token_file": str(token_path(data_dir)),
                        "nodes": report.started}))  # fmt: skip
        await stop.wait()
    say(json.dumps({"event": "stopped", "flow": plan.flow_id}))
