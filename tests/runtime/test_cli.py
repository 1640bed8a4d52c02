"""The `streamforge` command as a user runs it: help, broker lifecycle, and the round trip."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from streamforge.runtime.kafka.supervisor import EmbeddedKafka

CLI = [sys.executable, "-m", "streamforge.runtime.cli"]


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_help_explains_every_subcommand() -> None:
    top = run("--help").stdout
    for command in ("run", "flow", "node", "kafka", "registry", "roundtrip"):
        assert command in top
    kafka = run("kafka", "--help").stdout
    for command in ("install", "start", "stop", "status"):
        assert command in kafka


def test_start_status_stop_and_restart_on_same_storage(tmp_path: Path) -> None:
    data = str(tmp_path / "kafka")
    started = run("kafka", "start", "--data-dir", data)
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    try:
        assert first["ready"] is True and first["version"] == "4.4.0"
        status = run("kafka", "status", "--data-dir", data)
        assert status.returncode == 0
        assert json.loads(status.stdout) | {"installed": True} == {**first, "installed": True}
        assert run("kafka", "start", "--data-dir", data).returncode == 1  # already running
    finally:
        assert json.loads(run("kafka", "stop", "--data-dir", data).stdout)["stopped"] is True
    stopped = run("kafka", "status", "--data-dir", data)
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["ready"] is False
    meta = (tmp_path / "kafka" / "log" / "meta.properties").read_text()
    again = run("kafka", "start", "--data-dir", data)
    try:
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["bootstrap"] == first["bootstrap"]
        assert (tmp_path / "kafka" / "log" / "meta.properties").read_text() == meta
    finally:
        run("kafka", "stop", "--data-dir", data)


async def test_round_trip_against_an_existing_cluster(kafka: EmbeddedKafka, tmp_path: Path) -> None:
    args = ["roundtrip", "--data-dir", str(tmp_path), "--records", "300", *kafka.access.cli_arguments()]
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 180)
    stdout = out.decode()
    assert process.returncode == 0, err.decode()
    assert "round trip complete: 304/304 records" in stdout
    assert "UNCERTAIN" in stdout  # readings without device_time were downgraded
    for topic in ("telemetry.raw", "events.raw", "alarms.raw", "telemetry.1min", "dlq.telemetry"):
        assert f"from {topic}" in stdout
