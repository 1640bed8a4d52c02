"""The manual clock: sleeps wake at their deadlines, in order, and wall time moves with monotonic time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from streamforge.engine.clock import ManualClock


async def test_sleeps_wake_in_deadline_order_as_time_is_advanced() -> None:
    start = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    clock = ManualClock(start)
    woke: list[tuple[str, float, datetime]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic(), clock.now()))

    tasks = [asyncio.create_task(sleeper("late", 5)), asyncio.create_task(sleeper("early", 2))]
    await asyncio.sleep(0)
    await clock.advance(1)
    assert woke == []
    await clock.advance(3)
    assert woke == [("early", 2.0, start + timedelta(seconds=2))]
    await clock.advance(1)
    assert [name for name, *_ in woke] == ["early", "late"] and clock.now() == start + timedelta(seconds=5)
    await asyncio.gather(*tasks)
