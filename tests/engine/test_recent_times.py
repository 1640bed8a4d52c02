"""recent_times: a series' newest device times refuse a repeat in any order, bounded, saved as a JSON list."""

from __future__ import annotations

from array import array

import pytest
from pydantic import TypeAdapter, ValidationError

from streamforge.engine.recent_times import RecentTimes, repeated


def test_a_repeat_of_a_remembered_time_is_refused_in_any_order_and_the_memory_keeps_the_newest() -> None:
    memory: dict[str, array[int]] = {}
    arrivals = [10, 20, 30, 20, 25, 25, 40, 10, 5, 5, 30]
    assert [repeated(memory, "pump", at, keep=4) for at in arrivals] == [
        False, False, False, True,  # 20 again
        False, True,  # 25 arrived late, then again
        False,  # 40 pushes 10, the oldest, out
        False,  # so 10 passes; older than every time kept, it is not kept either
        False, False,  # nor 5: past the memory, passed twice
        True,  # 30 is still among the newest four
    ]  # fmt: skip
    assert memory["pump"].tolist() == [20, 25, 30, 40]


def test_each_series_has_its_own_memory() -> None:
    memory: dict[tuple[str, str], array[int]] = {}
    assert not repeated(memory, ("pump", "flow"), 10, keep=1)
    assert not repeated(memory, ("pump", "pressure"), 10, keep=1)
    assert repeated(memory, ("pump", "flow"), 10, keep=1)


def test_saved_as_the_json_list_it_always_was_and_a_list_saved_in_arrival_order_restores_sorted() -> None:
    adapter = TypeAdapter(RecentTimes)
    assert adapter.dump_json(array("q", [1, 2, 3])) == b"[1,2,3]"
    restored = adapter.validate_json(b"[30,10,20]")
    assert isinstance(restored, array) and restored.tolist() == [10, 20, 30]
    assert repeated({"s": restored}, "s", 20, keep=16)
    with pytest.raises(ValidationError, match="epoch milliseconds"):
        adapter.validate_json(b'["10"]')
