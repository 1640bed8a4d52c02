"""Flows compiled in a short-lived child process, so the compiler never enters the long-running gateway.

A process keeps what it imported and most of what it parsed for as long as it runs: networkx and the parse of a
10,000-signal document were 11 MB of a gateway at 100 series and 16 MB at 10,000 (bench/bench_gateway_memory.py).
The child runs the one chain every caller uses (`compile_document`) with the same node types, and answers with
the plan or every problem, located; the gateway loads only the plan. Each deploy takes ~0.3 s longer for it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from typing import Any

from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import FlowInvalid, Problem

COMPILE_TIMEOUT_S = 120.0  # a 10,000-signal document compiles in ~2 s here
SECRET_ENV_PREFIX = "STREAMFORGE_SECRET_"


class CompilerFailed(RuntimeError):
    """The compiler process could not be started or gave no answer (not a problem of the document): try again."""


def secret_env_name(name: str) -> str:
    """Where `streamforge run` reads secret `name`: STREAMFORGE_SECRET_<NAME>, every other character as `_`."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _request(source: str | bytes, include_plugins: bool, secrets_from_env: bool) -> bytes:
    text = source.decode(errors="replace") if isinstance(source, bytes) else source
    request = {"source": text, "include_plugins": include_plugins, "secrets_from_env": secrets_from_env}
    return json.dumps(request).encode()


def _answer(out: bytes, returncode: int | None, err: bytes) -> ExecutionPlan:
    if returncode != 0:
        why = err.decode(errors="replace")[-2000:]
        raise CompilerFailed(f"the flow compiler process exited with {returncode}: {why}")
    try:
        answer = json.loads(out)
    except ValueError as unreadable:
        raise CompilerFailed(f"the flow compiler's answer is not JSON: {out[:200]!r}") from unreadable
    if "problems" in answer:
        raise FlowInvalid([Problem(**problem) for problem in answer["problems"]])
    return ExecutionPlan.from_wire(answer["plan"])


async def compile_apart(source: str | bytes, include_plugins: bool, secrets_from_env: bool = False) -> ExecutionPlan:
    """`source` (a flow document's JSON, secrets already resolved unless `secrets_from_env`) compiled in a child;
    FlowInvalid with every problem, as the compiler raised it."""
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as unstarted:
        raise CompilerFailed(f"the flow compiler process did not start: {unstarted}") from unstarted
    try:
        request = _request(source, include_plugins, secrets_from_env)
        out, err = await asyncio.wait_for(child.communicate(request), COMPILE_TIMEOUT_S)
    except TimeoutError as late:
        raise CompilerFailed(f"the flow compiler gave no answer in {COMPILE_TIMEOUT_S:.0f} s") from late
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    return _answer(out, child.returncode, err)


def compile_apart_blocking(source: str | bytes, include_plugins: bool, secrets_from_env: bool) -> ExecutionPlan:
    """compile_apart for a caller outside an event loop (`streamforge run`, before it starts one)."""
    try:
        done = subprocess.run([sys.executable, "-m", __name__], capture_output=True, timeout=COMPILE_TIMEOUT_S,
                              input=_request(source, include_plugins, secrets_from_env), check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as failed:
        raise CompilerFailed(f"the flow compiler process failed: {failed}") from failed
    return _answer(done.stdout, done.returncode, done.stderr)


def main() -> None:
    from streamforge.engine.compiler import compile_document
    from streamforge.engine.flow import load_flow
    from streamforge.engine.node_types import load_node_types

    request = json.loads(sys.stdin.buffer.read())

    def from_env(name: str) -> str | None:
        return os.environ.get(secret_env_name(name)) if request["secrets_from_env"] else None

    answer: dict[str, Any]
    try:
        document = load_flow(request["source"]).model_dump(by_alias=True)
        plan = compile_document(document, load_node_types(request["include_plugins"], deferred=True), from_env)
    except FlowInvalid as invalid:
        answer = {"problems": [asdict(problem) for problem in invalid.problems]}
    else:
        answer = {"plan": plan.to_wire()}
    sys.stdout.buffer.write(json.dumps(answer).encode())


if __name__ == "__main__":
    main()
