"""Authentication and roles: argon2-hashed passwords, bearer tokens, and the spec's four roles."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from starlette.requests import Request
from starlette.responses import Response

from streamforge.runtime.control_plane.audit import caller_is
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError

_hasher = PasswordHasher()


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
    return User(row["username"], Role.parse(row["role"]))


def ensure_admin(store: Store) -> str | None:
    """On first start, create user `admin` with a generated password and return it (shown once)."""
    if store.user_count():
        return None
    password = secrets.token_urlsafe(18)
    store.create_user("admin", hash_password(password), Role.ADMIN.name.lower())
    return password


def authenticate(store: Store, request: Request) -> User:
    return authenticate_header(store, request.headers.get("authorization", ""))


def bearer_token(header: str, what: str = "token> (log in or create an API token") -> str:
    """The token of an `Authorization: Bearer <token>` header value: the one place that reads the header; 401
    saying what to send."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthenticated", f"send `Authorization: Bearer <{what})`")
    return token.strip()


def authenticate_header(store: Store, header: str) -> User:
    """The user behind an `Authorization: Bearer <token>` header value; 401 saying what to send."""
    row = store.token_user(bearer_token(header))
    if row is None:
        raise ApiError(401, "unauthenticated", "the token is unknown or revoked")
    return User(row["username"], Role.parse(row["role"]))


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
