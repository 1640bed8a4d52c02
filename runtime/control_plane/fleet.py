"""The fleet: gateway registration and approval, flow assignments, each gateway's desired state, heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import sqlite3
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import NodeTypes
from streamforge.engine.secrets import references
from streamforge.runtime.control_plane.auth import bearer_token
from streamforge.runtime.control_plane.credentials import TokenSigner, seal, valid_public_key
from streamforge.runtime.control_plane.gateway_logs import GatewayLogs
from streamforge.runtime.control_plane.gateway_metrics import GatewayMetrics
from streamforge.runtime.control_plane.store import Store, token_digest
from streamforge.runtime.errors import ApiError
from streamforge.runtime.protocol import (
    FROM_GATEWAY,
    PROTOCOL,
    CommandReply,
    CommandRequest,
    DesiredState,
    Heartbeat,
    LogsPush,
    MetricsPush,
    PollNotice,
    Registration,
    TapCancel,
    TapEnded,
    TapRecord,
    TapRequest,
    TapStarted,
    ToGateway,
    major,
)

log = logging.getLogger("streamforge.fleet")

POLL_INTERVAL_S = 30.0
MISSED_HEARTBEATS_OFFLINE = 3  # spec: OFFLINE after 3 missed heartbeats
# Per client address: every registration call (a pending gateway retries every 5 s), and the new identities
# among them (what fills the Gateways page).
REGISTRATIONS, NEW_GATEWAYS = "120/minute", "10/minute"
LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-/")


class Approval(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETIRED = "retired"  # replaced by another identity; kept for its history


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_labels(value: Any, where: str) -> dict[str, str]:
    """Labels as `{"site": "north"}` or `["site=north"]`; 422 naming the bad one."""
    items = value.items() if isinstance(value, dict) else (str(v).partition("=")[::2] for v in value or [])
    labels = {}
    for key, label in items:
        key, label = str(key), str(label)
        if not key or not label or not set(key + label) <= LABEL_CHARS:
            raise ApiError(422, "invalid", f"{where}: label {key}={label!r} must be key=value of letters, digits, "
                           "_ . - /")  # fmt: skip
        labels[key] = label
    return labels


def selector_text(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def selector_labels(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if item)


@dataclass
class LastHeartbeat:
    """The latest a gateway said about itself; kept in memory and flushed to the store every few seconds."""

    at: float
    report: dict[str, Any]
    dirty: bool = True


@dataclass
class Tap:
    """A debug tap the control plane asked a gateway for: what the gateway streams back for it."""

    gateway_id: str
    request: TapRequest
    messages: asyncio.Queue[TapStarted | TapRecord | TapEnded] = field(default_factory=asyncio.Queue)


@dataclass
class Waiter:
    """A deploy waiting for gateways to acknowledge a flow version."""

    flow_id: str
    version: int
    pending: set[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


Throttle = tuple[RateLimitItem, MovingWindowRateLimiter]


def throttle(rate: str) -> Throttle:
    """A per-client-address limit such as "120/minute" (a moving window: no burst at a window's edge)."""
    return parse(rate), MovingWindowRateLimiter(MemoryStorage())


class Registered(NamedTuple):
    """What a registration answered, and whether it made a new identity (claiming the instance id of `claims`)."""

    status: int
    body: dict[str, Any]
    created: bool = False
    claims: str | None = None


class FleetService:
    """Gateways and what they should run. The gateway always initiates (register, sync); the control plane
    answers with desired state and, over a websocket, only ever says "poll now"."""

    def __init__(self, store: Store, node_types: NodeTypes, signer: TokenSigner,
                 poll_interval_s: float = POLL_INTERVAL_S, registrations_per_address: str = REGISTRATIONS,
                 new_gateways_per_address: str = NEW_GATEWAYS) -> None:  # fmt: skip
        self.store, self.node_types, self.signer = store, node_types, signer
        self.poll_interval_s = poll_interval_s
        self._registrations, self._identities = throttle(registrations_per_address), throttle(new_gateways_per_address)
        # ETags hide secret values' digests behind a key that outlives restarts: a restarted control plane
        # answers 304 to gateways that are up to date instead of sending every one its state again.
        self._etag_key = store.derived_key("gateway-etag")
        self._etags: dict[str, tuple[int, str]] = {}  # gateway -> (store revision, etag)
        self._heartbeats: dict[str, LastHeartbeat] = {}
        self._listeners: dict[str, set[asyncio.Queue[ToGateway]]] = defaultdict(set)
        self._link_lost: dict[str, float] = {}  # gateway -> when its last events socket closed
        self._waiters: list[Waiter] = []
        self._commands: dict[str, tuple[str, asyncio.Future[CommandReply]]] = {}  # id -> (gateway, its answer)
        self._taps: dict[str, Tap] = {}
        self.metrics = GatewayMetrics(store)
        self.logs = GatewayLogs(store)
        self._failed: dict[str, dict[str, tuple[int, str]]] = defaultdict(dict)  # gateway -> flow -> (version, cause)
        for failure in store.db.execute("SELECT gateway_id, flow_id, version, cause FROM apply_failures"):
            self._failed[failure["gateway_id"]][failure["flow_id"]] = (failure["version"], failure["cause"])

    # -- rows ------------------------------------------------------------------------------------------

    def _row(self, gateway_id: str) -> dict[str, Any]:
        row = self.store.db.execute("SELECT * FROM gateways WHERE id = ?", (gateway_id,)).fetchone()
        if row is None:
            raise ApiError(404, "not_found", f"gateway {gateway_id!r} is not registered")
        return self._decode(dict(row))

    @staticmethod
    def _decode(row: dict[str, Any]) -> dict[str, Any]:
        row["labels"], row["info"] = json.loads(row["labels"]), json.loads(row["info"])
        row["heartbeat"] = json.loads(row["heartbeat"]) if row["heartbeat"] else None
        return row

    def _rows(self) -> list[dict[str, Any]]:
        return [self._decode(dict(r)) for r in self.store.db.execute("SELECT * FROM gateways ORDER BY name, id")]

    @contextlib.contextmanager
    def _writing_one(self, gateway_id: str | None) -> Iterator[sqlite3.Connection]:
        """A write that changes what one gateway should run, not the fleet's: only its cached ETag is dropped, so
        a gateway polling its registration every few seconds does not make 10,000 others recompute theirs."""
        with self.store.write(desired_state=False) as db:
            yield db
        if gateway_id is not None:
            self._etags.pop(gateway_id, None)

    # -- registration ------------------------------------------------------------------------------------

    def create_enrolment_key(self, labels: dict[str, str], user: str, ttl_s: float = 3600.0, uses: int = 1) -> str:
        """A key whose holder registers pre-approved (how `streamforge up` enrols its own gateway), good for
        `uses` new gateways (one by default), stored hashed."""
        key = f"sfe_{secrets.token_urlsafe(24)}"
        with self.store.write(desired_state=False) as db:
            db.execute("INSERT INTO enrolment_keys VALUES (?, ?, ?, ?, ?, ?)",
                       (token_digest(key), json.dumps(labels), user, _now(), time.time() + ttl_s, uses))  # fmt: skip
        return key

    def _enrolment(self, key: str | None) -> dict[str, str] | None:
        if not key:
            return None
        row = self.store.db.execute("SELECT * FROM enrolment_keys WHERE key_hash = ?", (token_digest(key),)).fetchone()
        if row is None or row["expires_at"] < time.time() or row["uses_left"] < 1:
            raise ApiError(403, "enrolment_invalid", "the enrolment key is unknown, expired or used up; ask an "
                           "Admin for a new one, or register without it and wait for approval")  # fmt: skip
        labels: dict[str, str] = json.loads(row["labels"])
        return labels

    def register(self, registration: Registration, address: str) -> Registered:
        """First boot, and every retry until approved. 202 pending; 200 with a token once approved.

        Instance ids are not secrets (any Viewer reads them): possession of the registration secret is what proves
        the caller is a gateway already known. A caller with a known instance id and another secret (a gateway
        rebuilt after a disk loss, or an impostor) never changes that gateway: it becomes a new pending identity
        beside it, which no enrolment key approves, until an Admin replaces the old one with it, rejects or deletes
        it. `address` is the client's (never a forwarded header): new identities are rate limited by it.
        """
        if major(registration.protocol) != major(PROTOCOL):
            raise ApiError(422, "protocol", f"this control plane speaks fleet protocol {PROTOCOL}; the gateway "
                           f"speaks {registration.protocol}: upgrade the older of the two")  # fmt: skip
        if not valid_public_key(registration.public_key):
            raise ApiError(422, "invalid", "`public_key` must be a base64 X25519 public key (32 bytes)")
        labels = parse_labels(registration.labels, "labels")
        info = {"version": registration.version, "node_types": registration.node_types, "disk": registration.disk,
                "hostname": registration.hostname, "protocol": registration.protocol}  # fmt: skip
        secret_hash = token_digest(registration.secret)
        same_instance = [dict(row) for row in self.store.db.execute(
            "SELECT id, name, status, secret_hash, replaced_by FROM gateways WHERE instance_id = ? ORDER BY rowid",
            (registration.instance_id,))]  # fmt: skip
        # Each stored secret is compared in constant time: a wrong guess learns nothing of a right one.
        own = next((row for row in same_instance if hmac.compare_digest(row["secret_hash"], secret_hash)), None)
        if own is not None:
            with self._writing_one(own["id"]) as db:
                db.execute("UPDATE gateways SET info = ? WHERE id = ?", (json.dumps(info), own["id"]))
            return Registered(*self._answer(own["id"], Approval(own["status"]), own["replaced_by"]))
        holder = next((row for row in same_instance if row["status"] != Approval.RETIRED), None)
        # A key approves only a gateway that claims nothing: an instance id already held waits for an Admin.
        preapproved = None if holder is not None else self._enrolment(registration.enrolment_key)
        self._throttle(self._identities, address, "new gateways")
        gateway_id = f"gw_{uuid.uuid4().hex[:12]}"
        status = Approval.APPROVED if preapproved is not None else Approval.PENDING
        with self._writing_one(None) as db:
            if preapproved is not None:  # spent in the same transaction: two registrations cannot share one use
                spent = db.execute(
                    "UPDATE enrolment_keys SET uses_left = uses_left - 1 WHERE key_hash = ? AND uses_left > 0",
                    (token_digest(str(registration.enrolment_key)),),
                ).rowcount
                if not spent:
                    raise ApiError(403, "enrolment_invalid", "the enrolment key is used up; ask an Admin for a "
                                   "new one, or register without it and wait for approval")  # fmt: skip
            name = self._free_name(registration.name)
            db.execute("INSERT INTO gateways (id, instance_id, name, status, secret_hash, public_key, labels, "
                       "info, registered_at, decided_by, decided_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (gateway_id, registration.instance_id, name, status, secret_hash, registration.public_key,
                        json.dumps({**labels, **(preapproved or {})}), json.dumps(info), _now(),
                        "enrolment key" if preapproved is not None else None,
                        _now() if preapproved is not None else None))  # fmt: skip
        claims = None if holder is None else str(holder["id"])
        if claims is not None:
            log.warning("a new identity claims a known instance id; pending until an Admin replaces, rejects or "
                        "deletes it", extra={"gateway": gateway_id, "claims": claims, "address": address})  # fmt: skip
        else:
            log.info("gateway registered", extra={"gateway": gateway_id, "status": status})
        status_code, body = self._answer(gateway_id, status, None)
        if claims is not None:
            body.update(
                claims=claims,
                message=f"instance id {registration.instance_id} is held by gateway {claims}; "
                f"this is a new identity ({gateway_id}): an Admin replaces {claims} with it, or rejects it",
            )
        return Registered(status_code, body, created=True, claims=claims)

    def _answer(self, gateway_id: str, status: Approval, replaced_by: str | None) -> tuple[int, dict[str, Any]]:
        if status is Approval.REJECTED:
            raise ApiError(403, "rejected", f"gateway {gateway_id} was rejected by an Admin; it gets no config")
        if status is Approval.RETIRED:
            raise ApiError(403, "replaced", f"gateway {gateway_id} was replaced by gateway {replaced_by}; it gets no "
                           "config")  # fmt: skip
        if status is Approval.PENDING:
            return 202, {"gateway_id": gateway_id, "status": status.value,
                         "message": "waiting for an Admin to approve this gateway"}  # fmt: skip
        token, expires = self.signer.issue(gateway_id)
        return 200, {"gateway_id": gateway_id, "status": status.value, "token": token, "expires_at": expires}

    def admit_registration(self, address: str) -> None:
        """Before a registration is even read: 429 when `address` (the client's own) sent too many lately."""
        self._throttle(self._registrations, address, "registrations")

    @staticmethod
    def _throttle(limit: Throttle, address: str, what: str) -> None:
        """429 with how long to wait when `address` is past `limit`."""
        rate, limiter = limit
        if limiter.hit(rate, address):
            return
        wait = max(1, math.ceil(limiter.get_window_stats(rate, address).reset_time - time.time()))
        raise ApiError(429, "too_many_registrations", f"too many {what} from {address} ({rate}); try again in "
                       f"{wait} s")  # fmt: skip

    def _free_name(self, wanted: str) -> str:
        """`wanted`, or `wanted-2`, `-3`, ... when a live gateway has it: names are unique among live gateways, and
        a registration never fails (nor can be blocked by a squatter) for its name."""
        taken = {row[0] for row in self.store.db.execute(
            "SELECT name FROM gateways WHERE status != ? AND (name = ? OR name LIKE ?)",
            (Approval.RETIRED, wanted, f"{wanted[:190]}-%"))}  # fmt: skip
        name, number = wanted, 1
        while name in taken:
            number += 1
            name = f"{wanted[:190]}-{number}"
        return name

    async def approved(self, instance_id: str, timeout_s: float = 60.0) -> str:
        """The id of the approved gateway with this instance id, once it has registered and been approved."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            row = self.store.db.execute("SELECT id FROM gateways WHERE instance_id = ? AND status = ?",
                                        (instance_id, Approval.APPROVED)).fetchone()  # fmt: skip
            if row is not None:
                return str(row["id"])
            await asyncio.sleep(0.2)
        raise TimeoutError(f"gateway instance {instance_id} was not registered and approved within {timeout_s:.0f} s")

    def decide(self, gateway_id: str, approval: Approval, user: str) -> dict[str, Any]:
        row = self._row(gateway_id)
        if row["status"] == Approval.RETIRED:
            raise ApiError(409, "retired", f"gateway {gateway_id} was replaced by {row['replaced_by']}; delete it, or "
                           "approve or reject its replacement")  # fmt: skip
        with self._writing_one(gateway_id) as db:
            db.execute("UPDATE gateways SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?",
                       (approval, user, _now(), gateway_id))  # fmt: skip
        log.info("gateway decided", extra={"gateway": gateway_id, "status": approval, "user": user})
        self.notify({gateway_id})
        return self.details(gateway_id)

    def reject_pending(self, gateway_ids: list[str] | None, user: str) -> list[str]:
        """Reject these pending gateways (every pending one when None) in one transaction; the ids rejected.
        An id that is unknown or not pending is a 409 naming it, and nothing is rejected."""
        pending = {row[0] for row in self.store.db.execute("SELECT id FROM gateways WHERE status = ?",
                                                             (Approval.PENDING,))}  # fmt: skip
        chosen = sorted(pending) if gateway_ids is None else sorted(set(gateway_ids))
        others = [gateway_id for gateway_id in chosen if gateway_id not in pending]
        if others:
            raise ApiError(409, "not_pending", f"not pending (or unknown): {', '.join(others[:20])}; only pending "
                           "gateways are rejected in bulk: reject an approved one on its own")  # fmt: skip
        with self._writing_one(None) as db:
            db.executemany("UPDATE gateways SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?",
                           [(Approval.REJECTED, user, _now(), gateway_id) for gateway_id in chosen])  # fmt: skip
        log.info("pending gateways rejected", extra={"count": len(chosen), "user": user})
        self.notify(set(chosen))
        return chosen

    def replace(self, new_id: str, old_id: str, user: str) -> dict[str, Any]:
        """The new identity takes the old gateway's place: its name, labels and own assignments move to it, it is
        approved, and the old one is retired as "<name> (retired)" (its token and secret refused from now on, its
        history kept)."""
        new, old = self._row(new_id), self._row(old_id)
        if new_id == old_id:
            raise ApiError(422, "invalid", "a gateway cannot replace itself: name the old gateway's id in `replaces`")
        for row, role in ((new, "replacement"), (old, "replaced gateway")):
            if row["status"] == Approval.RETIRED:
                raise ApiError(409, "retired", f"the {role} {row['id']} is already retired (replaced by "
                               f"{row['replaced_by']})")  # fmt: skip
        if new["status"] == Approval.REJECTED:
            raise ApiError(409, "rejected", f"gateway {new_id} was rejected; approve it first if it is the replacement")
        with self._writing_one(new_id) as db:
            db.execute("UPDATE gateways SET status = ?, replaced_by = ?, decided_by = ?, decided_at = ?, name = ? "
                       "WHERE id = ?", (Approval.RETIRED, new_id, user, _now(), f"{old['name'][:190]} (retired)",
                                        old_id))  # fmt: skip
            db.execute("UPDATE gateways SET name = ?, labels = ?, status = ?, decided_by = ?, decided_at = ? "
                       "WHERE id = ?", (old["name"], json.dumps(old["labels"]), Approval.APPROVED, user, _now(),
                                        new_id))  # fmt: skip
            db.execute("UPDATE OR REPLACE assignments SET target = ? WHERE target_kind = 'gateway' AND target = ?",
                       (new_id, old_id))  # fmt: skip
        self._etags.pop(old_id, None)
        log.warning("gateway replaced", extra={"gateway": old_id, "replaced_by": new_id, "user": user})
        self.notify({new_id, old_id})
        return self.details(new_id)

    def delete(self, gateway_id: str, user: str, force: bool = False) -> None:
        """Forget a gateway. An approved one that still has flows to run only with `force` (its own assignments
        go with it); its alarm history stays."""
        row = self._row(gateway_id)
        wanted = self.wanted_versions(row) if row["status"] == Approval.APPROVED else {}
        if wanted and not force:
            raise ApiError(409, "has_flows", f"gateway {gateway_id} ({row['name']}) is approved and runs "
                           f"{', '.join(sorted(wanted))}: unassign them first, or delete with ?force=true")  # fmt: skip
        with self._writing_one(gateway_id) as db:
            db.execute("DELETE FROM assignments WHERE target_kind = 'gateway' AND target = ?", (gateway_id,))
            db.execute("DELETE FROM gateways WHERE id = ?", (gateway_id,))
        self._heartbeats.pop(gateway_id, None)
        log.warning("gateway deleted", extra={"gateway": gateway_id, "user": user, "forced": bool(wanted)})
        self.notify({gateway_id})

    def set_labels(self, gateway_id: str, labels: dict[str, str]) -> dict[str, Any]:
        self._row(gateway_id)
        with self._writing_one(gateway_id) as db:
            db.execute("UPDATE gateways SET labels = ? WHERE id = ?", (json.dumps(labels), gateway_id))
        self.notify({gateway_id})
        return self.details(gateway_id)

    # -- authentication of gateway calls ----------------------------------------------------------------

    def authenticate(self, authorization: str, gateway_id: str) -> dict[str, Any]:
        """The gateway behind a bearer JWT, which must be `gateway_id` and approved: 401 / 403 otherwise."""
        row = self.gateway_of(bearer_token(authorization, "gateway token>"))
        if row["id"] != gateway_id:
            raise ApiError(403, "forbidden", f"this token belongs to gateway {row['id']}, not {gateway_id}")
        return row

    def gateway_of(self, token: str) -> dict[str, Any]:
        """The one check of a gateway JWT, wherever one is accepted (sync, renew, events, alarms, /schemas): signed
        by us and unexpired (401), of a gateway that exists (401: register again) and is approved now (403 saying
        what it is instead: pending, rejected, replaced)."""
        claims = self.signer.verify(token)
        found = self.store.db.execute("SELECT * FROM gateways WHERE id = ?", (claims.gateway_id,)).fetchone()
        if found is None:
            raise ApiError(401, "gateway_unknown", f"gateway {claims.gateway_id} is not registered (an Admin deleted "
                           "it?): register again, and wait for approval")  # fmt: skip
        row = self._decode(dict(found))
        if row["status"] == Approval.RETIRED:
            raise ApiError(403, "replaced", f"gateway {row['id']} was replaced by gateway {row['replaced_by']}: its "
                           "token is no longer accepted")  # fmt: skip
        if row["status"] == Approval.REJECTED:
            raise ApiError(403, "rejected", f"gateway {row['id']} was rejected by an Admin: its token is no longer "
                           "accepted")  # fmt: skip
        if row["status"] != Approval.APPROVED:
            raise ApiError(403, "not_approved", f"gateway {row['id']} is {row['status']}: an Admin must approve it")
        return row

    def renew(self, gateway_id: str) -> dict[str, Any]:
        token, expires = self.signer.issue(gateway_id)
        return {"gateway_id": gateway_id, "token": token, "expires_at": expires}

    # -- assignments and desired state ------------------------------------------------------------------

    def assignments(self, flow_id: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM assignments" + (" WHERE flow_id = ?" if flow_id else "") + " ORDER BY flow_id, target"
        rows = self.store.db.execute(sql, (flow_id,) if flow_id else ()).fetchall()
        return [{**dict(r), "labels": selector_labels(r["target"]) if r["target_kind"] == "label" else None}
                for r in rows]  # fmt: skip

    def _targets(self, gateway_id: str | None, labels: dict[str, str] | None) -> tuple[str, str]:
        if bool(gateway_id) == bool(labels):
            raise ApiError(422, "invalid", 'name exactly one target: {"gateway": "gw_..."} or '
                           '{"labels": {"site": "north"}}')  # fmt: skip
        return ("gateway", str(gateway_id)) if gateway_id else ("label", selector_text(labels or {}))

    def matching(self, kind: str, target: str) -> list[dict[str, Any]]:
        """Approved gateways an assignment target covers."""
        wanted = selector_labels(target) if kind == "label" else None
        return [row for row in self._rows() if row["status"] == Approval.APPROVED
                and (row["id"] == target if wanted is None else wanted.items() <= row["labels"].items())]  # fmt: skip

    def covered(self, gateway_id: str | None, labels: dict[str, str] | None) -> set[str]:
        return {row["id"] for row in self.matching(*self._targets(gateway_id, labels))}

    def assign(self, flow_id: str, version: int, user: str, gateway_id: str | None = None,
               labels: dict[str, str] | None = None, restart: bool = False) -> dict[str, Any]:  # fmt: skip
        """Pin `flow_id` at `version` on a gateway or on every gateway with these labels. Refused, with the
        reason, if a gateway it covers lacks a node type the flow needs. `restart`: its gateways restart every
        node of the flow, changed or not (a full deploy)."""
        document = self.store.get_flow(flow_id, version).document
        kind, target = self._targets(gateway_id, labels)
        if kind == "gateway":
            self._row(target)
        covered = self.matching(kind, target)
        needed = sorted({node["type"] for node in document.get("nodes", [])})
        for row in covered:
            installed = row["info"].get("node_types") or {}
            missing = [name for name in needed if name not in installed]
            if missing:
                raise ApiError(409, "node_types_missing", f"gateway {row['id']} ({row['name']}) lacks node type(s) "
                               f"{', '.join(missing)} that flow {flow_id} v{version} needs: install their package "
                               "on that gateway, or assign elsewhere")  # fmt: skip
        with self.store.write() as db:
            restart_token = uuid.uuid4().hex if restart else None
            db.execute("INSERT OR REPLACE INTO assignments VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (flow_id, version, kind, target, user, _now(), restart_token))  # fmt: skip
            self._forget_failures(db, flow_id, {row["id"] for row in covered})  # an assignment is a retry
            if kind == "label":  # a fleet-wide assignment supersedes earlier per-gateway pins (rollbacks)
                for row in covered:
                    db.execute("DELETE FROM assignments WHERE flow_id = ? AND target_kind = 'gateway' AND target = ?",
                               (flow_id, row["id"]))  # fmt: skip
        self.notify({row["id"] for row in covered})
        return {"flow": flow_id, "version": version, "target_kind": kind, "target": target,
                "gateways": [row["id"] for row in covered]}  # fmt: skip

    def unassign(self, flow_id: str, gateway_id: str | None = None, labels: dict[str, str] | None = None) -> None:
        kind, target = self._targets(gateway_id, labels)
        covered = self.matching(kind, target)
        with self.store.write() as db:
            gone = db.execute("DELETE FROM assignments WHERE flow_id = ? AND target_kind = ? AND target = ?",
                              (flow_id, kind, target)).rowcount  # fmt: skip
            self._forget_failures(db, flow_id, {row["id"] for row in covered})
        if not gone:
            raise ApiError(404, "not_found", f"flow {flow_id} has no assignment to {kind} {target}")
        self.notify({row["id"] for row in covered})

    def unassign_all(self, flow_id: str) -> list[str]:
        """Every assignment of the flow, gone: its gateways stop it at their next poll (told at once). Returns
        the gateways that ran or were to run it."""
        covered = {row["id"] for a in self.assignments(flow_id) for row in self.matching(a["target_kind"], a["target"])}
        with self.store.write() as db:
            db.execute("DELETE FROM assignments WHERE flow_id = ?", (flow_id,))
            self._forget_failures(db, flow_id, covered)
        self.notify(covered)
        return sorted(covered)

    def _forget_failures(self, db: sqlite3.Connection, flow_id: str, gateway_ids: set[str]) -> None:
        for gateway_id in gateway_ids:
            if self._failed[gateway_id].pop(flow_id, None) is not None:
                db.execute("DELETE FROM apply_failures WHERE gateway_id = ? AND flow_id = ?", (gateway_id, flow_id))

    def _note_failed_apply(self, row: dict[str, Any], before: dict[str, Any] | None, report: dict[str, Any]) -> None:
        """A new NOT_APPLIED marks the flow that failed as failed on this gateway, so its pin falls back to what
        the gateway runs and later deploys of other flows are not rolled back with it. The flow is the one the
        gateway names, else every flow whose wanted version it did not reach (they were applied together)."""
        last = report.get("last_apply") or {}
        seen = (before or {}).get("last_apply") or {}
        if last.get("result") != "NOT_APPLIED" or last.get("transient") or last == seen:
            return
        wanted: dict[str, int] = last.get("wanted") or {}
        reached: dict[str, int] = last.get("flows") or {}
        named = last.get("flow")
        failed = (
            [named] if named in wanted else [flow for flow, version in wanted.items() if reached.get(flow) != version]
        )
        pinned = self.wanted_versions(row)
        failed = [flow for flow in failed if pinned.get(flow) == wanted[flow]]  # still what is asked of it
        if not failed:
            return
        cause = str(last.get("cause") or "the gateway rolled it back")[:2000]
        with self.store.write() as db:
            for flow in failed:
                self._failed[row["id"]][flow] = (wanted[flow], cause)
                db.execute("INSERT OR REPLACE INTO apply_failures VALUES (?, ?, ?, ?, ?)",
                           (row["id"], flow, wanted[flow], cause, _now()))  # fmt: skip
        log.warning("flow marked failed on gateway", extra={"gateway": row["id"], "flows": failed, "cause": cause})

    def wanted_versions(self, row: dict[str, Any]) -> dict[str, int]:
        return {flow: version for flow, (version, _) in self.wanted(row).items()}

    def wanted(self, row: dict[str, Any]) -> dict[str, tuple[int, str | None]]:
        """Flow id -> (version, restart token) for one gateway: its own pin wins, then the most specific label
        selector."""
        chosen: dict[str, tuple[tuple[int, str], tuple[int, str | None]]] = {}
        for assignment in self.assignments():
            if assignment["target_kind"] == "gateway":
                if assignment["target"] != row["id"]:
                    continue
                rank = (1_000, assignment["assigned_at"])
            else:
                if not assignment["labels"].items() <= row["labels"].items():
                    continue
                rank = (len(assignment["labels"]), assignment["assigned_at"])
            flow = assignment["flow_id"]
            if flow not in chosen or rank > chosen[flow][0]:
                chosen[flow] = (rank, (assignment["version"], assignment["restart"]))
        wanted = {flow: pinned for flow, (_, pinned) in sorted(chosen.items())}
        failed = self._failed.get(row["id"], {})
        for flow, (version, _cause) in failed.items():
            if flow in wanted and wanted[flow][0] == version:  # it rolled back: keep what runs, or nothing
                running = ((self._last(row)[1] or {}).get("flows") or {}).get(flow)
                if running is None:
                    del wanted[flow]
                else:
                    wanted[flow] = (int(running), None)
        return wanted

    def etag(self, row: dict[str, Any]) -> str:
        """Changes exactly when the desired state does; cached per store revision (cheap 304s)."""
        cached = self._etags.get(row["id"])
        if cached is not None and cached[0] == self.store.revision:
            return cached[1]
        revision = self.store.revision
        wanted = self.wanted(row)
        used = sorted({(flow, name) for flow, (version, _) in wanted.items()
                       for name in references(self.store.get_flow(flow, version).document)})  # fmt: skip
        values = [[flow, name, self.store.secret(name) if self.store.secret_readable(flow, name) else None]
                  for flow, name in used]  # fmt: skip
        secret_digest = hmac.new(self._etag_key, json.dumps(values).encode(), hashlib.sha256).hexdigest()
        basis = json.dumps({"flows": wanted, "secrets": secret_digest, "key": row["public_key"]}, sort_keys=True)
        etag = f'"{hashlib.sha256(basis.encode()).hexdigest()[:32]}"'
        self._etags[row["id"]] = (revision, etag)
        return etag

    def desired_state(self, row: dict[str, Any]) -> dict[str, Any]:
        """What the gateway should run: flow documents at their pinned versions (secret references intact),
        the secrets they use sealed to this gateway's key, and the node types with their packages."""
        flows, sealed = [], {}
        packages = self.node_types.packages()
        restarts = {}
        for flow_id, (version, restart) in self.wanted(row).items():
            document = validate_flow(self.store.get_flow(flow_id, version).document).model_dump(by_alias=True)
            flows.append(document)
            if restart:
                restarts[flow_id] = restart
            for name in sorted(references(document)):
                # Only what this flow may read: a grant revoked since the deploy takes the value away too.
                value = self.store.secret(name) if self.store.secret_readable(flow_id, name) else None
                if value is not None:
                    sealed[name] = seal(row["public_key"], value)
        types = sorted({node["type"] for document in flows for node in document["nodes"]})
        return DesiredState(protocol=PROTOCOL, gateway_id=row["id"], etag=self.etag(row), flows=flows,
                            secrets=sealed, restarts=restarts,
                            node_types={name: packages.get(name) for name in types}).model_dump()  # fmt: skip

    # -- sync: the poll that is also the heartbeat -------------------------------------------------------

    def sync(self, row: dict[str, Any], heartbeat: Heartbeat, if_none_match: str | None) -> dict[str, Any] | None:
        """Record the heartbeat; the desired state, or None when `if_none_match` is current (304)."""
        report = heartbeat.model_dump(exclude_none=True)
        _, before = self._last(row)
        self._heartbeats[row["id"]] = LastHeartbeat(time.time(), report)
        self._note_failed_apply(row, before, report)
        self._settle_waiters(row["id"], report)
        if if_none_match is not None and if_none_match == self.etag(row):
            return None
        return self.desired_state(row)

    def dirty_heartbeats(self) -> list[tuple[str, float, dict[str, Any]]]:
        """The heartbeats received since the last call (gateway, time, report), now marked as taken."""
        dirty = [(gateway_id, beat.at, beat.report) for gateway_id, beat in self._heartbeats.items() if beat.dirty]
        for gateway_id, _, _ in dirty:
            self._heartbeats[gateway_id].dirty = False
        return dirty

    def write_heartbeats(self, dirty: list[tuple[str, float, dict[str, Any]]]) -> None:
        """Persist heartbeats in one transaction, on a connection of its own: safe to run in a thread while
        the event loop goes on answering polls."""
        rows = [(at, json.dumps(report), gateway_id) for gateway_id, at, report in dirty]
        if rows:
            self.store.write_apart("UPDATE gateways SET last_seen = ?, heartbeat = ? WHERE id = ?", rows)

    def _last(self, row: dict[str, Any]) -> tuple[float | None, dict[str, Any] | None]:
        beat = self._heartbeats.get(row["id"])
        return (beat.at, beat.report) if beat else (row["last_seen"], row["heartbeat"])

    def health(self, row: dict[str, Any]) -> str:
        """PENDING / REJECTED before approval; OFFLINE after 3 missed heartbeats; else what the gateway says
        of its own nodes (HEALTHY / DEGRADED / UNHEALTHY), DEGRADED too when its last apply failed."""
        if row["status"] != Approval.APPROVED:
            return str(row["status"]).upper()
        seen, report = self._last(row)
        if seen is None or report is None:
            return "NEVER_SEEN"
        if time.time() - seen > MISSED_HEARTBEATS_OFFLINE * self.poll_interval_s:
            return "OFFLINE"
        status = str(report.get("status", "UNHEALTHY"))
        if status == "HEALTHY" and ((report.get("last_apply") or {}).get("result") == "NOT_APPLIED"
                                    or self._failed.get(row["id"])):  # fmt: skip
            return "DEGRADED"
        return status

    def desired_versions(self, gateway_id: str) -> dict[str, int]:
        return self.wanted_versions(self._row(gateway_id))

    def health_of(self, gateway_id: str) -> str:
        return self.health(self._row(gateway_id))

    def details(self, gateway_id: str) -> dict[str, Any]:
        return self._summary(self._row(gateway_id), self._holders(), full=True)

    def gateways(self) -> list[dict[str, Any]]:
        holders = self._holders()
        return [self._summary(row, holders) for row in self._rows()]

    def _holders(self) -> dict[str, str]:
        """Instance id -> the gateway that holds it: the earliest registered that is not retired. Any other live
        gateway with that instance id claims it (rebuilt, or an impostor) and waits for an Admin."""
        holders: dict[str, str] = {}
        live = self.store.db.execute("SELECT instance_id, id FROM gateways WHERE status != ? ORDER BY rowid",
                                     (Approval.RETIRED,))  # fmt: skip
        for instance_id, gateway_id in live:
            holders.setdefault(instance_id, gateway_id)
        return holders

    def _summary(self, row: dict[str, Any], holders: dict[str, str], full: bool = False) -> dict[str, Any]:
        seen, report = self._last(row)
        report = report or {}
        holder = holders.get(row["instance_id"])
        summary = {
            "id": row["id"], "name": row["name"], "status": row["status"], "health": self.health(row),
            "claims": holder if row["status"] != Approval.RETIRED and holder not in (None, row["id"]) else None,
            "replaced_by": row["replaced_by"],
            "labels": row["labels"], "version": row["info"].get("version"), "registered_at": row["registered_at"],
            "decided_by": row["decided_by"], "last_seen": seen, "running": report.get("flows", {}),
            "previous": report.get("previous", {}), "last_apply": report.get("last_apply"),
            "sink_lag": report.get("sink_lag", {}), "disk": report.get("disk"),
            "desired": self.wanted_versions(row) if row["status"] == Approval.APPROVED else {},
            "failed": {flow: {"version": version, "cause": cause}
                       for flow, (version, cause) in self._failed.get(row["id"], {}).items()},
        }  # fmt: skip
        if full:
            summary.update(info=row["info"], instance_id=row["instance_id"], heartbeat=report)
        return summary

    def rollback(self, gateway_id: str, user: str, flow_id: str | None = None) -> dict[str, Any]:
        """Pin the gateway's flows (or one) back to the versions it ran before its last apply."""
        row = self._row(gateway_id)
        _, report = self._last(row)
        previous: dict[str, int] = (report or {}).get("previous") or {}
        running: dict[str, int] = (report or {}).get("flows") or {}
        targets = {f: v for f, v in previous.items() if (flow_id is None or f == flow_id) and running.get(f) != v}
        if not targets:
            raise ApiError(409, "nothing_to_roll_back", f"gateway {gateway_id} reports no earlier version"
                           + (f" of flow {flow_id}" if flow_id else "") + " to return to")  # fmt: skip
        for flow, version in targets.items():
            self.assign(flow, int(version), user, gateway_id=gateway_id)
        return {"gateway": gateway_id, "rolled_back": targets}

    # -- push and waiting -------------------------------------------------------------------------------

    def listen(self, gateway_id: str) -> asyncio.Queue[ToGateway]:
        """A connected gateway's events socket: what to send it (poll notices, commands, taps)."""
        queue: asyncio.Queue[ToGateway] = asyncio.Queue()
        self._listeners[gateway_id].add(queue)
        return queue

    def unlisten(self, gateway_id: str, queue: asyncio.Queue[ToGateway]) -> None:
        """The socket closed (or its pings went unanswered): what waits on it is told at once, not at a timeout."""
        self._listeners[gateway_id].discard(queue)
        if self._listeners[gateway_id]:
            return
        self._link_lost[gateway_id] = time.time()
        lost = ApiError(503, "gateway_offline", f"gateway {gateway_id}'s link to the control plane closed before it "
                        "answered; it may have run the command: look at its state when it is back")  # fmt: skip
        for command_id, (owner, answer) in list(self._commands.items()):
            if owner == gateway_id and not answer.done():
                answer.set_exception(lost)
                self._commands.pop(command_id, None)
        for tap in [t for t in self._taps.values() if t.gateway_id == gateway_id]:
            tap.messages.put_nowait(TapEnded(id=tap.request.id, message=f"gateway {gateway_id}'s link closed"))

    def connected(self, gateway_id: str) -> bool:
        return bool(self._listeners.get(gateway_id))

    def notify(self, gateway_ids: set[str]) -> None:
        """Tell connected gateways to poll now; a notice already waiting to be sent is enough."""
        for gateway_id in gateway_ids:
            for queue in self._listeners.get(gateway_id, ()):
                if queue.empty():
                    queue.put_nowait(PollNotice())

    def _link(self, gateway_id: str) -> asyncio.Queue[ToGateway]:
        """The gateway's events socket, or 503 saying since when it is offline (at once: never a wait)."""
        queues = self._listeners.get(gateway_id)
        if queues:
            return next(iter(queues))
        row = self._row(gateway_id)
        lost, (seen, _) = self._link_lost.get(gateway_id), self._last(row)
        since = max(t for t in (lost, seen, 0.0) if t is not None)
        when = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds") if since else "it registered"
        raise ApiError(503, "gateway_offline", f"gateway {gateway_id} ({row['name']}) is offline since {when}: "
                       "commands travel only over the link it opens; try again when it is back")  # fmt: skip

    async def command(self, gateway_id: str, request: dict[str, Any], timeout_s: float = 30.0) -> dict[str, Any]:
        """Run an operator command on a gateway over its events socket; its answer, or the error it gave."""
        link = self._link(gateway_id)
        command = CommandRequest(protocol=PROTOCOL, id=uuid.uuid4().hex, **request)
        answer: asyncio.Future[CommandReply] = asyncio.get_running_loop().create_future()
        self._commands[command.id] = (gateway_id, answer)
        link.put_nowait(command)
        try:
            reply = await asyncio.wait_for(answer, timeout_s)
        except TimeoutError:
            raise ApiError(504, "gateway_timeout", f"gateway {gateway_id} did not answer the command within "
                           f"{timeout_s:.0f} s; it may still run it") from None  # fmt: skip
        finally:
            self._commands.pop(command.id, None)
        if reply.error is not None:
            raise ApiError.from_dict(reply.error.model_dump())
        result: dict[str, Any] = reply.result
        return result

    def received(self, gateway_id: str, raw: Any) -> None:
        """A message from a gateway's events socket. One the control plane cannot read (a newer gateway's) is
        logged and dropped: the socket stays up."""
        try:
            message = FROM_GATEWAY.validate_python(raw)
        except ValueError as unreadable:
            log.warning("unreadable message from a gateway", extra={"gateway": gateway_id,
                                                                    "error": str(unreadable)[:300]})  # fmt: skip
            return
        if isinstance(message, CommandReply):
            waiting = self._commands.get(message.id)
            if waiting is not None and waiting[0] == gateway_id and not waiting[1].done():
                waiting[1].set_result(message)
        elif isinstance(message, MetricsPush):
            self.metrics.push(gateway_id, message)
        elif isinstance(message, LogsPush):
            self.logs.push(gateway_id, message.lines)
        else:
            tap = self._taps.get(message.id)
            if tap is not None and tap.gateway_id == gateway_id:
                tap.messages.put_nowait(message)

    def open_tap(self, gateway_id: str, flow: str, node: str, port: str) -> Tap:
        """Ask the gateway to stream a sample of one output's records; close_tap() when done."""
        tap = Tap(gateway_id, TapRequest(protocol=PROTOCOL, id=uuid.uuid4().hex, flow=flow, node=node, port=port))
        self._link(gateway_id).put_nowait(tap.request)
        self._taps[tap.request.id] = tap
        return tap

    def close_tap(self, tap: Tap) -> None:
        if self._taps.pop(tap.request.id, None) is not None and self.connected(tap.gateway_id):
            self._link(tap.gateway_id).put_nowait(TapCancel(protocol=PROTOCOL, id=tap.request.id))

    def report(self, gateway_id: str) -> tuple[float | None, dict[str, Any] | None]:
        """When a gateway last synced and what it said."""
        return self._last(self._row(gateway_id))

    def waiter(self, flow_id: str, version: int, gateway_ids: set[str]) -> Waiter:
        waiter = Waiter(flow_id, version, set(gateway_ids))
        self._waiters.append(waiter)
        return waiter

    def _settle_waiters(self, gateway_id: str, report: dict[str, Any]) -> None:
        last = report.get("last_apply") or {}
        for waiter in list(self._waiters):
            if gateway_id not in waiter.pending:
                continue
            if last.get("flows", {}).get(waiter.flow_id) == waiter.version or (
                    last.get("result") == "NOT_APPLIED" and last.get("wanted", {}).get(waiter.flow_id)
                    == waiter.version):  # fmt: skip
                waiter.results[gateway_id] = last
                waiter.pending.discard(gateway_id)
            if not waiter.pending:
                waiter.done.set()
                self._waiters.remove(waiter)

    async def wait(self, waiter: Waiter, timeout_s: float) -> dict[str, dict[str, Any]]:
        """Each gateway's apply result for the waited version; gateways that did not answer in time are absent."""
        try:
            await asyncio.wait_for(waiter.done.wait(), timeout_s)
        except TimeoutError:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return waiter.results

    def running_on(self, flow_id: str) -> dict[str, dict[str, Any]]:
        """Per approved gateway that reports running `flow_id`: its name, version, health and nodes."""
        found = {}
        for row in self._rows():
            _, report = self._last(row)
            if row["status"] == Approval.APPROVED and report and flow_id in (report.get("flows") or {}):
                nodes = [n for n in report.get("nodes", []) if n.get("flow") == flow_id]
                found[row["id"]] = {"name": row["name"], "version": report["flows"][flow_id], "nodes": nodes,
                                    "health": self.health(row)}  # fmt: skip
        return found

    def pick(self, gateway_id: str | None, flow_id: str | None = None) -> str:
        """The gateway a question is about: the one named; else the only one running `flow_id` (or, with no flow,
        the only approved one); else 409 listing the candidates."""
        if gateway_id:
            self._row(gateway_id)  # 404 when unknown
            return gateway_id
        candidates = (sorted(self.running_on(flow_id)) if flow_id is not None else
                      [row["id"] for row in self._rows() if row["status"] == Approval.APPROVED])  # fmt: skip
        if len(candidates) == 1:
            return candidates[0]
        where = f"running flow {flow_id}" if flow_id is not None else "approved"
        if not candidates:
            raise ApiError(409, "no_gateway", f"no gateway is {where}")
        raise ApiError(409, "ambiguous", f"{len(candidates)} gateways are {where} ({', '.join(candidates[:20])}): "
                       "name one with `gateway`")  # fmt: skip

    def live_view(self, gateway_id: str) -> dict[str, Any]:
        """One gateway as the editor's live status shows it: health, Kafka, flows, nodes, last apply, node rates."""
        row = self._row(gateway_id)
        _, report = self._last(row)
        report = report or {}
        return {"gateway": gateway_id, "name": row["name"], "status": self.health(row),
                "kafka": {"status": report.get("kafka", "UNKNOWN")}, "flows": report.get("flows", {}),
                "nodes": report.get("nodes", []), "last_apply": report.get("last_apply"),
                "connected": self.connected(gateway_id), "rates": self.metrics.rates(gateway_id)}  # fmt: skip
