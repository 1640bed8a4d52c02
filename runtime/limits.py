"""Limits every HTTP endpoint keeps before doing any work: bounded request bodies, throttled failed logins."""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamforge.runtime.errors import ApiError

MAX_BODY_BYTES = 8 * 1024 * 1024  # a large flow import fits; nothing the API takes is bigger
SMALL_BODY_BYTES = 64 * 1024  # what unauthenticated endpoints (login, gateway registration) may send
DRAIN_BYTES = 64 * 1024 * 1024  # a refused body up to this size is read and dropped, so the 413 is seen


def _too_large(limit: int) -> list[Message]:
    body = json.dumps({"error": {"code": "too_large", "message": f"the request body is over {limit} bytes; "
                                 "send less (flows: split them, or import one at a time)"}}).encode()  # fmt: skip
    return [{"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]},
            {"type": "http.response.body", "body": body}]  # fmt: skip


class BodyLimit:
    """ASGI middleware: a body over its path's limit is refused with 413, by its Content-Length before it is
    read, or as soon as a chunked body passes the limit (a chunked body is held here up to the limit)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES, small: Mapping[str, int] | None = None) -> None:
        self.app, self.limit = app, limit
        self.small = dict(small or {})  # exact path -> its own, smaller limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.small.get(scope["path"], self.limit)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) <= DRAIN_BYTES:
                await _drain(receive)  # discarded as it arrives, so the client gets to read the answer
            for message in _too_large(limit):
                await send(message)
            return
        if declared is not None:  # the server holds the body to its declared length
            await self.app(scope, receive, send)
            return
        # Chunked, length unknown: take it in up to the limit, then hand it on; past the limit, refuse it.
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                messages.clear()
                if message.get("more_body", False):
                    await _drain(receive, DRAIN_BYTES - size)
                for response in _too_large(limit):
                    await send(response)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


async def _drain(receive: Receive, budget: int = DRAIN_BYTES) -> None:
    """Read and drop the rest of a refused body, up to `budget` bytes (past that the connection just closes)."""
    while budget > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        budget -= len(message.get("body", b""))


class LoginThrottle:
    """Failed logins, per user name and per client address, in a sliding window: past the allowance the next
    try is refused with 429 and how long to wait, whether the password is right or not."""

    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 300.0) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures[key]
        while failures and now - failures[0] > self.window_s:
            failures.popleft()
        return failures

    def check(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key, allowance in ((f"user:{username}", self.per_user), (f"address:{address}", self.per_address)):
            failures = self._recent(key, now)
            if len(failures) >= allowance:
                wait = int(self.window_s - (now - failures[0])) + 1
                raise ApiError(429, "too_many_failures", f"too many failed logins for this {key.split(':')[0]}; "
                               f"try again in {wait} s")  # fmt: skip

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        for key in (f"user:{username}", f"address:{address}"):
            self._recent(key, now).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(f"user:{username}", None)
