"""deadband: report by exception per series, absolute and percent bands, quality changes, the heartbeat, per-series
bands, and decisions that are the same after a restart and replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from streamforge.nodes.deadband import Deadband
from streamforge.sdk import NodeHarness, telemetry

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def readings(*values: float | None, asset: str = "pump_1", start: float = 0, step: float = 1,
             quality: str = "GOOD") -> list[dict[str, Any]]:  # fmt: skip
    return [telemetry(asset, "pressure", value, quality=quality, device_time=T0 + timedelta(seconds=start + i * step))
            for i, value in enumerate(values)]  # fmt: skip


def values(emitted: dict[str, list[dict[str, Any]]]) -> list[float | None]:
    return [record["value"] for record in emitted.get("out", [])]


async def test_an_absolute_band_passes_only_readings_that_left_it() -> None:
    async with NodeHarness(Deadband, {"absolute": 0.5}) as h:
        assert values(await h.process(readings(5.0, 5.2, 5.5, 5.6, 4.9, 5.3, 6.2))) == [5.0, 5.6, 4.9, 6.2]
        other = await h.process(readings(5.0, 5.1, asset="pump_2"))  # every series on its own
        assert values(other) == [5.0]


async def test_a_percent_band_is_relative_to_the_last_value_sent() -> None:
    async with NodeHarness(Deadband, {"percent": 10}) as h:
        assert values(await h.process(readings(100.0, 109.0, 111.0, 121.0, 130.0, 0.0))) == [100.0, 111.0, 130.0, 0.0]


async def test_a_quality_change_or_a_missing_value_always_goes_on() -> None:
    async with NodeHarness(Deadband, {"absolute": 1}) as h:
        await h.process(readings(5.0))
        suspect = await h.process(readings(5.1, start=1, quality="SUSPECT"))
        assert [r["quality"] for r in suspect["out"]] == ["SUSPECT"]
        assert values(await h.process(readings(None, 5.1, start=2))) == [None, 5.1]


async def test_the_heartbeat_sends_a_reading_within_the_band_after_a_silence_of_device_time() -> None:
    async with NodeHarness(Deadband, {"absolute": 1, "max_silence_s": 60}) as h:
        sent = await h.process(readings(*[5.0] * 181, step=1))  # three minutes of a flat line, one per second
        assert [r["timestamps"]["device_time"] - T0 for r in sent["out"]] == [
            timedelta(seconds=s) for s in (0, 60, 120, 180)
        ]


async def test_per_series_bands_first_match_wins() -> None:
    config = {"absolute": 10, "series": [{"asset_id": "pump_1", "parameter": "press*", "absolute": 0.1}]}
    async with NodeHarness(Deadband, config) as h:
        assert values(await h.process(readings(5.0, 5.2, 5.25))) == [5.0, 5.2]  # pump_1: the fine band
        assert values(await h.process(readings(5.0, 5.2, 12.0, asset="pump_2"))) == [5.0]  # the default band


async def test_a_restart_between_batches_decides_as_an_uninterrupted_run() -> None:
    """The last reading sent per series is state: after a restart the band is still around it."""
    batches = [readings(5.0, 5.2, 5.6), readings(5.7, 6.2, 6.3, start=3), readings(6.0, 5.5, start=6)]
    async with NodeHarness(Deadband, {"absolute": 0.5}) as uninterrupted:
        expected = [values(await uninterrupted.process(batch)) for batch in batches]
    async with NodeHarness(Deadband, {"absolute": 0.5}) as h:
        got = []
        for batch in batches:
            got.append(values(await h.process(batch)))
            await h.restart()
    assert got == expected == [[5.0, 5.6], [6.2], [5.5]]


def test_a_band_that_filters_nothing_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValidationError, match="set `absolute` or `percent`"):
        Deadband.Config.model_validate({})
    with pytest.raises(ValidationError, match="percent"):
        Deadband.Config.model_validate({"percent": -5})
