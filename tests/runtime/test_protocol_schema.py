"""The editor's fleet types come from the protocol's models: the schema its build generates them from is current."""

from __future__ import annotations

import json
from pathlib import Path

from streamforge.runtime.protocol import PROTOCOL, editor_schema

SCHEMA = Path(__file__).parents[2] / "editor" / "protocol.schema.json"


def test_the_editors_protocol_schema_is_generated_from_the_models() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == editor_schema(), (
        "editor/protocol.schema.json is out of date with runtime/protocol.py: run "
        "`.venv/bin/python -m streamforge.runtime.protocol > editor/protocol.schema.json` and commit it"
    )
    assert PROTOCOL in committed["description"]
    assert {"Heartbeat", "NodeHealth", "ApplyResult"} <= set(committed["properties"])
