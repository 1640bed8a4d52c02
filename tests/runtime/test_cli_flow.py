"""`streamforge flow ...` as a user runs it: every problem located, exit code 1; fmt, diff and plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "streamforge.runtime.cli"]
FLOWS = Path(__file__).resolve().parents[2] / "flows"


def flow_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "flow", *args], capture_output=True, text=True, timeout=60)


def broken_flow() -> dict[str, Any]:
    return {
        "id": "broken",
        "nodes": [
            {"id": "sim", "type": "simulator", "config": {}},  # missing required config: signals
            {"id": "tele", "type": "teleporter"},  # unknown type
            {"id": "val", "type": "validator"},
            {"id": "agg", "type": "aggregator"},
        ],
        "edges": [
            {"from": "sim:out", "to": "val:in"},
            {"from": "val:dlq", "to": "agg:in"},  # dlq into telemetry: mismatched
            {"from": "agg:agg_1s", "to": "val:in"},  # closes a cycle, and mismatched too
            {"from": "val:clean", "to": "ghost:in"},  # a wire to a node that is not there
            {"from": "sim:nope", "to": "agg:in"},  # a port the simulator does not have
        ],
    }


def test_every_problem_is_reported_with_exit_code_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken_flow()))
    done = flow_cli("validate", str(path))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    found = {(p["code"], p["pointer"]) for p in report["problems"]}
    assert ("invalid_config", "/nodes/0/config/signals") in found
    assert ("unknown_type", "/nodes/1/type") in found
    assert ("type_mismatch", "/edges/1") in found
    assert any(code == "cycle" for code, _ in found)
    assert ("unknown_node", "/edges/3/to") in found  # a dangling edge hides nothing else
    assert ("unknown_port", "/edges/4/from") in found
    assert "/nodes/1/type (node tele): unknown node type 'teleporter'" in done.stderr


@pytest.mark.parametrize(
    ("text", "code"),
    [('{"id": "x", "nodes": [,]}', "malformed_json"), ("{" + " " * (10 * 1024 * 1024) + "}", "too_large")],
)
def test_malformed_and_oversized_documents(tmp_path: Path, text: str, code: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    done = flow_cli("validate", str(path))
    assert done.returncode == 1
    assert [p["code"] for p in json.loads(done.stdout)["problems"]] == [code]


def test_fmt_diff_and_plan_on_the_example_flows(tmp_path: Path) -> None:
    assert flow_cli("fmt", "--check", *map(str, sorted(FLOWS.glob("*.json")))).returncode == 0
    moved = json.loads((FLOWS / "demo.json").read_text())
    nodes = {node["id"]: node for node in moved["nodes"]}
    nodes["aggregate"]["x"] += 100
    nodes["devices"]["config"]["rate_hz"] = 20
    moved["label"] = "Demo, faster"
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(moved))
    assert flow_cli("fmt", "--check", str(path)).returncode == 1
    diff = json.loads(flow_cli("diff", str(FLOWS / "demo.json"), str(path)).stdout)
    assert diff["nodes"]["changed"] == {"devices": [{"field": "config/rate_hz", "old": 10, "new": 20}]}
    assert diff["label"]["new"] == "Demo, faster"
    plan = json.loads(flow_cli("plan", str(FLOWS / "demo.json")).stdout)
    assert plan["processes"]["worker:warehouse"] == ["warehouse"]
    assert next(n for n in plan["nodes"] if n["node_id"] == "quality")["consumer_group"] == "sf.demo.quality"
