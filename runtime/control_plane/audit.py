"""The audit trail's HTTP side: every state-changing call leaves a row, whether or not its handler wrote one."""

from __future__ import annotations

import hashlib
import json
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from streamforge.runtime.control_plane.store import Store

# POSTs that change nothing a person decided: previews, lookups, and a gateway's own polls and uplinks (data,
# audited by what it carries, not per request).
READS_OVER_POST = frozenset({
    "/api/v1/flows/{flow}/changes",
    "/api/v1/gateways/{gateway}/sync",
    "/api/v1/gateways/{gateway}/alarms",
    "/schemas/subjects/{subject}",
    "/schemas/compatibility/subjects/{subject}/versions/{version}",
})  # fmt: skip
ERROR_BODY_BYTES = 4096  # enough of a refusal to read its error code


@dataclass
class AuditedCall:
    """The call being served: who made it (once authenticated) and whether its handler audited it already."""

    address: str
    identity: str | None = None
    role: str | None = None
    written: bool = False


current_call: ContextVar[AuditedCall | None] = ContextVar("current_call", default=None)


def caller_is(identity: str, role: str) -> None:
    """Name who makes the current call (the one role check calls this), so its audit row says who and as what."""
    call = current_call.get()
    if call is not None:
        call.identity, call.role = identity, role


class AuditTrail:
    """ASGI middleware: a POST, PUT, PATCH or DELETE whose handler wrote no audit row of its own gets one here:
    who and with which role, the route, its path parameters, a digest of the body and query, and the status (with
    the error code of a refusal). Unauthenticated refusals (401) are not kept: they name nobody, and anyone could
    fill the trail with them."""

    def __init__(self, app: ASGIApp, store: Store) -> None:
        self.app, self.store = app, store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        call = AuditedCall(address=client[0] if client else "?")
        token = current_call.set(call)
        digest = hashlib.sha256(scope.get("query_string", b""))
        status, error = 500, bytearray()

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
            return message

        async def noting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400 and len(error) < ERROR_BODY_BYTES:
                error.extend(message.get("body", b"")[: ERROR_BODY_BYTES - len(error)])
            await send(message)

        try:
            await self.app(scope, hashing_receive, noting_send)
        finally:
            current_call.reset(token)
            self._record(scope, call, digest.hexdigest(), status, bytes(error))

    def _record(self, scope: Scope, call: AuditedCall, digest: str, status: int, error: bytes) -> None:
        route: BaseRoute | None = scope.get("route")
        template = getattr(route, "path", None)
        if call.written or template is None or status == 401:
            return
        path = f"{scope.get('root_path', '')}{template}"
        if path in READS_OVER_POST or path.startswith("/mcp"):
            return
        params = scope.get("path_params", {})
        target = ",".join(f"{key}={value}" for key, value in sorted(params.items())) or None
        identity = call.identity or (f"gateway:{params['gateway']}" if "gateway" in params else
                                     f"anonymous@{call.address}")  # fmt: skip
        outcome = "ok" if status < 400 else ("refused" if status < 500 else "error")
        detail = f"{status}" + (f" {_error_code(error)}" if error else "")
        self.store.audit(
            identity, f"{scope['method']} {path}", digest, target, outcome, detail, role=call.role, channel="rest"
        )


def _error_code(body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict):
        return ""
    error = answer.get("error")
    code = error.get("code") if isinstance(error, dict) else answer.get("error_code")  # REST, or the registry's
    return str(code) if isinstance(code, (str, int)) else ""
