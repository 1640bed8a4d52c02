"""`alarm_rule` processor: high/low thresholds with deadband and on-delay; ACTIVE/ACKNOWLEDGED/CLEARED/SUPPRESSED."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.records import epoch_ms, event_time, from_epoch_ms
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record


class AlarmRuleConfig(NodeConfig):
    rule_id: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,64}$", description="Names the rule in every alarm it raises")
    asset_id: str = Field("*", description="Assets this rule watches (* and ? wildcards)")
    parameter: str = Field("*", description="Parameters this rule watches (* and ? wildcards)")
    high: float | None = Field(None, description="Alarm when the value rises above this")
    low: float | None = Field(None, description="Alarm when the value falls below this")
    deadband: float = Field(0.0, ge=0, description="Clear only once the value is this far back inside the limit")
    on_delay_s: float = Field(0.0, ge=0, description="The condition must hold this long (device time) to alarm")
    severity: Literal["CRITICAL", "HIGH", "MEDIUM", "LOW"] = "HIGH"

    @model_validator(mode="after")
    def _a_limit(self) -> AlarmRuleConfig:
        if self.high is None and self.low is None:
            raise ValueError("set `high`, `low` or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low {self.low} must be below high {self.high}")
        return self


class AlarmAction(BaseModel):
    """Arguments of acknowledge, suppress and unsuppress: which alarm, and who acts (recorded in the transition)."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field(min_length=1, description="The alarm's asset")
    parameter: str = Field(min_length=1, description="The alarm's parameter")
    user: str = Field(min_length=1, description="Who takes the action: every alarm action names them")


@dataclass
class _Alarm:
    state: str = "CLEARED"
    pending_since_ms: int | None = None  # condition true since (device time), waiting for the on-delay
    value: float | None = None
    threshold: float | None = None


class AlarmRule(ProcessorNode[AlarmRuleConfig]):
    """One alarm per (rule, asset, parameter); its state lives in the changelog (table `alarm`) and survives
    restarts. Operators acknowledge, suppress and unsuppress it by command."""

    type = "alarm_rule"
    category = "alarms"
    icon = "bell"
    description = "Threshold alarms with deadband and on-delay, and the alarm lifecycle"
    inputs = (Port("in", PortType.TELEMETRY, description="Readings to watch"),)
    outputs = (Port("alarms", PortType.ALARM, "alarms.clean", description="Every lifecycle transition"),)
    commands: ClassVar[dict[str, builtins.type[BaseModel]]] = {
        "acknowledge": AlarmAction, "suppress": AlarmAction, "unsuppress": AlarmAction,
    }  # fmt: skip

    @classmethod
    def record_key(cls, port: str, record: Record) -> str:
        return str(record["alarm_id"])

    async def start(self) -> None:
        self._alarms = self.context.state.table("alarm", _Alarm)  # by (asset_id, parameter)

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
            threshold = self._violation(value)
            if alarm.state in ("ACTIVE", "ACKNOWLEDGED"):
                if self._back_inside(value):
                    alarm.state, alarm.pending_since_ms = "CLEARED", None
                    out.append(self._transition(series, alarm, value, alarm.threshold, at_ms, None))
            elif alarm.state == "CLEARED":
                if threshold is None:
                    if alarm.pending_since_ms is not None:
                        alarm.pending_since_ms = None
                        self._alarms[series] = alarm
                    continue
                if alarm.pending_since_ms is None:
                    alarm.pending_since_ms = at_ms
                    self._alarms[series] = alarm
                if at_ms - alarm.pending_since_ms >= config.on_delay_s * 1000:
                    alarm.state, alarm.value, alarm.threshold = "ACTIVE", value, threshold
                    out.append(self._transition(series, alarm, value, threshold, at_ms, None))
        return {"alarms": out}

    def _transition(self, series: tuple[str, str], alarm: _Alarm, value: float | None, threshold: float | None,
                    at_ms: int, user: str | None) -> Record:  # fmt: skip
        self._alarms[series] = alarm
        direction = "above" if threshold is not None and self.config.high == threshold else "below"
        words = {
            "ACTIVE": f"{series[1]} of {series[0]} is {value} ({direction} {threshold})",
            "CLEARED": f"{series[1]} of {series[0]} is back within limits ({value})",
            "ACKNOWLEDGED": f"acknowledged by {user}",
            "SUPPRESSED": f"suppressed by {user}",
        }
        moment = from_epoch_ms(at_ms)
        return {
            "alarm_id": f"{self.config.rule_id}|{series[0]}|{series[1]}",
            "asset_id": series[0],
            "parameter": series[1],
            "rule_id": self.config.rule_id,
            "severity": self.config.severity,
            "state": alarm.state,
            "value": value,
            "threshold": threshold,
            "message": words.get(alarm.state, f"{alarm.state} by {user}"),
            "changed_by": user,
            "quality": "GOOD",
            "classification": "ALARM",
            "timestamps": {"device_time": moment, "gateway_time": self.clock.now()},
            "clock_skew_ms": None,
            "metadata": {},
        }

    async def command(self, name: str, args: BaseModel) -> Emitted:
        assert isinstance(args, AlarmAction)
        series = (args.asset_id, args.parameter)
        alarm = self._alarms.get(series)
        allowed = {"acknowledge": ("ACTIVE",), "suppress": ("ACTIVE", "ACKNOWLEDGED", "CLEARED"),
                   "unsuppress": ("SUPPRESSED",)}[name]  # fmt: skip
        if alarm is None:
            raise ValueError(f"no alarm of rule {self.config.rule_id} for {series[0]}/{series[1]}")
        if alarm.state not in allowed:
            raise ValueError(f"cannot {name} an alarm that is {alarm.state}")
        alarm.state = {"acknowledge": "ACKNOWLEDGED", "suppress": "SUPPRESSED", "unsuppress": "CLEARED"}[name]
        alarm.pending_since_ms = None
        at_ms = epoch_ms(self.clock.now())
        return {"alarms": [self._transition(series, alarm, alarm.value, alarm.threshold, at_ms, args.user)]}


NODE = AlarmRule
