"""rate_limit: one reading per series per interval (first, last, mean), intervals on device time, late and replayed
readings of a sent interval dropped, held intervals retained for a crash and closed when idle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streamforge.nodes.rate_limit import RateLimit
from streamforge.sdk import ManualClock, NodeHarness, telemetry

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)  # on the minute: intervals start here


def readings(*values: float | None, start: float = 0, step: float = 10, asset: str = "pump_1") -> list[dict[str, Any]]:
    return [telemetry(asset, "flow", value, device_time=T0 + timedelta(seconds=start + i * step))
            for i, value in enumerate(values)]  # fmt: skip


def sent(emitted: dict[str, list[dict[str, Any]]]) -> list[tuple[float | None, float]]:
    """(value, seconds after T0 of its device time) of what went out."""
    return [(r["value"], (r["timestamps"]["device_time"] - T0).total_seconds()) for r in emitted.get("out", [])]


async def test_first_passes_the_first_reading_of_each_interval_at_once() -> None:
    async with NodeHarness(RateLimit, {"interval_s": 60}) as h:
        out = await h.process(readings(1, 2, 3, 4, 5, 6, 7, 8, 9))  # every 10 s: 0..80 s
        assert sent(out) == [(1, 0), (7, 60)]
        assert sent(await h.process(readings(9.5, start=55))) == []  # late, for an interval sent: dropped
        assert sent(await h.process(readings(4, asset="pump_2"))) == [(4, 0)]  # every series on its own


async def test_last_and_mean_send_an_interval_once_the_next_one_starts() -> None:
    async with NodeHarness(RateLimit, {"interval_s": 60, "keep": "last"}) as h:
        assert sent(await h.process(readings(1, 2, 3, 4, 5, 6))) == []  # 0..50 s: the interval is not over
        assert sent(await h.process(readings(7, start=60))) == [(6, 50)]
    async with NodeHarness(RateLimit, {"interval_s": 60, "keep": "mean"}) as h:
        out = await h.process(readings(1, 2, None, 4, 5, 6, 7))  # a reading without a value is not averaged
        (mean,) = out["out"]
        assert (mean["value"], mean["metadata"]["sf-mean-of"]) == (18 / 5, "5")


async def test_an_idle_interval_is_sent_without_waiting_for_the_next_reading() -> None:
    clock = ManualClock(T0)
    async with NodeHarness(RateLimit, {"interval_s": 60, "keep": "last", "idle_close_s": 5}, clock=clock) as h:
        await h.process(readings(1, 2))
        assert sent(await h.tick()) == []
        await clock.advance(6)
        assert sent(await h.tick()) == [(2, 10)]
        assert sent(await h.process(readings(3, start=20))) == []  # that interval was sent: dropped


async def test_a_held_interval_is_retained_so_a_crash_replays_it_and_nothing_is_sent_twice() -> None:
    async with NodeHarness(RateLimit, {"interval_s": 60, "keep": "last"}) as h:
        first = await h.messages(readings(1, 2, 3, 4, 5, 6, 7))  # interval 0 closes on the reading at 60 s
        assert sent(await h.process_messages(first)) == [(6, 50)]
        second = await h.messages(readings(8, 9, start=70))
        await h.process_messages(second)
        resume = await h.restart()  # the held interval (60-110 s) was only in memory
        assert resume == {("in", 0): first[6].offset}  # it starts at the reading at 60 s: replayed from there
        replayed = [m for m in [*first, *second] if m.offset >= first[6].offset]
        assert sent(await h.process_messages(replayed)) == []  # interval 0 is not sent again
        assert sent(await h.process(readings(10, start=120))) == [(9, 80)]
