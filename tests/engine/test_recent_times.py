"""recent_times: a series' last arrived device times refuse a repeat in any order, bounded, saved as a JSON list."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from streamforge.engine.recent_times import RecentTimes, empty, remembered, times


def test_a_repeat_of_a_remembered_time_is_refused_in_any_order_and_the_earliest_arrival_is_forgotten() -> None:
    memory = empty()
    arrivals = [10, 20, 30, 20, 25, 25, 40, 10, 5, 5, 40, 30]
    assert [remembered(memory, at, keep=4) for at in arrivals] == [
        False, False, False, True,  # 20 again
        False, True,  # 25 arrived late, then again
        False,  # 40 pushes 10, the earliest arrival, out
        False,  # so 10 passes, and is remembered (it pushes 20 out)
        False, True,  # 5, older than every time kept, is remembered as it arrives: its redelivery is refused
        True,  # 40 is still among the last four to arrive
        False,  # 30 is not: 25, 40, 10 and 5 came after it
    ]  # fmt: skip
    assert times(memory) == [40, 10, 5, 30]


def test_saved_as_the_json_list_of_times_it_always_was_and_restored_from_it() -> None:
    adapter = TypeAdapter(RecentTimes)
    memory = empty()
    for at in (30, 10, 20):
        remembered(memory, at, keep=16)
    assert adapter.dump_json(memory) == b"[30,10,20]"
    restored = adapter.validate_json(b"[30,10,20]")  # also as a list of int saved before the arrays
    assert times(restored) == [30, 10, 20]
    assert remembered(restored, 10, keep=16) and not remembered(restored, 31, keep=16)
    for bad in (b'["10"]', b"[]", b"[4611686018427387904]"):  # 2**62: no time, and a base out of 32 bits
        with pytest.raises(ValidationError, match="epoch milliseconds"):
            adapter.validate_json(bad)


def test_a_horizon_keeps_every_time_close_to_the_newest_beyond_the_count_and_forgets_the_rest() -> None:
    memory = empty()
    fast = list(range(0, 400, 10))  # 40 readings 10 ms apart: more than `keep`, all within the horizon
    assert not any(remembered(memory, at, keep=4, horizon_ms=1000) for at in fast)
    assert all(remembered(memory, at, keep=4, horizon_ms=1000) for at in fast)  # each one's second delivery
    assert not remembered(memory, 5000, keep=4, horizon_ms=1000)  # the newest moves on by 4.6 s ...
    assert times(memory) == [370, 380, 390, 5000]  # ... and those past the horizon go, down to `keep`
    assert not remembered(memory, 10, keep=4, horizon_ms=1000)  # forgotten, so a repeat of 10 is not refused


def test_times_are_32_bit_offsets_and_one_out_of_reach_moves_the_base_forgetting_those_left_behind() -> None:
    now = 1_764_900_000_000  # December 2025, in epoch ms: out of a 32-bit integer's reach
    day = 86_400_000
    memory = empty()
    for at in (now, now - 1000, now + 20 * day):  # 20 days on: still within reach (24.8 days) of the base
        assert not remembered(memory, at, keep=8)
    assert memory.itemsize == 4 and times(memory) == [now, now - 1000, now + 20 * day]
    assert not remembered(memory, now + 40 * day, keep=8)  # out of reach: based there, 20 days back is kept
    assert times(memory) == [now + 20 * day, now + 40 * day]
    assert remembered(memory, now + 20 * day, keep=8) and not remembered(memory, now, keep=8)
    before_1970 = empty()  # a device clock far off: negative times work alike
    assert [remembered(before_1970, at, keep=8) for at in (-5000, -6000, -5000)] == [False, False, True]
    assert times(before_1970) == [-5000, -6000]


def test_a_saved_list_wider_than_the_reach_restores_around_its_newest_time() -> None:
    day = 86_400_000
    restored = TypeAdapter(RecentTimes).validate_python([0, 30 * day, 29 * day])
    assert times(restored) == [30 * day, 29 * day]  # 0 is 30 days before the newest: no repeat comes that late
