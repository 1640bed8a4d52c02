"""`alarm_rule` processor: thresholds with deadband and on-delay, and the ISA-18.2 alarm lifecycle."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.records import epoch_ms, event_time, from_epoch_ms
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record

EIGHT_HOURS_S = 8 * 3600.0


class AlarmRuleConfig(NodeConfig):
    rule_id: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$", description="Names the rule in every alarm it raises")
    asset_id: str = Field("*", description="Assets this rule watches (* and ? wildcards)")
    parameter: str = Field("*", description="Parameters this rule watches (* and ? wildcards)")
    high: float | None = Field(None, description="Alarm when the value rises above this")
    low: float | None = Field(None, description="Alarm when the value falls below this")
    deadband: float = Field(0.0, ge=0, description="Clear only once the value is this far back inside the limit")
    on_delay_s: float = Field(0.0, ge=0, description="The condition must hold this long (device time) to alarm")
    severity: Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"] = "HIGH"
    max_shelve_s: float = Field(EIGHT_HOURS_S, gt=0, description="The longest an operator may shelve an alarm")

    @model_validator(mode="after")
    def _a_limit(self) -> AlarmRuleConfig:
        if self.high is None and self.low is None:
            raise ValueError("set `high`, `low` or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


class AlarmAction(BaseModel):
    """Which alarm, which of its events the operator saw, and who acts (recorded in the transition)."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field(min_length=1, description="The alarm's asset")
    parameter: str = Field(min_length=1, description="The alarm's parameter")
    user: str = Field(min_length=1, description="Who takes the action: every alarm action names them")
    # Required: nobody acts on an alarm they have not seen as it is now.
    event_id: str = Field(min_length=1, description="The event acted on (GET /api/v1/alarms); stale is refused")
    comment: str | None = Field(None, max_length=500, description="Why, kept in the alarm's history")


class Acknowledge(AlarmAction):
    """An ACK of an older event than the latest is refused: the operator has not seen what it is now."""


class Shelve(AlarmAction):
    duration_s: float | None = Field(None, gt=0, description="Timed shelving: back after this long (gateway clock)")
    one_shot: bool = Field(False, description="Back as soon as the condition clears, instead of after a time")

    @model_validator(mode="after")
    def _one_kind(self) -> Shelve:
        if (self.duration_s is None) == (not self.one_shot):
            raise ValueError("give `duration_s` (timed shelving) or `one_shot: true`, not both or neither")
        return self


@dataclass
class _Alarm:
    """One alarm's whole state. `state` is what operators see; the condition is evaluated in every state."""

    state: str = "CLEARED"
    pending_since_ms: int | None = None  # condition true since (device time), waiting for the on-delay
    value: float | None = None
    threshold: float | None = None
    active: bool | None = None  # the condition; None only in state saved before it was kept apart
    acknowledged: bool = True  # nothing waits for an operator
    seq: int = 0  # transitions so far; the event id is alarm_id#incarnation.seq
    shelved_until_ms: int | None = None  # timed shelving, gateway clock
    one_shot: bool = False
    suppressed: bool = False
    out_of_service: bool = False

    def __post_init__(self) -> None:
        if self.active is None:
            self.active = self.state in ("ACTIVE", "ACKNOWLEDGED")
            self.acknowledged = self.state != "ACTIVE"

    @property
    def hidden(self) -> bool:
        return self.out_of_service or self.suppressed or self.one_shot or self.shelved_until_ms is not None

    def shown(self) -> str:
        if self.out_of_service:
            return "OUT_OF_SERVICE"
        if self.suppressed:
            return "SUPPRESSED"
        if self.one_shot or self.shelved_until_ms is not None:
            return "SHELVED"
        if self.active:
            return "ACKNOWLEDGED" if self.acknowledged else "ACTIVE"
        return "CLEARED" if self.acknowledged else "RTN_UNACK"


# Each command: the states it may act in, and what it does to the alarm.
_ALLOWED: dict[str, tuple[str, ...]] = {
    "acknowledge": ("ACTIVE", "RTN_UNACK"),
    "shelve": ("ACTIVE", "ACKNOWLEDGED", "RTN_UNACK", "CLEARED"),
    "unshelve": ("SHELVED",),
    "suppress": ("ACTIVE", "ACKNOWLEDGED", "RTN_UNACK", "CLEARED", "SHELVED"),
    "unsuppress": ("SUPPRESSED",),
    "remove_from_service": ("ACTIVE", "ACKNOWLEDGED", "RTN_UNACK", "CLEARED", "SHELVED", "SUPPRESSED"),
    "return_to_service": ("OUT_OF_SERVICE",),
}


class AlarmRule(ProcessorNode[AlarmRuleConfig]):
    """One alarm per (rule, asset, parameter), in the states of ISA-18.2 / OPC UA Part 9: ACTIVE (unacknowledged),
    ACKNOWLEDGED, RTN_UNACK (returned to normal, not yet acknowledged), CLEARED, SHELVED (timed or one-shot,
    expiring on the gateway's clock), SUPPRESSED and OUT_OF_SERVICE. A shelved, suppressed or out-of-service alarm
    is still evaluated: it comes back in the state its condition is in, unacknowledged if it went active meanwhile.

    Every transition is a record with a unique `event_id` (`rule|asset|parameter#incarnation.sequence`); an
    operator acts on an event, and an action on an event that is no longer the alarm's latest is refused as stale.
    State lives in the changelog (table `alarm`)."""

    type = "alarm_rule"
    category = "alarms"
    icon = "bell"
    description = "Threshold alarms with deadband and on-delay, acknowledgement, shelving and suppression"
    inputs = (Port("in", PortType.TELEMETRY, description="Readings to watch"),)
    outputs = (Port("alarms", PortType.ALARM, "alarms.clean", description="Every lifecycle transition"),)
    commands: ClassVar[dict[str, builtins.type[BaseModel]]] = {
        "acknowledge": Acknowledge, "shelve": Shelve, "unshelve": AlarmAction, "suppress": AlarmAction,
        "unsuppress": AlarmAction, "remove_from_service": AlarmAction, "return_to_service": AlarmAction,
    }  # fmt: skip

    @classmethod
    def record_key(cls, port: str, record: Record) -> str:
        return str(record["alarm_id"])

    async def start(self) -> None:
        self._alarms = self.context.state.table("alarm", _Alarm)  # by (asset_id, parameter)
        # Event ids stay unique when the state is lost (a wiped Kafka) and sequences start again at 1.
        incarnation = self.context.state.table("incarnation", str)
        if () not in incarnation:
            incarnation[()] = uuid.uuid4().hex[:8]
        self._incarnation = incarnation[()]
        self._shelved: set[tuple[str, str]] = {(str(key[0]), str(key[1])) for key, alarm in self._alarms.items()
                                               if alarm.shelved_until_ms is not None}  # fmt: skip

    def _violation(self, value: float) -> float | None:
        """The threshold `value` crosses, if any."""
        config = self.config
        if config.high is not None and value > config.high:
            return config.high
        if config.low is not None and value < config.low:
            return config.low
        return None

    def _back_inside(self, value: float) -> bool:
        config = self.config
        above_low = config.low is None or value >= config.low + config.deadband
        below_high = config.high is None or value <= config.high - config.deadband
        return above_low and below_high

    async def process(self, batch: Sequence[Message]) -> Emitted:
        out: list[Record] = []
        config = self.config
        for message in batch:
            record = message.record
            value = record["value"]
            if value is None or record["quality"] == "BAD":
                continue
            series = (record["asset_id"], record["parameter"])
            if not (fnmatchcase(series[0], config.asset_id) and fnmatchcase(series[1], config.parameter)):
                continue
            alarm = self._alarms.get(series) or _Alarm()  # saved once it changes
            at_ms = epoch_ms(event_time(record))
            if alarm.active:
                if self._back_inside(value):
                    alarm.active, alarm.pending_since_ms, alarm.value = False, None, value
                    # Nothing to see once it is over while hidden; a one-shot shelf ends with the condition.
                    alarm.acknowledged = alarm.acknowledged or alarm.hidden
                    alarm.one_shot = False
                    out.append(self._transition(series, alarm, at_ms, None, None))
                continue
            threshold = self._violation(value)
            if threshold is None:
                if alarm.pending_since_ms is not None:
                    alarm.pending_since_ms = None
                    self._alarms[series] = alarm
                continue
            if alarm.pending_since_ms is None:
                alarm.pending_since_ms = at_ms
                self._alarms[series] = alarm
            if at_ms - alarm.pending_since_ms >= config.on_delay_s * 1000:
                alarm.active, alarm.acknowledged, alarm.value, alarm.threshold = True, False, value, threshold
                out.append(self._transition(series, alarm, at_ms, None, None))
        return {"alarms": out}

    async def tick(self, now: datetime) -> Emitted:
        """Timed shelving ends on the gateway's clock, whether or not readings arrive."""
        now_ms = epoch_ms(now)
        out = []
        for series in sorted(self._shelved):
            alarm = self._alarms.get(series)
            if alarm is None or alarm.shelved_until_ms is None:
                self._shelved.discard(series)
            elif alarm.shelved_until_ms <= now_ms:
                alarm.shelved_until_ms = None
                self._shelved.discard(series)
                out.append(self._transition(series, alarm, now_ms, None, "shelving expired"))
        return {"alarms": out}

    def _event_id(self, series: tuple[str, str], seq: int) -> str:
        return f"{self.config.rule_id}|{series[0]}|{series[1]}#{self._incarnation}.{seq}"

    def _transition(self, series: tuple[str, str], alarm: _Alarm, at_ms: int, user: str | None,
                    note: str | None) -> Record:  # fmt: skip
        alarm.seq += 1
        alarm.state = alarm.shown()
        self._alarms[series] = alarm
        threshold, value = alarm.threshold, alarm.value
        direction = "above" if threshold is not None and self.config.high == threshold else "below"
        condition = (f"{series[1]} of {series[0]} is {value} ({direction} {threshold})" if alarm.active
                     else f"{series[1]} of {series[0]} is back within limits ({value})")  # fmt: skip
        message = condition if note is None else f"{note}; {condition}"
        return {
            "alarm_id": f"{self.config.rule_id}|{series[0]}|{series[1]}",
            "event_id": self._event_id(series, alarm.seq),
            "asset_id": series[0],
            "parameter": series[1],
            "rule_id": self.config.rule_id,
            "severity": self.config.severity,
            "state": alarm.state,
            "active": bool(alarm.active),
            "acknowledged": alarm.acknowledged,
            "shelved_until": None if alarm.shelved_until_ms is None else from_epoch_ms(alarm.shelved_until_ms),
            "value": value,
            "threshold": threshold,
            "message": message,
            "changed_by": user,
            "quality": "GOOD",
            "classification": "ALARM",
            "timestamps": {"device_time": from_epoch_ms(at_ms), "gateway_time": self.clock.now()},
            "clock_skew_ms": None,
            "metadata": {},
        }

    async def command(self, name: str, args: BaseModel) -> Emitted:
        assert isinstance(args, AlarmAction)
        series = (args.asset_id, args.parameter)
        alarm = self._alarms.get(series)
        if alarm is None:
            raise ValueError(f"no alarm of rule {self.config.rule_id} for {series[0]}/{series[1]}")
        latest = self._event_id(series, alarm.seq)
        if args.event_id != latest:
            raise ValueError(f"stale: {args.event_id} is not this alarm's latest event; it is now {alarm.state} "
                             f"({latest}): look at it again and act on {latest}")  # fmt: skip
        if alarm.state not in _ALLOWED[name]:
            raise ValueError(f"cannot {name.replace('_', ' ')} an alarm that is {alarm.state}")
        now_ms = epoch_ms(self.clock.now())
        if name == "acknowledge":
            alarm.acknowledged = True
        elif name == "shelve":
            assert isinstance(args, Shelve)
            if args.one_shot and not alarm.active:
                raise ValueError("one-shot shelving lasts until the condition clears, and it is clear now: "
                                 "shelve it for a time instead")  # fmt: skip
            if args.duration_s is not None:
                if args.duration_s > self.config.max_shelve_s:
                    raise ValueError(f"shelving for {args.duration_s:g} s is longer than rule {self.config.rule_id}"
                                     f"'s max_shelve_s ({self.config.max_shelve_s:g} s)")  # fmt: skip
                alarm.shelved_until_ms = now_ms + round(args.duration_s * 1000)
                self._shelved.add(series)
            alarm.one_shot = args.one_shot
        elif name == "unshelve":
            alarm.shelved_until_ms, alarm.one_shot = None, False
        elif name in ("suppress", "unsuppress"):
            alarm.suppressed = name == "suppress"
        else:
            alarm.out_of_service = name == "remove_from_service"
        if not alarm.hidden and not alarm.active:
            alarm.acknowledged = True  # back from hiding to a clear condition: nothing to acknowledge
        words = {"acknowledge": "acknowledged", "shelve": "shelved", "unshelve": "unshelved",
                 "suppress": "suppressed", "unsuppress": "unsuppressed", "remove_from_service": "taken out of service",
                 "return_to_service": "returned to service"}[name]  # fmt: skip
        note = f"{words} by {args.user}" + (f": {args.comment}" if args.comment else "")
        return {"alarms": [self._transition(series, alarm, now_ms, args.user, note)]}


NODE = AlarmRule
