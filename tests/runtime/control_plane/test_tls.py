"""Gateway -> control plane over TLS: a control plane with a CA of its own, a gateway that pins it (its flow's
schemas registered with the control plane over the same pinned TLS), one that pins another CA and is refused, and
plain HTTP refused to anything but loopback."""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import httpx
import pytest

from streamforge.engine.schema_registry import HttpSchemaRegistry, SchemaRegistryUnavailable
from streamforge.engine.serde import Decoder
from streamforge.runtime.control_plane.tls import self_signed
from streamforge.runtime.gateway.agent import InsecureControlPlane, check_transport
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.stack import ServiceProcess


def test_plain_http_only_to_loopback() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://cp.plant.example"):
        check_transport(url)
    for url in ("http://10.1.2.3:8080", "http://cp.plant.example", "ftp://cp.plant.example"):
        with pytest.raises(InsecureControlPlane, match=r"TLS|https"):
            check_transport(url)


def test_the_generated_ca_is_made_once_and_its_keys_are_private(tmp_path: Path) -> None:
    first = self_signed(tmp_path / "tls", ["cp.plant.example"])
    again = self_signed(tmp_path / "tls", [])
    assert first == again and first.fingerprint() == again.fingerprint()
    assert len(first.fingerprint().split(":")) == 32
    for key in (tmp_path / "tls" / "server-key.pem", tmp_path / "tls" / "ca-key.pem"):
        assert key.stat().st_mode & 0o777 == 0o600


def tls_gateway(root: Path, name: str, url: str, key: str, ca: Path, bootstrap: KafkaAccess) -> ServiceProcess:
    """A gateway pinning `ca`; its schema registry is the control plane's (no --registry)."""
    return ServiceProcess(["gateway", "--control-plane", url, "--name", name, "--data-dir", str(root / name),
                           *bootstrap.cli_arguments(), "--enrolment-key", key, "--ca", str(ca), "--poll-interval", "2"],
                          root / f"{name}.stderr", "gateway")  # fmt: skip


def pinned_flow(flow_id: str) -> dict[str, object]:
    """A simulator (a worker process) into a validator (the gateway's): each registers its schemas."""
    signal = {"asset_id": "kiln_1", "parameter": "temperature", "offset": 900, "amplitude": 5}
    return {"format": "streamforge.flow/v1", "id": flow_id, "label": "over TLS", "version": 1,
            "nodes": [{"id": "sim", "type": "simulator", "config": {"signals": [signal], "rate_hz": 20}},
                      {"id": "check", "type": "validator", "config": {}}],
            "edges": [{"from": "sim:out", "to": "check:in"}]}  # fmt: skip


async def clean_readings(bootstrap: KafkaAccess, registry: HttpSchemaRegistry, flow_id: str) -> int:
    """How many of the flow's validated readings are in telemetry.clean, read within a few seconds."""
    consumer = BatchConsumer(bootstrap, None, ["telemetry.clean"], Decoder(registry), upstream=[(flow_id, "check")])
    async with consumer:
        count, deadline = 0, time.monotonic() + 5
        while time.monotonic() < deadline and not count:
            count += len((await consumer.next_batch(timeout_ms=500)).records)
    return count


async def test_a_gateway_pinning_the_control_planes_ca_syncs_and_another_ca_is_refused(
    tmp_path: Path, kafka: EmbeddedKafka
) -> None:
    port = free_port()
    control_plane = ServiceProcess(["control-plane", "--data-dir", str(tmp_path / "cp"), "--port", str(port),
                                    "--tls", "auto"], tmp_path / "cp.stderr", "control_plane")  # fmt: skip
    event = await control_plane.start()
    try:
        url = event["url"]
        assert url.startswith("https://") and len(event["tls_fingerprint"].split(":")) == 32
        ca = Path(event["tls_ca"])
        password = next(line for line in control_plane.lines if "password " in line).split("password ")[1].split()[0]
        trusted = ssl.create_default_context(cafile=str(ca))
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", verify=trusted) as admin:
            login = await admin.post("/auth/login", json={"username": "admin", "password": password})
            admin.headers["Authorization"] = f"Bearer {login.json()['token']}"
            key = (await admin.post("/enrolment-keys", json={})).json()["enrolment_key"]
            other_ca = self_signed(tmp_path / "other", []).ca
            assert other_ca is not None
            gateways = {name: tls_gateway(tmp_path, name, url, key, pinned, kafka.access)
                        for name, pinned in (("pinned", ca), ("stranger", other_ca))}  # fmt: skip
            health = {name: (await gateway.start())["health"] for name, gateway in gateways.items()}
            try:
                async with httpx.AsyncClient() as http:
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        sync = {n: (await http.get(h, headers=gateways[n].local_token())).json()["sync"]
                                for n, h in health.items()}  # fmt: skip
                        if sync["pinned"]["approval"] == "approved" and sync["stranger"]["last_error"]:
                            break
                        await asyncio.sleep(0.3)
                assert sync["pinned"]["approval"] == "approved" and sync["pinned"]["reachable"] is True
                assert "CERTIFICATE_VERIFY_FAILED" in sync["stranger"]["last_error"]
                assert sync["stranger"]["approval"] == "unregistered"
                names = {g["name"] for g in (await admin.get("/gateways")).json()}
                assert names == {"pinned"}  # the one that could not check the certificate sent nothing

                # Its flow runs: the worker and the gateway register their ports' schemas with the control plane's
                # registry, trusting its CA as the gateway does (the system's CAs would refuse its certificate).
                flow_id = f"tls_{time.time_ns()}"
                saved = await admin.post("/flows", json=pinned_flow(flow_id))
                assert saved.status_code == 201, saved.text
                version = saved.json()["version"]
                gateway_id = (await admin.get("/gateways")).json()[0]["id"]
                assigned = await admin.post("/assignments", json={"flow": flow_id, "version": version,
                                                                 "gateway": gateway_id})  # fmt: skip
                assert assigned.status_code == 201, assigned.text
                async with httpx.AsyncClient() as http:
                    deadline, flows = time.monotonic() + 60, dict[str, int]()
                    while time.monotonic() < deadline and flows.get(flow_id) != version:
                        answer = await http.get(health["pinned"], headers=gateways["pinned"].local_token())
                        flows = answer.json()["flows"]
                        await asyncio.sleep(0.3)
                assert flows.get(flow_id) == version, (tmp_path / "pinned.stderr").read_text()[-3000:]
                token = admin.headers["Authorization"].split()[1]
                reader = HttpSchemaRegistry(f"{url}/schemas", credentials=lambda: token, ca_file=ca)
                assert await clean_readings(kafka.access, reader, flow_id) > 0
                unpinned = HttpSchemaRegistry(f"{url}/schemas", credentials=lambda: token, timeout_s=2)
                with pytest.raises(SchemaRegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                    await unpinned.schema_by_id(1)
            finally:
                await asyncio.gather(*(g.stop() for g in gateways.values()))
    finally:
        await control_plane.stop()


async def test_a_short_lived_gateway_token_is_renewed_before_it_expires(
    tmp_path: Path, kafka: EmbeddedKafka, registry_url: str
) -> None:
    lifetime_s = 8.0  # renewed in its last quarter: about 6 s after it was issued
    control_plane = ServiceProcess(["control-plane", "--data-dir", str(tmp_path / "cp"), "--port", str(free_port()),
                                    "--poll-interval", "1", "--gateway-token-days", str(lifetime_s / 86400)],
                                   tmp_path / "cp.stderr", "control_plane")  # fmt: skip
    event = await control_plane.start()
    try:
        password = next(line for line in control_plane.lines if "password " in line).split("password ")[1].split()[0]
        async with httpx.AsyncClient(base_url=event["api"]) as admin:
            login = await admin.post("/auth/login", json={"username": "admin", "password": password})
            admin.headers["Authorization"] = f"Bearer {login.json()['token']}"
            key = (await admin.post("/enrolment-keys", json={})).json()["enrolment_key"]
        gateway = ServiceProcess(["gateway", "--control-plane", event["url"], "--name", "short", "--data-dir",
                                  str(tmp_path / "gw"), *kafka.access.cli_arguments(), "--registry", registry_url,
                                  "--enrolment-key", key, "--poll-interval", "1"],
                                 tmp_path / "gw.stderr", "gateway")  # fmt: skip
        health = (await gateway.start())["health"]
        try:
            async with httpx.AsyncClient() as http:
                deadline, sync = time.monotonic() + 60, {}
                while time.monotonic() < deadline:
                    sync = (await http.get(health, headers=gateway.local_token())).json()["sync"]
                    if sync["renewals"] >= 2:
                        break
                    await asyncio.sleep(0.5)
            # Renewed twice, so past the first token's expiry, and never refused meanwhile.
            assert sync["renewals"] >= 2 and sync["approval"] == "approved" and sync["last_error"] is None
            assert "control plane refused the gateway" not in (tmp_path / "gw.stderr").read_text()  # no 401 ever
        finally:
            await gateway.stop()
    finally:
        await control_plane.stop()
