"""The gateway's own HTTP port: a local bearer token, kept in a 0600 file in its data dir, guards all but liveness."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from streamforge.runtime.errors import error_response
from streamforge.runtime.files import write_durably

TOKEN_FILE = "http.token"
ALWAYS_OPEN = frozenset({"/health/live", "/health/ready"})  # probes: "alive" and one word of readiness, nothing more


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def ensure_token(data_dir: Path) -> str:
    """The gateway's local HTTP token, made on first start (random, 0600 from its creation)."""
    path = token_path(data_dir)
    if not path.exists():
        write_durably(path, secrets.token_urlsafe(32).encode(), mode=0o600)
    return read_token(data_dir)


def read_token(data_dir: Path) -> str:
    """What a local client (the CLI, a script of the operator's) sends as `Authorization: Bearer <token>`."""
    path = token_path(data_dir)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: the gateway makes it on its first start") from None


class RequireLocalToken:
    """ASGI middleware: every request but the probes (and /metrics when served on loopback only, for a local
    Prometheus) must carry the gateway's local token; else 401 saying what to send and where the token is."""

    def __init__(self, app: ASGIApp, token: str, where: Path, metrics_open: bool) -> None:
        self.app, self.expected, self.where = app, f"Bearer {token}".encode(), where
        self.open_paths = ALWAYS_OPEN | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            sent = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(sent, self.expected):
                refused = error_response(401, "unauthenticated",
                                         f"send `Authorization: Bearer <token>`, the token in {self.where} (readable "
                                         "by the gateway's user only)")  # fmt: skip
                refused.headers["WWW-Authenticate"] = "Bearer"
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)
