"""A series' most recently arrived device times, to refuse a repeated reading: one machine-integer array each."""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Annotated

from pydantic import PlainSerializer, PlainValidator

# Layout of a memory, in 32-bit integers: [its base (a time: base // SPAN, base % SPAN), the newest device time ever
# remembered, then the remembered times in arrival order], every time as its offset from the base: half the memory
# of 64-bit times (the validator's 64 a series: ~330 B, was ~600). The newest lets a reading in order (nearly every
# one) skip the search; it may outlive its time's eviction, which only costs a search. Arrival order, not time order,
# decides what is forgotten: a backfill of old readings behind live ones is remembered as it arrives, so a
# redelivered one is still refused. A time SPAN or more from the base (24.8 days) moves the base to it, and the
# remembered times then out of reach are forgotten: 24.8 days from the newest arrival, no redelivery is that late.
SPAN = 2**31
HIGH, LOW, NEWEST, FIRST = range(4)
NOTHING = -SPAN  # the newest of a memory that holds no time
LATEST = 2**61  # no time is this far from 1970 (a datetime's is below 2**48): its base's high half fits 32 bits
MOST_KEPT = 100_000  # per series, whatever the horizon (a 10 kHz series' 10 s): a bound on memory, not a rule


def _base(recent: array[int]) -> int:
    return recent[HIGH] * SPAN + recent[LOW]


def times(recent: array[int]) -> list[int]:
    """The remembered device times, oldest arrival first."""
    base = _base(recent)
    return [base + offset for offset in recent[FIRST:]]


def _based_at(base: int, arrived: list[int]) -> array[int]:
    """A memory of these times (arrival order) around `base`: those out of its reach are left out."""
    offsets = [at - base for at in arrived if -SPAN < at - base < SPAN]
    return array("i", [base // SPAN, base % SPAN, max(offsets, default=NOTHING), *offsets])


def _memory(value: object) -> array[int]:
    if isinstance(value, array):
        return value
    if (
        not isinstance(value, list)
        or not value
        or not all(type(item) is int and -LATEST < item < LATEST for item in value)
    ):
        raise ValueError("expected a non-empty list of device times in epoch milliseconds (within ±2**61), oldest "
                         "arrival first")  # fmt: skip
    return _based_at(max(value), value)


# A state table's value: saved as the JSON list of times it always was (a memory saved before restores), held as an
# array, ~140 B for 16 times where a list of int objects is ~700 B, and nothing kept per reading.
if TYPE_CHECKING:  # array is not subscriptable at run time (before 3.12)
    RecentTimes = array[int]
else:
    RecentTimes = Annotated[array, PlainValidator(_memory), PlainSerializer(times, return_type=list[int])]


def empty() -> array[int]:
    """A memory that has seen nothing yet (its base is moved to its first time)."""
    return array("i", (0, 0, NOTHING))


def remembered(recent: array[int], at_ms: int, keep: int, horizon_ms: int = 0) -> bool:
    """Whether `at_ms` is among the device times `recent` remembers: the last `keep` to arrive, and any within
    `horizon_ms` of the newest. If not, it joins them, and those past both bounds go, earliest arrival first."""
    at = at_ms - (recent[HIGH] * SPAN + recent[LOW])
    if not -SPAN < at < SPAN:  # out of the base's reach (a series' first time): based at it, the others re-placed
        recent[:] = _based_at(at_ms, times(recent))
        at = 0
    if at > recent[NEWEST]:  # newer than all it remembers: no search
        recent[NEWEST] = at
    elif at in recent[FIRST:]:
        return True
    recent.append(at)
    forget_to = recent[NEWEST] - horizon_ms  # without a horizon, every time is at or before the newest
    while len(recent) > keep + FIRST and (recent[FIRST] <= forget_to or len(recent) > MOST_KEPT + FIRST):
        del recent[FIRST]
    return False
