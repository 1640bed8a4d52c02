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

from streamforge.engine.recent_times import RecentTimes, empty, remembered
from streamforge.engine.records import epoch_ms, event_time, from_epoch_ms, reason
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record

Resolution = Literal["1s", "1min", "1h"]
WINDOW_MS: dict[str, int] = {"1s": 1_000, "1min": 60_000, "1h": 3_600_000}
RESOLUTIONS = tuple(WINDOW_MS)
INDEX_OF: dict[str, int] = {resolution: index for index, resolution in enumerate(RESOLUTIONS)}
PORT_OF: dict[str, str] = {"1s": "agg_1s", "1min": "agg_1min", "1h": "agg_1h"}
DEDUP_RECENT = 16  # device times per series remembered to count a redelivered reading once
# ... and every device time this close to its series' newest, however many: a validator restarted after a crash
# sends its unacknowledged batches again, as new records (up to ~3 x 2,000 readings), and a series with more than
# DEDUP_RECENT readings among them had each counted twice in its open windows.
DEDUP_HORIZON_MS = 10_000
# Series are saved in turns: each turn's every checkpoint_s / TURNS, so each series every checkpoint_s. All at once, a
# checkpoint of 10,000 series was 50,000 windows (15 MB of JSON, then as much again in the producer's batches) and
# held the node's next batch for as long as it took to encode them.
TURNS = 32  # ~300 series a save at 10,000 (~0.5 MB of JSON), a turn every 0.3 s at checkpoint_s 10
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
    _Ints = array[int]
else:
    _Doubles = _Ints = array


class _Window(_Doubles):
    """Running statistics of one window, O(1) in the readings it saw (a 1 h window at 100 Hz is a few numbers).

    What it applied: the next input offset per partition already counted in these statistics, so a replay after a
    restart skips what the saved window holds. A series comes from one partition (its key's), kept in the array;
    any other (an input repartitioned) in `elsewhere`. `changed`: counted into since it was last saved; `saved`:
    in the changelog (its close must delete it there)."""

    __slots__ = ("changed", "elsewhere", "partition", "resolution", "saved", "unit")
    changed: bool
    elsewhere: dict[str, int] | None
    partition: str | None
    resolution: str
    saved: bool
    unit: str | None

    def __new__(cls, start_ms: int, unit: str | None, resolution: str = "1s") -> _Window:
        window = cast(_Window, super().__new__(cls, "d", EMPTY))
        window[START_MS] = start_ms
        window.unit, window.resolution, window.partition, window.elsewhere = unit, resolution, None, None
        window.changed = window.saved = False
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


WATERMARK = 0  # a series' newest device time; after it, per resolution (RESOLUTIONS order), its last close's end
BOUNDS = array("q", [NEVER] * (1 + len(RESOLUTIONS)))


class _Series(_Ints):
    """All a series' state, in one object (~230 B): a dict entry per table and resolution, each with a key of its own,
    cost ~600 B a series more (the node alone at 10,000 series x 3 resolutions, journals cleared too: 27 -> 19 MB).
    The array: its watermark, then where each resolution's last emitted window ended. `windows`: the open ones, the
    newest of each resolution at that resolution's index (a reading in order finds its window there), older ones
    waiting out the lateness after them. `recent`: its dedupe memory, `recent_changed` since its last save. `turn`: when
    it is saved (TURNS)."""

    __slots__ = ("recent", "recent_changed", "turn", "windows")
    recent: array[int]
    recent_changed: bool
    turn: int
    windows: list[_Window | None]

    def __new__(cls, turn: int) -> _Series:
        series = cast(_Series, super().__new__(cls, "q", BOUNDS))
        series.recent, series.recent_changed, series.windows = empty(), False, [None] * len(RESOLUTIONS)
        series.turn = turn
        return series

    def find(self, index: int, start: int) -> _Window | None:
        """The open window of resolution RESOLUTIONS[index] that starts at `start`, if any."""
        windows = self.windows
        window = windows[index]
        if window is not None and window[START_MS] == start:
            return window
        resolution = RESOLUTIONS[index]
        for window in windows[len(RESOLUTIONS) :]:
            if window is not None and window[START_MS] == start and window.resolution == resolution:
                return window
        return None

    def place(self, window: _Window) -> None:
        """Hold an open window: the newest of its resolution at its index."""
        windows, index = self.windows, INDEX_OF[window.resolution]
        newest = windows[index]
        if newest is None:
            windows[index] = window
        elif window[START_MS] > newest[START_MS]:
            windows[index] = window
            windows.append(newest)
        else:
            windows.append(window)

    def drop(self, closing: list[_Window]) -> None:
        """Let go of these windows (closed)."""
        windows, kept = self.windows, len(RESOLUTIONS)
        for index in range(kept):
            if windows[index] is not None and any(windows[index] is window for window in closing):
                windows[index] = None
        windows[kept:] = [window for window in windows[kept:] if not any(window is gone for gone in closing)]


# The `open` table's value: held compact, saved and restored as _SavedWindow.
SavedWindow = Annotated[_Window, PlainValidator(_restored), PlainSerializer(_saved, return_type=dict[str, Any])]


class Aggregator(ProcessorNode[AggregatorConfig]):
    """Emits each window once it closes (event time past its end + lateness, or idle).

    Memory is bounded: a window keeps running statistics, not its readings. A reading delivered twice (the same
    device time among the last DEDUP_RECENT of its series to arrive, or within DEDUP_HORIZON_MS of its newest)
    counts once, also across a restart: that memory is saved with the windows and replayed input refills it as it
    was. Older duplicates are the validator's to refuse.

    Crash-safe: every `checkpoint_s` a series' open windows that changed are saved to the changelog (table `open`)
    with the offsets they counted, a 32nd of the series at a time (TURNS); input offsets counted since are retained
    (never committed past). Which windows were already emitted lives in the changelog too (tables `closed`,
    `watermark`, `done`), so a replay re-emits nothing partial and counts nothing twice. Output keys are
    asset|parameter|window_start, so an idempotent sink turns any re-emission into a no-op. Idle windows close on the
    node's clock.
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
        self._sizes = [
            (INDEX_OF[resolution], resolution, WINDOW_MS[resolution]) for resolution in self.config.resolutions
        ]
        self._series: dict[tuple[str, str], _Series] = {}  # (asset, parameter) -> all its state
        self._turns: list[list[tuple[str, str]]] = [[] for _ in range(TURNS)]  # the series saved together
        state = self.context.state
        self._done = state.table("done", int)  # next unprocessed offset per input partition
        # Journals: what a series holds is in its _Series; a table holds a value only from a change to the save after.
        self._watermark = state.table("watermark", int, kept=False)  # latest device time per series
        self._closed = state.table("closed", int, kept=False)  # end of the last emitted window per series, resolution
        # (asset, parameter, resolution, start) -> the window, as saved at a checkpoint.
        self._open = state.table("open", SavedWindow, kept=False)
        self._saved_recent = state.table("recent", RecentTimes, kept=False)  # per series, at a checkpoint
        for (asset, parameter), at_ms in self._watermark.take():
            self._of(asset, parameter)[WATERMARK] = at_ms
        for (asset, parameter, resolution), end in self._closed.take():
            self._of(asset, parameter)[1 + INDEX_OF[str(resolution)]] = end
        for (asset, parameter, resolution, _), window in self._open.take():
            window[TOUCHED] = self.clock.monotonic()
            window.resolution = RESOLUTIONS[INDEX_OF[str(resolution)]]
            self._of(asset, parameter).place(window)
        for (asset, parameter), recent in self._saved_recent.take():
            self._of(asset, parameter).recent = recent
        self._partition_names: dict[tuple[str, int], str] = {}
        # Per turn, per input partition, the first offset counted into a window of its series since their last save:
        # what retained() holds back. A window closed since needs no holding, but scanning the open ones for the
        # exact earliest cost 5 µs a reading at 10,000 series; held back at most until the turn's next save, a crash
        # replays no more input than checkpoint_s either way (what was emitted is not emitted again: `closed`).
        self._holding: list[dict[str, int]] = [{} for _ in range(TURNS)]
        # Series whose windows may have come due: those whose watermark moved (restored windows, on the first batch).
        self._advanced: dict[tuple[str, str], _Series] = {
            key: series for key, series in self._series.items() if any(series.windows)
        }
        self._next_turn, self._turn_due = 0, self.clock.monotonic() + self.config.checkpoint_s / TURNS
        self.late_count = 0
        self.ignored_count = 0

    def _of(self, asset: object, parameter: object) -> _Series:
        """The series' state, made when first needed. Its strings interned: every decoded reading brings its own
        copies, and a series would otherwise keep its first reading's alive."""
        key = (intern(str(asset)), intern(str(parameter)))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(len(self._series) % TURNS)
            self._turns[series.turn].append(key)
        return series

    def retained(self) -> dict[tuple[str, int], int]:
        held: dict[str, int] = {}
        for holding in self._holding:
            for name, offset in holding.items():
                if offset < held.get(name, offset + 1):
                    held[name] = offset
        return {where: held[name] for where, name in self._partition_names.items() if name in held}

    def _save_due(self, now: float) -> None:
        """Save the turns whose time has come: every one, once the node fell a whole round behind (a long batch, a
        clock that jumped)."""
        period = self.config.checkpoint_s / TURNS
        for _ in range(TURNS):
            if now < self._turn_due:
                return
            self._save(self._next_turn)
            self._next_turn, self._turn_due = (self._next_turn + 1) % TURNS, self._turn_due + period
        self._turn_due = max(self._turn_due, now + period)

    def _save(self, turn: int) -> None:
        """Save the turn's open windows counted into since its last save, and its dedupe memories that changed; their
        offsets need no holding back then."""
        self._holding[turn].clear()
        series_of = self._series
        for asset, parameter in self._turns[turn]:
            series = series_of[asset, parameter]
            for window in series.windows:
                if window is not None and window.changed:
                    window.changed, window.saved = False, True
                    self._open[(asset, parameter, window.resolution, window.start_ms)] = window
            if series.recent_changed:
                series.recent_changed = False
                self._saved_recent[(asset, parameter)] = series.recent

    async def process(self, batch: Sequence[Message]) -> Emitted:
        late: list[Record] = []
        first_resolution = self.config.resolutions[0]
        sizes, lateness, now = self._sizes, self._lateness_ms, self.clock.monotonic()
        done, series_of, advanced = self._done, self._series, self._advanced
        read: dict[tuple[str, int], int] = {}  # the last offset of the batch per input partition
        for message in batch:
            record = message.record
            where = (message.topic, message.partition)
            if message.offset > read.get(where, -1):
                read[where] = message.offset
            replayed = message.offset < done.get(where, 0)
            if record["quality"] not in self._qualities or record["value"] is None:
                continue
            key = (record["asset_id"], record["parameter"])  # strings the Avro reader interned
            series = series_of.get(key) or self._of(*key)
            at_ms = epoch_ms(event_time(record))
            if remembered(series.recent, at_ms, DEDUP_RECENT, DEDUP_HORIZON_MS):
                continue  # replayed input too: the memory is back where it was when this offset was first read
            series.recent_changed = True
            holding = self._holding[series.turn]
            partition = self._partition_names.get(where)
            if partition is None:  # one string per input partition, shared by every window's `applied`
                partition = self._partition_names[where] = f"{message.topic}|{message.partition}"
            watermark = series[WATERMARK]
            for index, resolution, size in sizes:
                start = at_ms - at_ms % size
                if start < series[1 + index] or start + size + lateness <= watermark:
                    if replayed:
                        self.ignored_count += 1  # its window was emitted before the restart
                    elif resolution == first_resolution:
                        self.late_count += 1
                        late.append(self._late(message, resolution, start))
                    continue
                window = series.find(index, start)
                if window is None:
                    window = _Window(start, record.get("unit"), resolution)
                    series.place(window)
                if replayed and message.offset < window.applied(partition):
                    continue  # a replay of what the saved window already counted (new input is past all it counted)
                window.add(at_ms, float(record["value"]), partition, message.offset, now)
                if message.offset < holding.get(partition, message.offset + 1):
                    holding[partition] = message.offset
            if at_ms > watermark:
                series[WATERMARK] = at_ms
                self._watermark[key] = at_ms
                advanced[key] = series  # in order: what closes is emitted in the order its series moved
        for where, offset in read.items():
            if offset + 1 > done.get(where, 0):
                done[where] = offset + 1
        # Only a series whose watermark moved can have a window come due (a window is never due when it opens):
        # due once the watermark passed its end by the allowed lateness.
        emitted: Emitted = {}
        for key, series in advanced.items():
            passed = series[WATERMARK] - lateness
            due = [window for window in series.windows
                   if window is not None and window[START_MS] + WINDOW_MS[window.resolution] <= passed]  # fmt: skip
            if due:
                self._close(key, series, due, emitted)
        advanced.clear()
        self._save_due(now)
        if late:
            emitted["late"] = late
        return emitted

    async def tick(self, now: datetime) -> Emitted:
        monotonic = self.clock.monotonic()
        idle_since = monotonic - self.config.idle_close_s
        emitted: Emitted = {}
        for key, series in self._series.items():
            idle = [window for window in series.windows if window is not None and window[TOUCHED] < idle_since]
            if idle:
                self._close(key, series, idle, emitted)
        self._save_due(monotonic)
        return emitted

    def _close(self, key: tuple[str, str], series: _Series, due: list[_Window], emitted: Emitted) -> None:
        """Close these windows of the series, oldest first: their statistics go out on their resolution's port."""
        series.drop(due)
        for window in sorted(due, key=_start_of):
            start, resolution = window.start_ms, window.resolution
            if window.saved:
                self._open.pop((*key, resolution, start), None)
            end, bound = start + WINDOW_MS[resolution], 1 + INDEX_OF[resolution]
            if end > series[bound]:
                series[bound] = end
                self._closed[(*key, resolution)] = end
            emitted.setdefault(PORT_OF[resolution], []).append(self._aggregate(key, resolution, window))

    def _aggregate(self, key: tuple[str, str], resolution: str, window: _Window) -> Record:
        start = from_epoch_ms(window.start_ms)
        return {
            "asset_id": key[0],
            "parameter": key[1],
            "resolution": resolution,
            "window_start": start,
            "window_end": start + timedelta(milliseconds=WINDOW_MS[resolution]),
            "aggregates": window.statistics(),
            "unit": window.unit,
            "metadata": {},
        }

    def _late(self, message: Message, resolution: str, start: int) -> Record:
        window = f"{resolution} window starting {from_epoch_ms(start).isoformat()}"
        why = f"arrived after its {window} closed (allowed lateness {self.config.allowed_lateness_s}s)"
        return message.dead_letter(self.context.node_id, reason("late", why, "/timestamps/device_time"))


NODE = Aggregator
