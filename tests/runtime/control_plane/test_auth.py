"""Sessions and tokens with a lifecycle (V5), MCP-only tokens (V6), login throttling that locks no one out (W1):
against the real control plane (REST, /mcp), its clock driven by the test."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from streamforge.engine.clock import ManualClock
from streamforge.engine.node_types import load_node_types
from streamforge.runtime.control_plane.app import ControlPlane, serving
from streamforge.runtime.control_plane.auth import (
    NAMED_TOKENS_PER_USER,
    SESSION_LIFETIME_S,
    SESSIONS_PER_USER,
    check_password,
    ensure_admin,
    hash_password,
)
from streamforge.runtime.control_plane.store import MIGRATIONS, Store, token_digest
from streamforge.runtime.limits import LoginThrottle

HOUR = 3600.0
# The migration that gave tokens ids, scopes and expiry: a database from just before it is upgraded in the test.
TOKEN_LIFECYCLE_MIGRATION = next(index for index, script in enumerate(MIGRATIONS) if "tokens_v7" in script)


@dataclass
class Plane:
    url: str
    http: httpx.AsyncClient  # base /api/v1, from 127.0.0.1, no credentials
    store: Store
    clock: ManualClock
    admin_password: str

    async def login(self, username: str, password: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.http.post("/auth/login", json={"username": username, "password": password}, headers=headers)

    async def change_password(self, session: dict[str, str], current: str, new: str) -> httpx.Response:
        body = {"current_password": current, "new_password": new}
        return await self.http.post("/users/me/password", json=body, headers=session)

    async def session(self, username: str, password: str) -> dict[str, str]:
        answer = await self.login(username, password)
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    async def user(self, username: str, role: str) -> dict[str, str]:
        """A new user of `role`, signed in (password `<username>-password-1`)."""
        self.store.create_user(username, hash_password(f"{username}-password-1"), role)
        return await self.session(username, f"{username}-password-1")


@contextlib.asynccontextmanager
async def plane(tmp_path: Path, trusted_proxies: Sequence[str] = ()) -> AsyncIterator[Plane]:
    """The whole control plane (REST, /mcp) on loopback, its tokens' and login throttle's clock in the test's hand."""
    control_plane = ControlPlane.open(tmp_path / "cp", load_node_types(False))
    clock = ManualClock()
    control_plane.store.clock = lambda: clock.now().timestamp()
    control_plane.throttle = LoginThrottle(clock=clock.monotonic)
    password = ensure_admin(control_plane.store)
    assert password is not None
    async with (
        serving(control_plane, "127.0.0.1", 0, None, trusted_proxies=trusted_proxies) as url,
        httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=60) as http,
    ):
        yield Plane(url, http, control_plane.store, clock, password)


async def test_a_session_expires_refreshes_by_rotation_and_logout_revokes_it(tmp_path: Path) -> None:
    """V5: a login's token expires; POST /auth/refresh before then rotates it; POST /auth/logout revokes it."""
    async with plane(tmp_path) as cp:
        first = await cp.session("admin", cp.admin_password)
        assert (await cp.http.get("/flows", headers=first)).status_code == 200
        await cp.clock.advance(SESSION_LIFETIME_S - HOUR)
        refreshed = await cp.http.post("/auth/refresh", headers=first)
        assert refreshed.status_code == 200 and refreshed.json()["expires_in"] == SESSION_LIFETIME_S
        second = {"Authorization": f"Bearer {refreshed.json()['token']}"}
        old = await cp.http.get("/flows", headers=first)
        assert old.status_code == 401 and "revoked" in old.json()["error"]["message"]  # rotated, not duplicated
        await cp.clock.advance(2 * HOUR)  # past the first session's end, inside the second's
        assert (await cp.http.get("/flows", headers=second)).status_code == 200
        await cp.clock.advance(SESSION_LIFETIME_S)
        expired = await cp.http.get("/flows", headers=second)
        assert expired.status_code == 401 and "expired at" in expired.json()["error"]["message"]
        assert (await cp.http.post("/auth/refresh", headers=second)).status_code == 401  # too late to refresh

        third = await cp.session("admin", cp.admin_password)
        assert (await cp.http.post("/auth/logout", headers=third)).status_code == 204
        assert (await cp.http.get("/flows", headers=third)).status_code == 401
        trail = [row["tool"] for row in cp.store.audit_trail()]
        assert {"session.login", "session.refresh", "session.logout"} <= set(trail)


async def test_named_tokens_expire_are_listed_revoked_by_id_and_capped(tmp_path: Path) -> None:
    """V5: named tokens have an expiry (at most 365 days), are listed without the secret, revoked by id (own, or any
    by an Admin), and a Viewer cannot mint unlimited ones."""
    async with plane(tmp_path) as cp:
        viewer, other = await cp.user("vera", "viewer"), await cp.user("otto", "viewer")
        admin = await cp.session("admin", cp.admin_password)
        too_long = await cp.http.post("/tokens", json={"name": "forever", "days": 3650}, headers=viewer)
        assert too_long.status_code == 422 and "at most 365" in too_long.json()["error"]["message"]
        bad_scope = await cp.http.post("/tokens", json={"name": "x", "scope": "root"}, headers=viewer)
        assert bad_scope.status_code == 422 and "scope" in bad_scope.json()["error"]["message"]

        made = await cp.http.post("/tokens", json={"name": "script", "days": 7}, headers=viewer)
        assert made.status_code == 201, made.text
        token_id, script = made.json()["id"], {"Authorization": f"Bearer {made.json()['token']}"}
        assert made.json()["scope"] == "api" and made.json()["expires_at"].startswith("2026-01-08")
        assert made.json()["last_used"] is None
        assert (await cp.http.get("/flows", headers=script)).status_code == 200

        own = (await cp.http.get("/tokens", headers=viewer)).json()
        assert {t["username"] for t in own} == {"vera"} and all("token" not in t for t in own)
        assert next(t for t in own if t["id"] == token_id)["last_used"] is not None
        everyone = (await cp.http.get("/tokens", headers=admin)).json()
        assert {"vera", "otto", "admin"} <= {t["username"] for t in everyone}

        foreign = await cp.http.delete(f"/tokens/{token_id}", headers=other)
        assert foreign.status_code == 404  # another Viewer can neither revoke nor learn of it
        assert (await cp.http.delete(f"/tokens/{token_id}", headers=viewer)).status_code == 204
        assert (await cp.http.get("/flows", headers=script)).status_code == 401

        by_admin = await cp.http.post("/tokens", json={"name": "second"}, headers=viewer)
        assert (await cp.http.delete(f"/tokens/{by_admin.json()['id']}", headers=admin)).status_code == 204

        weekly = await cp.http.post("/tokens", json={"name": "weekly", "days": 7}, headers=viewer)
        await cp.clock.advance(7 * 24 * HOUR + 1)
        stale = await cp.http.get("/flows", headers={"Authorization": f"Bearer {weekly.json()['token']}"})
        assert stale.status_code == 401 and "expired at" in stale.json()["error"]["message"]

        viewer = await cp.session("vera", "vera-password-1")  # the first session expired with the clock
        for number in range(NAMED_TOKENS_PER_USER):
            assert (await cp.http.post("/tokens", json={"name": f"t{number}"}, headers=viewer)).status_code == 201
        capped = await cp.http.post("/tokens", json={"name": "one-more"}, headers=viewer)
        assert capped.status_code == 409 and "revoke one first" in capped.json()["error"]["message"]
        assert "token.create" in {row["tool"] for row in cp.store.audit_trail()}


async def test_logins_past_the_session_cap_end_the_oldest_session(tmp_path: Path) -> None:
    """V5: a user cannot pile up sessions either: past the cap a login ends their oldest one."""
    async with plane(tmp_path) as cp:
        first = await cp.user("lou", "viewer")
        for _ in range(SESSIONS_PER_USER - 1):
            await cp.session("lou", "lou-password-1")
        assert (await cp.http.get("/flows", headers=first)).status_code == 200  # at the cap, all still live
        latest = await cp.session("lou", "lou-password-1")
        assert (await cp.http.get("/flows", headers=first)).status_code == 401
        assert (await cp.http.get("/flows", headers=latest)).status_code == 200
        assert len([t for t in cp.store.tokens("lou") if t["scope"] == "session"]) == SESSIONS_PER_USER


async def test_disabled_and_deleted_users_tokens_are_refused_at_once(tmp_path: Path) -> None:
    """V5: an Admin disables a user (their session and tokens stop working at once, login is refused), enables them
    again, changes their role, deletes them (tokens die with them); the last enabled admin can be neither demoted,
    disabled nor deleted."""
    async with plane(tmp_path) as cp:
        admin = await cp.session("admin", cp.admin_password)
        created = await cp.http.post("/users", json={"username": "eve", "password": "eve-password-1", "role": "viewer"},
                                     headers=admin)  # fmt: skip
        assert created.status_code == 201
        eve = await cp.session("eve", "eve-password-1")
        token = (await cp.http.post("/tokens", json={"name": "cron"}, headers=eve)).json()["token"]
        cron = {"Authorization": f"Bearer {token}"}

        disabled = await cp.http.patch("/users/eve", json={"disabled": True}, headers=admin)
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        for headers in (eve, cron):
            assert (await cp.http.get("/flows", headers=headers)).status_code == 401
        refused = await cp.login("eve", "eve-password-1")
        assert refused.status_code == 403 and "disabled" in refused.json()["error"]["message"]

        await cp.http.patch("/users/eve", json={"disabled": False, "role": "engineer"}, headers=admin)
        eve = await cp.session("eve", "eve-password-1")
        listed = {u["username"]: u for u in (await cp.http.get("/users", headers=admin)).json()}
        assert listed["eve"]["role"] == "engineer" and listed["eve"]["disabled"] is False
        assert (await cp.http.delete("/users/eve", headers=admin)).status_code == 204
        assert (await cp.http.get("/flows", headers=eve)).status_code == 401
        assert cp.store.tokens("eve") == []

        for change in (cp.http.patch("/users/admin", json={"role": "viewer"}, headers=admin),
                       cp.http.patch("/users/admin", json={"disabled": True}, headers=admin),
                       cp.http.delete("/users/admin", headers=admin)):  # fmt: skip
            last = await change
            assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
        assert (await cp.http.get("/users", headers=admin)).status_code == 200  # still an admin
        assert {"user.create", "user.update", "user.delete"} <= {row["tool"] for row in cp.store.audit_trail()}


async def test_a_password_change_needs_the_current_one_and_revokes_other_sessions(tmp_path: Path) -> None:
    """V5: POST /users/me/password with the current password; the user's other sessions and tokens are revoked,
    the one that changed it keeps working."""
    async with plane(tmp_path) as cp:
        here, elsewhere = await cp.user("pat", "operator"), await cp.session("pat", "pat-password-1")
        wrong = await cp.change_password(here, "not-the-password", "a-new-password-2")
        assert wrong.status_code == 403 and "current_password" in wrong.json()["error"]["message"]
        assert (await cp.change_password(here, "pat-password-1", "short")).status_code == 422
        changed = await cp.change_password(here, "pat-password-1", "a-new-password-2")
        assert changed.status_code == 200 and changed.json()["revoked_tokens"] == 1
        assert (await cp.http.get("/flows", headers=elsewhere)).status_code == 401
        assert (await cp.http.get("/flows", headers=here)).status_code == 200
        assert (await cp.login("pat", "pat-password-1")).status_code == 401
        assert (await cp.login("pat", "a-new-password-2")).status_code == 200


async def test_an_mcp_token_is_refused_by_rest_and_accepted_at_mcp(tmp_path: Path) -> None:
    """V6: an agent's `mcp` token cannot deploy or acknowledge over REST (bypassing the human approval the MCP tools
    require); it works at /mcp."""
    async with plane(tmp_path) as cp:
        engineer = await cp.user("agent_owner", "engineer")
        made = await cp.http.post("/tokens", json={"name": "agent", "scope": "mcp"}, headers=engineer)
        assert made.status_code == 201 and made.json()["scope"] == "mcp"
        agent = {"Authorization": f"Bearer {made.json()['token']}"}
        for path, body in (("/flows/line/deploy", {}), ("/alarms/acknowledge", {"event_id": "gw#1"}),
                           ("/flows/line/nodes/alarm/commands/acknowledge", {}),
                           ("/flows/line/approvals", {"action": "deploy", "change_digest": "x"}),
                           ("/tokens", {"name": "escape", "scope": "api"})):  # fmt: skip
            refused = await cp.http.post(path, json=body, headers=agent)
            assert refused.status_code == 403, (path, refused.text)
            assert "this token is for MCP only" in refused.json()["error"]["message"]
        async with (
            httpx2.AsyncClient(headers=agent, timeout=httpx2.Timeout(60)) as http,
            Client(streamable_http_client(f"{cp.url}/mcp", http_client=http)) as mcp,
        ):
            listed = await mcp.call_tool("list_flows", {})
            assert json.loads(listed.content[0].text) == []  # type: ignore[union-attr]
        assert ("agent_owner", "list_flows", "ok") in {(r["identity"], r["tool"], r["outcome"])
                                                       for r in cp.store.audit_trail()}  # fmt: skip


async def test_wrong_passwords_from_one_address_never_lock_out_another(tmp_path: Path) -> None:
    """W1: failed logins for `admin` from 127.0.0.2 are delayed exponentially (429 with Retry-After 1, 2, 4 ... s)
    for that address; the right password from 127.0.0.1 always works."""
    async with (
        plane(tmp_path) as cp,
        httpx.AsyncClient(
            base_url=cp.http.base_url, transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"), timeout=60
        ) as attacker,  # fmt: skip
    ):
        guess = {"username": "admin", "password": "guess-guess-guess"}
        for _ in range(5):
            assert (await attacker.post("/auth/login", json=guess)).status_code == 401
        waits = []
        for _ in range(4):
            delayed = await attacker.post("/auth/login", json=guess)
            assert delayed.status_code == 429 and "try again in" in delayed.json()["error"]["message"]
            waits.append(int(delayed.headers["Retry-After"]))
            await cp.clock.advance(waits[-1])
            assert (await attacker.post("/auth/login", json=guess)).status_code == 401  # judged again, wrong
        assert waits == [1, 2, 4, 8]
        for _ in range(20):
            await cp.clock.advance(600)
            await attacker.post("/auth/login", json=guess)
        capped = await attacker.post("/auth/login", json=guess)
        assert capped.status_code == 429 and int(capped.headers["Retry-After"]) <= 300
        assert (await cp.login("admin", cp.admin_password)).status_code == 200  # from 127.0.0.1: never locked


async def test_forwarded_for_counts_only_from_a_trusted_proxy(tmp_path: Path) -> None:
    """W1: X-Forwarded-For from a peer not given with --trusted-proxy is ignored (spoofed addresses all count as
    the peer's own); from a trusted proxy it names the client, so one client's failures delay only that client."""
    async with plane(tmp_path / "direct") as cp:
        for number in range(20):
            spoofed = {"X-Forwarded-For": f"10.0.0.{number + 1}"}
            await cp.login(f"nobody{number}", "guess-guess-guess", headers=spoofed)
        next_one = await cp.login("nobody", "guess-guess-guess", headers={"X-Forwarded-For": "10.0.1.1"})
        assert next_one.status_code == 429  # all twenty came from 127.0.0.1, whatever the header said

    async with plane(tmp_path / "proxied", trusted_proxies=["127.0.0.0/8"]) as cp:
        guessing, owner = {"X-Forwarded-For": "203.0.113.9"}, {"X-Forwarded-For": "198.51.100.4"}
        for _ in range(5):
            assert (await cp.login("admin", "guess-guess-guess", headers=guessing)).status_code == 401
        assert (await cp.login("admin", cp.admin_password, headers=guessing)).status_code == 429
        assert (await cp.login("admin", cp.admin_password, headers=owner)).status_code == 200


def test_tokens_from_before_the_upgrade_keep_working_with_an_expiry(tmp_path: Path) -> None:
    """V5: the migration that gives tokens a lifecycle keeps live tokens (as `api` tokens, 90 days; sessions 12 h)
    and drops revoked ones."""
    database = tmp_path / "cp.sqlite"
    old = sqlite3.connect(database, isolation_level=None)
    old.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for script in MIGRATIONS[:TOKEN_LIFECYCLE_MIGRATION]:
        for statement in filter(str.strip, script.split(";")):
            old.execute(statement)
    old.execute("INSERT INTO schema_version VALUES (?)", (TOKEN_LIFECYCLE_MIGRATION,))
    old.execute("INSERT INTO users VALUES ('ops', ?, 'operator', '2026-01-01T00:00:00+00:00')",
                (hash_password("ops-password-12"),))  # fmt: skip
    rows = [("sf_script", "script", "api", 0), ("sf_editor", "editor session", "session", 0),
            ("sf_revoked", "old", "api", 1)]  # fmt: skip
    for token, name, kind, revoked in rows:
        old.execute("INSERT INTO tokens VALUES (?, 'ops', ?, ?, '2026-01-01T00:00:00+00:00', ?)",
                    (token_digest(token), name, kind, revoked))  # fmt: skip
    old.close()

    store = Store(database)
    now = time.time()
    named, session = store.token_record("sf_script"), store.token_record("sf_editor")
    assert named is not None and named["scope"] == "api" and named["role"] == "operator"
    assert abs(named["expires_at"] - (now + 90 * 86400)) < 60
    assert session is not None and session["scope"] == "session" and abs(session["expires_at"] - (now + 43200)) < 60
    assert store.token_record("sf_revoked") is None
    assert len(store.tokens("ops")) == 2


def test_reset_password_on_the_database_revokes_every_token(tmp_path: Path) -> None:
    """V5: `streamforge user reset-password admin` (a lost admin password) prints a new one once, or takes one from
    stdin, and revokes the user's tokens; an unknown user is a clear error."""
    store = Store(tmp_path / "control-plane.sqlite")
    ensure_admin(store)
    token = store.issue_token("admin", "laptop")
    command = [sys.executable, "-m", "streamforge.runtime.cli", "user", "reset-password", "--data-dir", str(tmp_path)]
    generated = subprocess.run([*command, "admin"], capture_output=True, text=True, check=True)
    answer = json.loads(generated.stdout)
    assert answer["revoked_tokens"] == 1 and store.token_record(token) is None
    check_password(store, "admin", answer["password"])
    given = subprocess.run([*command, "admin", "--password-stdin"], input="a-chosen-password-9\n", capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert "password" not in json.loads(given.stdout)
    check_password(store, "admin", "a-chosen-password-9")
    unknown = subprocess.run([*command, "nobody"], capture_output=True, text=True)
    assert unknown.returncode == 1 and "user 'nobody' does not exist" in unknown.stderr
    assert "user.reset_password" in {row["tool"] for row in store.audit_trail()}
