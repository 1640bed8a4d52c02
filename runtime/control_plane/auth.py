"""Authentication and roles: argon2-hashed passwords, expiring scoped bearer tokens, and the spec's four roles."""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from starlette.requests import Request
from starlette.responses import Response

from streamforge.runtime.control_plane.audit import caller_is
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError

_hasher = PasswordHasher()

SESSION_LIFETIME_S = 12 * 3600.0  # a login; the editor refreshes it (POST /auth/refresh) before it ends
SESSIONS_PER_USER = 50  # a login past this ends the user's oldest session (tabs, devices, scripts that log in)
NAMED_TOKENS_PER_USER = 20  # api and mcp tokens: past this, revoke one first
TOKEN_DAYS_DEFAULT, TOKEN_DAYS_MAX = 90, 365
TOUCH_EVERY_S = 60.0  # a token's last_used is written at most this often
SCOPES = ("api", "mcp")  # what a named token may be: the REST API (and /mcp), or /mcp only
Surface = Literal["rest", "mcp"]
USERNAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


class Role(IntEnum):
    """Each role can do everything the ones below it can (spec: Security Model)."""

    VIEWER = 1  # read dashboards, flows, metrics, logs
    OPERATOR = 2  # + acknowledge alarms, restart components, approve DLQ
    ENGINEER = 3  # + create, edit and deploy flows
    ADMIN = 4  # + users and gateways

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.upper()]
        except KeyError:
            raise ApiError(422, "invalid", f"role {name!r} must be one of viewer, operator, engineer, admin") from None


@dataclass(frozen=True)
class User:
    username: str
    role: Role
    token_id: str | None = None  # the token this request came with
    scope: str = "session"  # session, api or mcp


def hash_password(password: str) -> str:
    if len(password) < 12:
        raise ApiError(422, "invalid", "a password needs at least 12 characters")
    return _hasher.hash(password)


def check_password(store: Store, username: str, password: str) -> User:
    row = store.user(username)
    try:
        if row is None:
            raise VerificationError
        _hasher.verify(row["password_hash"], password)
    except VerificationError:
        raise ApiError(401, "unauthenticated", "wrong username or password") from None
    if row["disabled"]:
        raise ApiError(403, "disabled", f"user {username} is disabled; an admin can enable them again")
    return User(row["username"], Role.parse(row["role"]))


def ensure_admin(store: Store) -> str | None:
    """On first start, create user `admin` with a generated password and return it (shown once)."""
    if store.user_count():
        return None
    password = secrets.token_urlsafe(18)
    store.create_user("admin", hash_password(password), Role.ADMIN.name.lower())
    return password


def authenticate(store: Store, request: Request, surface: Surface = "rest") -> User:
    return authenticate_header(store, request.headers.get("authorization", ""), surface)


def bearer_token(header: str, what: str = "token> (log in or create an API token") -> str:
    """The token of an `Authorization: Bearer <token>` header value: the one place that reads the header; 401
    saying what to send."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", f"send `Authorization: Bearer <{what})`")
    return token.strip()


def authenticate_header(store: Store, header: str, surface: Surface = "rest") -> User:
    """The user behind an `Authorization: Bearer <token>` header value; 401 saying what to send."""
    return authenticate_token(store, bearer_token(header), surface)


def authenticate_token(store: Store, token: str, surface: Surface = "rest") -> User:
    """The one token check: known, unexpired, its user enabled, and its scope allowed on `surface` (an `mcp` token
    is refused everywhere but /mcp, so an agent cannot bypass the approval gate through REST)."""
    row = store.token_record(token)
    now = store.clock()
    if row is None:
        raise ApiError(401, "unauthenticated", "the token is unknown or revoked; log in again or create a new one")
    if row["expires_at"] <= now:
        expired = datetime.fromtimestamp(row["expires_at"], UTC).isoformat(timespec="seconds")
        raise ApiError(401, "unauthenticated", f"the token expired at {expired}; log in again or create a new one")
    if row["disabled"]:
        raise ApiError(401, "unauthenticated", f"user {row['username']} is disabled")
    if surface == "rest" and row["scope"] == "mcp":
        raise ApiError(403, "forbidden", "this token is for MCP only: use it at /mcp; the REST API needs a session "
                       "(POST /api/v1/auth/login) or an `api` token")  # fmt: skip
    if row["last_used"] is None or now - row["last_used"] >= TOUCH_EVERY_S:
        store.touch_token(row["id"], now)
    return User(row["username"], Role.parse(row["role"]), row["id"], row["scope"])


def require_role(user: User, role: Role, action: str = "this") -> None:
    """The one role check (REST, MCP, the schema registry): 403 naming who they are and what is needed."""
    if user.role < role:
        raise ApiError(403, "forbidden", f"{user.username} is {user.role.name.lower()}; {action} needs "
                       f"{role.name.lower()} or higher")  # fmt: skip


Handler = Callable[[Request, User], Awaitable[Response]]


def role_guard(store: Store) -> Callable[[Role], Callable[[Handler], Callable[[Request], Awaitable[Response]]]]:
    """`@requires(Role.ENGINEER)` for handlers of this store: 401 without a valid token, 403 below the role."""

    def requires(role: Role) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
        def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                user = authenticate(store, request)
                caller_is(user.username, user.role.name.lower())
                require_role(user, role)
                return await handler(request, user)

            endpoint.__name__ = handler.__name__
            endpoint.required_role = role  # type: ignore[attr-defined]  # read by the generated role matrix
            return endpoint

        return wrap

    return requires
