"""`deadband` processor: report by exception per series, with an absolute or percent deadband and a heartbeat."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record, epoch_ms, event_time


class Band(BaseModel):
    """How far a value must move from the last one sent before it is sent again."""

    model_config = ConfigDict(extra="forbid")

    absolute: float = Field(0.0, ge=0, description="Send when the value moved more than this (in its unit)")
    percent: float | None = Field(None, gt=0, le=1000, description="Or when it moved more than this % of the last "
                                  "value sent (of its magnitude); with both, either one is enough")  # fmt: skip
    max_silence_s: float | None = Field(None, gt=0, description="Heartbeat: a reading within the band is still sent "
                                        "when the last one sent is this much older (device time)")  # fmt: skip


class SeriesBand(Band):
    """A band for the series whose asset and parameter match these patterns (`*` and `?` wildcards)."""

    asset_id: str = Field("*", min_length=1)
    parameter: str = Field("*", min_length=1)


class DeadbandConfig(NodeConfig, Band):
    series: list[SeriesBand] = Field(default_factory=list, description="Per-series bands, first match wins; other "
                                     "series use the band above")  # fmt: skip

    @model_validator(mode="after")
    def _some_band(self) -> DeadbandConfig:
        if self.absolute == 0 and self.percent is None and not self.series:
            raise ValueError("set `absolute` or `percent` (or per-series bands): with neither, every change is sent "
                             "and the node would only drop exact repeats")  # fmt: skip
        return self

    def band_for(self, asset_id: str, parameter: str) -> Band:
        found = (b for b in self.series if fnmatchcase(asset_id, b.asset_id) and fnmatchcase(parameter, b.parameter))
        return next(found, self)


class Deadband(ProcessorNode[DeadbandConfig]):
    """Node-RED's rbe for readings: per series (asset, parameter), a reading goes on only when its value left the band
    around the last one sent, its quality changed, or the heartbeat is due. The first reading of a series, and every
    reading without a value, always go on.

    Decided on device time only, so a replay after a crash decides exactly as the first run did. State: the last
    reading sent per series (table `sent`: device time in ms, value, quality), kept across restarts."""

    type = "deadband"
    category = "processing"
    icon = "filter"
    description = "Report by exception: pass a reading only when it moved beyond a deadband, or on a heartbeat"
    inputs = (Port("in", PortType.TELEMETRY, description="Readings, usually validated ones"),)
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.clean", description="The readings that changed enough"),)

    async def start(self) -> None:
        self._sent = self.context.state.table("sent", tuple[int, float | None, str])
        self._bands: dict[tuple[str, str], Band] = {}

    async def process(self, batch: Sequence[Message]) -> Emitted:
        out: list[Record] = []
        sent = self._sent
        for message in batch:
            record = message.record
            key = (record["asset_id"], record["parameter"])
            band = self._bands.get(key)
            if band is None:
                band = self._bands[key] = self.config.band_for(*key)
            at_ms, value, quality = epoch_ms(event_time(record)), record["value"], record["quality"]
            last = sent.get(key)
            if last is not None and not self._reportable(band, last, at_ms, value, quality):
                continue
            sent[key] = (at_ms, value, quality)
            out.append(record)
        return {"out": out} if out else {}

    @staticmethod
    def _reportable(band: Band, last: tuple[int, float | None, str], at_ms: int, value: float | None,
                    quality: str) -> bool:  # fmt: skip
        last_ms, last_value, last_quality = last
        if value is None or last_value is None or quality != last_quality:
            return True
        if band.max_silence_s is not None and at_ms - last_ms >= band.max_silence_s * 1000:
            return True
        moved = abs(value - last_value)
        if band.percent is not None and moved > abs(last_value) * band.percent / 100:
            return True
        if band.absolute == 0 and band.percent is not None:
            return False  # a percent band alone
        return moved > band.absolute  # an absolute band (0: any change, only exact repeats are dropped)


NODE = Deadband
