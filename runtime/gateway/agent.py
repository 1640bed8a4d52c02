"""The gateway's side of the fleet: register, poll desired state (the poll is the heartbeat), apply it atomically
with rollback, and keep running from the local cache whatever the control plane does or says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import random
import secrets
import shutil
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
import websockets
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, SealedBox
from prometheus_client.parser import text_string_to_metric_families

from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import FlowInvalid, Problem
from streamforge.engine.retry import Backoff
from streamforge.engine.sdk import Kind
from streamforge.engine.secrets import resolve
from streamforge.runtime.files import write_durably
from streamforge.runtime.gateway.compiling import CompilerFailed, compile_apart
from streamforge.runtime.gateway.desired_state import StateCache, read_whole, versions
from streamforge.runtime.gateway.events import EventsChannel
from streamforge.runtime.gateway.gateway import DeployFailed, Gateway
from streamforge.runtime.gateway.operations import GatewayOperations, alarm_uplink, prune_logs
from streamforge.runtime.gateway.runners import NodeStatus
from streamforge.runtime.logs import LogRing, LogTail
from streamforge.runtime.protocol import (
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    PROTOCOL,
    ApplyResult,
    Heartbeat,
    Registration,
    RegistrationAnswer,
)

log = logging.getLogger("streamforge.gateway.sync")
BOOT_COMPILE_ATTEMPTS = 5  # the compiler process failing to start at boot: tried again after 1, 2, 4, 8 s

RENEW_BEFORE_S = 30 * 24 * 3600  # renew a one-year token in its last month (a shorter one in its last quarter)
MAX_RETRY_S = 60.0


class InsecureControlPlane(ValueError):
    """Plain HTTP to a control plane that is not on this machine."""


def check_transport(url: str) -> None:
    """Spec: gateway -> control plane is TLS. Plain HTTP only to loopback (`streamforge up`, tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http" or not parts.hostname:
        raise InsecureControlPlane(f"control plane URL {url!r} must be https://host[:port]")
    try:
        loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InsecureControlPlane(f"refusing plain HTTP to {parts.hostname}: gateway -> control plane must be "
                                   f"TLS; use https://{parts.netloc} (and --ca for its certificate)")  # fmt: skip


def jittered(seconds: float) -> float:
    """±20 %: 10,000 gateways restarted together do not poll in lockstep."""
    return seconds * random.uniform(0.8, 1.2)


@dataclass
class Identity:
    """Who this gateway is, kept 0600 in its data dir: a stable instance id, the registration secret that
    proves it registered, and the X25519 key its secrets are sealed to."""

    instance_id: str
    secret: str
    private_key: str

    @classmethod
    def load_or_create(cls, path: Path, instance_id: str | None) -> Identity:
        found = read_whole(path)
        if found is not None and (instance_id is None or found["instance_id"] == instance_id):
            return cls(**found)
        identity = cls(instance_id or stable_instance_id(path.parent), secrets.token_urlsafe(32),
                       base64.b64encode(bytes(PrivateKey.generate())).decode())  # fmt: skip
        write_durably(path, json.dumps(identity.__dict__).encode())
        return identity

    @property
    def public_key(self) -> str:
        return base64.b64encode(bytes(PrivateKey(base64.b64decode(self.private_key)).public_key)).decode()

    def unseal(self, sealed: str) -> str:
        return SealedBox(PrivateKey(base64.b64decode(self.private_key))).decrypt(base64.b64decode(sealed)).decode()


def stable_instance_id(data_dir: Path) -> str:
    """The machine's id and the data dir's path: the same after a disk is replaced and the gateway reinstalled
    at the same place ("gateways are cattle"), distinct for several gateways on one machine."""
    machine = ""
    for candidate in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        with contextlib.suppress(OSError):
            machine = candidate.read_text().strip()
            break
    basis = f"{machine or socket.gethostname()}:{data_dir.resolve()}"
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


@dataclass
class SyncStatus:
    """What /health says of the link to the control plane."""

    control_plane: str
    gateway_id: str | None = None
    approval: str = "unregistered"
    reachable: bool = False
    last_contact: float | None = None
    last_error: str | None = None
    etag: str | None = None
    polls: int = 0
    not_modified: int = 0
    pushes: int = 0  # "poll now" notices received over the events socket
    push_connected: bool = False
    renewals: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ControlPlaneRefused(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"control plane answered {status}: {body[:300]}")
        self.status = status


class SyncAgent:
    """Runs beside a Gateway: `boot()` deploys the cached state with no network; `run()` syncs forever."""

    def __init__(
        self,
        gateway: Gateway,
        control_plane: str,
        data_dir: Path,
        name: str,
        labels: dict[str, str] | None = None,
        enrolment_key: str | None = None,
        poll_interval_s: float = 30.0,
        verify: ssl.SSLContext | bool = True,
        instance_id: str | None = None,
        health_settle_s: float = 0.5,
        version: str = "",
    ) -> None:
        check_transport(control_plane)
        self.gateway, self.name, self.labels = gateway, name, labels or {}
        self.base = control_plane.rstrip("/")
        self.enrolment_key, self.poll_interval_s, self.health_settle_s = enrolment_key, poll_interval_s, health_settle_s
        self.version = version
        self.folder = data_dir / "sync"
        self.identity = Identity.load_or_create(self.folder / "identity.json", instance_id)
        self.credentials_path = self.folder / "credentials.json"
        self.cache = StateCache(self.folder / "state")
        self.status = SyncStatus(self.base)
        self.last_apply: ApplyResult | None = None
        self.poll_now = asyncio.Event()
        self.link_back = asyncio.Event()  # the events socket is down and a poll just got through
        self.logs = LogRing(data_dir / "logs")
        self.log_tail = LogTail(self.logs)
        self.operations = GatewayOperations(gateway, self.logs, lambda: self.status.gateway_id or "unregistered")
        self._http = httpx.AsyncClient(base_url=f"{self.base}/api/v1", timeout=30, verify=verify)
        self._verify = verify
        credentials = read_whole(self.credentials_path)
        self._token: str | None = credentials.get("token") if credentials else None
        self._expires: float = float(credentials.get("expires_at", 0)) if credentials else 0.0
        self.status.gateway_id = credentials.get("gateway_id") if credentials else None
        if self.status.gateway_id:
            os.environ["STREAMFORGE_GATEWAY_ID"] = self.status.gateway_id  # worker processes log it too
        if self._token:
            self.status.approval = "approved"

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- boot from cache --------------------------------------------------------------------------------

    async def boot(self) -> None:
        """Deploy the last state that was applied, before any network: a gateway that restarts while the control
        plane is away produces again at once."""
        self.cache.recover()
        current = self.cache.current()
        if current is None:
            return
        for attempt in range(BOOT_COMPILE_ATTEMPTS):
            try:
                await self._deploy(current)
                break
            except CompilerFailed as failure:  # a passing cause (no process to spare): the cached flows must run
                if attempt + 1 == BOOT_COMPILE_ATTEMPTS:
                    log.error("cached state not compiled", extra={"error": str(failure)})
                    return
                log.warning("cached state not compiled; trying again", extra={"error": str(failure)})
                await asyncio.sleep(2**attempt)
            except (FlowInvalid, DeployFailed) as failure:
                log.error("cached state did not start", extra={"error": str(failure)})
                return
        self.status.etag = current.get("etag")
        log.info("running from the local cache", extra={"flows": versions(current)})

    # -- applying a desired state ---------------------------------------------------------------------

    def _unsealed(self, sealed: dict[str, str]) -> dict[str, str]:
        """Every secret of the state opened with this gateway's key; FlowInvalid naming each one that will not open
        (sealed to another key, or damaged), so the apply is NOT_APPLIED with the reason and syncing goes on."""
        values, problems = {}, []
        for name, box in sealed.items():
            try:
                values[name] = self.identity.unseal(box)
            except (CryptoError, ValueError) as failed:  # ValueError: not base64, or not text
                problems.append(Problem("secret_unsealable", f"secret {name!r} does not open with this gateway's "
                                        f"key ({type(failed).__name__})", hint="it was sealed to another key: the "
                                        "gateway's identity file was replaced since it registered; an Admin "
                                        "approves the gateway again, or store the secret again"))  # fmt: skip
        if problems:
            raise FlowInvalid(problems)
        return values

    async def _plans(self, state: dict[str, Any]) -> dict[str, ExecutionPlan]:
        values = self._unsealed(state.get("secrets", {}))
        plugins = self.gateway.node_types.includes_plugins
        return {document["id"]: await compile_apart(json.dumps(resolve(document, values.get)), plugins)
                for document in state.get("flows", [])}  # fmt: skip

    async def _deploy(self, state: dict[str, Any]) -> dict[str, Any]:
        """Make the gateway run exactly `state`; on any failure put back what ran before and raise."""
        plans = await self._plans(state)  # FlowInvalid before anything is touched
        before = dict(self.gateway.plans)
        restarts: dict[str, str] = state.get("restarts", {})
        ran = (self.cache.current() or {}).get("restarts", {})
        changed: list[str] = []
        reports: dict[str, Any] = {}
        try:
            for flow_id, plan in plans.items():
                full = flow_id in restarts and restarts[flow_id] != ran.get(flow_id)  # a full deploy asked for
                report = await self.gateway.deploy(plan, modified_only=not full)  # a failing flow rolls itself back
                changed.append(flow_id)
                reports[flow_id] = {"started": report.started, "stopped": report.stopped,
                                    "unchanged": report.unchanged}  # fmt: skip
            await self._check_health(plans)
        except DeployFailed:
            await self._restore(before, changed)
            raise
        for flow_id in set(before) - set(plans):
            await self.gateway.undeploy(flow_id)
            reports[flow_id] = {"removed": True}
        return reports

    async def _check_health(self, plans: dict[str, ExecutionPlan]) -> None:
        """Every new node RUNNING (or DEGRADED: its device may be away) after a short settle."""
        await asyncio.sleep(self.health_settle_s)
        for flow_id in plans:
            for node in self.gateway.node_health():
                if node["flow"] == flow_id and node["status"] in (NodeStatus.FAILED.value, NodeStatus.STOPPED.value):
                    raise DeployFailed(f"node {node['node']} of flow {flow_id} is {node['status']} after start: "
                                       f"{node.get('last_error')}", node["node"], flow_id)  # fmt: skip

    async def _restore(self, before: dict[str, ExecutionPlan], changed: list[str]) -> None:
        for flow_id in changed:
            try:
                if flow_id in before:
                    await self.gateway.deploy(before[flow_id])
                else:
                    await self.gateway.undeploy(flow_id)
            except DeployFailed as again:
                log.error("rollback could not restore flow", extra={"flow": flow_id, "error": str(again)})

    async def apply(self, state: dict[str, Any]) -> ApplyResult:
        """Stage, deploy, check health, promote; or roll back and say NOT_APPLIED with the located cause."""
        wanted = versions(state)
        log.info("applying desired state", extra={"etag": state.get("etag"), "wanted": wanted})
        self.cache.stage(state)
        again = False  # the state was not at fault: it is fetched and applied again at the next poll
        attempt = {"etag": state.get("etag"), "wanted": wanted, "at": time.time()}
        try:
            reports = await self._deploy(state)
        except FlowInvalid as invalid:
            self.cache.discard()
            result = ApplyResult(result="NOT_APPLIED", **attempt, flows=self.running(),
                                 cause="; ".join(p.message for p in invalid.problems),
                                 node=invalid.problems[0].node_id)  # fmt: skip
        except DeployFailed as failed:
            self.cache.discard()
            result = ApplyResult(result="NOT_APPLIED", **attempt, flows=self.running(), cause=str(failed),
                                 flow=failed.flow_id, node=failed.node_id)  # fmt: skip
        except CompilerFailed as failed:  # nothing was touched
            self.cache.discard()
            result = ApplyResult(result="NOT_APPLIED", **attempt, flows=self.running(), cause=str(failed),
                                 transient=True)  # fmt: skip
            again = True
        else:
            self.cache.promote()
            result = ApplyResult(result="APPLIED", **attempt, flows=self.running(), reports=reports)
        if not again:
            self.status.etag = state.get("etag")  # tried: not fetched again until it changes
        self.last_apply = result
        log.log(logging.ERROR if again else logging.INFO, "desired state " + result.result.lower(), extra={
                "etag": result.etag, "wanted": wanted, "cause": result.cause, "node": result.node})  # fmt: skip
        return result

    def running(self) -> dict[str, int]:
        return {flow_id: plan.version for flow_id, plan in self.gateway.plans.items()}

    # -- the conversation with the control plane --------------------------------------------------------

    def heartbeat(self) -> Heartbeat:
        health = self.gateway.health()
        disk = shutil.disk_usage(self.folder)
        return Heartbeat.model_validate({
            "protocol": PROTOCOL, "status": health["status"], "version": self.version, "clock": time.time(),
            "flows": self.running(), "previous": self.cache.previous_versions(), "nodes": health["nodes"],
            "kafka": health["kafka"].get("status"), "sink_lag": self.sink_lag(),
            "last_apply": self.last_apply,
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free, **health.get("disk", {})},
        })  # fmt: skip

    def sink_lag(self) -> dict[str, float]:
        """Records each sink is behind its input topics (`flow/node`), from the gateway's and workers' metrics."""
        sinks = {(flow_id, node.node_id) for flow_id, plan in self.gateway.plans.items() for node in plan.nodes
                 if node.kind == Kind.SINK.value}  # fmt: skip
        if not sinks:
            return {}
        lag: dict[str, float] = {}
        for family in text_string_to_metric_families(self.gateway.exposition().decode()):
            for sample in family.samples:
                where = (sample.labels.get("flow", ""), sample.labels.get("node", ""))
                if sample.name == "streamforge_node_consumer_lag_records" and where in sinks:
                    lag["/".join(where)] = sample.value
        return lag

    def _registration(self) -> Registration:
        disk = shutil.disk_usage(self.folder)
        return Registration(protocol=PROTOCOL, name=self.name, instance_id=self.identity.instance_id,
                            secret=self.identity.secret, public_key=self.identity.public_key, labels=self.labels,
                            version=self.version, node_types=self.gateway.node_types.packages(),
                            hostname=socket.gethostname(), disk={"total": disk.total, "free": disk.free},
                            enrolment_key=self.enrolment_key)  # fmt: skip

    def _keep_credentials(self, answer: dict[str, Any]) -> None:
        self._token, self._expires = answer["token"], float(answer["expires_at"])
        self.status.gateway_id = os.environ["STREAMFORGE_GATEWAY_ID"] = answer["gateway_id"]
        write_durably(self.credentials_path, json.dumps({"gateway_id": answer["gateway_id"], "token": self._token,
                                                         "expires_at": self._expires}).encode())  # fmt: skip

    async def register(self) -> bool:
        """True once approved (credentials stored); False while pending."""
        response = await self._http.post("/gateways/register", content=self._registration().model_dump_json(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        if response.status_code == 202:
            answer = RegistrationAnswer.model_validate(response.json())
            self.status.gateway_id, self.status.approval = answer.gateway_id, "pending"
            if answer.claims is not None:  # our instance id is held by an identity we cannot prove we are
                self.status.last_error = answer.message
                log.warning("registered as a new identity; an Admin must replace the old one with it",
                            extra={"gateway": answer.gateway_id, "claims": answer.claims})  # fmt: skip
            return False
        if response.status_code != 200:
            raise ControlPlaneRefused(response.status_code, response.text)
        self._keep_credentials(response.json())
        self.status.approval = "approved"
        log.info("registered and approved", extra={"gateway": self.status.gateway_id})
        return True

    def _renew_before(self) -> float:
        """Seconds before expiry to renew: a month, or a quarter of the token's lifetime if that is shorter."""
        assert self._token is not None
        claims = jwt.decode(self._token, options={"verify_signature": False})  # our own token: only its times
        return min(RENEW_BEFORE_S, (float(claims["exp"]) - float(claims["iat"])) / 4)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    async def sync_once(self) -> bool:
        """One poll; True if a new state was applied (then poll again at once, to report the result)."""
        if self._token and self._expires - time.time() < self._renew_before():
            renewed = await self._http.post(f"/gateways/{self.status.gateway_id}/token", headers=self._auth())
            if renewed.status_code == 200:
                self._keep_credentials(renewed.json())
                self.status.renewals += 1
                log.info("gateway token renewed", extra={"expires_at": self._expires})
        headers = self._auth() | ({"If-None-Match": self.status.etag} if self.status.etag else {})
        response = await self._http.post(
            f"/gateways/{self.status.gateway_id}/sync",
            headers=headers | {"Content-Type": "application/json"},
            content=self.heartbeat().model_dump_json(exclude_none=True),
        )
        self.status.polls += 1
        self.status.reachable, self.status.last_contact = True, time.time()
        if not self.status.push_connected:
            self.link_back.set()
        if response.status_code == 304:
            self.status.not_modified += 1
            self.status.last_error = None
            return False
        if response.status_code != 200:
            raise ControlPlaneRefused(response.status_code, response.text)
        self.status.last_error = None
        await self.apply(response.json())
        return True

    async def run(self) -> None:
        """Forever: register until approved, then sync every poll interval (or at once when pushed). Errors are
        reported and retried with the one backoff (engine/retry); nothing the control plane says or fails to say
        stops the flows or touches the cache."""
        listener = asyncio.create_task(self._listen(), name="sync-push")
        watcher = asyncio.create_task(self._watch_nodes(), name="sync-node-watch")
        uplink = asyncio.create_task(self._uplink(), name="alarm-uplink")
        pruner = asyncio.create_task(prune_logs(self.logs), name="log-ring")
        backoff = Backoff(1.0, MAX_RETRY_S)
        try:
            while True:
                wait = self.poll_interval_s
                try:
                    if not self._token and not await self.register():
                        wait = min(5.0, self.poll_interval_s)
                    elif await self.sync_once():
                        continue
                    backoff.reset()
                except ControlPlaneRefused as refused:
                    self._refused(refused)
                    wait = min(backoff.next_delay(), self.poll_interval_s)
                except (httpx.HTTPError, OSError, ValueError) as unreachable:
                    self.status.reachable, self.status.last_error = (
                        False,
                        f"{type(unreachable).__name__}: {unreachable}",
                    )
                    log.warning(
                        "control plane unreachable; running from the cache", extra={"error": self.status.last_error}
                    )
                    wait = min(backoff.next_delay(), self.poll_interval_s)
                self.poll_now.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poll_now.wait(), jittered(wait))
        finally:
            for task in (listener, watcher, uplink, pruner):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch_nodes(self) -> None:
        """A node changing status is news: heartbeat at once (at most once a second), not at the next poll."""
        seen: set[tuple[str, str, str]] = set()
        while True:
            await asyncio.sleep(1.0)
            now = {(node["flow"], node["node"], node["status"]) for node in self.gateway.node_health()}
            if now != seen:
                seen = now
                self.poll_now.set()

    async def _uplink(self) -> None:
        """Alarm transitions to the control plane's alarm store, once this gateway is registered."""
        while not (self._token and self.status.gateway_id):  # noqa: ASYNC110 (registration sets no event)
            await asyncio.sleep(1.0)

        async def post(events: list[dict[str, Any]]) -> None:
            response = await self._http.post(f"/gateways/{self.status.gateway_id}/alarms", json={"events": events},
                                             headers=self._auth())  # fmt: skip
            if response.status_code != 200:
                raise ControlPlaneRefused(response.status_code, response.text)

        await alarm_uplink(self.gateway, self.status.gateway_id, post)

    def _refused(self, refused: ControlPlaneRefused) -> None:
        """401: our token is no longer good (register again with our secret); 403: not approved (wait); 404: the
        control plane forgot us (register anew). The cache and the flows stay as they are in every case."""
        self.status.reachable, self.status.last_error = True, str(refused)
        log.warning("control plane refused the gateway; still running from the cache",
                    extra={"status": refused.status, "error": str(refused)})  # fmt: skip
        if refused.status in (401, 404):
            self._token = None
            self.status.approval = "unregistered"
        elif refused.status == 403:
            self.status.approval = "refused"

    def _pushed(self) -> None:
        """A "poll now" notice: the desired state changed."""
        self.status.pushes += 1
        self.poll_now.set()

    async def _listen(self) -> None:
        """The events socket: the link everything the control plane asks of this gateway travels over (poll
        notices, commands, taps), and its metrics and logs go back over. Pinged both ways, so a dead link is
        noticed in seconds; reconnects with backoff; polls never depend on it."""
        backoff = Backoff(1.0, MAX_RETRY_S)
        url = self.base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        pinned = self._verify if isinstance(self._verify, ssl.SSLContext) else None  # None: the default context
        while True:
            if not (self._token and self.status.gateway_id):
                await asyncio.sleep(1.0)  # not registered yet: nothing to connect with
                continue
            try:
                events = f"{url}/api/v1/gateways/{self.status.gateway_id}/events"
                async with websockets.connect(events, additional_headers=self._auth(), open_timeout=10, ssl=pinned,
                                              ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                                              max_size=2**20) as socket_:  # fmt: skip
                    backoff.reset()
                    self.status.push_connected = True
                    channel = EventsChannel(socket_.send, self.gateway, self.operations, self.log_tail, self._pushed)
                    await channel.serve(socket_)
            except (OSError, websockets.WebSocketException, TimeoutError, ValueError) as lost:
                log.info("events socket down; polls go on", extra={"error": f"{type(lost).__name__}: {lost}"})
            self.status.push_connected = False
            self.link_back.clear()
            with contextlib.suppress(TimeoutError):  # a poll that got through says the control plane is back
                await asyncio.wait_for(self.link_back.wait(), min(backoff.next_delay(), self.poll_interval_s))
