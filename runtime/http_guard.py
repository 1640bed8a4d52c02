"""What answers of a served app pass through: the Host allow-list, the browser security headers, and the last-resort
error shield that turns an unexpected exception into one compact log line and a 500 naming its error id."""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import traceback
from collections.abc import Collection
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("streamforge.http")

# No inline script or style anywhere (the editor's build links its one script and one stylesheet). 'unsafe-eval':
# the config forms' JSON Schema validator (ajv, via @rjsf/validator-ajv8) compiles each node type's schema with
# Function(); no other script source is allowed. connect-src 'self' covers the same-origin live websocket.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
HANDLED = "streamforge: answered as error "  # the note an exception carries once answered and logged


class SecurityHeaders:
    """ASGI middleware: every HTTP answer carries CSP (no inline scripts, no framing), X-Frame-Options DENY,
    nosniff and Referrer-Policy no-referrer; a header the app set itself is kept."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in SECURITY_HEADERS if name not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def host_name(header: str) -> str:
    """The name in a Host header, without its port, lower case: `[::1]:8080` -> `::1`, `Example.com.:80` ->
    `example.com`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def allowed_hosts(bind: str, named: Collection[str]) -> frozenset[str] | None:
    """The Host names a server bound to `bind` answers: the names given, plus the bound address itself, plus the
    loopback names when bound to loopback. Bound to every address (0.0.0.0, ::) with no names given: None, any
    Host (the caller warns: a DNS-rebinding page could then reach the API from a browser on this network)."""
    names = {host_name(name) for name in named}
    if bind in WILDCARD_BINDS:
        return frozenset(names) if names else None
    names.add(host_name(bind))
    try:
        loopback = ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        loopback = bind == "localhost"
    return frozenset(names | LOOPBACK_NAMES) if loopback else frozenset(names)


class HostAllowList:
    """ASGI middleware: a request (or websocket) whose Host header names a host outside the allow-list is refused
    with 400 before the app sees it: a page on another site cannot reach this port by DNS rebinding."""

    def __init__(self, app: ASGIApp, hosts: Collection[str]) -> None:
        self.app, self.hosts = app, frozenset(host_name(host) for host in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if host_name(header) in self.hosts:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "Host not allowed"})
            return
        shown = header[:80] or "none"
        await _send_json(send, 400, {"error": {"code": "bad_host", "message": f"Host {shown!r} is not served here: "
                                               f"use one of {', '.join(sorted(self.hosts))} (the server's "
                                               "--allowed-host option lists more)"}})  # fmt: skip


def error_id_of(exc: BaseException) -> str | None:
    """The error id an already answered and logged exception carries, or None."""
    notes = getattr(exc, "__notes__", [])
    return next((note.removeprefix(HANDLED) for note in notes if note.startswith(HANDLED)), None)


def log_unexpected(exc: BaseException, method: str, path: str) -> str:
    """One compact log line for an unexpected exception (no traceback: an attacker who can cause one must not be
    able to flood the log); the error id that the answer quotes. Logged once however many layers see it."""
    known = error_id_of(exc)
    if known is not None:
        return known
    error_id = secrets.token_hex(6)
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
    log.error("unexpected error %s: %s at %s", error_id, type(exc).__name__, where,
              extra={"error_id": error_id, "method": method, "path": path[:200], "at": where,
                     "error": f"{type(exc).__name__}: {str(exc)[:200]}"})  # fmt: skip
    exc.add_note(HANDLED + error_id)
    return error_id


def unexpected_body(error_id: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": "internal", "error_id": error_id, "message": "an unexpected error; the server logged "
                      f"it as {error_id}: quote that id when you report it"}}  # fmt: skip


class ErrorShield:
    """ASGI middleware, outermost: an exception nothing else handled is logged as one line with an error id and,
    if no answer was started, answered 500 with that id; it never reaches the server's traceback logging."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] in ("http.response.start", "websocket.accept", "websocket.close")
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            error_id = log_unexpected(exc, scope.get("method", "WEBSOCKET"), scope.get("path", ""))
            if started:
                return
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1011, "reason": f"error {error_id}"})
            else:
                await _send_json(send, 500, unexpected_body(error_id))


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})  # fmt: skip
