"""simulator: deterministic signals on device time, and each injected fault where it was asked for."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from streamforge.engine.clock import ManualClock
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.simulator import Simulator, SimulatorConfig

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)


def _config(**overrides: Any) -> dict[str, Any]:
    return {
        "signals": [
            {
                "asset_id": "pump_1",
                "parameter": "pressure",
                "unit": "bar",
                "shape": "sine",
                "offset": 5,
                "amplitude": 1,
            },
            {"asset_id": "pump_1", "parameter": "flow", "shape": "random_walk", "offset": 100, "amplitude": 10},
            {"asset_id": "tank_1", "parameter": "level", "shape": "step", "offset": 2, "amplitude": 1, "period_s": 1},
        ],
        "rate_hz": 10,
        "start_time": T0.isoformat(),
        "realtime": False,
        "limit": 100,
        **overrides,
    }


async def _all(config: dict[str, Any]) -> list[dict[str, Any]]:
    async with NodeHarness(Simulator, config) as harness:
        while not harness.node.exhausted:
            await harness.poll()
        return harness.captured["out"]


async def test_signals_are_deterministic_and_on_device_time() -> None:
    first, second = await _all(_config()), await _all(_config())
    assert first == second
    assert len(first) == 300
    pressure = [r for r in first if r["parameter"] == "pressure"]
    assert pressure[10]["timestamps"]["device_time"] == T0 + timedelta(seconds=1)
    assert all(4 <= r["value"] <= 6 for r in pressure)
    assert {r["value"] for r in first if r["parameter"] == "level"} == {2.0, 3.0}
    assert all(90 <= r["value"] <= 110 for r in first if r["parameter"] == "flow")
    assert all(r["quality"] == "GOOD" and r["clock_skew_ms"] == 5 for r in first)


async def test_faults_are_injected_as_configured() -> None:
    faults = {"spike_every": 10, "out_of_range_every": 15, "missing_device_time_every": 7, "duplicate_every": 11,
              "gap_every": 13}  # fmt: skip
    records = await _all(_config(faults=faults, signals=[_config()["signals"][0]]))
    kinds = Counter(r["metadata"].get("sim_fault") for r in records)
    # Readings 1..100; where two faults fall on one reading the first listed wins:
    # gap 13,26,..,91 (7); spike 10,..,100 (10); out of range 15,45,75 (3);
    # missing device_time 7,14,..,98 less 70 and 91 (12); duplicate 11,..,99 less 77 (8).
    assert kinds["spike"] == 10 and kinds["out_of_range"] == 3 and kinds["missing_device_time"] == 12
    assert kinds["duplicate"] == 2 * 8  # each duplicate is the reading and its copy
    assert len(records) == 100 - 7 + 8
    missing = [r for r in records if r["metadata"].get("sim_fault") == "missing_device_time"]
    assert all(r["quality"] == "UNCERTAIN" and r["timestamps"]["device_time"] is None for r in missing)
    assert all(r["value"] == 1.0e6 for r in records if r["metadata"].get("sim_fault") == "out_of_range")


async def test_realtime_paces_readings() -> None:
    config = _config(realtime=True, rate_hz=50, limit=10, start_time=None, signals=[_config()["signals"][0]])
    async with NodeHarness(Simulator, config) as harness:
        while not harness.node.exhausted:
            await harness.poll()
    times = [r["timestamps"]["device_time"] for r in harness.captured["out"]]
    assert len(times) == 10 and times == sorted(times)
    assert (times[-1] - times[0]) == timedelta(milliseconds=180)


@pytest.mark.parametrize(
    ("change", "where"),
    [({"signals": []}, ("signals",)), ({"rate_hz": 0}, ("rate_hz",)), ({"faults": {"spike": 3}}, ("faults", "spike"))],
)
def test_bad_config_is_located(change: dict[str, Any], where: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        SimulatorConfig.model_validate(_config(**change))
    assert caught.value.errors()[0]["loc"] == where


async def test_restart_resumes_where_kafka_acknowledged() -> None:
    config = _config(limit=60)
    uninterrupted = await _all(config)
    async with NodeHarness(Simulator, {**config, "batch_size": 25}) as harness:
        await harness.poll()
        await harness.poll()  # 2 x 8 sets of 3 readings acknowledged, state saved after each batch
        await harness.restart()
        while not harness.node.exhausted:
            await harness.poll()
    assert harness.captured["out"] == uninterrupted


async def test_a_batch_holds_at_most_batch_size_readings() -> None:
    async with NodeHarness(Simulator, _config(batch_size=7)) as harness:
        sizes = [len((await harness.poll())["out"]) for _ in range(3)]
    assert sizes == [7, 7, 7]  # sets of the three signals run on across batches
    assert harness.captured["out"] == (await _all(_config()))[:21]


async def test_a_set_of_more_signals_than_a_batch_resumes_mid_set_after_a_restart() -> None:
    signals = [{"asset_id": f"a{i}", "parameter": "p", "shape": "random_walk", "amplitude": 10} for i in range(10)]
    config = _config(signals=signals, limit=5)
    uninterrupted = await _all(config)
    async with NodeHarness(Simulator, {**config, "batch_size": 4}) as harness:
        for _ in range(3):  # 12 readings: set 0 whole, then 2 of set 1's 10
            assert len((await harness.poll())["out"]) == 4
        await harness.restart()  # the walks of set 1's first two signals move on as they did
        while not harness.node.exhausted:
            await harness.poll()
    assert harness.captured["out"] == uninterrupted
    assert len({r["value"] for r in uninterrupted}) > 40  # the walks did move


@pytest.mark.parametrize("landed", ["position", "sent"])
async def test_a_save_that_landed_half_sends_a_set_again_rather_than_skip_any_of_it(landed: str) -> None:
    signals = [{"asset_id": f"a{i}", "parameter": "p", "shape": "random_walk", "amplitude": 10} for i in range(10)]
    config = _config(signals=signals, limit=5)
    uninterrupted = await _all(config)
    async with NodeHarness(Simulator, {**config, "batch_size": 4}) as harness:
        await harness.poll()
        await harness.poll()  # 8 of set 0's 10 signals out, no set completed
        before = dict(harness.state)
        await harness.poll()  # set 0 completes (`position`), 2 of set 1 out (`sent`)
        key = next(key for key in harness.state if json.loads(key)[0] == landed)
        harness.state = {**before, key: harness.state[key]}  # the other of the two saves was lost in the crash
        await harness.restart()
        while not harness.node.exhausted:
            await harness.poll()
    out = [(r["asset_id"], r["timestamps"]["device_time"], r["value"]) for r in harness.captured["out"]]
    expected = [(r["asset_id"], r["timestamps"]["device_time"], r["value"]) for r in uninterrupted]
    assert set(out) == set(expected)  # every reading, with its value: nothing skipped
    # Sent again: set 1's first 2 (`position` landed, `sent` still says 8 of set 0), or the whole of set 0 and
    # those 2 (only `sent` landed: `position` still says set 0).
    assert len(out) == len(expected) + {"position": 2, "sent": 12}[landed]


class _RunningClock(ManualClock):
    """A fake clock whose sleeps pass at once and move its time on: a paced node is polled without a driver, and
    time moves only by the node's own waits and the test's downtimes."""

    async def sleep(self, seconds: float) -> None:
        await self.advance(max(0.0, seconds))


Reading = tuple[str, str, int, datetime, float]  # asset, parameter, sim_seq, device_time, value


def _readings(records: list[dict[str, Any]]) -> list[Reading]:
    return [(r["asset_id"], r["parameter"], int(r["metadata"]["sim_seq"]), r["timestamps"]["device_time"], r["value"])
            for r in records]  # fmt: skip


async def _paced(harness: NodeHarness[Simulator], polls: int | None = None) -> None:
    """Turns of the source loop (until exhausted if no count), each reading checked against the clock as it went out
    (only the node's waits move a _RunningClock: the clock now is the clock when the batch was made)."""
    turns = 0
    while not harness.node.exhausted and (polls is None or turns < polls):
        out, now = (await harness.poll())["out"], harness.clock.now()
        assert max((r["timestamps"]["device_time"] for r in out), default=now) <= now
        turns += 1


def _tenths(start: datetime, count: int) -> list[datetime]:
    """Device times of `count` sets at 10 Hz from `start`."""
    return [start + timedelta(seconds=n / 10) for n in range(count)]


async def test_restarts_without_start_time_keep_device_times_continuous_and_never_ahead_of_the_clock() -> None:
    config = _config(realtime=True, start_time=None, limit=200, batch_size=4)  # sets of 3 split across batches
    async with NodeHarness(Simulator, config, clock=_RunningClock(T0)) as harness:
        await _paced(harness)
    uninterrupted = _readings(harness.captured["out"])
    assert sorted({time for *_, time, _ in uninterrupted}) == _tenths(T0, 200)
    clock = _RunningClock(T0)
    async with NodeHarness(Simulator, config, clock=clock) as harness:
        for downtime_s in (4.0, 9.5):  # two crashes (the first mid-set), each back within CATCH_UP_S
            await _paced(harness, 41)
            await clock.advance(downtime_s)
            await harness.restart()
        await _paced(harness)
        caught_up = clock.now()
    assert _readings(harness.captured["out"]) == uninterrupted  # none skipped, none twice, each at its own time
    assert caught_up == T0 + timedelta(seconds=19.9)  # the last set went out when due: paced again, not behind


async def test_after_a_long_downtime_readings_resume_at_now_with_none_skipped() -> None:
    config = _config(realtime=True, start_time=None, limit=40, signals=[_config()["signals"][1]])
    clock = _RunningClock(T0)
    async with NodeHarness(Simulator, config, clock=clock) as harness:
        await _paced(harness, 11)  # the first poll only saves the origin; then sets 0-9
        await clock.advance(3600)  # the gateway was off for an hour
        await harness.restart()
        resumed = clock.now()
        assert (await harness.poll())["out"] == []  # the moved origin is saved before any reading on it
        await _paced(harness, 10)
        await clock.advance(2.0)  # a crash on the moved origin, back within CATCH_UP_S: it was kept
        await harness.restart()
        await _paced(harness)
    out = _readings(harness.captured["out"])
    assert [seq for _, _, seq, _, _ in out] == list(range(40))
    assert [time for *_, time, _ in out] == _tenths(T0, 10) + _tenths(resumed, 30)  # the hour is a gap, no burst
    unpaced = await _all({**config, "realtime": False, "start_time": T0.isoformat()})
    assert [value for *_, value in out] == [value for *_, value in _readings(unpaced)]  # the walk went on as it would


async def test_a_position_saved_without_its_origin_resumes_at_now() -> None:
    config = _config(realtime=True, start_time=None, limit=20, signals=[_config()["signals"][1]])
    clock = _RunningClock(T0)
    async with NodeHarness(Simulator, config, clock=clock) as harness:
        await _paced(harness, 11)
        key = json.dumps(["position"])
        position = json.loads(harness.state[key])
        del position["origin"]  # as the previous version saved it: each of its starts took now as the origin
        harness.state[key] = json.dumps(position).encode()
        await clock.advance(5.0)
        await harness.restart()
        resumed = clock.now()
        assert (await harness.poll())["out"] == []
        origin = datetime.fromisoformat(json.loads(harness.state[key])["origin"])
        assert origin == resumed - timedelta(seconds=1)  # set 10 at now, saved with the position
        await _paced(harness)
    out = _readings(harness.captured["out"])
    assert [seq for _, _, seq, _, _ in out] == list(range(20))
    assert [time for *_, time, _ in out] == _tenths(T0, 10) + _tenths(resumed, 10)


async def test_a_series_ahead_of_the_clock_moves_back_to_now_once_paced() -> None:
    config = _config(realtime=False, start_time=None, limit=None, signals=[_config()["signals"][0]])
    clock = _RunningClock(T0)
    async with NodeHarness(Simulator, config, clock=clock) as harness:
        for _ in range(3):  # 1,000 sets unpaced (after the poll that saves the origin): 100 s ahead of the clock
            await harness.poll()
        assert harness.captured["out"][-1]["timestamps"]["device_time"] == T0 + timedelta(seconds=99.9)
        harness.config = {**config, "realtime": True, "limit": 1020}  # redeployed paced, its state kept
        await harness.restart()
        resumed = clock.now()
        await _paced(harness)
    out = _readings(harness.captured["out"])
    assert [seq for _, _, seq, _, _ in out] == list(range(1020))
    assert [time for *_, time, _ in out][1000:] == _tenths(resumed, 20)
