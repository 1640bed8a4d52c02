"""A series' most recently arrived device times, to refuse a repeated reading: one machine-integer array each."""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Annotated

from pydantic import PlainSerializer, PlainValidator

# Layout of a memory: [newest device time ever remembered, then the remembered times in arrival order]. The first
# slot lets a reading in order (nearly every one) skip the search; it may outlive its time's eviction, which only
# costs a search. Arrival order, not time order, decides what is forgotten: a backfill of old readings behind live
# ones is remembered as it arrives, so a redelivered one is still refused.
NEWEST = 0
MOST_KEPT = 100_000  # per series, whatever the horizon (a 10 kHz series' 10 s): a bound on memory, not a rule


def times(recent: array[int]) -> list[int]:
    """The remembered device times, oldest arrival first."""
    return recent[NEWEST + 1 :].tolist()


def _memory(value: object) -> array[int]:
    if isinstance(value, array):
        return value
    if not isinstance(value, list) or not value or not all(type(item) is int for item in value):
        raise ValueError("expected a non-empty list of device times in epoch milliseconds, oldest arrival first")
    return array("q", [max(value), *value])


# A state table's value: saved as the JSON list of times it always was (a memory saved before restores), held as an
# array, ~200 B for 16 times where a list of int objects is ~700 B, and nothing kept per reading.
if TYPE_CHECKING:  # array is not subscriptable at run time (before 3.12)
    RecentTimes = array[int]
else:
    RecentTimes = Annotated[array, PlainValidator(_memory), PlainSerializer(times, return_type=list[int])]


def empty() -> array[int]:
    """A memory that has seen nothing yet."""
    return array("q", (-(2**63),))


def remembered(recent: array[int], at_ms: int, keep: int, horizon_ms: int = 0) -> bool:
    """Whether `at_ms` is among the device times `recent` remembers: the last `keep` to arrive, and any within
    `horizon_ms` of the newest. If not, it joins them, and those past both bounds go, earliest arrival first."""
    if at_ms > recent[NEWEST]:  # newer than all it remembers: no search
        recent[NEWEST] = at_ms
    elif at_ms in recent[NEWEST + 1 :]:
        return True
    recent.append(at_ms)
    forget_to = recent[NEWEST] - horizon_ms  # without a horizon, every time is at or before the newest
    while len(recent) > keep + 1 and (recent[NEWEST + 1] <= forget_to or len(recent) > MOST_KEPT + 1):
        del recent[NEWEST + 1]
    return False
