"""Limits every HTTP endpoint keeps before doing any work: bounded request bodies, throttled failed logins."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamforge.runtime.errors import ApiError

MAX_BODY_BYTES = 8 * 1024 * 1024  # a large flow import fits; nothing the API takes is bigger
SMALL_BODY_BYTES = 64 * 1024  # what unauthenticated endpoints (login, gateway registration) may send
MAX_THROTTLE_KEYS = 100_000  # failed-login records kept in memory before idle ones are dropped
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


@dataclass
class _Failures:
    count: int
    last: float
    blocked_until: float


class LoginThrottle:
    """Failed logins, per client address and per (user name, address): past a free allowance each further failure
    doubles a delay (1 s, 2 s, 4 s ... up to `max_delay_s`) during which that key's logins are answered 429 with
    Retry-After. Never per user name alone: failures from one address cannot lock a user out of another one."""

    def __init__(self, free_per_user: int = 5, free_per_address: int = 20, first_delay_s: float = 1.0,
                 max_delay_s: float = 300.0, forget_after_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.free_per_user, self.free_per_address = free_per_user, free_per_address
        self.first_delay_s, self.max_delay_s, self.forget_after_s = first_delay_s, max_delay_s, forget_after_s
        self.clock = clock
        self._failures: dict[tuple[str, ...], _Failures] = {}

    def _keys(self, username: str, address: str) -> tuple[tuple[tuple[str, ...], int], ...]:
        return ((("address", address), self.free_per_address), (("user", username, address), self.free_per_user))

    def check(self, username: str, address: str) -> None:
        """429 with how long to wait (and a `retry_after` the handler turns into Retry-After) while delayed."""
        now = self.clock()
        for key, _ in self._keys(username, address):
            failures = self._failures.get(key)
            if failures is not None and failures.blocked_until > now:
                wait = max(1, math.ceil(failures.blocked_until - now))
                raise ApiError(429, "too_many_failures", f"too many failed logins from this "
                               f"{'address' if key[0] == 'address' else 'address for this user'}; try again in "
                               f"{wait} s", headers={"Retry-After": str(wait)})  # fmt: skip

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        self._forget_idle(now)
        for key, free in self._keys(username, address):
            failures = self._failures.get(key)
            if failures is None or now - failures.last > self.forget_after_s:
                failures = self._failures[key] = _Failures(0, now, 0.0)
            failures.count, failures.last = failures.count + 1, now
            if failures.count >= free:
                delay = min(self.first_delay_s * 2 ** min(failures.count - free, 32), self.max_delay_s)
                failures.blocked_until = now + delay

    def succeeded(self, username: str, address: str) -> None:
        """The address's own count stays: one valid account must not reset a guesser's budget for the others."""
        self._failures.pop(("user", username, address), None)

    def _forget_idle(self, now: float) -> None:
        """Bounded memory: keys idle past `forget_after_s` go once there are many (a spray from many addresses)."""
        if len(self._failures) > MAX_THROTTLE_KEYS:
            idle = [key for key, f in self._failures.items() if now - f.last > self.forget_after_s]
            for key in idle or sorted(self._failures, key=lambda k: self._failures[k].last)[: MAX_THROTTLE_KEYS // 2]:
                del self._failures[key]
