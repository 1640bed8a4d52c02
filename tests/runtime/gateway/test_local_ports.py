"""The gateway's local ports: its embedded Kafka wants the gateway's login (V8), its HTTP port its local token (W2)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError

from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, control_plane_app, fleet_flusher
from streamforge.runtime.gateway.local_auth import read_token, token_path
from streamforge.runtime.gateway.runners import changelog_topic
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import CREDENTIALS_FILE, KafkaAccess, KafkaLogin
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics, ensure_topics
from streamforge.runtime.up import LocalGateway, local_gateway
from tests.runtime.test_up import descendants

FORGED = b'{"state": "ACTIVE", "severity": "CRITICAL", "alarm_id": "forged"}'


async def produce(access: KafkaAccess, topic: str, value: bytes) -> None:
    producer = access.producer(request_timeout_ms=5000, metadata_max_age_ms=5000)
    try:
        await producer.start()
        await producer.send_and_wait(topic, value, key=b"pump_1")  # changelogs are compacted: records have keys
    finally:
        await producer.stop()


async def read_all(access: KafkaAccess, topic: str) -> list[bytes]:
    consumer = access.consumer(topic, auto_offset_reset="earliest", enable_auto_commit=False, request_timeout_ms=5000)
    try:
        await consumer.start()
        batches = await consumer.getmany(timeout_ms=3000)
        return [record.value or b"" for records in batches.values() for record in records]
    finally:
        await consumer.stop()


async def test_the_embedded_broker_refuses_clients_without_the_gateways_login(
    kafka: EmbeddedKafka, unique: str
) -> None:
    """V8: a local process without the login can neither forge an alarm nor read or write a node's changelog; the
    gateway's login (from the 0600 file beside the broker's data) can."""
    await ensure_topics(kafka.access)
    changelog = changelog_topic(unique.replace("-", "_")[:50], "alarm")
    await create_topics(kafka.access, [NewTopic(changelog, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    anonymous = KafkaAccess(kafka.bootstrap)  # PLAINTEXT, as every client was before
    login = kafka.access.credentials
    assert login is not None
    guessed = KafkaAccess(kafka.bootstrap, None, KafkaLogin(login.username, "guessed-password", login.mechanism))
    for intruder in (anonymous, guessed):
        with pytest.raises(KafkaError) as refused:
            await produce(intruder, "alarms.clean", FORGED)
        assert isinstance(refused.value, KafkaConnectionError) or "authentication" in str(refused.value).lower()
        with pytest.raises(KafkaError):
            await read_all(intruder, changelog)
        with pytest.raises(KafkaError):
            await produce(intruder, changelog, b"forged state")
    # The controller's listener takes admin requests too (configs, ACLs): it refuses an anonymous client as well.
    controller = kafka.broker.load_settings()
    assert controller is not None
    admin = KafkaAccess(f"127.0.0.1:{controller.controller_port}").admin(request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        try:
            await admin.start()
            await admin.describe_cluster()
        finally:
            await admin.close()

    await produce(kafka.access, changelog, b"the gateway's own state")
    assert await read_all(kafka.access, changelog) == [b"the gateway's own state"]
    assert (kafka.data_dir / CREDENTIALS_FILE).stat().st_mode & 0o777 == 0o600
    assert (kafka.data_dir / "server.properties").stat().st_mode & 0o777 == 0o600  # the controller's login
    assert kafka.data_dir.stat().st_mode & 0o777 == 0o700


@contextlib.asynccontextmanager
async def gateway_with_embedded_kafka(root: Path) -> AsyncIterator[LocalGateway]:
    """A control plane and a real `streamforge gateway` process under it, with its own embedded broker."""
    control_plane = ControlPlane.open(root / "cp", load_node_types(False))
    async with fleet_flusher(control_plane.fleet), serve_app(control_plane_app(control_plane), websockets=True) as url:
        key = control_plane.fleet.create_enrolment_key({}, "test")
        async with local_gateway(url, root / "gateway", key, None, None) as gateway:
            await control_plane.fleet.approved(gateway.event["instance_id"])
            yield gateway


async def test_the_gateway_port_wants_the_local_token_and_its_broker_the_gateways_login(tmp_path: Path) -> None:
    """W2: the gateway's own port answers /sync, /api/v1/logs, /overflow and /health only with the local token (a
    0600 file in its data dir); /health/live and, served on loopback, /metrics stay open. V8: its embedded broker's
    login is a 0600 file, in no process's environment or command line."""
    async with gateway_with_embedded_kafka(tmp_path) as gateway:
        base = str(gateway.event["health"]).removesuffix("/health")
        data_dir = tmp_path / "gateway"
        token = read_token(data_dir)
        assert token_path(data_dir).stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            for path in ("/sync", "/api/v1/logs", "/overflow", "/health"):
                refused = await http.get(path)
                assert refused.status_code == 401, (path, refused.text)
                assert str(token_path(data_dir)) in refused.json()["error"]["message"]
                wrong = await http.get(path, headers={"Authorization": "Bearer not-the-token"})
                assert wrong.status_code == 401, path
                allowed = await http.get(path, headers={"Authorization": f"Bearer {token}"})
                assert allowed.status_code == 200, (path, allowed.text)
            assert (await http.get("/health/live")).status_code == 200
            assert (await http.get("/metrics")).status_code == 200  # loopback only (the test's host)

        credentials = data_dir / "kafka" / CREDENTIALS_FILE
        assert credentials.stat().st_mode & 0o777 == 0o600
        password = KafkaLogin.read(credentials).password.encode()
        processes = descendants(gateway.process.pid)
        assert any(b"kafka.Kafka" in command for command, _ in processes)  # the broker is among them
        assert not [command for command, environment in processes if password in command or password in environment]
