"""`rate_limit` processor: at most one reading per series per interval of device time: its first, last or mean."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from streamforge.sdk import (
    Emitted,
    Message,
    NodeConfig,
    Port,
    PortType,
    ProcessorNode,
    Record,
    earliest_offsets,
    epoch_ms,
    event_time,
)


class RateLimitConfig(NodeConfig):
    interval_s: float = Field(gt=0, le=86_400, description="At most one reading per series in each interval of this "
                              "length (aligned to device time: 60 s intervals start on the minute)")  # fmt: skip
    keep: Literal["first", "last", "mean"] = Field(
        "first",
        description="first: sent at once, the rest of its interval dropped; last or mean: sent when the "
        "interval is over",
    )
    idle_close_s: float = Field(5.0, gt=0, le=3600, description="last/mean: an interval no reading came for in this "
                                "long (gateway clock) is sent without waiting for the next one")  # fmt: skip


@dataclass
class _Held:
    """An interval not over yet (last/mean): its readings so far, and where its first one is in Kafka."""

    interval: int
    first: Message
    last: Record
    total: float = 0.0
    counted: int = 0
    touched: float = 0.0


class RateLimit(ProcessorNode[RateLimitConfig]):
    """One reading per series (asset, parameter) per interval. `first` passes the first reading of each interval and
    drops the rest; `last` and `mean` hold an interval until a reading of a later one arrives (or none came for
    `idle_close_s`), then send its last reading, or its last with the mean of its values (metadata `sf-mean-of`).

    A reading of an interval already sent (late, or replayed after a crash) is dropped: the last interval sent per
    series is state (table `sent`). Held intervals are not state: their readings are retained (never committed past),
    so a crash replays them."""

    type = "rate_limit"
    category = "processing"
    icon = "gauge"
    description = "At most one reading per series per interval: the first, the last or the mean"
    inputs = (Port("in", PortType.TELEMETRY, description="Readings"),)
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.clean", description="One reading per series per interval"),)

    async def start(self) -> None:
        self._sent = self.context.state.table("sent", int)  # (asset, parameter) -> the last interval sent
        self._held: dict[tuple[str, str], _Held] = {}
        self._interval_ms = round(self.config.interval_s * 1000)

    async def process(self, batch: Sequence[Message]) -> Emitted:
        out: list[Record] = []
        keep, sent, held, now = self.config.keep, self._sent, self._held, self.clock.monotonic()
        for message in batch:
            record = message.record
            key = (record["asset_id"], record["parameter"])
            interval = epoch_ms(event_time(record)) // self._interval_ms
            if interval <= sent.get(key, -1):
                continue  # its interval was sent
            if keep == "first":
                sent[key] = interval
                out.append(record)
                continue
            window = held.get(key)
            if window is not None and interval > window.interval:
                out.append(self._close(key, window))
                window = None
            if window is None:
                window = held[key] = _Held(interval, message, record)
            elif interval < window.interval:
                continue  # older than the one held: that interval is over for this series
            window.last, window.touched = record, now
            if record["value"] is not None:
                window.total += record["value"]
                window.counted += 1
        return {"out": out} if out else {}

    async def tick(self, now: datetime) -> Emitted:
        idle_since = self.clock.monotonic() - self.config.idle_close_s
        due = [key for key, window in self._held.items() if window.touched < idle_since]
        return {"out": [self._close(key, self._held[key]) for key in due]} if due else {}

    def _close(self, key: tuple[str, str], window: _Held) -> Record:
        del self._held[key]
        self._sent[key] = window.interval
        if self.config.keep == "last" or window.counted == 0:
            return window.last
        mean = window.total / window.counted
        return {
            **window.last,
            "value": mean,
            "metadata": {**window.last["metadata"], "sf-mean-of": str(window.counted)},
        }

    def retained(self) -> dict[tuple[str, int], int]:
        return earliest_offsets(((w.first.topic, w.first.partition), w.first.offset) for w in self._held.values())


NODE = RateLimit
