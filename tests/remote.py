"""A standalone `streamforge control-plane` and gateways on simulated network hosts (tests/netns.py), each gateway
with the same local ports and its own embedded Kafka: what remote-mode tests (API, MCP, editor) start from."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from streamforge.runtime.kafka.broker import free_port
from tests.eventually import eventually
from tests.netns import NetHost, NetHostFactory, on_host
from tests.stack import ServiceProcess

POLL_S = 2.0  # OFFLINE after 3 missed polls: 6 s
GATEWAY_PORT = 18080  # every gateway serves health and metrics on the same local port, each on its own host


@dataclass
class Remote:
    control_plane: ServiceProcess
    gateways: dict[str, ServiceProcess]
    hosts: dict[str, NetHost]
    ids: dict[str, str]  # gateway name -> id
    admin: httpx.AsyncClient
    token: str
    password: str  # admin's
    ca: Path
    url: str  # the control plane, as the test's own namespace reaches it

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@contextlib.asynccontextmanager
async def remote_fleet(net_hosts: NetHostFactory, root: Path,
                       names: tuple[str, ...] = ("plant_a", "plant_b")) -> AsyncIterator[Remote]:  # fmt: skip
    """The control plane on the root namespace (HTTPS with its own CA, served on 0.0.0.0: each host reaches it at
    its link's root side) and one approved gateway per name, each on a host of its own, labelled site=north."""
    hosts = dict(zip(names, await net_hosts(len(names)), strict=True))
    port = free_port()
    tls_names = [arg for host in hosts.values() for arg in ("--tls-name", host.peer_address)]
    control_plane = ServiceProcess(["control-plane", "--data-dir", str(root / "cp"), "--host", "0.0.0.0",
                                    "--port", str(port), "--poll-interval", str(POLL_S), *tls_names],
                                   root / "cp.stderr", "control_plane")  # fmt: skip
    await control_plane.start()
    password = next(line for line in control_plane.lines if "password " in line).split("password ")[1].split()[0]
    ca = Path(control_plane.event["tls_ca"])
    gateways: dict[str, ServiceProcess] = {}
    try:
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{port}/api/v1", timeout=150,
                                     verify=ssl.create_default_context(cafile=str(ca))) as admin:  # fmt: skip
            login = await admin.post("/auth/login", json={"username": "admin", "password": password})
            token = login.json()["token"]
            admin.headers["Authorization"] = f"Bearer {token}"
            for name, host in hosts.items():
                key = (await admin.post("/enrolment-keys", json={"labels": {"site": "north"}})).json()
                args = ["gateway", "--control-plane", f"https://{host.peer_address}:{port}", "--ca", str(ca),
                        "--name", name, "--data-dir", str(root / name), "--port", str(GATEWAY_PORT),
                        "--poll-interval", str(POLL_S), "--enrolment-key", key["enrolment_key"]]  # fmt: skip
                gateways[name] = on_host(host, ServiceProcess(args, root / f"{name}.stderr", "gateway"))
            await asyncio.gather(*(g.start() for g in gateways.values()))

            async def registered() -> dict[str, str] | None:
                rows = (await admin.get("/gateways")).json()
                ids = {row["name"]: row["id"] for row in rows if row["status"] == "approved"}
                return ids if len(ids) == len(hosts) else None

            ids = await eventually(registered, 60, what="both gateways registered over their links")
            yield Remote(control_plane, gateways, hosts, ids, admin, token, password, ca, f"https://127.0.0.1:{port}")
    finally:
        await asyncio.gather(*(g.stop() for g in gateways.values()), return_exceptions=True)
        await control_plane.stop()
