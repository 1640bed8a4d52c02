"""`simulator` source: sine, random-walk and step signals per asset, with optional injected faults."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from sys import intern
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass as config_dataclass

from streamforge.engine.records import telemetry
from streamforge.engine.sdk import Emitted, NodeConfig, Port, PortType, Record, SourceNode

# Paced in realtime with no start_time, a series further off the clock than this (seconds) moves to now: a node the
# supervisor restarted (its backoff: at most 30 s, then the worker starts) catches up what it missed, a longer
# downtime leaves a gap (class docstring).
CATCH_UP_S = 60.0


# A slotted dataclass, not a model: a plan may list 10,000 signals, and a model is ~1.1 KB each where this is
# ~170 B (11.6 MB against 1.7 MB in the worker), validated and described (the editor's form) the same way.
@config_dataclass(slots=True, config=ConfigDict(extra="forbid"))
class Signal:
    """One simulated series. Its names interned: 10,000 signals of one parameter held 10,000 copies of its name."""

    asset_id: Annotated[str, Field(min_length=1), AfterValidator(intern)]
    parameter: Annotated[str, Field(min_length=1), AfterValidator(intern)]
    unit: Annotated[str, AfterValidator(intern)] | None = None
    shape: Literal["sine", "random_walk", "step"] = "sine"
    offset: float = Field(default=50.0, description="Centre value")
    amplitude: float = Field(default=10.0, ge=0, description="Sine amplitude, walk bound, or step height")
    period_s: float = Field(default=60.0, gt=0, description="Sine period or step interval")


class Faults(BaseModel):
    """Every Nth reading (per signal) gets the fault; 0 turns it off. Faulty readings carry `sim_fault`."""

    model_config = ConfigDict(extra="forbid")

    spike_every: int = Field(0, ge=0, description="Value jumps far outside the signal")
    out_of_range_every: int = Field(0, ge=0, description="Value set to out_of_range_value")
    out_of_range_value: float = 1.0e6
    missing_device_time_every: int = Field(0, ge=0, description="No device_time (quality becomes UNCERTAIN)")
    duplicate_every: int = Field(0, ge=0, description="The reading is sent twice")
    gap_every: int = Field(0, ge=0, description="The reading is skipped")


class SimulatorConfig(NodeConfig):
    signals: list[Signal] = Field(min_length=1)
    rate_hz: float = Field(1.0, gt=0, le=100_000, description="Readings per second per signal")
    faults: Faults = Field(default_factory=Faults)
    seed: int = 0
    start_time: datetime | None = Field(None, description="device_time of the first reading; default: now, at the "
                                        "first start")  # fmt: skip
    realtime: bool = Field(True, description="Pace readings at rate_hz; off: as fast as Kafka takes them")
    limit: int | None = Field(None, ge=1, description="Stop after this many readings per signal")
    batch_size: int = Field(500, ge=1, le=50_000, description="Readings per batch (injected duplicates add to it); "
                            "more signals than this go out over several batches")  # fmt: skip


@dataclass
class _Position:
    n: int  # reading sets (one reading per signal) completed and acknowledged by Kafka
    walk: list[float]  # where each random walk stood after them
    # Device time of reading set 0, so that set n keeps its device time across restarts; None: saved by a version
    # that kept none (each of its starts took "now" again).
    origin: datetime | None = None


class Simulator(SourceNode[SimulatorConfig]):
    """Generates reading set n (one reading per signal) on device time origin + n / rate_hz: deterministic for a
    given seed, paced by the node's clock. A batch holds at most batch_size readings: several whole sets of a few
    signals, or a part of one set of many (10,000 signals go out 500 at a time, not as one batch of 10,000 held in
    memory at once, then downstream). Its position is in the changelog, saved after Kafka acknowledged a batch:
    table `position` (with the origin) when a set completed, table `sent` (which set is in progress, and how many of
    its signals are out) after every batch; a restart resumes at the next reading, on the same origin, so reading n
    has the same device time whatever restarts happened. A `sent` of another set than `position`'s next (one of the
    two saves landed) counts as none sent: that set is sent again whole, never skipped.

    The origin is start_time if configured (a reproducible series, paced from each start), else the clock's time at
    the first start. Paced in realtime on that origin, a set goes out once its device time is due on the node's
    clock, never before. Back within CATCH_UP_S of a crash, the node sends the sets it missed at once, on their own
    device times: no gap, and a set sent again (its save lost in the crash) keeps its time. Further off the clock (a
    longer downtime, a clock set forward or back, a Kafka that cannot keep up), the origin moves so that the next set
    is at now: the series resumes at the current time after a gap as long as the downtime, as a device switched off
    and on again shows, not with a burst of the past minutes nor with device times in the future; reading numbers
    (`sim_seq`) go on, none skipped (a set sent again then has the new time). A position saved without an origin
    (the previous version) resumes at now the same way. A new origin reaches the changelog before any reading on it
    goes out (the poll that moved it sends none on it), so a crash then cannot move it again under sent readings.
    Not in realtime, readings go out as fast as Kafka takes them, on the saved origin: ahead of the clock."""

    type = "simulator"
    category = "sources"
    icon = "wave-sine"
    description = "Simulated devices: sine, random walk and step signals with injectable faults"
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.raw", description="Raw readings"),)

    async def start(self) -> None:
        self._position = self.context.state.table("position", _Position)
        self._sent_of_set = self.context.state.table("sent", tuple[int, int])  # (set n, signals of it sent)
        saved = self._position.get(())
        self._n = saved.n if saved else 0
        self._walk = list(saved.walk) if saved else [signal.offset for signal in self.config.signals]
        self._origin_unsaved = False  # a new origin, not yet in the changelog: no reading on it goes out before
        origin = self.config.start_time or (saved.origin if saved else None)
        if origin is None:  # the first start, or a position saved without its origin: set n is at now
            self._move_origin()  # with the walks as set n - 1 left them, before set n's sent signals move them
        else:
            self._origin = origin if origin.tzinfo else origin.replace(tzinfo=UTC)
        self._started = self.clock.monotonic() - self._n / self.config.rate_hz  # start_time's pace: no catch-up
        # Signals of set n already sent: their walks move on as they did (each step is seeded by set and signal).
        in_progress, sent = self._sent_of_set.get((), (self._n, 0))
        self._sent = sent if in_progress == self._n else 0
        for index, signal in enumerate(self.config.signals[: self._sent]):
            self._value(index, signal, self._n)

    @property
    def exhausted(self) -> bool:
        return self.config.limit is not None and self._n >= self.config.limit

    async def poll(self) -> Emitted:
        config = self.config
        if self.exhausted:
            await self.clock.sleep(3600)  # a finished simulator idles; the runtime cancels it on stop
            return {}
        readings: list[Record] = []
        room, signals = config.batch_size, len(config.signals)
        while room > 0 and not self.exhausted and not self._origin_unsaved:
            if self._sent == 0 and config.realtime:
                wait = self._wait()
                # Due at most one period ahead; further off the clock either way: resume at now (class docstring).
                if config.start_time is None and not -CATCH_UP_S <= wait <= CATCH_UP_S + 1 / config.rate_hz:
                    self._move_origin()
                    break
                if wait > 0:
                    if readings:
                        break  # what is due goes out now
                    await self.clock.sleep(wait)
                    continue  # due now, unless the clock was set meanwhile: look again
            upto = min(signals, self._sent + room)
            readings += self._readings(self._n, self._sent, upto)
            room -= upto - self._sent
            self._sent = upto
            if upto == signals:  # the walks as the set left them, before the next set's first signals move them
                self._n, self._sent = self._n + 1, 0
                self._position[()] = _Position(self._n, list(self._walk), self._origin)
        if self._sent_of_set.get(()) != (self._n, self._sent):
            self._sent_of_set[()] = (self._n, self._sent)
        self._origin_unsaved = False  # the runtime saves the state after every poll, with or without readings
        return {"out": readings}

    def _since_origin(self, n: int) -> timedelta:
        return timedelta(seconds=n / self.config.rate_hz)

    def _wait(self) -> float:
        """Seconds until set n is due (negative: overdue)."""
        if self.config.start_time is None:  # due at its device time on the clock, so never ahead of it
            return (self._origin + self._since_origin(self._n) - self.clock.now()).total_seconds()
        return self._n / self.config.rate_hz - (self.clock.monotonic() - self._started)

    def _move_origin(self) -> None:
        """Set n on device time now; saved with the position, before any reading on it."""
        self._origin = self.clock.now() - self._since_origin(self._n)
        self._position[()] = _Position(self._n, list(self._walk), self._origin)
        self._origin_unsaved = True

    def _readings(self, n: int, first: int, upto: int) -> list[Record]:
        """Set n's readings of signals first..upto-1."""
        config, faults = self.config, self.config.faults
        device_time = self._origin + self._since_origin(n)
        gateway_time = device_time + timedelta(milliseconds=5) if config.start_time else None
        out: list[Record] = []
        for index in range(first, upto):
            signal = config.signals[index]
            value = self._value(index, signal, n)
            fault = _fault_for(faults, n + 1)
            if fault == "gap":
                continue
            if fault == "spike":
                value = signal.offset + 50 * max(signal.amplitude, 1.0)
            elif fault == "out_of_range":
                value = faults.out_of_range_value
            record = telemetry(
                signal.asset_id, signal.parameter, round(value, 6), unit=signal.unit,
                device_time=None if fault == "missing_device_time" else device_time,
                gateway_time=gateway_time, metadata={"sim_seq": str(n)} | ({"sim_fault": fault} if fault else {}),
            )  # fmt: skip
            out.append(record)
            if fault == "duplicate":
                out.append(dict(record, metadata=dict(record["metadata"])))
        return out

    def _value(self, index: int, signal: Signal, n: int) -> float:
        seconds = n / self.config.rate_hz
        if signal.shape == "sine":
            return signal.offset + signal.amplitude * math.sin(2 * math.pi * seconds / signal.period_s)
        if signal.shape == "step":
            return signal.offset + (signal.amplitude if int(seconds / signal.period_s) % 2 else 0.0)
        # Seeded by (seed, signal, n), not by a running generator, so a restart resumes the same walk.
        step = random.Random(hash((self.config.seed, index, n))).uniform(-1, 1) * signal.amplitude / 20
        low, high = signal.offset - signal.amplitude, signal.offset + signal.amplitude
        self._walk[index] = min(high, max(low, self._walk[index] + step))
        return self._walk[index]


def _fault_for(faults: Faults, ordinal: int) -> str | None:
    """Which fault (if any) reading number `ordinal` (1-based) gets; the first listed wins."""
    for name, every in (
        ("gap", faults.gap_every),
        ("spike", faults.spike_every),
        ("out_of_range", faults.out_of_range_every),
        ("missing_device_time", faults.missing_device_time_every),
        ("duplicate", faults.duplicate_every),
    ):
        if every and ordinal % every == 0:
            return name
    return None


NODE = Simulator
