"""`aggregator` processor: tumbling windows on device_time (1s, 1min, 1h) with avg, min, max, count, first, last."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from sys import intern
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import Field, PlainSerializer, PlainValidator, TypeAdapter, field_validator

from streamforge.engine.recent_times import RecentTimes, repeated
from streamforge.engine.records import epoch_ms, event_time, from_epoch_ms, reason
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record

Resolution = Literal["1s", "1min", "1h"]
WINDOW_MS: dict[str, int] = {"1s": 1_000, "1min": 60_000, "1h": 3_600_000}
PORT_OF: dict[str, str] = {"1s": "agg_1s", "1min": "agg_1min", "1h": "agg_1h"}
DEDUP_RECENT = 16  # device times per series remembered to count a redelivered reading once
# ... and every device time this close to its series' newest, however many: a validator restarted after a crash
# sends its unacknowledged batches again, as new records (up to ~3 x 2,000 readings), and a series with more than
# DEDUP_RECENT readings among them had each counted twice in its open windows.
DEDUP_HORIZON_MS = 10_000
NEVER = -(2**62)  # before any time: the watermark of a series not seen yet


class AggregatorConfig(NodeConfig):
    resolutions: list[Resolution] = Field(default=["1s", "1min"], min_length=1)
    allowed_lateness_s: float = Field(2.0, ge=0, description="How long after its end a window waits for stragglers")
    idle_close_s: float = Field(10.0, gt=0, description="Close a window that got no reading for this long")
    qualities: list[Literal["GOOD", "SUSPECT", "UNCERTAIN"]] = Field(
        default=["GOOD", "SUSPECT", "UNCERTAIN"], description="Readings of these qualities count"
    )
    checkpoint_s: float = Field(10.0, gt=0, description="How often open windows are saved: a restart replays at most "
                                "this much input, however long the windows are")  # fmt: skip

    @field_validator("resolutions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each resolution may be listed once")
        return value


# A window is one array of doubles (counts, offsets and epoch milliseconds are exact below 2**53) with its few
# references in slots beside: ~210 B. Its numbers as attributes were an int or float object each (~620 B a window
# and a steady churn of long-lived objects), then an array held by a window object (~270 B).
START_MS, COUNT, TOTAL, COMPENSATION, LOW, HIGH, FIRST_MS, FIRST, LAST_MS, LAST, APPLIED, TOUCHED = range(12)
EMPTY = array("d", [0, 0, 0.0, 0.0, math.inf, -math.inf, 2.0**62, 0.0, -(2.0**62), 0.0, 0, 0.0])

if TYPE_CHECKING:  # array is not subscriptable at run time (before 3.12)
    _Doubles = array[float]
else:
    _Doubles = array


class _Window(_Doubles):
    """Running statistics of one window, O(1) in the readings it saw (a 1 h window at 100 Hz is a few numbers).

    What it applied: the next input offset per partition already counted in these statistics, so a replay after a
    restart skips what the saved window holds. A series comes from one partition (its key's), kept in the array;
    any other (an input repartitioned) in `elsewhere`. `changed`: counted into since it was last saved; `saved`:
    in the changelog (its close must delete it there)."""

    __slots__ = ("changed", "elsewhere", "partition", "saved", "unit")
    changed: bool
    elsewhere: dict[str, int] | None
    partition: str | None
    saved: bool
    unit: str | None

    def __new__(cls, start_ms: int, unit: str | None) -> _Window:
        window = cast(_Window, super().__new__(cls, "d", EMPTY))
        window[START_MS] = start_ms
        window.unit, window.partition, window.elsewhere, window.changed, window.saved = unit, None, None, False, False
        return window

    def add(self, at_ms: int, value: float, where: str, offset: int, now: float) -> None:
        self[COUNT] += 1
        total = self[TOTAL]
        summed = total + value
        if abs(total) >= abs(value):  # Neumaier: the low-order bits the total lost, so avg matches an exact sum
            self[COMPENSATION] += (total - summed) + value
        else:
            self[COMPENSATION] += (value - summed) + total
        self[TOTAL] = summed
        if value < self[LOW]:
            self[LOW] = value
        if value > self[HIGH]:
            self[HIGH] = value
        if at_ms < self[FIRST_MS]:
            self[FIRST_MS], self[FIRST] = at_ms, value
        if at_ms > self[LAST_MS]:
            self[LAST_MS], self[LAST] = at_ms, value
        if where == self.partition:
            self[APPLIED] = offset + 1
        else:
            self.apply(where, offset + 1)
        self.changed = True
        self[TOUCHED] = now

    def apply(self, where: str, next_offset: int) -> None:
        """Mark partition `where` counted up to `next_offset`."""
        if where == self.partition or self.partition is None:
            self.partition, self[APPLIED] = where, next_offset
        else:
            if self.elsewhere is None:
                self.elsewhere = {}
            self.elsewhere[where] = next_offset

    def applied(self, where: str) -> int:
        """The next offset of partition `where` not yet counted here."""
        if where == self.partition:
            return int(self[APPLIED])
        return self.elsewhere.get(where, 0) if self.elsewhere else 0

    @property
    def start_ms(self) -> int:
        return int(self[START_MS])

    @property
    def counted(self) -> int:
        """Readings counted (not array.count, which counts a value)."""
        return int(self[COUNT])

    def statistics(self) -> dict[str, Any]:
        return {"avg": (self[TOTAL] + self[COMPENSATION]) / self[COUNT], "min": self[LOW], "max": self[HIGH],
                "first": self[FIRST], "last": self[LAST], "count": int(self[COUNT])}  # fmt: skip


@dataclass
class _SavedWindow:
    """A window as the changelog holds it (the shape every version saved; the `changed`, `touched` and `pending`
    that earlier ones saved beside it are ignored)."""

    start_ms: int
    unit: str | None
    count: int
    total: float
    compensation: float
    low: float
    high: float
    first_ms: int
    first: float
    last_ms: int
    last: float
    applied: dict[str, int] = field(default_factory=dict)


_SAVED = TypeAdapter(_SavedWindow)


def _restored(value: object) -> _Window:
    if isinstance(value, _Window):
        return value
    saved = _SAVED.validate_python(value)
    window = _Window(saved.start_ms, saved.unit)
    window[COUNT:TOUCHED] = array("d", [saved.count, saved.total, saved.compensation, saved.low, saved.high,
                                        saved.first_ms, saved.first, saved.last_ms, saved.last, 0])  # fmt: skip
    window.saved = True
    for where, next_offset in saved.applied.items():
        window.apply(where, next_offset)
    return window


def _saved(w: _Window) -> dict[str, Any]:
    applied = {w.partition: int(w[APPLIED])} if w.partition is not None else {}
    return {"start_ms": w.start_ms, "unit": w.unit, "count": int(w[COUNT]), "total": w[TOTAL],
            "compensation": w[COMPENSATION], "low": w[LOW], "high": w[HIGH], "first_ms": int(w[FIRST_MS]),
            "first": w[FIRST], "last_ms": int(w[LAST_MS]), "last": w[LAST],
            "applied": {**applied, **(w.elsewhere or {})}}  # fmt: skip


def _start_of(window: _Window) -> float:
    return window[START_MS]


# The `open` table's value: held compact, saved and restored as _SavedWindow.
SavedWindow = Annotated[_Window, PlainValidator(_restored), PlainSerializer(_saved, return_type=dict[str, Any])]


class Aggregator(ProcessorNode[AggregatorConfig]):
    """Emits each window once it closes (event time past its end + lateness, or idle).

    Memory is bounded: a window keeps running statistics, not its readings. A reading delivered twice (the same
    device time among the last DEDUP_RECENT of its series to arrive, or within DEDUP_HORIZON_MS of its newest)
    counts once, also across a restart: that memory is saved with the windows and replayed input refills it as it
    was. Older duplicates are the validator's to refuse.

    Crash-safe: every `checkpoint_s` the open windows that changed are saved to the changelog (table `open`) with
    the offsets they counted; input offsets counted since are retained (never committed past). Which windows were
    already emitted lives in the changelog too (tables `closed`, `watermark`, `done`), so a replay re-emits nothing
    partial and counts nothing twice. Output keys are asset|parameter|window_start, so an idempotent sink turns
    any re-emission into a no-op. Idle windows close on the node's clock.
    """

    type = "aggregator"
    category = "processing"
    icon = "chart-bar"
    description = "Tumbling-window statistics at 1s, 1min and 1h on device time"
    inputs = (Port("in", PortType.TELEMETRY, description="Validated readings"),)
    outputs = (
        Port("agg_1s", PortType.AGGREGATE, "telemetry.1s", description="1-second windows"),
        Port("agg_1min", PortType.AGGREGATE, "telemetry.1min", description="1-minute windows"),
        Port("agg_1h", PortType.AGGREGATE, "telemetry.1hour", description="1-hour windows"),
        Port("late", PortType.DLQ, "dlq.telemetry", description="Readings that arrived after their window closed"),
    )

    @classmethod
    def record_key(cls, port: str, record: Record) -> str:
        if port == "late":
            return str(record["asset_id"])
        return f"{record['asset_id']}|{record['parameter']}|{record['window_start'].isoformat()}"

    async def start(self) -> None:
        self._lateness_ms = int(self.config.allowed_lateness_s * 1000)
        self._qualities = set(self.config.qualities)
        # Per (asset, parameter, resolution), its open windows: a few at most (those waiting out the lateness), so a
        # list, searched by start, where a dict per series and resolution was ~200 B more.
        self._windows: dict[tuple[str, str, str], list[_Window]] = {}
        state = self.context.state
        self._watermark = state.table("watermark", int)  # latest device time per series
        self._closed_until = state.table("closed", int)  # end of the last emitted window per series and resolution
        self._done = state.table("done", int)  # next unprocessed offset per input partition
        # (asset, parameter, resolution, start) -> the window, as saved; a journal: the windows live in _windows, and
        # the table holds one only from a checkpoint to the save after it.
        self._open = state.table("open", SavedWindow, kept=False)
        for (asset, parameter, resolution, _), window in self._open.take():
            window[TOUCHED] = self.clock.monotonic()
            slot = (intern(str(asset)), intern(str(parameter)), str(resolution))
            self._windows.setdefault(slot, []).append(window)
        self._saved_recent = state.table("recent", RecentTimes)  # (asset, parameter) -> its last device times
        # The same arrays as the table's: a checkpoint marks a changed one, encoded only then.
        self._recent: dict[tuple[str, str], array[int]] = {
            (intern(str(asset)), intern(str(parameter))): times
            for (asset, parameter), times in self._saved_recent.items()
        }
        self._recent_changed: set[tuple[str, str]] = set()
        self._partition_names: dict[tuple[str, int], str] = {}
        # Per input partition, the first offset counted into a window since the last checkpoint: what retained()
        # holds back. A window closed since needs no holding, but scanning the open ones for the exact earliest cost
        # 5 µs a reading at 10,000 series; held back at most until the next checkpoint, a crash replays no more input
        # than checkpoint_s either way (what was emitted is not emitted again: `closed`).
        self._holding: dict[str, int] = {}
        # Series whose windows may have come due: those whose watermark moved (restored windows, on the first batch).
        self._advanced: dict[tuple[str, str], None] = dict.fromkeys((slot[0], slot[1]) for slot in self._windows)
        self._saved_at = self.clock.monotonic()
        self.late_count = 0
        self.ignored_count = 0

    def retained(self) -> dict[tuple[str, int], int]:
        holding = self._holding
        return {where: holding[name] for where, name in self._partition_names.items() if name in holding}

    def _checkpoint(self, now: float) -> None:
        """Save every open window counted into since the last checkpoint; its offsets need no holding back then."""
        self._saved_at = now
        self._holding.clear()  # every window counted into since the last checkpoint is saved below
        for (asset, parameter, resolution), windows in self._windows.items():
            for window in windows:
                if window.changed:
                    window.changed, window.saved = False, True
                    self._open[(asset, parameter, resolution, window.start_ms)] = window
        for series in self._recent_changed:
            self._saved_recent[series] = self._recent[series]
        self._recent_changed.clear()

    def _duplicate(self, series: tuple[str, str], at_ms: int) -> bool:
        if repeated(self._recent, series, at_ms, DEDUP_RECENT, DEDUP_HORIZON_MS):
            return True
        self._recent_changed.add(series)
        return False

    async def process(self, batch: Sequence[Message]) -> Emitted:
        late: list[Record] = []
        resolutions = self.config.resolutions
        sizes = [(resolution, WINDOW_MS[resolution]) for resolution in resolutions]
        lateness, now = self._lateness_ms, self.clock.monotonic()
        done, watermarks, closed_until, windows_of = self._done, self._watermark, self._closed_until, self._windows
        read: dict[tuple[str, int], int] = {}  # the last offset of the batch per input partition
        for message in batch:
            record = message.record
            where = (message.topic, message.partition)
            if message.offset > read.get(where, -1):
                read[where] = message.offset
            replayed = message.offset < done.get(where, 0)
            if record["quality"] not in self._qualities or record["value"] is None:
                continue
            # Interned: every decoded reading brings its own copies of these strings, and the windows, watermark
            # and dedupe memory of a series would otherwise each keep a different reading's copy alive.
            series = (intern(record["asset_id"]), intern(record["parameter"]))
            at_ms = epoch_ms(event_time(record))
            if self._duplicate(series, at_ms):
                continue  # replayed input too: the memory is back where it was when this offset was first read
            partition = self._partition_names.get(where)
            if partition is None:  # one string per input partition, shared by every window's `applied`
                partition = self._partition_names[where] = f"{message.topic}|{message.partition}"
            watermark = watermarks.get(series, NEVER)
            for resolution, size in sizes:
                start = at_ms - at_ms % size
                slot = (series[0], series[1], resolution)
                if start < closed_until.get(slot, NEVER) or start + size + lateness <= watermark:
                    if replayed:
                        self.ignored_count += 1  # its window was emitted before the restart
                    elif resolution == resolutions[0]:
                        self.late_count += 1
                        late.append(self._late(message, resolution, start))
                    continue
                windows = windows_of.get(slot)
                if windows is None:
                    windows = windows_of[slot] = []
                for window in reversed(windows):  # the newest first: most readings count into it
                    if window[START_MS] == start:
                        break
                else:
                    window = _Window(start, record.get("unit"))
                    windows.append(window)
                if replayed and message.offset < window.applied(partition):
                    continue  # a replay of what the saved window already counted (new input is past all it counted)
                window.add(at_ms, float(record["value"]), partition, message.offset, now)
                if message.offset < self._holding.get(partition, message.offset + 1):
                    self._holding[partition] = message.offset
            if at_ms > watermark:
                watermarks[series] = at_ms
                self._advanced[series] = None  # in order: what closes is emitted in the order its series moved
        for where, offset in read.items():
            if offset + 1 > done.get(where, 0):
                done[where] = offset + 1
        # Only a series whose watermark moved can have a window come due (a window is never due when it opens):
        # due once the watermark passed its end by the allowed lateness.
        emitted: Emitted = {}
        for series in self._advanced:
            passed = watermarks.get(series, NEVER) - lateness
            for resolution, size in sizes:
                slot = (series[0], series[1], resolution)
                windows = windows_of.get(slot)
                if windows:
                    due = [window for window in windows if window[START_MS] + size <= passed]
                    if due:
                        self._emit(slot, due, emitted)
        self._advanced.clear()
        if now - self._saved_at >= self.config.checkpoint_s:
            self._checkpoint(now)
        if late:
            emitted["late"] = late
        return emitted

    async def tick(self, now: datetime) -> Emitted:
        monotonic = self.clock.monotonic()
        idle_since = monotonic - self.config.idle_close_s
        emitted: Emitted = {}
        for slot, windows in self._windows.items():
            self._emit(slot, [window for window in windows if window[TOUCHED] < idle_since], emitted)
        if monotonic - self._saved_at >= self.config.checkpoint_s:
            self._checkpoint(monotonic)
        return emitted

    def _emit(self, slot: tuple[str, str, str], due: list[_Window], emitted: Emitted) -> None:
        """Close these windows of `slot`, oldest first: their statistics go out on the resolution's port."""
        closing = {id(window) for window in due}
        self._windows[slot] = [window for window in self._windows[slot] if id(window) not in closing]
        for window in sorted(due, key=_start_of):
            start = window.start_ms
            if window.saved:
                self._open.pop((*slot, start), None)
            end = start + WINDOW_MS[slot[2]]
            if end > self._closed_until.get(slot, NEVER):
                self._closed_until[slot] = end
            emitted.setdefault(PORT_OF[slot[2]], []).append(self._aggregate(slot, window))

    def _aggregate(self, slot: tuple[str, str, str], window: _Window) -> Record:
        start = from_epoch_ms(window.start_ms)
        return {
            "asset_id": slot[0],
            "parameter": slot[1],
            "resolution": slot[2],
            "window_start": start,
            "window_end": start + timedelta(milliseconds=WINDOW_MS[slot[2]]),
            "aggregates": window.statistics(),
            "unit": window.unit,
            "metadata": {},
        }

    def _late(self, message: Message, resolution: str, start: int) -> Record:
        window = f"{resolution} window starting {from_epoch_ms(start).isoformat()}"
        why = f"arrived after its {window} closed (allowed lateness {self.config.allowed_lateness_s}s)"
        return message.dead_letter(self.context.node_id, reason("late", why, "/timestamps/device_time"))


NODE = Aggregator
