"""Compiling apart: the child's plan is the in-process one, its problems are located, no gateway imports it, and a
compiler that cannot run is a passing cause the sync agent tries again."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey, SealedBox

from streamforge.engine.compiler import compile_document
from streamforge.engine.node_types import load_node_types
from streamforge.engine.problems import FlowInvalid
from streamforge.runtime.gateway.agent import SyncAgent
from streamforge.runtime.gateway.compiling import (
    CompilerFailed,
    compile_apart,
    compile_apart_blocking,
    secret_env_name,
)
from streamforge.runtime.gateway.gateway import Gateway

SIGNALS = [{"asset_id": f"pump_{i}", "parameter": "pressure", "unit": "bar"} for i in range(50)]
DOC: dict[str, Any] = {
    "id": "apart",
    "version": 3,
    "nodes": [
        {"id": "sim", "type": "simulator", "config": {"signals": SIGNALS, "rate_hz": 2}},
        {"id": "val", "type": "validator", "config": {"rules": [{"parameter": "pressure", "min": 0, "max": 10}]}},
        {"id": "db", "type": "postgres", "config": {"dsn": {"$secret": "apart.db.dsn"}}},
    ],
    "edges": [{"from": "sim:out", "to": "val:in"}, {"from": "val:clean", "to": "db:telemetry"}],
}


async def test_the_plan_compiled_apart_is_the_one_compiled_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(secret_env_name("apart.db.dsn"), "postgresql://u:p@db/x")
    here = compile_document(DOC, load_node_types(False), lambda name: "postgresql://u:p@db/x")
    apart = await compile_apart(json.dumps(DOC), include_plugins=False, secrets_from_env=True)
    assert apart == here
    assert apart.node("db").config["dsn"] == "postgresql://u:p@db/x"
    assert apart.node("sim").config["signals"][49]["asset_id"] == "pump_49"


async def test_every_problem_comes_back_located() -> None:
    broken = {**DOC, "nodes": [*DOC["nodes"][:2], {"id": "x", "type": "teleporter"}],
              "edges": [*DOC["edges"][:1], {"from": "val:clean", "to": "x:in"}]}  # fmt: skip
    broken["nodes"][0] = {"id": "sim", "type": "simulator", "config": {"signals": SIGNALS, "rate_hz": -1}}
    with pytest.raises(FlowInvalid) as caught:
        await compile_apart(json.dumps(broken), include_plugins=False)
    found = {(problem.node_id, problem.pointer) for problem in caught.value.problems}
    assert ("sim", "/nodes/0/config/rate_hz") in found
    assert any(problem.node_id == "x" and "teleporter" in problem.message for problem in caught.value.problems)


def test_a_secret_not_given_is_a_located_problem_not_a_stand_in() -> None:
    with pytest.raises(FlowInvalid) as caught:
        compile_apart_blocking(json.dumps(DOC), include_plugins=False, secrets_from_env=False)
    (problem,) = caught.value.problems
    assert (problem.code, problem.pointer, problem.node_id) == ("unknown_secret", "/nodes/2/config/dsn", "db")


def test_no_gateway_entry_point_imports_the_compiler() -> None:
    entry_points = ["run", "standalone", "agent", "gateway", "worker"]
    imports = "; ".join(f"import streamforge.runtime.gateway.{module}" for module in entry_points)
    check = f"import sys; {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'networkx'"
    check += " or m == 'streamforge.engine.compiler'))"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


@pytest.mark.parametrize(
    ("executable", "said"),
    [("/nonexistent/python3", "did not start"), ("/bin/false", "exited with 1"), ("/bin/true", "not JSON")],
)
async def test_a_compiler_that_cannot_run_is_its_own_error_not_a_problem_of_the_flow(
    executable: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", executable)
    with pytest.raises(CompilerFailed, match=said):
        await compile_apart(json.dumps(DOC), include_plugins=False)
    with pytest.raises(CompilerFailed):
        compile_apart_blocking(json.dumps(DOC), include_plugins=False, secrets_from_env=False)


async def test_an_agent_whose_compiler_cannot_run_touches_nothing_and_tries_the_state_again(
    gateway: Gateway, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the state's fault: NOT_APPLIED with the cause, nothing staged or deployed, and the etag not marked as
    tried, so the next poll applies it again; which it then does."""
    agent = SyncAgent(gateway, "http://127.0.0.1:9", tmp_path / "agent", "apart", health_settle_s=0.1)  # never called
    simulator = {"id": "sim", "type": "simulator", "config": {"signals": SIGNALS[:1], "rate_hz": 2}}
    flow = {"id": unique, "version": 2, "nodes": [simulator], "edges": []}
    state = {"etag": '"apart-1"', "flows": [flow]}
    try:
        monkeypatch.setattr(sys, "executable", "/bin/false")
        refused = await agent.apply(state)
        assert (refused.result, refused.etag) == ("NOT_APPLIED", '"apart-1"')
        assert refused.cause is not None and "flow compiler process exited with 1" in refused.cause
        assert agent.status.etag is None  # not tried: fetched and applied again at the next poll
        assert agent.cache.current() is None and gateway.plans == {}
        monkeypatch.undo()
        applied = await agent.apply(state)
        assert applied.result == "APPLIED", applied.cause
        assert agent.status.etag == '"apart-1"' and agent.running() == {unique: 2}
        assert agent.cache.current() is not None
    finally:
        await agent.aclose()


async def test_a_secret_that_will_not_unseal_is_not_applied_with_the_reason_and_syncing_goes_on(
    gateway: Gateway, unique: str, tmp_path: Path
) -> None:
    """#41 D3: a secret sealed to another key (the identity file replaced) raised out of the apply and killed the
    sync loop silently; the gateway ran on unmanaged from its cache. Now it is NOT_APPLIED naming the secret."""
    agent = SyncAgent(gateway, "http://127.0.0.1:9", tmp_path / "agent", "apart", health_settle_s=0.1)  # never called
    stranger = SealedBox(PrivateKey.generate().public_key).encrypt(b"postgresql://u:p@db/x")
    flow = {**DOC, "id": unique, "nodes": [{**DOC["nodes"][2], "config": {"dsn": {"$secret": f"{unique}.dsn"}}}],
            "edges": []}  # fmt: skip
    state = {"etag": '"sealed-1"', "flows": [flow], "secrets": {f"{unique}.dsn": base64.b64encode(stranger).decode(),
                                                                "broken": "not base64 at all"}}  # fmt: skip
    try:
        refused = await agent.apply(state)
        assert (refused.result, refused.transient) == ("NOT_APPLIED", False)
        assert refused.cause is not None and f"secret '{unique}.dsn' does not open with this gateway's key" in (
            refused.cause) and "secret 'broken'" in refused.cause  # fmt: skip
        assert agent.status.etag == '"sealed-1"' and gateway.plans == {}  # tried; nothing deployed
    finally:
        await agent.aclose()
