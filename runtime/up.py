"""`streamforge up`: the control plane, and one local gateway process that registers and syncs from it exactly as
a remote gateway would (the spec's Pattern B, with no in-process shortcut)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streamforge.engine.flow import load_flow
from streamforge.engine.node_types import load_node_types
from streamforge.engine.secrets import externalize
from streamforge.runtime.control_plane.app import ControlPlane, serving
from streamforge.runtime.control_plane.auth import ensure_admin
from streamforge.runtime.control_plane.service import DEPLOY_TIMEOUT_S
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.control_plane.tls import TlsFiles
from streamforge.runtime.demo_devices import demo_devices
from streamforge.runtime.files import write_durably
from streamforge.runtime.gateway.run import stop_on_signals
from streamforge.runtime.http import http_host
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.logs import configure_logging
from streamforge.runtime.process import die_with_parent, terminate

log = logging.getLogger("streamforge.up")
LOCAL_LABELS = {"gateway": "local"}


def seed_demo(store: Store, demo: Path) -> str | None:
    """On first start only, store the demo flow and mark it to be deployed; returns its id."""
    if store.list_flows() or not demo.exists():
        return None
    document = load_flow(demo.read_bytes())
    keep = functools.partial(store.put_secret, user="streamforge")
    saved = store.save_flow(
        externalize(document.model_dump(by_alias=True), load_node_types(), keep), None, "streamforge"
    )
    store.mark_deployed(saved.flow_id, saved.version)
    return saved.flow_id


@dataclass
class LocalGateway:
    """The `streamforge gateway` child of `up`: its announced event, and its log lines relayed as ours."""

    process: asyncio.subprocess.Process
    event: dict[str, Any]
    relay: asyncio.Task[None]


@contextlib.asynccontextmanager
async def local_gateway(url: str, data_dir: Path, enrolment_key: str, existing_kafka: KafkaAccess | None,
                        registry_url: str | None, ca_file: Path | None = None,
                        ) -> AsyncIterator[LocalGateway]:  # fmt: skip
    """Start the local gateway, pre-approved by `enrolment_key`, and stop it (SIGTERM, cleanly) on exit. It dies
    with `up` if `up` is killed. `ca_file`: the CA it pins, when the control plane serves HTTPS."""
    args = [sys.executable, "-m", "streamforge.runtime.cli", "gateway", "--control-plane", url, "--name", "local",
            "--data-dir", str(data_dir), "--label", "gateway=local"]  # fmt: skip
    args += existing_kafka.cli_arguments() if existing_kafka is not None else []
    args += ["--registry", registry_url] if registry_url else []
    args += ["--ca", str(ca_file)] if ca_file else []
    key_file = data_dir / "enrolment.key"  # 0600, deleted by the gateway once read: in no environment or argv
    write_durably(key_file, enrolment_key.encode())
    args += ["--enrolment-key-file", str(key_file)]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    relay = asyncio.create_task(_relay_logs(process.stderr), name="gateway-logs")
    try:
        event: dict[str, Any] | None = None
        while event is None:
            line = await asyncio.wait_for(process.stdout.readline(), 180)
            if not line:
                raise RuntimeError(f"the local gateway exited during start-up (code {await process.wait()}); "
                                   "its log lines are above")  # fmt: skip
            with contextlib.suppress(ValueError):
                candidate = json.loads(line)
                event = candidate if candidate.get("event") == "gateway" else None
        yield LocalGateway(process, event, relay)
    finally:
        await terminate(process, 90)
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay


async def _relay_logs(stream: asyncio.StreamReader) -> None:
    """The gateway's JSON log lines, to our stderr as they are (its ring on disk keeps them too)."""
    async for line in stream:
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()


async def resume(control_plane: ControlPlane, gateway_id: str) -> list[str]:
    """Flows marked deployed but assigned nowhere (a first start, or a data dir from before gateways were
    separate processes) are assigned to the local gateway; then wait until it runs every assigned flow."""
    fleet = control_plane.fleet
    for flow in control_plane.store.list_flows():
        if flow["deployed_version"] is not None and not fleet.assignments(flow["id"]):
            fleet.assign(flow["id"], flow["deployed_version"], "streamforge", gateway_id=gateway_id)
    wanted = fleet.desired_versions(gateway_id)
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        _, report = fleet.report(gateway_id)
        running = (report or {}).get("flows", {})
        failed = ((report or {}).get("last_apply") or {}).get("result") == "NOT_APPLIED"
        if all(running.get(f) == v for f, v in wanted.items()) or failed:
            return sorted(f for f, v in wanted.items() if running.get(f) == v)
        await asyncio.sleep(0.2)
    return []


async def up(
    data_dir: Path,
    existing_kafka: KafkaAccess | None,
    port: int,
    demo: Path | None,
    say: Callable[[str], None],
    registry_url: str | None = None,
    devices: bool = False,
    host: str | None = None,
    tls: TlsFiles | None = None,
    trusted_proxies: Sequence[str] = (),
) -> None:
    """Run until SIGINT/SIGTERM; the next `up` on the same data dir resumes with the same data.

    `devices`: also run the simulated Modbus PLC and OPC UA server the demo flow reads (runtime/demo_devices.py).
    `host`: where the control plane serves (default http_host()); `tls`: HTTPS with these files (a container's
    control plane, served off loopback). The local gateway reaches it on loopback either way.
    `trusted_proxies`: CIDRs whose X-Forwarded-For is believed (default none).
    """
    stop = stop_on_signals()
    node_types = load_node_types()
    control_plane = ControlPlane.open(data_dir, node_types)
    store, fleet = control_plane.store, control_plane.fleet
    password = ensure_admin(store)
    if password is not None:
        say(f"first start: created user `admin` with password {password} (shown once; stored only hashed)")
    seeded = seed_demo(store, demo) if demo else None
    configure_logging("control-plane", log_dir=control_plane.log_dir)  # into the ring /api/v1/logs reads
    async with (
        demo_devices() if devices else contextlib.nullcontext() as simulated,
        serving(
            control_plane,
            host or http_host(),
            port,
            (tls.cert, tls.key) if tls else None,
            trusted_proxies=trusted_proxies,
        ) as url,
    ):
        if simulated is not None:
            say(json.dumps({"event": "demo_devices", "modbus": simulated.modbus, "opcua": simulated.opcua}))
        key = fleet.create_enrolment_key(LOCAL_LABELS, "streamforge up", ttl_s=600)
        local_url = f"{urlsplit(url).scheme}://127.0.0.1:{urlsplit(url).port}"
        ca_file = (tls.ca or tls.cert) if tls else None
        async with local_gateway(local_url, data_dir, key, existing_kafka, registry_url, ca_file) as gateway:
            gateway_id = await fleet.approved(gateway.event["instance_id"])
            started = await resume(control_plane, gateway_id)
            pinned = {"tls_fingerprint": tls.fingerprint(), "tls_ca": str(ca_file)} if tls else {}
            say(json.dumps({"event": "up", "editor": f"{url}/", "api": f"{url}/api/v1", "mcp": f"{url}/mcp",
                            "health": f"{url}/health", "metrics": f"{url}/metrics", "registry": f"{url}/schemas",
                            "kafka": gateway.event["kafka"], "gateway": gateway_id,
                            "gateway_health": gateway.event["health"], "gateway_token": gateway.event["token_file"],
                            "flows": started, "seeded": seeded, "url": url,
                            **pinned}))  # fmt: skip
            await stop.wait()
    say(json.dumps({"event": "stopped"}))
