"""Shared fixtures: one real Kafka broker and one schema registry per test session; unique names per test."""

from __future__ import annotations

import itertools
import os
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiokafka.admin import NewTopic
from aiosmtpd.controller import Controller
from moto.server import ThreadedMotoServer
from starlette.applications import Starlette
from starlette.routing import Route

from streamforge.engine.node_types import load_node_types
from streamforge.engine.schema_registry import CachedSchemaRegistry, HttpSchemaRegistry, SchemaCache
from streamforge.nodes.protocols.mqtt import MqttTls
from streamforge.runtime.control_plane.schema_registry import SchemaStore, schema_registry_app
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.supervisor import RestartPolicy
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.access import KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics
from tests.destinations import CUSTOMER_USERS, Mailbox, Receiver, Services
from tests.peers import Pki, make_pki, sasl_ssl_kafka, start_mosquitto

_counter = itertools.count()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("streamforge")


@pytest.fixture(scope="session")
async def kafka(session_dir: Path) -> AsyncIterator[EmbeddedKafka]:
    """The session's broker: a real single-node KRaft Kafka, supervised like the gateway's."""
    async with EmbeddedKafka(session_dir / "kafka") as broker:
        yield broker


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A real PostgreSQL server for the session, in its own data directory (scripts/local-postgres.sh)."""
    data = tempfile.mkdtemp(prefix="streamforge-pg-")
    port = str(free_port())
    script = Path(__file__).resolve().parent.parent / "scripts" / "local-postgres.sh"
    started = subprocess.run([str(script), "start", data, port], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}")
    yield started.stdout.strip()
    subprocess.run([str(script), "stop", data, port], capture_output=True, check=False)
    shutil.rmtree(data, ignore_errors=True)


@dataclass(frozen=True)
class MqttBroker:
    host: str
    port: int
    tls: Pki | None = None  # a TLS listener that wants a client certificate from this PKI

    def tls_config(self) -> dict[str, str] | None:
        """The `tls` section of an MQTT node's config that this broker accepts."""
        if self.tls is None:
            return None
        return {
            "ca_file": str(self.tls.ca),
            "cert_file": str(self.tls.client_cert),
            "key_file": str(self.tls.client_key),
        }

    def tls_context(self) -> ssl.SSLContext | None:
        """The same, for a test's own client."""
        config = self.tls_config()
        return None if config is None else MqttTls.model_validate(config).context()


@pytest.fixture(scope="session")
def mqtt_broker(session_dir: Path) -> Iterator[MqttBroker]:
    """The session's Mosquitto; tests use topics under their own unique prefix."""
    port = free_port()
    process = start_mosquitto(session_dir, port)
    yield MqttBroker("127.0.0.1", port)
    process.terminate()
    process.wait(10)


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals: a serial cable with a device at one end and the gateway at the other."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is missing: `apt-get install socat` (scripts/setup.sh does)")
    device_end, gateway_end = tmp_path / "plc", tmp_path / "gateway"
    process = subprocess.Popen([socat, f"pty,raw,echo=0,link={device_end}", f"pty,raw,echo=0,link={gateway_end}"])
    for _ in range(100):
        if device_end.exists() and gateway_end.exists():
            break
        time.sleep(0.05)
    yield str(device_end), str(gateway_end)
    process.terminate()
    process.wait(5)


@pytest.fixture(scope="session")
async def registry_url() -> AsyncIterator[str]:
    async with serve_app(schema_registry_app(SchemaStore())) as url:
        yield url


@pytest.fixture
async def registry(registry_url: str, tmp_path: Path) -> AsyncIterator[CachedSchemaRegistry]:
    """A gateway-side registry client with a cache of its own."""
    remote = HttpSchemaRegistry(registry_url)
    yield CachedSchemaRegistry(remote, SchemaCache(tmp_path / "schema-cache.json"))
    await remote.aclose()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> Iterator[str]:
    """A name no other test uses: prefix topics and consumer groups with it."""
    yield f"t{os.getpid()}-{int(time.time())}-{next(_counter)}-{request.node.name[:40]}".replace("[", "-").replace(
        "]", ""
    )


async def create_topic(bootstrap: KafkaAccess, name: str, partitions: int = 12, **configs: str) -> str:
    """A test's own topic, ready for produce (every partition has a leader)."""
    await create_topics(bootstrap, [NewTopic(name, partitions, 1, topic_configs=configs)])
    return name


def in_process_gateway(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, registry_url: str, state_dir: Path
) -> Gateway:
    """A gateway in the test's own process on `kafka`, with the built-in node types and a fast restart policy;
    sources and sinks still run in worker processes."""
    return Gateway(
        kafka.access,
        registry,
        load_node_types(include_plugins=False),
        state_dir,
        registry_url,
        policy=RestartPolicy(max_restarts=2, window_s=60, backoff_s=0.05),
        kafka_health=kafka.health,
    )


@pytest.fixture
async def gateway(
    kafka: EmbeddedKafka, registry: CachedSchemaRegistry, registry_url: str, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """in_process_gateway() on the session's Kafka."""
    gw = in_process_gateway(kafka, registry, registry_url, tmp_path)
    yield gw
    await gw.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    """An HTTP receiver (tests/destinations.py) and its ingest URL."""
    server = Receiver()
    app = Starlette(routes=[Route("/ingest", server.ingest, methods=["POST"])])
    async with serve_app(app) as url:
        yield server, f"{url}/ingest"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-protocol server on localhost: moto in server mode."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
async def bucket(s3_endpoint: str, unique: str) -> AsyncIterator[tuple[str, Any]]:
    """A new bucket of its own and a client of that server."""
    name = "b" + str(abs(hash(unique)) % 10**12)
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    async with get_session().create_client("s3", region_name="us-east-1", endpoint_url=s3_endpoint, **keys) as client:
        await client.create_bucket(Bucket=name)
        yield name, client


@pytest.fixture(scope="session")
async def customer(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[EmbeddedKafka, str, Pki]]:
    """A customer's Kafka (SASL_SSL, CUSTOMER_USERS): the broker, its SASL_SSL bootstrap, the PKI it trusts."""
    workdir = tmp_path_factory.mktemp("customer")
    pki = make_pki(workdir / "pki", "customer")
    kafka, secure = sasl_ssl_kafka(workdir, pki, CUSTOMER_USERS)
    async with kafka:
        yield kafka, secure, pki


@pytest.fixture
async def services() -> AsyncIterator[tuple[Services, str]]:
    """Alert endpoints (tests/destinations.py Services) and their base URL: POST {url}/slack, /pagerduty, /hook."""
    state = Services()
    async with serve_app(Starlette(routes=[Route("/{path}", state.endpoint, methods=["POST"])])) as url:
        yield state, url


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    """A real SMTP server that requires STARTTLS: its mailbox, port, and the CA its certificate chains to."""
    pki = make_pki(tmp_path / "pki", "mail")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    yield mailbox, port, pki.ca
    controller.stop()
