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
    start_time: datetime | None = Field(None, description="device_time of the first reading; default: now")
    realtime: bool = Field(True, description="Pace readings at rate_hz; off: as fast as Kafka takes them")
    limit: int | None = Field(None, ge=1, description="Stop after this many readings per signal")
    batch_size: int = Field(500, ge=1, le=50_000, description="Readings per batch (injected duplicates add to it); "
                            "more signals than this go out over several batches")  # fmt: skip


@dataclass
class _Position:
    n: int  # reading sets (one reading per signal) completed and acknowledged by Kafka
    walk: list[float]  # where each random walk stood after them


class Simulator(SourceNode[SimulatorConfig]):
    """Generates readings on device time start_time + n / rate_hz: deterministic for a given seed, paced by the
    node's clock. A batch holds at most batch_size readings: several whole sets of a few signals, or a part of one
    set of many (10,000 signals go out 500 at a time, not as one batch of 10,000 held in memory at once, then
    downstream). Its position is in the changelog, saved after Kafka acknowledged a batch: table `position` when a
    set completed, table `sent` (which set is in progress, and how many of its signals are out) after every batch;
    a restart resumes at the next reading. A `sent` of another set than `position`'s next (one of the two saves
    landed) counts as none sent: that set is sent again whole, never skipped."""

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
        self._t0 = self.config.start_time or self.clock.now()
        if self._t0.tzinfo is None:
            self._t0 = self._t0.replace(tzinfo=UTC)
        self._started = self.clock.monotonic() - self._n / self.config.rate_hz  # resumed: no catch-up burst
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
        while room > 0 and not self.exhausted:
            if self._sent == 0 and config.realtime:
                wait = self._n / config.rate_hz - (self.clock.monotonic() - self._started)
                if wait > 0:
                    if readings:
                        break  # what is due goes out now
                    await self.clock.sleep(wait)
            upto = min(signals, self._sent + room)
            readings += self._readings(self._n, self._sent, upto)
            room -= upto - self._sent
            self._sent = upto
            if upto == signals:  # the walks as the set left them, before the next set's first signals move them
                self._n, self._sent = self._n + 1, 0
                self._position[()] = _Position(self._n, list(self._walk))
        if self._sent_of_set.get(()) != (self._n, self._sent):
            self._sent_of_set[()] = (self._n, self._sent)
        return {"out": readings}

    def _readings(self, n: int, first: int, upto: int) -> list[Record]:
        """Set n's readings of signals first..upto-1."""
        config, faults = self.config, self.config.faults
        device_time = self._t0 + timedelta(seconds=n / config.rate_hz)
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
