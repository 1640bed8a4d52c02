"""`aggregator` processor: tumbling windows on device_time (1s, 1min, 1h) with avg, min, max, count, first, last."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from sys import intern
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast

from pydantic import Field, field_validator

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


# A series' state is one array of doubles (counts, offsets and epoch milliseconds are exact below 2**53): its
# watermark and where each resolution's last emitted window ended, then its open windows, WIDTH numbers each. First
# a slot per configured resolution, holding its newest window (a reading in order finds its window there), then
# older ones waiting out the lateness after them. A window object each (an array with a few references beside,
# ~210 B) with a list per series to hold them was ~1,300 B a series at 5 open windows and 10,000 objects made and
# dropped a second at 10,000 series; this is ~800 B, and a window that closes is a slice deleted.
WATERMARK = 0  # a series' newest device time; after it, per resolution (RESOLUTIONS order), its last close's end
HEADER = 1 + len(RESOLUTIONS)
# A window's numbers, from its position in its series. Its resolution follows from its length (END_MS - START_MS);
# PARTITION and UNIT index the node's names of them; CHANGED: counted into since it was last saved; SAVED: in the
# changelog (its close must delete it there). APPLIED: the next input offset of PARTITION already counted (a replay
# after a restart skips what the saved window holds); a series comes from one partition (its key's), any other (an
# input repartitioned) in its series' `elsewhere`.
START_MS, END_MS, COUNT, TOTAL, COMPENSATION, LOW, HIGH, FIRST_MS, FIRST, LAST_MS, LAST, APPLIED, TOUCHED, \
    PARTITION, UNIT, CHANGED, SAVED = range(17)  # fmt: skip
WIDTH = 17
FRESH = array("d", [0, 0, 0, 0.0, 0.0, math.inf, -math.inf, 2.0**62, 0.0, -(2.0**62), 0.0, 0, 0.0, -1, 0, 0, 0])
# A resolution's slot without a window: its start and end equal no time and its touch is never idle, so it is never
# found, due or idle.
VACANT = array("d", [math.nan, math.nan, *FRESH[COUNT:TOUCHED], math.inf, *FRESH[PARTITION:]])
RESOLUTION_OF: dict[float, str] = {float(size): resolution for resolution, size in WINDOW_MS.items()}

N = TypeVar("N", str, str | None)
if TYPE_CHECKING:  # array is not subscriptable at run time (before 3.12)
    _Doubles = array[float]
else:
    _Doubles = array


class _Names(Generic[N]):
    """Names a window refers to by index (a number in its array): each name held once, its index its place here."""

    def __init__(self) -> None:
        self._names: list[N] = []
        self._index: dict[N, int] = {}

    def __getitem__(self, index: float) -> N:
        return self._names[int(index)]

    def index(self, name: N) -> int:
        """The name's index, given when first asked for."""
        index = self._index.get(name)
        if index is None:
            index = self._index[name] = len(self._names)
            self._names.append(name)
        return index


class _Series(_Doubles):
    """All a series' state, in one object: the array (WATERMARK, its windows), its dedupe memory (`recent`,
    `recent_changed` since its last save), `turn`: when it is saved (TURNS), and `elsewhere`: per window (start, end),
    the next offset counted of each partition other than its own (None while there is none)."""

    __slots__ = ("elsewhere", "recent", "recent_changed", "turn")
    elsewhere: dict[tuple[float, float], dict[int, int]] | None
    recent: array[int]
    recent_changed: bool
    turn: int

    def __new__(cls, empty_series: _Doubles, turn: int) -> _Series:
        series = cast(_Series, super().__new__(cls, "d", empty_series))
        series.recent, series.recent_changed, series.turn, series.elsewhere = empty(), False, turn, None
        return series

    def windows(self) -> range:
        """The positions of its windows (and of vacant slots, which are never found, due or idle)."""
        return range(HEADER, len(self), WIDTH)

    def find(self, slot: int, start: float, end: float, older: int) -> int:
        """The position of the open window from `start` to `end`, or -1: in its resolution's `slot` if the newest,
        else among the `older` ones."""
        if self[slot] == start:
            return slot
        for at in range(older, len(self), WIDTH):
            if self[at] == start and self[at + END_MS] == end:
                return at
        return -1

    def open(self, slot: int | None, start: float, end: float, unit: int, now: float) -> int:
        """Open a window from `start` to `end`: the position it is at. The newest of its resolution in its `slot`
        (None: a resolution not configured, restored from before), where the one it replaces moves to the older."""
        if slot is None or self[slot] > start:  # no slot, or a newer window in it (a vacant one's start is NaN)
            at = len(self)
            self.extend(FRESH)
        else:
            if not math.isnan(self[slot]):
                self.extend(self[slot : slot + WIDTH])
            at = slot
            self[at : at + WIDTH] = FRESH
        self[at + START_MS], self[at + END_MS], self[at + UNIT], self[at + TOUCHED] = start, end, unit, now
        return at

    def add(self, at: int, at_ms: int, value: float, partition: int, offset: int, now: float) -> None:
        """Count a reading into the window at `at` (O(1): a 1 h window at 100 Hz is the same few numbers)."""
        self[at + COUNT] += 1
        total = self[at + TOTAL]
        summed = total + value
        if abs(total) >= abs(value):  # Neumaier: the low-order bits the total lost, so avg matches an exact sum
            self[at + COMPENSATION] += (total - summed) + value
        else:
            self[at + COMPENSATION] += (value - summed) + total
        self[at + TOTAL] = summed
        if value < self[at + LOW]:
            self[at + LOW] = value
        if value > self[at + HIGH]:
            self[at + HIGH] = value
        if at_ms < self[at + FIRST_MS]:
            self[at + FIRST_MS], self[at + FIRST] = at_ms, value
        if at_ms > self[at + LAST_MS]:
            self[at + LAST_MS], self[at + LAST] = at_ms, value
        if partition == self[at + PARTITION]:
            self[at + APPLIED] = offset + 1
        else:
            self.apply(at, partition, offset + 1)
        self[at + CHANGED], self[at + TOUCHED] = 1, now

    def apply(self, at: int, partition: int, next_offset: int) -> None:
        """Mark `partition` counted up to `next_offset` in the window at `at`."""
        if partition == self[at + PARTITION] or self[at + PARTITION] < 0:
            self[at + PARTITION], self[at + APPLIED] = partition, next_offset
        else:
            if self.elsewhere is None:
                self.elsewhere = {}
            self.elsewhere.setdefault((self[at], self[at + END_MS]), {})[partition] = next_offset

    def applied(self, at: int, partition: int) -> int:
        """The next offset of `partition` not yet counted in the window at `at`."""
        if partition == self[at + PARTITION]:
            return int(self[at + APPLIED])
        return self.others(at).get(partition, 0)

    def others(self, at: int) -> dict[int, int]:
        """The window's offsets counted of partitions other than its own."""
        if self.elsewhere is None:
            return {}
        return self.elsewhere.get((self[at], self[at + END_MS]), {})

    def resolution(self, at: int) -> str:
        return RESOLUTION_OF[self[at + END_MS] - self[at + START_MS]]

    def drop(self, closing: list[int], older: int) -> None:
        """Let go of the windows at these positions (closed): a resolution's slot is left vacant."""
        for at in sorted(closing, reverse=True):  # an older one's deletion moves those after it
            if self.elsewhere is not None:
                self.elsewhere.pop((self[at], self[at + END_MS]), None)
            if at < older:
                self[at : at + WIDTH] = VACANT
            else:
                del self[at : at + WIDTH]
        if not self.elsewhere:
            self.elsewhere = None

    def statistics(self, at: int) -> dict[str, Any]:
        count = self[at + COUNT]
        return {"avg": (self[at + TOTAL] + self[at + COMPENSATION]) / count, "min": self[at + LOW],
                "max": self[at + HIGH], "first": self[at + FIRST], "last": self[at + LAST],
                "count": int(count)}  # fmt: skip


@dataclass
class SavedWindow:
    """A window as the changelog holds it, table `open` (the shape every version saved; the `changed`, `touched` and
    `pending` that earlier ones saved beside it are ignored)."""

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
        # Per configured resolution: its slot in a series, its index in the bounds, its size.
        self._slot_of: dict[str, int] = {
            resolution: HEADER + WIDTH * n for n, resolution in enumerate(self.config.resolutions)
        }
        self._older = HEADER + WIDTH * len(self._slot_of)  # where a series' older windows begin
        self._sizes = [(slot, 1 + INDEX_OF[resolution], resolution, WINDOW_MS[resolution])
                       for resolution, slot in self._slot_of.items()]  # fmt: skip
        self._empty_series = array("d", [NEVER] * HEADER + [*VACANT] * len(self._slot_of))
        self._series: dict[tuple[str, str], _Series] = {}  # (asset, parameter) -> all its state
        self._turns: list[list[tuple[str, str]]] = [[] for _ in range(TURNS)]  # the series saved together
        self._partitions: _Names[str] = _Names()  # input partitions, "topic|partition"
        self._partition_of: dict[tuple[str, int], int] = {}  # (topic, partition) -> its index there
        self._units: _Names[str | None] = _Names()
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
        for (asset, parameter, resolution, _), saved in self._open.take():
            self._restore(self._of(asset, parameter), str(resolution), saved)
        for (asset, parameter), recent in self._saved_recent.take():
            self._of(asset, parameter).recent = recent
        # Per turn, per input partition, the first offset counted into a window of its series since their last save:
        # what retained() holds back. A window closed since needs no holding, but scanning the open ones for the
        # exact earliest cost 5 µs a reading at 10,000 series; held back at most until the turn's next save, a crash
        # replays no more input than checkpoint_s either way (what was emitted is not emitted again: `closed`).
        self._holding: list[dict[int, int]] = [{} for _ in range(TURNS)]
        # Series whose windows may have come due: those whose watermark moved (restored windows, on the first batch).
        self._advanced: dict[tuple[str, str], _Series] = dict(self._series)
        self._next_turn, self._turn_due = 0, self.clock.monotonic() + self.config.checkpoint_s / TURNS
        self.late_count = 0
        self.ignored_count = 0

    def _of(self, asset: object, parameter: object) -> _Series:
        """The series' state, made when first needed. Its strings interned: every decoded reading brings its own
        copies, and a series would otherwise keep its first reading's alive."""
        key = (intern(str(asset)), intern(str(parameter)))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self._empty_series, len(self._series) % TURNS)
            self._turns[series.turn].append(key)
        return series

    def _restore(self, series: _Series, resolution: str, saved: SavedWindow) -> None:
        """Hold a window as its last checkpoint saved it."""
        start = float(saved.start_ms)
        at = series.open(self._slot_of.get(resolution), start, start + WINDOW_MS[resolution],
                         self._units.index(saved.unit), self.clock.monotonic())  # fmt: skip
        series[at + COUNT : at + TOUCHED] = array("d", [saved.count, saved.total, saved.compensation, saved.low,
                                                        saved.high, saved.first_ms, saved.first, saved.last_ms,
                                                        saved.last, 0])  # fmt: skip
        series[at + SAVED] = 1
        for name, next_offset in saved.applied.items():
            series.apply(at, self._partitions.index(name), next_offset)

    def _saved(self, series: _Series, at: int) -> SavedWindow:
        applied = {self._partitions[series[at + PARTITION]]: int(series[at + APPLIED])} if (
            series[at + PARTITION] >= 0) else {}  # fmt: skip
        for partition, next_offset in series.others(at).items():
            applied[self._partitions[partition]] = next_offset
        return SavedWindow(int(series[at + START_MS]), self._units[series[at + UNIT]], int(series[at + COUNT]),
                           series[at + TOTAL], series[at + COMPENSATION], series[at + LOW], series[at + HIGH],
                           int(series[at + FIRST_MS]), series[at + FIRST], int(series[at + LAST_MS]),
                           series[at + LAST], applied)  # fmt: skip

    def retained(self) -> dict[tuple[str, int], int]:
        held: dict[int, int] = {}
        for holding in self._holding:
            for partition, offset in holding.items():
                if offset < held.get(partition, offset + 1):
                    held[partition] = offset
        return {where: held[partition] for where, partition in self._partition_of.items() if partition in held}

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
            for at in series.windows():
                if series[at + CHANGED]:
                    series[at + CHANGED], series[at + SAVED] = 0, 1
                    key = (asset, parameter, series.resolution(at), int(series[at + START_MS]))
                    self._open[key] = self._saved(series, at)
            if series.recent_changed:
                series.recent_changed = False
                self._saved_recent[(asset, parameter)] = series.recent

    async def process(self, batch: Sequence[Message]) -> Emitted:
        late: list[Record] = []
        first_resolution = self.config.resolutions[0]
        sizes, lateness, older, now = self._sizes, self._lateness_ms, self._older, self.clock.monotonic()
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
            partition = self._partition_of.get(where)
            if partition is None:
                partition = self._partition_of[where] = self._partitions.index(f"{message.topic}|{message.partition}")
            watermark = series[WATERMARK]
            for slot, bound, resolution, size in sizes:
                start = at_ms - at_ms % size
                if start < series[bound] or start + size + lateness <= watermark:
                    if replayed:
                        self.ignored_count += 1  # its window was emitted before the restart
                    elif resolution == first_resolution:
                        self.late_count += 1
                        late.append(self._late(message, resolution, start))
                    continue
                at = series.find(slot, start, start + size, older)
                if at < 0:
                    at = series.open(slot, start, start + size, self._units.index(record.get("unit")), now)
                elif replayed and message.offset < series.applied(at, partition):
                    continue  # a replay of what the saved window already counted (new input is past all it counted)
                series.add(at, at_ms, float(record["value"]), partition, message.offset, now)
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
            due = [at for at in series.windows() if series[at + END_MS] <= passed]
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
            idle = [at for at in series.windows() if series[at + TOUCHED] < idle_since]
            if idle:
                self._close(key, series, idle, emitted)
        self._save_due(monotonic)
        return emitted

    def _close(self, key: tuple[str, str], series: _Series, due: list[int], emitted: Emitted) -> None:
        """Close the windows of the series at these positions, oldest first: their statistics go out on their
        resolution's port."""
        for at in sorted(due, key=series.__getitem__):
            start, end, resolution = int(series[at + START_MS]), int(series[at + END_MS]), series.resolution(at)
            if series[at + SAVED]:
                self._open.pop((*key, resolution, start), None)
            bound = 1 + INDEX_OF[resolution]
            if end > series[bound]:
                series[bound] = end
                self._closed[(*key, resolution)] = end
            emitted.setdefault(PORT_OF[resolution], []).append(self._aggregate(key, resolution, series, at))
        series.drop(due, self._older)

    def _aggregate(self, key: tuple[str, str], resolution: str, series: _Series, at: int) -> Record:
        start = from_epoch_ms(int(series[at + START_MS]))
        return {
            "asset_id": key[0],
            "parameter": key[1],
            "resolution": resolution,
            "window_start": start,
            "window_end": start + timedelta(milliseconds=WINDOW_MS[resolution]),
            "aggregates": series.statistics(at),
            "unit": self._units[series[at + UNIT]],
            "metadata": {},
        }

    def _late(self, message: Message, resolution: str, start: int) -> Record:
        window = f"{resolution} window starting {from_epoch_ms(start).isoformat()}"
        why = f"arrived after its {window} closed (allowed lateness {self.config.allowed_lateness_s}s)"
        return message.dead_letter(self.context.node_id, reason("late", why, "/timestamps/device_time"))


NODE = Aggregator
