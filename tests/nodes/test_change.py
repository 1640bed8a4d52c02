"""change: renames and classification by rule, unit conversion by units (offset units too), an impossible
conversion refused at compile with the node and field, an unconvertible reading to the DLQ with why."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streamforge.engine.compiler import compile_document
from streamforge.engine.node_types import load_node_types
from streamforge.engine.problems import FlowInvalid
from streamforge.nodes.change import Change
from streamforge.sdk import NodeHarness, telemetry

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def reading(value: float | None, unit: str | None = None, asset: str = "oven_1", parameter: str = "temperature",
            ) -> dict[str, Any]:  # fmt: skip
    return telemetry(asset, parameter, value, unit=unit, device_time=T0)


async def test_units_convert_by_what_they_measure_offsets_included() -> None:
    rules = [{"parameter": "temperature", "to_unit": "degC", "from_unit": "degF"},
             {"parameter": "pressure", "to_unit": "bar"}, {"parameter": "flow", "to_unit": "m**3/h"}]  # fmt: skip
    async with NodeHarness(Change, {"rules": rules}) as h:
        out = (await h.process([reading(212), reading(32, "degF"), reading(100, "degC"), reading(None, "degF"),
                                reading(14.5038, "psi", parameter="pressure"),
                                reading(100, "gal/min", parameter="flow")]))["out"]  # fmt: skip
        values = [None if r["value"] is None else round(r["value"], 4) for r in out]
        assert values == [100.0, 0.0, 100.0, None, 1.0, 22.7125]
        assert {r["unit"] for r in out} == {"degC", "bar", "m**3/h"}


async def test_renames_and_classification_by_the_first_matching_rule() -> None:
    oven = {"asset_id": "line?_oven", "rename_asset": "oven", "rename_parameter": "temp_c", "classification": "EVENT"}
    rules = [oven, {"asset_id": "*", "rename_parameter": "never_reached"}]
    async with NodeHarness(Change, {"rules": rules}) as h:
        out = (await h.process([reading(5, "degC", asset="line1_oven"), reading(6, "degC", asset="press")]))["out"]
        assert [(r["asset_id"], r["parameter"], r["classification"]) for r in out] == [
            ("oven", "temp_c", "EVENT"), ("press", "never_reached", "TELEMETRY")]  # fmt: skip


async def test_a_reading_whose_unit_will_not_convert_goes_to_the_dlq_with_why() -> None:
    async with NodeHarness(Change, {"rules": [{"to_unit": "degC"}]}, node_id="units") as h:
        emitted = await h.process([reading(5, "psi"), reading(5, "furlongs_a_week"), reading(5), reading(41, "degF")])
        assert [round(r["value"], 6) for r in emitted["out"]] == [5.0]
        reasons = [(letter["node_id"], letter["reasons"][0]["code"], letter["reasons"][0]["field"])
                   for letter in emitted["dlq"]]  # fmt: skip
        assert reasons == [("units", "unit_not_convertible", "/unit")] * 2 + [("units", "unit_missing", "/unit")]
        assert "measure different things" in emitted["dlq"][0]["reasons"][0]["message"]


@pytest.mark.parametrize(
    ("rule", "said"),
    [({"to_unit": "degC", "from_unit": "psi"}, "psi cannot be converted to degC: they measure different things"),
     ({"to_unit": "blorp"}, "unknown unit blorp"),
     ({"to_unit": "(("}, "is not a unit expression"),
     ({"from_unit": "degF"}, "from_unit needs to_unit")],
)  # fmt: skip
def test_an_impossible_conversion_is_refused_at_compile_naming_the_node_and_field(rule: dict[str, Any],
                                                                                   said: str) -> None:  # fmt: skip
    document = {"id": "units_line", "nodes": [{"id": "conv", "type": "change", "config": {"rules": [rule]}}],
                "edges": []}  # fmt: skip
    with pytest.raises(FlowInvalid) as refused:
        compile_document(document, load_node_types(False))
    problem = next(p for p in refused.value.problems if p.node_id == "conv" and p.code != "dangling_port")
    assert problem.pointer == "/nodes/0/config/rules/0" and said in problem.message
