"""`opcua` source (asyncua): subscriptions with sampling interval and deadband, or polling; NodeId or browse-path
mapping; secure channels with a trust list of server certificates; OPC UA status codes mapped to quality."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import security_policies
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import Field, SecretStr, model_validator

from streamforge.engine.devices import Inbox, PointMapping
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Emitted, NodeConfig, PeerUnavailable, PlainUrl, Port, PortType, Record, SourceNode

POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
    "Basic256": security_policies.SecurityPolicyBasic256,  # deprecated by the OPC Foundation
    "Basic128Rsa15": security_policies.SecurityPolicyBasic128Rsa15,  # deprecated by the OPC Foundation
}
DEPRECATED = {"Basic256", "Basic128Rsa15"}


class OpcUaPoint(PointMapping):
    """A variable: by NodeId (`ns=2;s=Line1.Temp`) or by browse path from Objects (`2:Line1/2:Temp`)."""

    node_id: str | None = None
    browse_path: str | None = None

    @model_validator(mode="after")
    def _one_address(self) -> OpcUaPoint:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        return self


class OpcUaConfig(NodeConfig):
    endpoint: PlainUrl = Field(pattern=r"^opc\.tcp://", description="e.g. opc.tcp://plc:4840")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    security_policy: Literal[
        "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss", "Basic256", "Basic128Rsa15"
    ] = "Basic256Sha256"
    allow_insecure: bool = Field(default=False, description="Permit security mode None (plain text)")
    allow_deprecated_policies: bool = Field(default=False, description="Permit Basic256 and Basic128Rsa15")
    certificate: Path | None = Field(default=None, description="This gateway's application certificate (DER/PEM)")
    private_key: Path | None = Field(default=None, description="Its private key (PEM)")
    pki_dir: Path = Field(
        default=Path("pki"),
        description="trusted/ holds server certificates this gateway "
        "trusts; an unknown server's certificate is put in rejected/ until moved",
    )
    username: str | None = None
    password: SecretStr | None = Field(default=None, description="Stored as a secret")
    mode: Literal["subscribe", "poll"] = "subscribe"
    sampling_interval_ms: float = Field(default=500, ge=0, description="Server-side sampling (subscribe)")
    publishing_interval_ms: float = Field(default=500, gt=0, description="How often the server sends changes")
    deadband: float = Field(default=0, ge=0, description="Absolute deadband: smaller changes are not reported")
    poll_interval_s: float = Field(default=1.0, gt=0, description="Read period (poll)")
    points: list[OpcUaPoint] = Field(min_length=1)
    batch_size: int = Field(default=2000, ge=1)
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)

    @model_validator(mode="after")
    def _secure_by_default(self) -> OpcUaConfig:
        if self.security_mode == "None" and not self.allow_insecure:
            raise ValueError("security_mode None sends everything in plain text: set allow_insecure to use it")
        if self.security_mode != "None" and self.security_policy in DEPRECATED and not self.allow_deprecated_policies:
            raise ValueError(
                f"{self.security_policy} is deprecated: use Basic256Sha256 or set allow_deprecated_policies"
            )
        if self.security_mode != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError("a secure channel needs this gateway's certificate and private_key")
        return self


def quality_of(status: ua.StatusCode | None) -> str:
    """OPC UA's severity bits: Good, Uncertain, Bad."""
    if status is None or status.is_good():
        return "GOOD"
    return "UNCERTAIN" if status.is_uncertain() else "BAD"


class UntrustedServer(ConnectionError):
    pass


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # OPC UA names certificates by their SHA-1 thumbprint


def _der(path: Path) -> bytes:
    data = path.read_bytes()
    return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER) if b"-----BEGIN" in data else data


class OpcUa(SourceNode[OpcUaConfig]):
    """Lifecycle: connect() checks the server certificate against pki_dir/trusted, opens the session and
    subscribes; poll() takes the notifications (or reads, in poll mode). A lost session is the runtime's to
    re-establish with backoff, the node DEGRADED meanwhile."""

    type = "opcua"
    category = "sources"
    icon = "server"
    description = "OPC UA client: subscriptions (sampling, deadband) or polling, secure channels, trust list"
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.raw", description="Readings"),)

    async def start(self) -> None:
        logging.getLogger("asyncua").setLevel(logging.WARNING)  # INFO is one line per request: noise, not news
        self._client: Client | None = None
        self._nodes: list[tuple[Node, OpcUaPoint]] = []
        self._inbox: Inbox[tuple[OpcUaPoint, ua.DataValue]] = Inbox()
        self._next_poll = self.clock.monotonic()
        self._lost = asyncio.Event()

    # asyncua calls these on its subscription handler.
    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        point = self._by_node.get(node.nodeid.to_string())
        if point is not None:
            self._inbox.put((point, data.monitored_item.Value))

    def status_change_notification(self, status: Any) -> None:
        self._lost.set()
        self._inbox.wake()

    async def _trusted_server_certificate(self) -> bytes | None:
        config = self.config
        if config.security_mode == "None":
            return None
        probe = Client(config.endpoint, timeout=config.connection.timeout_s)
        endpoints = await probe.connect_and_get_server_endpoints()
        policy_uri = POLICIES[config.security_policy].URI
        wanted = getattr(ua.MessageSecurityMode, config.security_mode)
        match = next((e for e in endpoints if e.SecurityPolicyUri == policy_uri and e.SecurityMode == wanted), None)
        if match is None:
            raise ConnectionError(
                f"{config.endpoint} offers no endpoint with {config.security_policy}/{config.security_mode}"
            )
        certificate = bytes(match.ServerCertificate)
        trusted_dir, rejected_dir = config.pki_dir / "trusted", config.pki_dir / "rejected"
        trusted = [_der(p) for p in trusted_dir.glob("*") if p.is_file()] if trusted_dir.is_dir() else []
        if certificate not in trusted:
            rejected_dir.mkdir(parents=True, exist_ok=True)
            saved = rejected_dir / f"{thumbprint(certificate)}.der"
            saved.write_bytes(certificate)
            raise UntrustedServer(
                f"server certificate {thumbprint(certificate)} is not trusted: check it, then "
                f"move {saved} into {trusted_dir}"
            )
        return certificate

    async def connect(self) -> None:
        try:
            await self._open()
        except (OSError, UaError, TimeoutError) as exc:  # refused, unreachable, untrusted, or the session failed
            raise PeerUnavailable(f"cannot connect to {self.config.endpoint}: {exc or type(exc).__name__}") from exc

    async def _open(self) -> None:
        config = self.config
        server_certificate = await self._trusted_server_certificate()
        client = Client(config.endpoint, timeout=config.connection.timeout_s)
        if config.username:
            client.set_user(config.username)
            client.set_password(config.password.get_secret_value() if config.password else "")
        if server_certificate is not None:
            assert config.certificate is not None and config.private_key is not None
            await client.set_security(
                POLICIES[config.security_policy],
                str(config.certificate),
                str(config.private_key),
                server_certificate=server_certificate,
                mode=getattr(ua.MessageSecurityMode, config.security_mode),
            )
        await client.connect()
        try:
            nodes = []
            for point in config.points:
                if point.node_id is not None:
                    nodes.append((client.get_node(point.node_id), point))
                else:
                    assert point.browse_path is not None
                    path = ["0:Objects", *point.browse_path.split("/")]
                    nodes.append((await client.nodes.root.get_child(path), point))
            self._nodes = nodes
            self._by_node = {node.nodeid.to_string(): point for node, point in nodes}
            if config.mode == "subscribe":
                # asyncua types these numbers as its own ua.Double; plain floats are what it sends
                subscription: Any = await client.create_subscription(config.publishing_interval_ms, self)
                targets = [node for node, _point in nodes]
                if config.deadband > 0:
                    await subscription.deadband_monitor(targets, config.deadband)
                else:
                    await subscription.subscribe_data_change(targets, sampling_interval=config.sampling_interval_ms)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        self._client = client
        self._lost.clear()

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.disconnect()
        self._client = None

    async def poll(self) -> Emitted:
        if self._client is None or self._lost.is_set():
            raise PeerUnavailable(f"lost the session with {self.config.endpoint}")
        if self.config.mode == "subscribe":
            changes = await self._inbox.take(self.config.batch_size, 1.0, 0.02)
            return {"out": [self._reading(point, value) for point, value in changes]}
        clock = self.clock
        await clock.sleep(self._next_poll - clock.monotonic())
        self._next_poll = max(self._next_poll + self.config.poll_interval_s, clock.monotonic())
        try:
            values = await self._client.read_attributes([node for node, _point in self._nodes])
        except (OSError, UaError, TimeoutError) as exc:
            self._lost.set()  # the next poll reconnects
            self.context.degraded(f"read from {self.config.endpoint} failed: {exc}")
            return {"out": [point.reading(None, metadata={"error": type(exc).__name__}) for _n, point in self._nodes]}
        self.context.healthy()
        return {"out": [self._reading(point, value) for (_node, point), value in zip(self._nodes, values, strict=True)]}

    def _reading(self, point: OpcUaPoint, value: ua.DataValue) -> Record:
        quality = quality_of(value.StatusCode)
        raw = value.Value.Value if value.Value is not None else None
        number = float(raw) if isinstance(raw, int | float) and quality != "BAD" else None
        source_time = value.SourceTimestamp
        if source_time is not None and source_time.tzinfo is None:
            source_time = source_time.replace(tzinfo=UTC)  # asyncua gives UTC without saying so
        status = value.StatusCode
        metadata = {} if quality == "GOOD" or status is None else {"opcua_status": status.name}
        return point.reading(number, device_time=source_time, quality=quality, metadata=metadata)


NODE = OpcUa
