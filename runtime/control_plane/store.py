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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from streamforge.engine.secrets import own_secret
from streamforge.runtime.control_plane.audit import current_call
from streamforge.runtime.errors import ApiError
from streamforge.runtime.files import private_file

API_TOKEN_LIFETIME_S = 90 * 86400.0  # a named token's default lifetime

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
    """
    CREATE TABLE secret_grants (secret TEXT NOT NULL, flow_id TEXT NOT NULL, granted_by TEXT NOT NULL,
                                granted_at TEXT NOT NULL, PRIMARY KEY (secret, flow_id));
    ALTER TABLE audit ADD COLUMN role TEXT;
    ALTER TABLE audit ADD COLUMN channel TEXT NOT NULL DEFAULT 'mcp';
    CREATE INDEX audit_by_identity ON audit (identity, id);
    CREATE TABLE apply_failures (gateway_id TEXT NOT NULL, flow_id TEXT NOT NULL, version INTEGER NOT NULL,
                                 cause TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (gateway_id, flow_id));
    """,
    # Instance ids are not secrets: several identities may claim one (a rebuilt gateway, or an impostor), each
    # pending beside the gateway that holds it until an Admin replaces, rejects or deletes it.
    """
    CREATE TABLE gateways_new (id TEXT PRIMARY KEY, instance_id TEXT NOT NULL, name TEXT NOT NULL,
                               status TEXT NOT NULL, secret_hash TEXT NOT NULL, public_key TEXT NOT NULL,
                               labels TEXT NOT NULL, info TEXT NOT NULL, registered_at TEXT NOT NULL,
                               decided_by TEXT, decided_at TEXT, last_seen REAL, heartbeat TEXT, replaced_by TEXT);
    INSERT INTO gateways_new (id, instance_id, name, status, secret_hash, public_key, labels, info, registered_at,
                              decided_by, decided_at, last_seen, heartbeat)
        SELECT id, instance_id, name, status, secret_hash, public_key, labels, info, registered_at, decided_by,
               decided_at, last_seen, heartbeat FROM gateways;
    DROP TABLE gateways;
    ALTER TABLE gateways_new RENAME TO gateways;
    CREATE INDEX gateways_by_instance ON gateways (instance_id);
    """,
    # Tokens with a lifecycle: an id to list and revoke by, a scope, an expiry, last use; users can be disabled.
    # Live tokens carry over: sessions for 12 hours, API tokens for 90 days from the upgrade; revoked ones go.
    """
    ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE tokens_v7 (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
                            username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
                            name TEXT NOT NULL, scope TEXT NOT NULL, created_at TEXT NOT NULL,
                            expires_at REAL NOT NULL, last_used REAL);
    INSERT INTO tokens_v7 SELECT 'tok_' || lower(hex(randomblob(8))), token_hash, username, name,
                                 CASE kind WHEN 'session' THEN 'session' ELSE 'api' END, created_at,
                                 CAST(strftime('%s', 'now') AS REAL)
                                 + CASE kind WHEN 'session' THEN 43200 ELSE 7776000 END, NULL
                          FROM tokens WHERE revoked = 0;
    DROP TABLE tokens;
    ALTER TABLE tokens_v7 RENAME TO tokens;
    CREATE INDEX tokens_by_user ON tokens (username, scope);
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


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


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
        self.clock: Callable[[], float] = time.time  # tokens' expiry and last use; a test may move it
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
            self._db.execute("INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                             (username, password_hash, role, _now()))  # fmt: skip
        except sqlite3.IntegrityError:
            raise ApiError(409, "conflict", f"user {username!r} already exists") from None

    def user(self, username: str) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return row

    def user_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def users(self) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT u.username, u.role, u.disabled, u.created_at, count(t.id) AS live_tokens FROM users u "
            "LEFT JOIN tokens t ON t.username = u.username AND t.expires_at > ? GROUP BY u.username "
            "ORDER BY u.username",
            (self.clock(),),
        ).fetchall()
        return [{**dict(row), "disabled": bool(row["disabled"])} for row in rows]

    def _existing_user(self, db: sqlite3.Connection, username: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        if row is None:
            raise ApiError(404, "not_found", f"user {username!r} does not exist")
        return row

    def _keep_an_admin(self, db: sqlite3.Connection, username: str, change: str) -> None:
        """Refuse a change that would leave no enabled admin (no one could manage users any more)."""
        others = db.execute("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND username != ?",
                            (username,)).fetchone()[0]  # fmt: skip
        if others == 0:
            raise ApiError(409, "last_admin", f"{username} is the last enabled admin: {change} would leave no one "
                           "to manage users; make another user admin first")  # fmt: skip

    def update_user(self, username: str, role: str | None = None, disabled: bool | None = None) -> dict[str, Any]:
        """Change a user's role and/or disable them (their tokens are revoked at once) or enable them again."""
        with self.write(desired_state=False) as db:
            row = self._existing_user(db, username)
            if row["role"] == "admin" and not row["disabled"] and (disabled or role not in (None, "admin")):
                self._keep_an_admin(db, username, "disabling them" if disabled else f"making them {role}")
            if role is not None:
                db.execute("UPDATE users SET role = ? WHERE username = ?", (role, username))
            if disabled is not None:
                db.execute("UPDATE users SET disabled = ? WHERE username = ?", (int(disabled), username))
                if disabled:
                    db.execute("DELETE FROM tokens WHERE username = ?", (username,))
            changed = db.execute("SELECT username, role, disabled FROM users WHERE username = ?", (username,))
            result = dict(changed.fetchone())
        return {**result, "disabled": bool(result["disabled"])}

    def delete_user(self, username: str) -> None:
        """Delete a user; their tokens go with them (ON DELETE CASCADE). What they saved keeps their name."""
        with self.write(desired_state=False) as db:
            row = self._existing_user(db, username)
            if row["role"] == "admin" and not row["disabled"]:
                self._keep_an_admin(db, username, "deleting them")
            db.execute("DELETE FROM users WHERE username = ?", (username,))

    def set_password(self, username: str, password_hash: str, keep_token_id: str | None = None) -> int:
        """A new password; every other token of the user is revoked. Returns how many were."""
        with self.write(desired_state=False) as db:
            self._existing_user(db, username)
            db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (password_hash, username))
            revoked = db.execute("DELETE FROM tokens WHERE username = ? AND id IS NOT ?", (username, keep_token_id))
            return int(revoked.rowcount)

    def issue_token(self, username: str, name: str, scope: str = "api", lifetime_s: float = API_TOKEN_LIFETIME_S,
                    cap: int | None = None) -> str:  # fmt: skip
        """A new bearer token for `username`, valid for `lifetime_s`; returned once, stored only as a digest.
        `cap`: how many live tokens of this kind (sessions, or named api/mcp ones) the user may hold; past it a
        session replaces the user's oldest, a named token is refused with 409."""
        token = f"sf_{secrets.token_urlsafe(32)}"
        now = self.clock()
        sessions = scope == "session"
        kind = "scope = 'session'" if sessions else "scope != 'session'"
        with self.write(desired_state=False) as db:
            db.execute("DELETE FROM tokens WHERE username = ? AND expires_at <= ?", (username, now))
            live = [row[0] for row in db.execute(f"SELECT id FROM tokens WHERE username = ? AND {kind} "
                                                 "ORDER BY expires_at", (username,))]  # fmt: skip
            if cap is not None and len(live) >= cap:
                if not sessions:
                    raise ApiError(409, "too_many_tokens", f"{username} already has {len(live)} live tokens (at "
                                   f"most {cap}): revoke one first (GET /api/v1/tokens, DELETE "
                                   "/api/v1/tokens/{id})")  # fmt: skip
                db.executemany("DELETE FROM tokens WHERE id = ?", [(i,) for i in live[: len(live) - cap + 1]])
            _insert_token(db, token, username, name, scope, now + lifetime_s)
        return token

    def token_record(self, token: str) -> sqlite3.Row | None:
        """The token's row with its user's role and disabled flag (expired ones too: the caller says why)."""
        row: sqlite3.Row | None = self._db.execute(
            "SELECT t.id, t.username, t.name, t.scope, t.expires_at, t.last_used, u.role, u.disabled FROM tokens t "
            "JOIN users u ON u.username = t.username WHERE t.token_hash = ?",
            (token_digest(token),),
        ).fetchone()
        return row

    def touch_token(self, token_id: str, now: float) -> None:
        self._db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, token_id))

    def tokens(self, username: str | None = None) -> list[dict[str, Any]]:
        """Live tokens (all users' when `username` is None), newest first; never the token itself."""
        rows = self._db.execute(
            "SELECT id, username, name, scope, created_at, expires_at, last_used FROM tokens WHERE expires_at > ? "
            + ("AND username = ? " if username else "")
            + "ORDER BY created_at DESC, id",
            (self.clock(), username) if username else (self.clock(),),
        ).fetchall()
        return [{**dict(row), "expires_at": _iso(row["expires_at"]), "last_used": _iso(row["last_used"])}
                for row in rows]  # fmt: skip

    def token_owner(self, token_id: str) -> str | None:
        row = self._db.execute("SELECT username FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else str(row[0])

    def revoke_token(self, token_id: str) -> None:
        self._db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))

    def rotate_session(self, token_id: str, username: str, lifetime_s: float) -> str:
        """A fresh session in place of `token_id` (revoked in the same transaction)."""
        token = f"sf_{secrets.token_urlsafe(32)}"
        with self.write(desired_state=False) as db:
            row = db.execute("SELECT name FROM tokens WHERE id = ?", (token_id,)).fetchone()
            if row is None:
                raise ApiError(401, "unauthenticated", "the session was revoked meanwhile; log in again")
            db.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
            _insert_token(db, token, username, row["name"], "session", self.clock() + lifetime_s)
        return token

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
        """Every secret's name, who set it, and the flows granted it besides its own."""
        grants: dict[str, list[str]] = {}
        for row in self._db.execute("SELECT secret, flow_id FROM secret_grants ORDER BY flow_id"):
            grants.setdefault(row["secret"], []).append(row["flow_id"])
        rows = self._db.execute("SELECT name, updated_at, updated_by FROM secrets ORDER BY name").fetchall()
        return [{**dict(row), "granted_to": grants.get(row["name"], [])} for row in rows]

    def delete_secret(self, name: str) -> None:
        with self.write() as db:
            if db.execute("DELETE FROM secrets WHERE name = ?", (name,)).rowcount == 0:
                raise ApiError(404, "not_found", f"secret {name!r} does not exist")
            db.execute("DELETE FROM secret_grants WHERE secret = ?", (name,))

    def grant_secret(self, name: str, flow_id: str, user: str) -> None:
        """Let flow `flow_id` read secret `name` (a shared credential), besides the flow it belongs to."""
        if self.secret(name) is None:
            raise ApiError(404, "not_found", f"secret {name!r} does not exist: store it first (PUT /secrets/{name})")
        self._current(flow_id)
        with self.write() as db:
            db.execute("INSERT OR REPLACE INTO secret_grants VALUES (?, ?, ?, ?)", (name, flow_id, user, _now()))

    def revoke_secret_grant(self, name: str, flow_id: str) -> None:
        with self.write() as db:
            if db.execute("DELETE FROM secret_grants WHERE secret = ? AND flow_id = ?", (name, flow_id)).rowcount == 0:
                raise ApiError(404, "not_found", f"secret {name!r} is not granted to flow {flow_id!r}")

    def secret_readable(self, flow_id: str, name: str) -> bool:
        """Flow `flow_id` may read secret `name`: its own, or granted to it."""
        if own_secret(flow_id, name):
            return True
        found = self._db.execute("SELECT 1 FROM secret_grants WHERE secret = ? AND flow_id = ?", (name, flow_id))
        return found.fetchone() is not None

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
              detail: str | None = None, approved_by: str | None = None, role: str | None = None,
              channel: str | None = None) -> None:  # fmt: skip
        """One audit row. Inside an HTTP call, the call's channel and role fill what is not given, and the call is
        marked audited (so the audit middleware adds no second, vaguer row for it)."""
        call = current_call.get()
        if call is not None:
            call.written = True
            role, channel = role or call.role, channel or "rest"
        self._db.execute("INSERT INTO audit (at, identity, tool, arguments_digest, target, outcome, detail, "
                         "approved_by, role, channel) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (_now(), identity, tool, arguments_digest, target, outcome, detail, approved_by, role,
                          channel or "mcp"))  # fmt: skip

    def audit_trail(self, limit: int = 200, tool: str | None = None, identity: str | None = None,
                    channel: str | None = None, before: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """The newest rows first, filtered by exact tool (or REST route), identity or channel; `before` an id
        pages back."""
        filters = {"tool = ?": tool, "identity = ?": identity, "channel = ?": channel, "id < ?": before}
        used = {clause: value for clause, value in filters.items() if value is not None}
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(used) if used else "") + " ORDER BY id DESC LIMIT ?"
        rows = self._db.execute(sql, (*used.values(), limit)).fetchall()
        return [dict(row) for row in rows]


SQLITE_INTEGERS = range(-(2**63), 2**63)  # what an INTEGER column holds


def _insert_token(db: sqlite3.Connection, token: str, username: str, name: str, scope: str, expires_at: float) -> None:
    db.execute("INSERT INTO tokens (id, token_hash, username, name, scope, created_at, expires_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)", (f"tok_{secrets.token_hex(8)}", token_digest(token), username, name,
                                                scope, _now(), expires_at))  # fmt: skip


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
