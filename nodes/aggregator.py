"""`aggregator` processor: tumbling windows on device_time (1s, 1min, 1h) with avg, min, max, count, first, last."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator

from streamforge.engine.records import epoch_ms, event_time, from_epoch_ms, reason
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record, earliest_offsets

Resolution = Literal["1s", "1min", "1h"]
WINDOW_MS: dict[str, int] = {"1s": 1_000, "1min": 60_000, "1h": 3_600_000}
PORT_OF: dict[str, str] = {"1s": "agg_1s", "1min": "agg_1min", "1h": "agg_1h"}


class AggregatorConfig(NodeConfig):
    resolutions: list[Resolution] = Field(default=["1s", "1min"], min_length=1)
    allowed_lateness_s: float = Field(2.0, ge=0, description="How long after its end a window waits for stragglers")
    idle_close_s: float = Field(10.0, gt=0, description="Close a window that got no reading for this long")
    qualities: list[Literal["GOOD", "SUSPECT", "UNCERTAIN"]] = Field(
        default=["GOOD", "SUSPECT", "UNCERTAIN"], description="Readings of these qualities count"
    )

    @field_validator("resolutions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each resolution may be listed once")
        return value


@dataclass
class _Window:
    """Readings of one window keyed by device time: a replayed or duplicated reading counts once."""

    start_ms: int
    unit: str | None
    values: dict[int, float] = field(default_factory=dict)
    oldest: dict[tuple[str, int], int] = field(default_factory=dict)  # earliest input offset per partition
    touched: float = 0.0

    def add(self, at_ms: int, value: float, message: Message, now: float) -> None:
        self.values[at_ms] = value
        where = (message.topic, message.partition)
        if where not in self.oldest or message.offset < self.oldest[where]:
            self.oldest[where] = message.offset
        self.touched = now

    def statistics(self) -> dict[str, Any]:
        values = self.values.values()
        return {
            "avg": math.fsum(values) / len(self.values),
            "min": min(values),
            "max": max(values),
            "first": self.values[min(self.values)],
            "last": self.values[max(self.values)],
            "count": len(self.values),
        }


class Aggregator(ProcessorNode[AggregatorConfig]):
    """Emits each window once it closes (event time past its end + lateness, or idle).

    Crash-safe: input offsets of open windows are retained (never committed past), and which windows
    were already emitted lives in the changelog (tables `closed`, `watermark`, `done`), so a replay re-emits
    nothing partial. Output keys are asset|parameter|window_start, so an idempotent sink turns any re-emission
    into a no-op. Idle windows close on the node's clock.
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
        self._windows: dict[tuple[str, str, str], dict[int, _Window]] = {}
        state = self.context.state
        self._watermark = state.table("watermark", int)  # latest device time per series
        self._closed_until = state.table("closed", int)  # end of the last emitted window per series and resolution
        self._done = state.table("done", int)  # next unprocessed offset per input partition
        self.late_count = 0
        self.ignored_count = 0

    def retained(self) -> dict[tuple[str, int], int]:
        return earliest_offsets(held for windows in self._windows.values() for window in windows.values()
                                for held in window.oldest.items())  # fmt: skip

    async def process(self, batch: Sequence[Message]) -> Emitted:
        late: list[Record] = []
        resolutions = self.config.resolutions
        now = self.clock.monotonic()
        for message in batch:
            record = message.record
            where = (message.topic, message.partition)
            replayed = message.offset < self._done.get(where, 0)
            if record["quality"] not in self._qualities or record["value"] is None:
                continue
            series = (record["asset_id"], record["parameter"])
            at_ms = epoch_ms(event_time(record))
            watermark = self._watermark.get(series, -(2**62))
            for resolution in resolutions:
                size = WINDOW_MS[resolution]
                start = at_ms - at_ms % size
                slot = (series[0], series[1], resolution)
                if start < self._closed_until.get(slot, -(2**62)) or start + size + self._lateness_ms <= watermark:
                    if replayed:
                        self.ignored_count += 1  # its window was emitted before the restart
                    elif resolution == resolutions[0]:
                        self.late_count += 1
                        late.append(self._late(message, resolution, start))
                    continue
                windows = self._windows.setdefault(slot, {})
                window = windows.get(start)
                if window is None:
                    window = windows[start] = _Window(start, record.get("unit"))
                window.add(at_ms, float(record["value"]), message, now)
            if at_ms > watermark:
                self._watermark[series] = at_ms
        for message in batch:
            where = (message.topic, message.partition)
            if message.offset + 1 > self._done.get(where, 0):
                self._done[where] = message.offset + 1
        emitted = self._close(lambda slot, window: window.start_ms + WINDOW_MS[slot[2]] + self._lateness_ms
                              <= self._watermark.get((slot[0], slot[1]), -(2**62)))  # fmt: skip
        if late:
            emitted["late"] = late
        return emitted

    async def tick(self, now: datetime) -> Emitted:
        idle_before = self.clock.monotonic() - self.config.idle_close_s
        return self._close(lambda slot, window: window.touched < idle_before)

    def _close(self, due: Any) -> Emitted:
        emitted: Emitted = {}
        for slot, windows in self._windows.items():
            for start in sorted(windows):
                window = windows[start]
                if not due(slot, window):
                    continue
                del windows[start]
                end = start + WINDOW_MS[slot[2]]
                if end > self._closed_until.get(slot, -(2**62)):
                    self._closed_until[slot] = end
                emitted.setdefault(PORT_OF[slot[2]], []).append(self._aggregate(slot, window))
        return emitted

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
