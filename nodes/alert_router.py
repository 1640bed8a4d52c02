"""`alert_router` sink: alarm transitions to people by severity: Slack-compatible webhooks, PagerDuty Events API v2
(trigger/acknowledge/resolve by alarm id), e-mail over SMTP with STARTTLS, generic webhooks; digests for the
severities that may wait."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Annotated, Any, Literal

import aiosmtplib
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from streamforge.engine.records import event_time, json_safe, reason
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import (
    Message,
    PeerUnavailable,
    PlainUrl,
    Port,
    PortType,
    Record,
    SinkConfig,
    SinkNode,
    earliest_offsets,
)
from streamforge.nodes.protocols.tls import client_context

Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"]
PAGERDUTY_ACTION = {"ACTIVE": "trigger", "ACKNOWLEDGED": "acknowledge", "SUPPRESSED": "acknowledge",
                    "SHELVED": "acknowledge", "CLEARED": "resolve", "RTN_UNACK": "resolve",
                    "OUT_OF_SERVICE": "resolve"}  # fmt: skip
HIDDEN = ("SHELVED", "SUPPRESSED", "OUT_OF_SERVICE")
PAGERDUTY_SEVERITY = {"CRITICAL": "critical", "HIGH": "error", "MEDIUM": "warning", "LOW": "info"}


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackDestination(_Destination):
    """An incoming webhook of Slack, or of anything that takes {"text": ...} (Mattermost, Teams workflows)."""

    kind: Literal["slack"]
    url: SecretStr = Field(description="The webhook URL; stored as a secret")


class PagerDutyDestination(_Destination):
    """PagerDuty Events API v2: one incident per alarm (dedup_key = alarm id), triggered, acknowledged, resolved."""

    kind: Literal["pagerduty"]
    routing_key: SecretStr = Field(description="The service's integration key; stored as a secret")
    url: PlainUrl = Field("https://events.pagerduty.com/v2/enqueue", pattern=r"^https?://")


class WebhookDestination(_Destination):
    """Any HTTP endpoint (an SMS gateway, a ticketing system): the transition, or the digest, as JSON."""

    kind: Literal["webhook"]
    url: PlainUrl = Field(pattern=r"^https?://")
    bearer_token: SecretStr | None = Field(None, description="Authorization: Bearer; stored as a secret")


class EmailDestination(_Destination):
    """SMTP with STARTTLS (the server's certificate checked against `ca_file`, or the system's CAs)."""

    kind: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = Field(True, description="Upgrade to TLS before authenticating or sending")
    ca_file: str | None = None
    username: str | None = None
    password: SecretStr | None = Field(None, description="Stored as a secret")
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(min_length=1)


Destination = Annotated[SlackDestination | PagerDutyDestination | WebhookDestination | EmailDestination,
                        Field(discriminator="kind")]  # fmt: skip


class Route(BaseModel):
    """Transitions of these severities go to these destinations: at once, or gathered into one digest each
    `digest_interval_s`."""

    model_config = ConfigDict(extra="forbid")

    severities: list[Severity] = Field(min_length=1)
    destinations: list[str] = Field(min_length=1, description="Names from `destinations`")
    digest_interval_s: float | None = Field(None, gt=0, description="Gather into a digest this often; empty: at once")


class AlertRouterConfig(SinkConfig):
    destinations: dict[str, Destination] = Field(min_length=1)
    routes: list[Route] = Field(min_length=1, description="Every route a transition's severity matches applies")
    connection: ConnectionSettings = Field(default_factory=lambda: ConnectionSettings(timeout_s=10.0))

    @model_validator(mode="after")
    def _known_destinations(self) -> AlertRouterConfig:
        for index, route in enumerate(self.routes):
            unknown = [name for name in route.destinations if name not in self.destinations]
            if unknown:
                raise ValueError(f"routes[{index}] names {unknown}, which are not in destinations")
        return self


def transition_key(record: Record) -> str:
    """One alarm transition, the same in every replay: its event id (which alarm, to which state, when, before
    events had ids)."""
    return record.get("event_id") or f"{record['alarm_id']}|{record['state']}|{event_time(record).isoformat()}"


def text_of(record: Record) -> str:
    return (f"[{record['severity']}] {record['state']}: {record['message']} "
            f"({record['asset_id']}/{record['parameter']}, rule {record['rule_id']})")  # fmt: skip


def delivery_key(name: str, records: list[Record]) -> str:
    """The same transitions to the same destination give the same key (Idempotency-Key, Message-ID): a receiver that
    deduplicates drops a resend after a crash between the send and the changelog."""
    keys = "|".join(transition_key(r) for r in records)
    return hashlib.sha256(f"{name}|{keys}".encode()).hexdigest()[:32]


@dataclass
class Digest:
    """Transitions gathered for one destination, sent together when due (epoch seconds on the node's clock)."""

    due_at: float
    messages: list[Message] = field(default_factory=list)


class AlertRouter(SinkNode[AlertRouterConfig]):
    """Each transition goes to the destinations of every route its severity matches. What was sent is in the node's
    changelog (table `sent`, by transition and destination), so a replay does not page anyone twice for what it
    already delivered, a restart included. A crash in the moment between a send and the changelog resends that one
    message: PagerDuty's dedup_key, a webhook's Idempotency-Key and an e-mail's Message-ID (all derived from the
    transitions) let the receiver drop it; a Slack webhook cannot. Transitions waiting for a digest hold their
    offsets back, and each digest's due time is in the table `digest_due`, so a restart sends it on schedule, not
    one interval late. A destination that fails (5xx, timeout, SMTP error) raises: retried with backoff and the
    circuit breaker. A 4xx answer is a dead letter with the response."""

    type = "alert_router"
    category = "sinks"
    icon = "bell-ringing"
    description = "Alarms to people by severity: Slack, PagerDuty, e-mail, webhooks; digests for what can wait"
    inputs = (Port("in", PortType.ALARM, description="Alarm transitions (alarms.clean)"),)

    async def start(self) -> None:
        self._sent = self.context.state.table("sent", bool)  # (transition, destination) -> delivered
        self._due = self.context.state.table("digest_due", float)  # (destination,) -> when its digest goes out
        self._digests: dict[str, Digest] = {}
        self._tls = {name: client_context(d.ca_file) for name, d in self.config.destinations.items()
                     if isinstance(d, EmailDestination) and d.ca_file}  # fmt: skip
        self._client: httpx.AsyncClient | None = None

    async def connect(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.config.connection.timeout_s)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client = None

    def retained(self) -> dict[tuple[str, int], int]:
        return earliest_offsets(((m.topic, m.partition), m.offset) for d in self._digests.values() for m in d.messages)

    async def write(self, batch: Sequence[Message]) -> Sequence[Record] | None:
        refused: list[Record] = []
        now = self.clock.now().timestamp()
        for message in batch:
            if message.record["state"] in HIDDEN and message.record["changed_by"] is None:
                continue  # re-evaluated while shelved, suppressed or out of service: not annunciated
            for route in self.config.routes:
                if message.record["severity"] not in route.severities:
                    continue
                for name in route.destinations:
                    if (transition_key(message.record), name) in self._sent:
                        continue  # delivered before (a replay, or a retry of this batch)
                    if route.digest_interval_s is None:
                        refused += await self._send(name, [message])
                    else:
                        digest = self._digests.get(name)
                        if digest is None:
                            due = self._due.get((name,))
                            if due is None:
                                due = self._due[(name,)] = now + route.digest_interval_s
                            digest = self._digests[name] = Digest(due)
                        if all(m is not message for m in digest.messages):
                            digest.messages.append(message)
        return refused

    async def tick(self, now: datetime) -> Sequence[Record] | None:
        refused: list[Record] = []
        for name, digest in list(self._digests.items()):
            if digest.due_at <= self.clock.now().timestamp():
                refused += await self._send(name, digest.messages)
                del self._digests[name]
                del self._due[(name,)]
        return refused

    async def _send(self, name: str, messages: list[Message]) -> list[Record]:
        """Deliver to one destination; raise if it failed (retried), dead letters if it refused for good."""
        destination = self.config.destinations[name]
        records = [m.record for m in messages]
        if isinstance(destination, EmailDestination):
            await self._email(name, destination, records)
        else:
            status, answer = await self._post(name, destination, records)
            if status >= 300:
                why = reason(f"http_{status}", f"destination {name} answered {status}: {answer[:400]}")
                return [m.dead_letter(self.context.node_id, why) for m in messages]
        for record in records:
            self._sent[(transition_key(record), name)] = True
        return []

    def _requests(self, name: str, destination: Any, records: list[Record]) -> tuple[str, list[Any], dict[str, str]]:
        """(url, JSON bodies, headers) that deliver `records` to one HTTP destination."""
        if isinstance(destination, SlackDestination):
            lines = [text_of(r) for r in records]
            text = lines[0] if len(lines) == 1 else f"{len(lines)} alarm transitions:\n" + "\n".join(
                f"• {line}" for line in lines)  # fmt: skip
            return destination.url.get_secret_value(), [{"text": text}], {}
        if isinstance(destination, PagerDutyDestination):  # one event per request, each deduplicated by its alarm
            return destination.url, [self._pagerduty(destination, r) for r in records], {}
        token = destination.bearer_token
        headers = {"Idempotency-Key": delivery_key(name, records)}
        if token is not None:
            headers["Authorization"] = f"Bearer {token.get_secret_value()}"
        body = json_safe(records[0]) if len(records) == 1 else {"transitions": [json_safe(r) for r in records]}
        return destination.url, [body], headers

    async def _post(self, name: str, destination: Any, records: list[Record]) -> tuple[int, str]:
        """The status and text of the last answer (the first one that refused, if any)."""
        assert self._client is not None  # the runtime writes only while connected
        url, bodies, headers = self._requests(name, destination, records)
        shown = url.split("?")[0]  # a webhook URL may carry its token in the query
        for body in bodies:
            try:
                response = await self._client.post(url, json=body, headers=headers)
            except httpx.TransportError as exc:
                raise PeerUnavailable(f"POST {shown}: {type(exc).__name__}: {exc}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise PeerUnavailable(f"{shown} answered {response.status_code}: {response.text[:300]}")
            if response.status_code >= 300:
                break
        return response.status_code, response.text

    @staticmethod
    def _pagerduty(destination: PagerDutyDestination, record: Record) -> dict[str, Any]:
        return {"routing_key": destination.routing_key.get_secret_value(),
                "event_action": PAGERDUTY_ACTION[record["state"]], "dedup_key": record["alarm_id"],
                "payload": {"summary": text_of(record)[:1024], "source": record["asset_id"],
                            "severity": PAGERDUTY_SEVERITY[record["severity"]],
                            "timestamp": event_time(record).isoformat(),
                            "custom_details": json_safe(record)}}  # fmt: skip

    async def _email(self, name: str, destination: EmailDestination, records: list[Record]) -> None:
        email = EmailMessage()
        email["From"], email["To"] = destination.sender, ", ".join(destination.to)
        email["Message-ID"] = f"<{delivery_key(name, records)}@streamforge>"
        first = records[0]
        email["Subject"] = (f"[{first['severity']}] {first['state']}: {first['alarm_id']}" if len(records) == 1
                            else f"{len(records)} alarm transitions")  # fmt: skip
        email.set_content("\n".join(text_of(r) for r in records) + "\n\n" + json.dumps([json_safe(r) for r in records],
                                                                                       indent=2))  # fmt: skip
        password = destination.password.get_secret_value() if destination.password else None
        try:
            await aiosmtplib.send(email, hostname=destination.host, port=destination.port,
                                  start_tls=destination.starttls, tls_context=self._tls.get(name),
                                  username=destination.username, password=password,
                                  timeout=self.config.connection.timeout_s)  # fmt: skip
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise PeerUnavailable(f"e-mail via {destination.host}:{destination.port}: {exc}") from exc


NODE = AlertRouter
