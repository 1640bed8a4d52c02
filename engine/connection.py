"""The framework's half of a node's device or destination: connect() with the shared backoff, DEGRADED while away.

The runtime's runners and the test harness both drive nodes through it, so a test sees exactly the reconnects the
gateway would make."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Emitted, Node, PeerUnavailable, SourceNode

# Errors of the node's own code, not of its peer: retrying them on a new connection would hide a bug as an outage.
PROGRAMMING_ERRORS = (TypeError, KeyError, AttributeError, NameError, IndexError, AssertionError, ZeroDivisionError,
                      NotImplementedError)  # fmt: skip


def describe_failure(exc: BaseException) -> str:
    """What an operator reads: the node's own words for PeerUnavailable, the exception's type and text otherwise."""
    if isinstance(exc, PeerUnavailable):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class PeerLink:
    """Connects a source or sink to its peer and reconnects it. A peer that is down is never a failure of the node:
    `on_problem` gets the reason (None once connected), and connect() is retried after the backoff of the config's
    `connection` settings."""

    def __init__(self, node: Node[Any], on_problem: Callable[[str | None], None]) -> None:
        self.node, self.on_problem = node, on_problem
        settings = getattr(node.config, "connection", None)
        self.settings = settings if isinstance(settings, ConnectionSettings) else ConnectionSettings()
        self.backoff = self.settings.backoff()
        self.connected = False
        self._reported: str | None = None
        self._pause = False  # wait the backoff before the next attempt

    async def connect(self) -> str | None:
        """Try once; None once connected, else the problem (the node is closed again)."""
        try:
            # The libraries time out themselves; this bounds one that does not (a probe, then a session).
            await asyncio.wait_for(self.node.connect(), self.settings.timeout_s * 4 + 5)
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:  # whatever the library raises: the peer is not usable yet
            await self.close()
            return self._lost(describe_failure(exc))
        self.connected = True
        self.backoff.reset()
        self.on_problem(None)
        if self._reported is not None:
            self.node.context.log(logging.INFO, "peer reachable again")
        self._reported = None
        return None

    async def disconnected(self, exc: BaseException) -> None:
        """The connection is gone (the node said so, or a write failed): close it; wait before reconnecting."""
        self._lost(describe_failure(exc))
        await self.close()

    async def wait(self) -> None:
        self._pause = False
        await self.node.clock.sleep(self.backoff.next_delay())

    async def poll(self) -> Emitted:
        """One turn of a source: connect if needed, then poll. While the peer is away: what unreachable() records
        for each failed attempt, or nothing, with the backoff waited before the next turn."""
        node = self.node
        assert isinstance(node, SourceNode)
        if self._pause:
            await self.wait()
        if not self.connected:
            problem = await self.connect()
            if problem is not None:
                self._pause = True
                return node.unreachable(problem)
        try:
            return await node.poll()
        except PeerUnavailable as gone:
            await self.disconnected(gone)
            self._pause = True
            return {}

    def _lost(self, problem: str) -> str:
        self.connected = False
        self.on_problem(problem)
        if problem != self._reported:  # one line per new problem, not one per retry
            self.node.context.log(logging.WARNING, "peer unavailable", error=problem)
            self._reported = problem
        return problem

    async def close(self) -> None:
        """Close the node's connection without reporting a problem (its caller reports what failed); the next use
        reconnects."""
        self.connected = False
        with contextlib.suppress(Exception):  # close() must not raise; a library that does anyway is ignored
            await self.node.close()
