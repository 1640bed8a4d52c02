"""aggregator: windows match an independent computation; late readings are routed; replays are exact."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from streamforge.engine.clock import ManualClock
from streamforge.engine.recent_times import times
from streamforge.engine.records import telemetry
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.aggregator import (
    COUNT,
    DEDUP_HORIZON_MS,
    DEDUP_RECENT,
    TURNS,
    Aggregator,
    SavedWindow,
    _Series,
)

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the saved windows below start at 1000 ms


def readings(n: int, seed: int = 1, series: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        telemetry(f"asset_{i % series}", "temp", round(rng.uniform(0, 100), 3),
                  device_time=T0 + timedelta(milliseconds=100 * (i // series)), gateway_time=T0)
        for i in range(n)
    ]  # fmt: skip


def expected(records: list[dict[str, Any]], size_ms: int) -> dict[tuple[str, datetime], dict[str, float]]:
    groups: dict[tuple[str, datetime], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        t = r["timestamps"]["device_time"]
        start = t - timedelta(milliseconds=(t - T0) // timedelta(milliseconds=1) % size_ms)
        groups[(r["asset_id"], start)].append(r)
    out = {}
    for key, rs in groups.items():
        ordered = sorted(rs, key=lambda r: r["timestamps"]["device_time"])
        values = [r["value"] for r in rs]
        out[key] = {"avg": statistics.fmean(values), "min": min(values), "max": max(values), "count": len(values),
                    "first": ordered[0]["value"], "last": ordered[-1]["value"]}  # fmt: skip
    return out


def held(series: _Series) -> list[int]:
    """The positions of the series' open windows (not its vacant slots)."""
    return [at for at in series.windows() if not math.isnan(series[at])]


def open_windows(node: Aggregator) -> set[tuple[str, str, str, int]]:
    """(asset, parameter, resolution, start) of every window the node holds open."""
    return {(*key, series.resolution(at), int(series[at]))
            for key, series in node._series.items() for at in held(series)}  # fmt: skip


def got(emitted: list[dict[str, Any]]) -> dict[tuple[str, datetime], dict[str, float]]:
    return {(a["asset_id"], a["window_start"]): a["aggregates"] for a in emitted}


def assert_same(actual: dict[Any, dict[str, float]], wanted: dict[Any, dict[str, float]]) -> None:
    assert actual.keys() == wanted.keys()
    for key, stats in wanted.items():
        for name, value in stats.items():
            assert abs(actual[key][name] - value) < 1e-9, (key, name)


async def test_windows_equal_independent_computation() -> None:
    records = readings(3 * 25 * 10)  # 25 s of 10 Hz for 3 series
    clock = ManualClock()
    config = {"resolutions": ["1s", "1min"], "allowed_lateness_s": 0, "idle_close_s": 10}
    async with NodeHarness(Aggregator, config, clock=clock) as h:
        for start in range(0, len(records), 37):
            await h.process(records[start : start + 37])
        await clock.advance(9.9)
        assert await h.tick() == {}  # not idle long enough yet
        await clock.advance(0.2)
        await h.tick()  # the last windows close when idle
    assert_same(got(h.captured["agg_1s"]), expected(records, 1000))
    assert_same(got(h.captured["agg_1min"]), expected(records, 60_000))
    assert h.captured["late"] == []


async def test_late_readings_are_counted_and_routed_not_dropped() -> None:
    async with NodeHarness(Aggregator, {"resolutions": ["1s"], "allowed_lateness_s": 1}) as h:
        await h.process(readings(3 * 40))  # 4 s per series: windows up to 2 s are closed
        straggler = telemetry("asset_0", "temp", 1.0, device_time=T0 + timedelta(milliseconds=550), gateway_time=T0)
        within = telemetry("asset_0", "temp", 2.0, device_time=T0 + timedelta(milliseconds=2500), gateway_time=T0)
        out = await h.process([straggler, within])
    assert h.node.late_count == 1
    (dead,) = out["late"]
    assert dead["reasons"][0]["code"] == "late" and dead["asset_id"] == "asset_0"
    assert "allowed lateness 1.0s" in dead["reasons"][0]["message"]


async def test_output_key_makes_replays_idempotent() -> None:
    async with NodeHarness(Aggregator, {"resolutions": ["1s"], "allowed_lateness_s": 0}) as h:
        out = await h.process(readings(3 * 25))
    keys = [Aggregator.record_key("agg_1s", a) for a in out["agg_1s"]]
    assert keys[0] == "asset_0|temp|2026-01-29T10:00:00+00:00" and len(set(keys)) == len(keys)


async def test_crash_and_replay_from_retained_offsets_emits_exactly_the_same() -> None:
    records = readings(3 * 10 * 70)  # 70 s: crosses a minute boundary
    config = {"resolutions": ["1s", "1min"], "allowed_lateness_s": 0}
    async with NodeHarness(Aggregator, config) as reference:
        await reference.process(records)
    async with NodeHarness(Aggregator, config) as h:
        messages = await h.messages(records)
        crash_at = 1234
        for start in range(0, crash_at, 100):
            await h.process_messages(messages[start : min(start + 100, crash_at)])
        resume = await h.restart()
        replay_from = resume[("in", 0)]
        assert replay_from < crash_at  # open windows held their offsets back
        for start in range(replay_from, len(messages), 100):
            await h.process_messages(messages[start : start + 100])
    for port in ("agg_1s", "agg_1min"):
        assert got(h.captured[port]) == got(reference.captured[port])  # last write per key wins, as in a sink
        latest: dict[str, dict[str, Any]] = {}
        for aggregate in h.captured[port]:
            key = Aggregator.record_key(port, aggregate)
            if key in latest:
                assert latest[key] == aggregate  # a re-emission is identical, never partial
            latest[key] = aggregate
    assert h.captured["late"] == []


async def test_a_reading_delivered_twice_counts_once() -> None:
    records = readings(3 * 10)
    clock = ManualClock()
    async with NodeHarness(Aggregator, {"resolutions": ["1s"], "allowed_lateness_s": 0}, clock=clock) as h:
        await h.process(records + records[:9])  # at-least-once delivery: a replayed prefix
        await clock.advance(10.1)  # idle_close_s 10 by default
        await h.tick()
    assert_same(got(h.captured["agg_1s"]), expected(records, 1000))


async def test_a_validators_resend_of_more_readings_of_a_series_than_it_remembers_by_count_counts_once() -> None:
    """A validator restarted after a crash sends its unacknowledged batches again as new records: 40 readings of one
    series 10 ms apart, then the last 17, 20 and all 40 again. Remembered by count alone (16), each was counted
    twice (57, 60 and 80 in the hour)."""
    series = [telemetry("pump_1", "pressure", float(i), device_time=T0 + timedelta(milliseconds=10 * i))
              for i in range(40)]  # fmt: skip
    for resent in (17, 20, 40):
        clock = ManualClock()
        async with NodeHarness(Aggregator, {"resolutions": ["1h"]}, clock=clock) as h:
            await h.process(series)
            await h.process(series[40 - resent :])  # new offsets, as a validator's resend brings them
            await clock.advance(10.1)  # idle_close_s
            await h.tick()
        assert_same(got(h.captured["agg_1h"]), expected(series, 3_600_000))


async def test_duplicates_count_once_across_a_crash_and_in_the_replay() -> None:
    base = readings(3 * 10 * 70)
    stream: list[dict[str, Any]] = []
    for i, record in enumerate(base):
        stream += [record, record] if i % 45 == 44 else [record]  # the device sent it twice
    stream.insert(1300, stream[1299])  # the copy of the last reading a checkpoint saved comes after the restart
    config = {"resolutions": ["1s", "1min"], "allowed_lateness_s": 0, "checkpoint_s": 1}
    clock = ManualClock()
    async with NodeHarness(Aggregator, config, clock=clock) as h:
        messages = await h.messages(stream)
        for start in range(0, 1300, 100):
            await h.process_messages(messages[start : start + 100])
            await clock.advance(0.6)  # batch 12 (ending at 1299) saves a checkpoint
        resume = (await h.restart()).get(("in", 0), 1300)  # nothing held back: resume where it stopped
        for start in range(resume, len(messages), 100):
            await h.process_messages(messages[start : start + 100])
        await clock.advance(10.1)
        await h.tick()
    for port, size_ms in (("agg_1s", 1000), ("agg_1min", 60_000)):
        assert_same(got(h.captured[port]), expected(base, size_ms))
    assert h.captured["late"] == []


async def test_checkpoints_bound_the_replay_and_the_result_is_exactly_the_same() -> None:
    records = readings(3 * 10 * 70)  # 70 s: the 1min window is open across the crash
    config = {"resolutions": ["1s", "1min"], "allowed_lateness_s": 0, "checkpoint_s": 1}
    async with NodeHarness(Aggregator, config) as reference:
        await reference.process(records)
    clock = ManualClock()
    async with NodeHarness(Aggregator, config, clock=clock) as h:
        messages = await h.messages(records)
        crash_at = 1134
        for start in range(0, crash_at, 100):
            await h.process_messages(messages[start : min(start + 100, crash_at)])
            await clock.advance(0.25)  # 8 of the TURNS (32) a batch: the 3 series' turns, 0-2, are saved together
        resume = await h.restart()
        replay_from = resume[("in", 0)]
        # Turns 0-7 were saved after batch 9 (8-15 after batch 10, 16-23 after 11): replayed from batch 10, within
        # checkpoint_s (4 batches, from 734) of the crash, not since the minute began.
        assert replay_from == 1000
        for start in range(replay_from, len(messages), 100):
            await h.process_messages(messages[start : start + 100])
    for port in ("agg_1s", "agg_1min"):
        assert_same(got(h.captured[port]), got(reference.captured[port]))
    first_minute = {key: stats for key, stats in expected(records, 60_000).items() if key[1] == T0}
    assert_same(got(h.captured["agg_1min"]), first_minute)  # open across the crash, every reading counted once


async def test_a_window_of_a_resolution_no_longer_configured_still_closes_after_a_restart() -> None:
    """Configured 1s and 1min, restarted with 1s only: the open 1 min window, restored, still goes out whole."""
    records = readings(3 * 10 * 30)  # 30 s of 3 series at 10 Hz: the minute is open at the restart
    clock = ManualClock()
    config: dict[str, Any] = {"resolutions": ["1s", "1min"], "allowed_lateness_s": 0, "checkpoint_s": 1}
    async with NodeHarness(Aggregator, config, clock=clock) as h:
        await h.process(records)
        await clock.advance(1)
        await h.tick()  # a round of turns due: every series' open windows saved
        h.config = {**config, "resolutions": ["1s"]}
        await h.restart()
        assert {resolution for (_, _, resolution, _) in open_windows(h.node)} == {"1s", "1min"}
        await clock.advance(10.1)  # idle_close_s
        await h.tick()
    assert_same(got(h.captured["agg_1min"]), expected(records, 60_000))
    assert open_windows(h.node) == set()


async def test_series_are_saved_in_turns_each_within_checkpoint_s() -> None:
    """A checkpoint of every series at once was 15 MB of JSON at 10,000 series, and held the node's batch while it was
    encoded: 1 / TURNS of them is saved every checkpoint_s / TURNS, so each once in checkpoint_s."""
    series = 2 * TURNS
    records = readings(series * (TURNS + 1), series=series)  # a reading of each series per batch
    clock = ManualClock()
    saved_series = []
    async with NodeHarness(Aggregator, {"resolutions": ["1min"], "checkpoint_s": 1}, clock=clock) as h:
        for start in range(0, len(records), series):
            await h.process(records[start : start + series])
            saved_series.append(len({json.loads(key)[1] for key in h.state if json.loads(key)[0] == "open"}))
            await clock.advance(1 / TURNS)
        # Turn 0 was saved last after batch 1: held back from batch 2, less than checkpoint_s (TURNS batches) ago.
        assert h.node.retained() == {("in", 0): 2 * series}
    assert saved_series == list(range(0, series + 1, 2))  # a turn's 2 series a batch, after the first


async def test_a_long_window_keeps_numbers_not_readings() -> None:
    series = 2
    records = readings(series * 36_000, series=series)  # an hour of 10 Hz per series
    async with NodeHarness(Aggregator, {"resolutions": ["1h"], "allowed_lateness_s": 0}) as h:
        for start in range(0, len(records), 2000):
            await h.process(records[start : start + 2000])
        counted = [int(s[at + COUNT]) for s in h.node._series.values() for at in held(s)]
        assert counted == [36_000] * series  # one open window per series, every reading counted
        assert all(s.elsewhere is None for s in h.node._series.values())  # one partition's offset
        # The dedupe memory: the last DEDUP_RECENT, or the DEDUP_HORIZON_MS at 10 Hz, not the hour.
        kept = max(DEDUP_RECENT, DEDUP_HORIZON_MS // 100 + 1)
        assert all(len(times(series.recent)) <= kept for series in h.node._series.values())


async def test_the_changelog_holds_exactly_the_open_windows_and_the_node_holds_them_once() -> None:
    """`open` is a journal: a window saved at a checkpoint is deleted from the changelog when it closes, and the
    table keeps no copy of what the node holds."""
    records = readings(3 * 100)  # 10 s of 3 series at 10 Hz
    async with NodeHarness(Aggregator, {"resolutions": ["1s", "1min"], "allowed_lateness_s": 1,
                                        "checkpoint_s": 0.000001}) as h:  # fmt: skip
        for start in range(0, len(records), 30):  # a checkpoint after every batch: every window is saved
            await h.process(records[start : start + 30])
        held = open_windows(h.node)
        saved = {tuple(json.loads(key)[1:]) for key in h.state if json.loads(key)[0] == "open"}
        assert saved == held and len(held) == 3 * 3  # per series: the 1 min window and 1 s windows 8 s and 9 s
        assert len(h.node._open) == 0
        await h.restart()
        assert open_windows(h.node) == held


async def test_a_window_saved_by_the_version_before_restores_and_skips_what_it_counted() -> None:
    """Windows saved before the `changed` flag carried a `pending` dict: a gateway upgraded mid-window reads them, and
    a replay of an offset the saved window counted is not counted again."""
    saved = (b'{"start_ms":1000,"unit":"C","count":2,"total":5.0,"compensation":0.0,"low":2.0,"high":3.0,'
             b'"first_ms":1000,"first":2.0,"last_ms":1500,"last":3.0,"applied":{"in|4":7},'
             b'"pending":{},"touched":1.0}')  # fmt: skip
    clock = ManualClock()
    async with NodeHarness(Aggregator, {"resolutions": ["1s"]}, clock=clock) as h:
        h.state['["open", "pump_1", "pressure", "1s", 1000]'] = saved
        h.state['["done", "in", 4]'] = b"7"
        await h.restart()
        (counted, again) = await h.messages(
            [
                telemetry("pump_1", "pressure", 4.0, device_time=EPOCH + timedelta(milliseconds=1200)),
                telemetry("pump_1", "pressure", 9.0, device_time=EPOCH + timedelta(milliseconds=1700)),
            ],
            partition=4,
        )
        await h.process_messages([dataclasses.replace(counted, offset=5), dataclasses.replace(again, offset=7)])
        await clock.advance(10.1)  # idle_close_s
        await h.tick()
    (window,) = h.captured["agg_1s"]
    assert window["unit"] == "C" and window["window_start"] == EPOCH + timedelta(seconds=1)
    assert window["aggregates"] == {"avg": 14 / 3, "min": 2.0, "max": 9.0, "first": 2.0, "last": 9.0, "count": 3}


async def test_a_window_saves_as_it_always_did_with_every_partition_it_counted() -> None:
    first, second = (telemetry("pump_1", "pressure", value, device_time=EPOCH + timedelta(milliseconds=ms), unit="C")
                     for value, ms in ((2.0, 1000), (3.0, 1500)))  # fmt: skip
    async with NodeHarness(Aggregator, {"resolutions": ["1s"], "checkpoint_s": 0.000001}) as h:
        (on_4,) = await h.messages([first], partition=4)
        (on_9,) = await h.messages([second], partition=9)  # a second partition: the input was repartitioned
        await h.process_messages([dataclasses.replace(on_4, offset=6), dataclasses.replace(on_9, offset=40)])
        saved = json.loads(h.state['["open", "pump_1", "pressure", "1s", 1000]'])
        assert saved == {"start_ms": 1000, "unit": "C", "count": 2, "total": 5.0, "compensation": 0.0, "low": 2.0,
                         "high": 3.0, "first_ms": 1000, "first": 2.0, "last_ms": 1500, "last": 3.0,
                         "applied": {"in|4": 7, "in|9": 41}}  # fmt: skip
        await h.restart()
        series = h.node._series["pump_1", "pressure"]
        (position,) = held(series)
        partitions = {name: h.node._partitions.index(name) for name in ("in|4", "in|9", "other|0")}
        applied = {name: series.applied(position, index) for name, index in partitions.items()}
        assert applied == {"in|4": 7, "in|9": 41, "other|0": 0}
        assert series.statistics(position) == {"avg": 2.5, "min": 2.0, "max": 3.0, "first": 2.0, "last": 3.0,
                                               "count": 2}  # fmt: skip


def test_a_saved_window_that_does_not_fit_names_its_field() -> None:
    with pytest.raises(ValidationError) as refused:
        TypeAdapter(SavedWindow).validate_json(b'{"start_ms": 1000, "unit": "C", "count": "two"}')
    assert ("count",) in [error["loc"] for error in refused.value.errors()]
