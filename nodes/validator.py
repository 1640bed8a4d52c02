"""`validator` processor: range, rate-of-change, duplicate and gap checks; BAD readings go to the DLQ."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from sys import intern
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.recent_times import empty, remembered
from streamforge.engine.records import MAX_CLOCK_SKEW_MS, clock_skew_event, epoch_ms, from_epoch_ms, reason
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record


class SeriesRule(BaseModel):
    """Limits for the series whose asset and parameter match these patterns (`*` and `?` wildcards)."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = "*"
    parameter: str = "*"
    min: float | None = None
    max: float | None = None
    max_rate_per_s: float | None = Field(None, gt=0, description="Largest plausible change per second")
    expected_interval_s: float | None = Field(None, gt=0, description="Readings should come this often")

    @model_validator(mode="after")
    def _ordered(self) -> SeriesRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ValidatorConfig(NodeConfig):
    rules: list[SeriesRule] = Field(default_factory=list, description="First matching rule applies")
    rate_of_change_quality: Literal["BAD", "SUSPECT"] = Field(
        "BAD", description="BAD sends a spike to the DLQ; SUSPECT forwards it flagged"
    )
    gap_factor: float = Field(2.0, gt=1, description="A gap is an interval longer than expected_interval_s x this")
    duplicate_memory_per_series: int = Field(
        64, ge=1, le=100_000, description="Device times per series (the last to arrive) a repeat is refused against"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "duplicate_memory" in data:
            default = cls.model_fields["duplicate_memory_per_series"].default
            raise ValueError("duplicate_memory (readings of all series together) was replaced by "
                             f"duplicate_memory_per_series (device times remembered per series, default {default}): "
                             "rename the field and give it a per-series count")  # fmt: skip
        return data

    def rule_for(self, asset_id: str, parameter: str) -> SeriesRule:
        """The first rule whose patterns match the series, or none (no limits)."""
        matching = (r for r in self.rules if fnmatchcase(asset_id, r.asset_id) and fnmatchcase(parameter, r.parameter))
        return next(matching, _NO_RULE)


_NO_RULE = SeriesRule(asset_id="", parameter="")
JUDGED_ALONE = frozenset({"missing_value", "not_finite", "out_of_range"})  # need no other reading to decide


def judge_alone(rule: SeriesRule, record: Record) -> list[dict[str, Any]]:
    """The checks that need no other reading: a value, finite, within the rule's range. Re-validating the DLQ with
    the current rules runs exactly these (duplicates and spikes depend on their neighbours)."""
    value = record["value"]
    if value is None:
        return [reason("missing_value", "reading has no value", "/value")]
    if not math.isfinite(value):
        return [reason("not_finite", f"value is {value}", "/value")]
    reasons = []
    if rule.min is not None and value < rule.min:
        reasons.append(reason("out_of_range", f"{value} < min {rule.min}", "/value"))
    if rule.max is not None and value > rule.max:
        reasons.append(reason("out_of_range", f"{value} > max {rule.max}", "/value"))
    return reasons


class Validator(ProcessorNode[ValidatorConfig]):
    """GOOD, SUSPECT and UNCERTAIN readings go to `clean` with their quality; BAD ones to `dlq` with reasons.

    State: the last accepted reading per series (table `last`), so after a restart the rate check of the first
    replayed reading compares against the same baseline as before."""

    type = "validator"
    category = "processing"
    icon = "shield-check"
    description = "Quality checks: range, rate of change, duplicates, gaps; BAD readings to the dead-letter queue"
    inputs = (Port("in", PortType.TELEMETRY, description="Raw readings"),)
    outputs = (
        Port("clean", PortType.TELEMETRY, "telemetry.clean", description="GOOD, SUSPECT and UNCERTAIN readings"),
        Port("dlq", PortType.DLQ, "dlq.telemetry", description="BAD readings with machine-readable reasons"),
        Port("events", PortType.EVENT, "events.clean", description="Gap and clock-skew events"),
    )

    async def start(self) -> None:
        self._series: dict[tuple[str, str], _Series] = {}  # (asset, parameter) -> all its state
        # A journal: a series' last accepted reading lives in its _Series; the table holds it from a change to its save.
        self._last = self.context.state.table("last", tuple[datetime, float], kept=False)
        for (asset, parameter), (device_time, value) in self._last.take():
            series = self._of(str(asset), str(parameter))
            series.last_ms, series.last_value = epoch_ms(device_time), value
        self._skewed: set[tuple[str, str]] = set()  # series whose device clock is off by more than 10 s

    def _of(self, asset_id: str, parameter: str) -> _Series:
        """The series' state, made when first needed. Its strings interned: the series would otherwise keep its first
        reading's copies alive, and the aggregator keeps the same ones."""
        key = (intern(asset_id), intern(parameter))
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.config.rule_for(*key))
        return series

    async def process(self, batch: Sequence[Message]) -> Emitted:
        clean: list[Record] = []
        dead: list[Record] = []
        events: list[Record] = []
        skewed = self._skewed
        series_of = self._series
        for message in batch:
            record = message.record
            key = (record["asset_id"], record["parameter"])
            series = series_of.get(key) or self._of(*key)
            reasons, quality, event = self._check(key, series, record)
            if reasons and quality == "BAD":
                dead.append(message.dead_letter(self.context.node_id, *reasons))
                continue
            if quality != record["quality"]:
                codes = ",".join(found["code"] for found in reasons)
                record = dict(record, quality=quality, metadata={**record["metadata"], "sf-reasons": codes})
            clean.append(record)
            if event is not None:
                events.append(event)
            # Spec: skew over 10 s raises an event — once when a series' clock drifts out, not per reading.
            skew = record["clock_skew_ms"]
            if skew is not None and abs(skew) > MAX_CLOCK_SKEW_MS:
                if key not in skewed:
                    skewed.add(key)
                    events.append(clock_skew_event(record))
            elif skewed:
                skewed.discard(key)
        return {"clean": clean, "dlq": dead, "events": events}

    def _check(
        self, key: tuple[str, str], series: _Series, record: Record
    ) -> tuple[list[dict[str, Any]], str, Record | None]:
        quality: str = record["quality"]
        if quality == "BAD":
            return [reason("source_bad", "the source marked this reading BAD")], "BAD", None
        rule = series.rule
        reasons = judge_alone(rule, record)
        if reasons:
            if reasons[0]["code"] != "out_of_range":
                return reasons, "BAD", None  # no usable value: nothing more to check
            quality = "BAD"  # out of range: BAD whatever else is found
        device_time = record["timestamps"]["device_time"]
        if device_time is None:
            return reasons, quality, None
        at_ms = epoch_ms(device_time)
        if remembered(series.recent, at_ms, self.config.duplicate_memory_per_series):
            seen = f"{key[0]}/{key[1]} at {device_time.isoformat()} was already seen"
            reasons.append(reason("duplicate", f"a reading of {seen}", "/timestamps/device_time"))
            return reasons, "BAD", None
        value = record["value"]
        event = None
        last_ms = series.last_ms
        newer = last_ms is None or at_ms > last_ms
        if last_ms is not None and newer:
            seconds = (at_ms - last_ms) / 1000
            rate = abs(value - series.last_value) / seconds
            if rule.max_rate_per_s is not None and rate > rule.max_rate_per_s:
                limit = f"changed {rate:.3g}/s > max {rule.max_rate_per_s}/s"
                reasons.append(reason("rate_of_change", limit, "/value"))
                if quality != "BAD":
                    quality = self.config.rate_of_change_quality
            if rule.expected_interval_s is not None and seconds > rule.expected_interval_s * self.config.gap_factor:
                event = _gap_event(record, from_epoch_ms(last_ms), seconds)
        if quality != "BAD" and newer:
            series.last_ms, series.last_value = at_ms, value
            self._last[key] = (device_time, value)
        return reasons, quality, event


class _Series:
    """A series' state: the rule it matches, its last accepted reading (device time in epoch milliseconds, as Avro
    keeps it, and value: a (datetime, float) tuple was ~80 B more a series) and the device times of its last readings
    to arrive, in a 32-bit integer array (~330 B at 64, and no object outlives its reading; a memory of
    all series together, a set of 200,000 hashes beside a ring, held 17 MB at 10,000 series). As much memory as a
    dict per kind of state, which shared one key; one object, like the aggregator's, whose interned names it shares."""

    __slots__ = ("last_ms", "last_value", "recent", "rule")

    def __init__(self, rule: SeriesRule) -> None:
        self.rule, self.recent = rule, empty()
        self.last_ms: int | None = None
        self.last_value = 0.0


def _gap_event(record: Record, previous: datetime, seconds: float) -> Record:
    return {
        "asset_id": record["asset_id"],
        "event_type": "gap",
        "parameter": record["parameter"],
        "value": seconds,
        "message": f"no reading for {seconds:.3g}s since {previous.isoformat()}",
        "quality": "GOOD",
        "classification": "EVENT",
        "timestamps": dict(record["timestamps"]),
        "clock_skew_ms": record.get("clock_skew_ms"),
        "metadata": {},
    }


NODE = Validator
