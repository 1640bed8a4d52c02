"""The control plane's store: flows with every version kept, users, tokens, secrets (SQLite, migrated)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from streamforge.runtime.errors import ApiError
from streamforge.runtime.files import private_file

# Each entry upgrades the schema by one version; applied in order, once, inside a transaction.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE flows (id TEXT PRIMARY KEY, version INTEGER NOT NULL, deployed_version INTEGER,
                        deleted INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE flow_versions (flow_id TEXT NOT NULL REFERENCES flows(id), version INTEGER NOT NULL,
                                document TEXT NOT NULL, saved_at TEXT NOT NULL, saved_by TEXT NOT NULL,
                                PRIMARY KEY (flow_id, version));
    CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, role TEXT NOT NULL,
                        created_at TEXT NOT NULL);
    CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, username TEXT NOT NULL REFERENCES users(username),
                         name TEXT NOT NULL, kind TEXT NOT NULL, created_at TEXT NOT NULL,
                         revoked INTEGER NOT NULL DEFAULT 0);
    """,
    """
    CREATE TABLE secrets (name TEXT PRIMARY KEY, ciphertext BLOB NOT NULL, updated_at TEXT NOT NULL,
                          updated_by TEXT NOT NULL);
    """,
    """
    CREATE TABLE drafts (flow_id TEXT PRIMARY KEY, document TEXT NOT NULL, updated_at TEXT NOT NULL,
                         updated_by TEXT NOT NULL);
    CREATE TABLE approvals (token_hash TEXT PRIMARY KEY, flow_id TEXT NOT NULL, change_digest TEXT NOT NULL,
                            action TEXT NOT NULL, approved_by TEXT NOT NULL, created_at TEXT NOT NULL,
                            expires_at REAL NOT NULL, used_at TEXT);
    CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, identity TEXT NOT NULL,
                        tool TEXT NOT NULL, arguments_digest TEXT NOT NULL, target TEXT, outcome TEXT NOT NULL,
                        detail TEXT, approved_by TEXT);
    """,
    """
    CREATE TABLE gateways (id TEXT PRIMARY KEY, instance_id TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
                           status TEXT NOT NULL, secret_hash TEXT NOT NULL, public_key TEXT NOT NULL,
                           labels TEXT NOT NULL, info TEXT NOT NULL, registered_at TEXT NOT NULL,
                           decided_by TEXT, decided_at TEXT, last_seen REAL, heartbeat TEXT);
    CREATE TABLE assignments (flow_id TEXT NOT NULL, version INTEGER NOT NULL, target_kind TEXT NOT NULL,
                              target TEXT NOT NULL, assigned_by TEXT NOT NULL, assigned_at TEXT NOT NULL,
                              restart TEXT, PRIMARY KEY (flow_id, target_kind, target));
    CREATE TABLE enrolment_keys (key_hash TEXT PRIMARY KEY, labels TEXT NOT NULL, created_by TEXT NOT NULL,
                                 created_at TEXT NOT NULL, expires_at REAL NOT NULL);
    """,
    """
    CREATE TABLE alarm_events (gateway_id TEXT NOT NULL, event_id TEXT NOT NULL, flow_id TEXT NOT NULL,
                               node_id TEXT NOT NULL, alarm_id TEXT NOT NULL, incarnation TEXT NOT NULL,
                               seq INTEGER NOT NULL,
                               state TEXT NOT NULL, at TEXT NOT NULL, changed_by TEXT, record TEXT NOT NULL,
                               received_at REAL NOT NULL, PRIMARY KEY (gateway_id, event_id));
    CREATE INDEX alarm_events_by_alarm ON alarm_events (gateway_id, flow_id, node_id, alarm_id, seq);
    CREATE TABLE alarms (gateway_id TEXT NOT NULL, flow_id TEXT NOT NULL, node_id TEXT NOT NULL,
                         alarm_id TEXT NOT NULL, event_id TEXT NOT NULL, incarnation TEXT NOT NULL,
                         seq INTEGER NOT NULL, state TEXT NOT NULL,
                         severity TEXT NOT NULL, asset_id TEXT NOT NULL, parameter TEXT NOT NULL, at TEXT NOT NULL,
                         record TEXT NOT NULL, PRIMARY KEY (gateway_id, flow_id, node_id, alarm_id));
    CREATE INDEX alarms_by_state ON alarms (state, severity);
    """,
    """
    CREATE TABLE gateway_metrics (gateway_id TEXT NOT NULL, at REAL NOT NULL, nodes TEXT NOT NULL,
                                  PRIMARY KEY (gateway_id, at));
    CREATE INDEX gateway_metrics_by_time ON gateway_metrics (at);
    CREATE TABLE gateway_logs (id INTEGER PRIMARY KEY AUTOINCREMENT, gateway_id TEXT NOT NULL, at TEXT NOT NULL,
                               received_at REAL NOT NULL, line TEXT NOT NULL);
    CREATE INDEX gateway_logs_by_gateway ON gateway_logs (gateway_id, at);
    """,
    """
    ALTER TABLE enrolment_keys ADD COLUMN uses_left INTEGER NOT NULL DEFAULT 1;
    """,
)


@dataclass(frozen=True)
class FlowVersion:
    flow_id: str
    version: int
    document: dict[str, Any]
    saved_at: str
    saved_by: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def token_digest(token: str) -> str:
    """Tokens are 256-bit random: a plain SHA-256 is enough to store them without keeping them."""
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """One SQLite database; every write is one transaction. Same SQL would run on PostgreSQL later."""

    def __init__(self, path: str | Path = ":memory:", key_file: Path | None = None) -> None:
        """`key_file` holds the secrets' encryption key (created 0600 on first use); default beside the db."""
        if key_file is None and str(path) != ":memory:":
            key_file = Path(path).with_suffix(".key")
        self._key = _load_key(key_file)
        self._fernet = Fernet(self._key)
        self.path = str(path)
        if self.path != ":memory:":
            private_file(Path(self.path))
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=30000")  # a bulk writer on another connection finishes first
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self.revision = 0  # bumped on every write that may change what a gateway should run
        self._migrate()

    def derived_key(self, purpose: str) -> bytes:
        """A stable 256-bit key for `purpose`, derived from the store's secret key (never stored apart)."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def write_apart(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """`sql` for every row in one transaction on a short-lived connection of its own (WAL lets the main
        connection keep reading meanwhile), for bulk writes run in a thread: heartbeats. Never changes what a
        gateway should run."""
        if self.path == ":memory:":  # no other connection sees this database
            with self.write(desired_state=False) as db:
                db.executemany(sql, rows)
            return
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(sql, rows)
            connection.execute("COMMIT")
        finally:
            connection.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the control plane's other record keepers (fleet); writes go through `write`."""
        return self._db

    @contextlib.contextmanager
    def write(self, desired_state: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction, serialized with every other write of this store. `desired_state`: it may change what
        a gateway should run (bumps `revision`, so cached ETags are recomputed)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        if desired_state:
            self.revision += 1

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = self._db.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
                self._db.execute("BEGIN")
                for statement in filter(str.strip, script.split(";")):
                    self._db.execute(statement)
                self._db.execute("DELETE FROM schema_version")
                self._db.execute("INSERT INTO schema_version VALUES (?)", (number,))
                self._db.execute("COMMIT")

    # -- flows -------------------------------------------------------------------------------------------

    def list_flows(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT f.id, f.version, f.deployed_version, v.document, v.saved_at, v.saved_by FROM flows f "
            "JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version WHERE f.deleted = 0 ORDER BY f.id"
        ).fetchall()
        return [{"id": r["id"], "label": json.loads(r["document"]).get("label", ""), "version": r["version"],
                 "deployed_version": r["deployed_version"], "saved_at": r["saved_at"], "saved_by": r["saved_by"]}
                for r in rows]  # fmt: skip

    def _current(self, flow_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM flows WHERE id = ? AND deleted = 0", (flow_id,)
        ).fetchone()
        if row is None:
            raise ApiError(404, "not_found", f"flow {flow_id!r} does not exist")
        return row

    def get_flow(self, flow_id: str, version: int | None = None) -> FlowVersion:
        wanted = version if version is not None else int(self._current(flow_id)["version"])
        row = None
        if wanted in SQLITE_INTEGERS:  # a version past 64 bits was never saved: not found, not an overflow
            row = self._db.execute("SELECT * FROM flow_versions WHERE flow_id = ? AND version = ?",
                                   (flow_id, wanted)).fetchone()  # fmt: skip
        if row is None:
            raise ApiError(404, "not_found", f"flow {flow_id!r} has no version {wanted}")
        return FlowVersion(flow_id, wanted, json.loads(row["document"]), row["saved_at"], row["saved_by"])

    def save_flow(self, document: dict[str, Any], base_version: int | None, user: str) -> FlowVersion:
        """Store a new version. `base_version` is the version the change was made on (None: a new flow);
        if the flow moved on since, the save is a conflict (409), as Node-RED's `rev`."""
        flow_id = document["id"]
        with self._lock:
            row = self._db.execute("SELECT * FROM flows WHERE id = ?", (flow_id,)).fetchone()
            live = row is not None and not row["deleted"]
            if base_version is None and live:
                raise ApiError(409, "conflict", f"flow {flow_id!r} already exists (version {row['version']}); "
                                 "load it and save with its version")  # fmt: skip
            if base_version is not None and (not live or row["version"] != base_version):
                current = row["version"] if live else "none"
                raise ApiError(409, "version_conflict", f"flow {flow_id!r} is at version {current}, not "
                               f"{base_version}: someone saved it meanwhile; reload, reapply your change, "
                               "save again")  # fmt: skip
            version = (row["version"] if row is not None else 0) + 1
            stored = {**document, "version": version}
            self._db.execute("BEGIN")
            if row is None:
                self._db.execute("INSERT INTO flows (id, version) VALUES (?, ?)", (flow_id, version))
            else:
                self._db.execute("UPDATE flows SET version = ?, deleted = 0 WHERE id = ?", (version, flow_id))
            self._db.execute("INSERT INTO flow_versions VALUES (?, ?, ?, ?, ?)",
                             (flow_id, version, json.dumps(stored, sort_keys=True), _now(), user))  # fmt: skip
            self._db.execute("COMMIT")
        return self.get_flow(flow_id, version)

    def versions(self, flow_id: str) -> list[dict[str, Any]]:
        self._current(flow_id)
        rows = self._db.execute("SELECT version, saved_at, saved_by FROM flow_versions WHERE flow_id = ? "
                                "ORDER BY version", (flow_id,)).fetchall()  # fmt: skip
        return [dict(row) for row in rows]

    def delete_flow(self, flow_id: str) -> None:
        """Hide the flow; its versions stay, so a mistaken delete can be undone by saving again."""
        self._current(flow_id)
        self._db.execute("UPDATE flows SET deleted = 1 WHERE id = ?", (flow_id,))

    def mark_deployed(self, flow_id: str, version: int | None) -> None:
        self._db.execute("UPDATE flows SET deployed_version = ? WHERE id = ?", (version, flow_id))

    # -- users and tokens --------------------------------------------------------------------------------

    def create_user(self, username: str, password_hash: str, role: str) -> None:
        try:
            self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (username, password_hash, role, _now()))
        except sqlite3.IntegrityError:
            raise ApiError(409, "conflict", f"user {username!r} already exists") from None

    def user(self, username: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return row

    def user_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def issue_token(self, username: str, name: str, kind: str = "api") -> str:
        """A new bearer token for `username`; returned once, stored only as a digest."""
        token = f"sf_{secrets.token_urlsafe(32)}"
        self._db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, 0)", (token_digest(token), username, name, kind,
                                                                         _now()))  # fmt: skip
        return token

    def token_user(self, token: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT u.* FROM tokens t JOIN users u ON u.username = t.username WHERE t.token_hash = ? AND t.revoked = 0",
            (token_digest(token),),
        ).fetchone()
        return row

    # -- secrets (encrypted at rest; values leave the store only to a deploy) -----------------------------

    def put_secret(self, name: str, value: str, user: str) -> None:
        if not SECRET_NAME.match(name):
            raise ApiError(422, "invalid", f"secret name {name!r}: letters, digits, . _ - (1-128)")
        self._db.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?, ?, ?)",
                         (name, self._fernet.encrypt(value.encode()), _now(), user))  # fmt: skip
        self.revision += 1

    def secret(self, name: str) -> str | None:
        row = self._db.execute("SELECT ciphertext FROM secrets WHERE name = ?", (name,)).fetchone()
        return None if row is None else self._fernet.decrypt(row[0]).decode()

    def secret_names(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT name, updated_at, updated_by FROM secrets ORDER BY name").fetchall()
        return [dict(row) for row in rows]

    def delete_secret(self, name: str) -> None:
        if self._db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 0:
            raise ApiError(404, "not_found", f"secret {name!r} does not exist")
        self.revision += 1

    # -- drafts, approvals and the audit trail (MCP change control) ----------------------------------------

    def put_draft(self, flow_id: str, document: dict[str, Any], user: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO drafts VALUES (?, ?, ?, ?)",
                         (flow_id, json.dumps(document, sort_keys=True), _now(), user))  # fmt: skip

    def draft(self, flow_id: str) -> tuple[dict[str, Any], str] | None:
        """The draft and who last edited it, or None."""
        row = self._db.execute("SELECT document, updated_by FROM drafts WHERE flow_id = ?", (flow_id,)).fetchone()
        return None if row is None else (json.loads(row["document"]), row["updated_by"])

    def delete_draft(self, flow_id: str) -> None:
        self._db.execute("DELETE FROM drafts WHERE flow_id = ?", (flow_id,))

    def issue_approval(self, flow_id: str, change_digest: str, action: str, approved_by: str, ttl_s: float) -> str:
        token = f"sfa_{secrets.token_urlsafe(24)}"
        self._db.execute("INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                         (token_digest(token), flow_id, change_digest, action, approved_by, _now(),
                          time.time() + ttl_s))  # fmt: skip
        return token

    def use_approval(self, token: str, flow_id: str, change_digest: str, action: str) -> str:
        """Spend an approval on exactly the change it was issued for; returns who approved it."""
        with self._lock:
            row = self._db.execute("SELECT * FROM approvals WHERE token_hash = ?", (token_digest(token),)).fetchone()
            if row is None:
                raise ApiError(403, "approval_invalid", "no such approval token; a human issues one with "
                               "POST /api/v1/flows/{flow}/approvals")  # fmt: skip
            if row["used_at"] is not None:
                raise ApiError(403, "approval_used", f"this approval was already used at {row['used_at']}; "
                               "approvals are single-use")  # fmt: skip
            if row["expires_at"] < time.time():
                raise ApiError(403, "approval_expired", "this approval has expired; ask for a new one")
            if (row["flow_id"], row["change_digest"], row["action"]) != (flow_id, change_digest, action):
                raise ApiError(403, "approval_mismatch", f"this approval is for {row['action']} of flow "
                               f"{row['flow_id']!r} change {row['change_digest'][:12]}, not {action} of "
                               f"{flow_id!r} change {change_digest[:12]}; the draft changed since it was "
                               "approved, or it approves another change")  # fmt: skip
            self._db.execute("UPDATE approvals SET used_at = ? WHERE token_hash = ?", (_now(), row["token_hash"]))
        return str(row["approved_by"])

    def audit(self, identity: str, tool: str, arguments_digest: str, target: str | None, outcome: str,
              detail: str | None = None, approved_by: str | None = None) -> None:  # fmt: skip
        self._db.execute("INSERT INTO audit (at, identity, tool, arguments_digest, target, outcome, detail, "
                         "approved_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (_now(), identity, tool, arguments_digest, target, outcome, detail, approved_by))  # fmt: skip

    def audit_trail(self, limit: int = 200, tool: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM audit" + (" WHERE tool = ?" if tool else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(sql, (tool, limit) if tool else (limit,)).fetchall()
        return [dict(row) for row in rows]


SQLITE_INTEGERS = range(-(2**63), 2**63)  # what an INTEGER column holds
SECRET_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def _load_key(key_file: Path | None) -> bytes:
    if key_file is None:
        return Fernet.generate_key()  # an in-memory store: secrets live as long as the process
    if not key_file.exists():
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(Fernet.generate_key())
    return key_file.read_bytes().strip()
