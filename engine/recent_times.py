"""A series' newest device times, to refuse a repeated reading: a sorted machine-integer array per series."""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Hashable
from typing import TYPE_CHECKING, Annotated, TypeVar

from pydantic import PlainSerializer, PlainValidator

Series = TypeVar("Series", bound=Hashable)


def _times(value: object) -> array[int]:
    if isinstance(value, array):
        return value
    if not isinstance(value, list) or not all(type(item) is int for item in value):
        raise ValueError("expected a list of device times in epoch milliseconds")
    return array("q", sorted(value))


# A state table's value: saved as the JSON list of ints it always was (a memory saved as a list restores), held as
# an array, ~200 B for 16 times where a list of int objects is ~700 B, and nothing kept per reading.
if TYPE_CHECKING:  # array is not subscriptable at run time (before 3.12)
    RecentTimes = array[int]
else:
    RecentTimes = Annotated[array, PlainValidator(_times), PlainSerializer(array.tolist, return_type=list[int])]


def repeated(memory: dict[Series, array[int]], series: Series, at_ms: int, keep: int) -> bool:
    """Whether `at_ms` is among the series' remembered device times (ascending); if not, it joins them and the
    oldest beyond `keep` goes: a reading older than all of them is past the memory and passes."""
    recent = memory.get(series)
    if recent is None:
        memory[series] = array("q", (at_ms,))
        return False
    if at_ms > recent[-1]:  # in order, as nearly every reading is: no search
        recent.append(at_ms)
    else:
        at = bisect_left(recent, at_ms)
        if at < len(recent) and recent[at] == at_ms:
            return True
        recent.insert(at, at_ms)
    if len(recent) > keep:
        del recent[0]
    return False
