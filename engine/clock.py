"""The clock every node reads: wall time, monotonic time and sleeps through one interface a test can drive."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall time, UTC: what a node stamps on what it reads (the gateway's time of a device answer)."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go backwards: pacing, timeouts, idle windows."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told: `advance(s)` wakes every sleep that is due, in order."""

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._order), waker))
        await waker

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers at their deadlines; returns once they have run."""
        until = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= until:
            deadline, _, waker = heapq.heappop(self._sleepers)
            self._step_to(deadline)
            if not waker.done():
                waker.set_result(None)
            await asyncio.sleep(0)
        self._step_to(until)
        await asyncio.sleep(0)

    def _step_to(self, mono: float) -> None:
        if mono > self._mono:
            self._wall += timedelta(seconds=mono - self._mono)
            self._mono = mono
