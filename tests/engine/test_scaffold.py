"""`streamforge node new`: the scaffolded package installs, passes its own tests, shows in the palette, runs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.serde import Decoder
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.eventually import eventually

CLI = [sys.executable, "-m", "streamforge.runtime.cli"]


def scaffold_and_install(tmp_path: Path, name: str, kind: str) -> dict[str, str]:
    """Scaffold with the CLI, pip-install into a private target dir; the env that sees the plugin."""
    package = tmp_path / name
    made = subprocess.run(
        [*CLI, "node", "new", name, "--kind", kind, "--dir", str(package)], capture_output=True, text=True, check=True
    )
    assert "node.py" in made.stdout
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
        capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.mark.parametrize("kind", ["processor", "source", "sink"])
def test_scaffolded_package_passes_its_own_tests_and_joins_the_palette(tmp_path: Path, kind: str) -> None:
    name = f"my_{kind}"
    env = scaffold_and_install(tmp_path, name, kind)
    tests = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            str(tmp_path / name / "tests"),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "1 passed" in tests.stdout
    palette = json.loads(
        subprocess.run([*CLI, "node", "list", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    entry = next(node for node in palette if node["type"] == name)
    assert entry["kind"] == kind and entry["origin"].startswith(f"package streamforge-node-my-{kind}")


def test_bad_names_and_existing_directories_are_refused(tmp_path: Path) -> None:
    bad = subprocess.run([*CLI, "node", "new", "My-Node"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 1 and "must be lower_snake_case" in bad.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    taken = subprocess.run(
        [*CLI, "node", "new", "ok_name", "--dir", str(tmp_path / "taken")], capture_output=True, text=True
    )
    assert taken.returncode == 1 and "is not empty" in taken.stderr


async def test_scaffolded_processor_runs_inside_a_flow(
    tmp_path: Path, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, registry_url: str, unique: str
) -> None:
    env = await asyncio.to_thread(scaffold_and_install, tmp_path, "scale_plus", "processor")
    flow_id = unique.replace("-", "_")[:60]
    flow = {
        "id": flow_id,
        "nodes": [
            {
                "id": "sim",
                "type": "simulator",
                "config": {
                    "signals": [
                        {"asset_id": "pump_1", "parameter": "pressure", "shape": "step", "offset": 5, "amplitude": 0}
                    ],
                    "rate_hz": 10,
                    "realtime": False,
                    "limit": 20,
                    "start_time": datetime(2026, 1, 29, tzinfo=UTC).isoformat(),
                },
            },
            {"id": "scale", "type": "scale_plus", "config": {"factor": 100, "unit": "kPa"}},
            {"id": "val", "type": "validator"},
        ],
        "edges": [{"from": "sim:out", "to": "scale:in"}, {"from": "scale:out", "to": "val:in"}],
    }
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(flow))
    gateway = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        str(path),
        "--data-dir",
        str(tmp_path / "gw"),
        *kafka.access.cli_arguments(),
        "--registry",
        registry_url,
        "--port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert gateway.stdout is not None
        assert json.loads(await asyncio.wait_for(gateway.stdout.readline(), 90))["event"] == "running"
        clean: list[tuple[float, str]] = []
        async with BatchConsumer(
            kafka.access, f"{flow_id}.check", ["telemetry.clean"], Decoder(registry), upstream=[(flow_id, "val")]
        ) as consumer:

            async def twenty() -> bool:
                batch = await consumer.next_batch(timeout_ms=500)
                clean.extend((m.record["value"], m.record["unit"]) for m in batch.records)
                return len(clean) >= 20

            await eventually(twenty, 30, 0, what="20 scaled readings", state=lambda: clean)
        assert clean == [(500.0, "kPa")] * 20
    finally:
        gateway.terminate()
        await gateway.wait()
