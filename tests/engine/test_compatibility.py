"""BACKWARD compatibility: what a new reader schema may and may not change."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streamforge.engine.compatibility import backward_problems
from streamforge.engine.schemas import SCHEMAS, TELEMETRY


def _changed(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(TELEMETRY)
    edit(schema)
    return schema


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_reads_itself(name: str) -> None:
    assert backward_problems(SCHEMAS[name], SCHEMAS[name]) == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["fields"].append({"name": "site", "type": "string", "default": "north"}),
        lambda s: s["fields"].remove(_field(s, "unit")),  # dropping a field: the reader ignores it
        lambda s: _field(s, "quality")["type"]["symbols"].append("STALE"),
        lambda s: _field(s, "clock_skew_ms").update(type=["null", "double"]),  # long -> double promotion
    ],
)
def test_compatible_changes(edit: Any) -> None:
    assert backward_problems(_changed(edit), TELEMETRY) == []


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda s: s["fields"].append({"name": "site", "type": "string"}), "/site: new field has no default"),
        (lambda s: _field(s, "value").update(type="double"), "/value: writer type null cannot be read as double"),
        (lambda s: _field(s, "quality")["type"]["symbols"].remove("SUSPECT"), "lacks symbols ['SUSPECT']"),
        (lambda s: _field(s, "asset_id").update(type="long"), "/asset_id: writer type string cannot be read as long"),
    ],
)
def test_incompatible_changes_are_explained(edit: Any, words: str) -> None:
    problems = backward_problems(_changed(edit), TELEMETRY)
    assert any(words in problem for problem in problems), problems
