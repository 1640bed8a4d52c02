"""`change` processor: rename a reading's asset or parameter, set its classification, convert its value by units."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

import pint
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamforge.engine.schemas import CLASSIFICATIONS
from streamforge.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode, Record

AFFINE_TOLERANCE = 1e-9  # relative: a conversion this close to a*x+b at a third point is computed as a*x+b


@functools.cache
def units() -> pint.UnitRegistry:  # type: ignore[type-arg]
    """One registry per process (building it takes about a second): pint's definitions of SI, US customary and
    engineering units, e.g. degF, psi, bar, gal/min, m³/h, kWh."""
    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


@dataclass(frozen=True)
class Conversion:
    """value * scale + offset: every conversion between two pint units that is affine (all but logarithmic ones),
    computed once, then a multiply-add per reading."""

    scale: float
    offset: float


@functools.lru_cache(maxsize=1024)
def conversion(source: str, target: str) -> Conversion:
    """From `source` to `target` units; ValueError saying what is wrong (unknown unit, other dimension)."""
    registry = units()
    try:
        at_zero, at_one, at_ten = (registry.Quantity(x, source).to(target).magnitude for x in (0.0, 1.0, 10.0))
    except pint.UndefinedUnitError as unknown:
        names = ", ".join(unknown.unit_names)
        raise ValueError(f"unknown unit {names}: use a pint unit such as degC, psi, bar, m**3/h") from None
    except pint.DimensionalityError:
        dimensions = f"{registry.Unit(source).dimensionality} vs {registry.Unit(target).dimensionality}"
        raise ValueError(
            f"{source} cannot be converted to {target}: they measure different things ({dimensions})"
        ) from None
    except Exception as bad:  # pint's parser on malformed text raises what its tokenizer does (TokenError, ...)
        raise ValueError(f"{source!r} or {target!r} is not a unit expression ({type(bad).__name__})") from None
    scale = float(at_one - at_zero)
    if abs(float(at_ten) - (scale * 10 + float(at_zero))) > AFFINE_TOLERANCE * max(1.0, abs(float(at_ten))):
        raise ValueError(f"{source} to {target} is not a linear conversion (logarithmic units are not supported)")
    return Conversion(scale, float(at_zero))


class ChangeRule(BaseModel):
    """What to change on readings of the series that match `asset_id` and `parameter` (`*` and `?` wildcards)."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field("*", min_length=1, description="Readings of these assets")
    parameter: str = Field("*", min_length=1, description="and these parameters")
    to_unit: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Convert the value into this unit, e.g. degC, bar, m**3/h (pint's names); the reading's unit "
        "becomes it",
    )
    from_unit: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="The unit of readings that carry none (a reading with a unit of its own is converted from that)",
    )
    rename_asset: str | None = Field(None, min_length=1, description="New asset id")
    rename_parameter: str | None = Field(None, min_length=1, description="New parameter name")
    classification: Literal[CLASSIFICATIONS] | None = Field(None, description="New classification")  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _convertible(self) -> ChangeRule:
        if self.from_unit is not None and self.to_unit is None:
            raise ValueError("from_unit needs to_unit: the unit to convert into")
        if self.to_unit is not None:
            conversion(self.from_unit or self.to_unit, self.to_unit)  # ValueError: refused at deploy, located
        return self


class ChangeConfig(NodeConfig):
    rules: list[ChangeRule] = Field(min_length=1, description="The first rule that matches a reading applies; a "
                                    "reading no rule matches passes unchanged")  # fmt: skip


class Change(ProcessorNode[ChangeConfig]):
    """Node-RED's change node for readings: per the first matching rule, rename the asset or parameter, set the
    classification, and convert the value by units, not by numbers (°F → °C is (x - 32) * 5/9, which a scale
    factor cannot do). A rule's units are checked at deploy: an unknown unit or one of another dimension (psi → °C)
    fails the deploy naming the node and the field. A reading whose own unit is unknown or of another dimension
    goes to the DLQ with the reason; one without a unit, when its rule gives no `from_unit`, too."""

    type = "change"
    category = "processing"
    icon = "replace"
    description = "Rename assets or parameters, set classification, convert units (°F → °C, psi → bar, gal/min → m³/h)"
    inputs = (Port("in", PortType.TELEMETRY, description="Readings"),)
    outputs = (
        Port("out", PortType.TELEMETRY, "telemetry.clean", description="Readings, changed where a rule matched"),
        Port("dlq", PortType.DLQ, "dlq.telemetry", description="Readings whose unit cannot be converted, with why"),
    )

    async def start(self) -> None:
        self._rules: dict[tuple[str, str], ChangeRule | None] = {}

    def _rule(self, asset_id: str, parameter: str) -> ChangeRule | None:
        key = (asset_id, parameter)
        if key not in self._rules:
            rules = self.config.rules
            found = (r for r in rules if fnmatchcase(asset_id, r.asset_id) and fnmatchcase(parameter, r.parameter))
            self._rules[key] = next(found, None)
        return self._rules[key]

    async def process(self, batch: Sequence[Message]) -> Emitted:
        out: list[Record] = []
        dead: list[Record] = []
        for message in batch:
            record = message.record
            rule = self._rule(record["asset_id"], record["parameter"])
            if rule is None:
                out.append(record)
                continue
            changed: dict[str, Any] = {}
            if rule.to_unit is not None:
                source = record["unit"] or rule.from_unit
                if source is None:
                    why = f"the reading has no unit to convert to {rule.to_unit} from; give the rule a from_unit"
                    dead.append(self.dead_letter(message, "unit_missing", why, "/unit"))
                    continue
                try:
                    convert = conversion(source, rule.to_unit)
                except ValueError as refused:
                    dead.append(self.dead_letter(message, "unit_not_convertible", str(refused), "/unit"))
                    continue
                value = record["value"]
                changed["value"] = None if value is None else value * convert.scale + convert.offset
                changed["unit"] = rule.to_unit
            if rule.rename_asset is not None:
                changed["asset_id"] = rule.rename_asset
            if rule.rename_parameter is not None:
                changed["parameter"] = rule.rename_parameter
            if rule.classification is not None:
                changed["classification"] = rule.classification
            out.append({**record, **changed})
        emitted: Emitted = {}
        if out:
            emitted["out"] = out
        if dead:
            emitted["dlq"] = dead
        return emitted


NODE = Change
