"""`streamforge up`: admin created once, demo flow stored and deployed, API behind auth, resumes after Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.eventually import eventually

CLI = [sys.executable, "-m", "streamforge.runtime.cli"]
FLOWS = Path(__file__).resolve().parents[2] / "flows"


async def start_up(data_dir: Path, kafka: EmbeddedKafka, registry_url: str, port: int
                   ) -> tuple[asyncio.subprocess.Process, list[str], dict[str, Any]]:  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *CLI, "up", "--data-dir", str(data_dir), *kafka.access.cli_arguments(), "--registry", registry_url,
        "--port", str(port), "--demo", str(FLOWS / "simulated_line.json"), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode().strip()
        assert line, "streamforge up exited early"
        lines.append(line)
        if line.startswith("{") and json.loads(line)["event"] == "up":
            return process, lines, json.loads(line)


async def stop(process: asyncio.subprocess.Process) -> str:
    process.send_signal(signal.SIGINT)  # Ctrl-C
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0
    return out.decode()


def descendants(pid: int) -> list[tuple[bytes, bytes]]:
    """(command line, environment) of every process under `pid`, from /proc (children of children too)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            with contextlib.suppress(OSError):  # gone meanwhile
                found.append((Path(f"/proc/{child}/cmdline").read_bytes(), Path(f"/proc/{child}/environ").read_bytes()))
            todo.append(child)
    return found


async def test_up_runs_the_demo_behind_auth_and_resumes(tmp_path: Path, kafka: EmbeddedKafka, registry_url: str
                                                        ) -> None:  # fmt: skip
    port = free_port()
    process, lines, event = await start_up(tmp_path, kafka, registry_url, port)
    try:
        password = lines[0].split("password ")[1].split(" ")[0]
        assert event["seeded"] == "simulated_line" and event["flows"] == ["simulated_line"]
        async with httpx.AsyncClient(base_url=event["api"], timeout=30) as http:
            assert (await http.get("/flows")).status_code == 401
            login = await http.post("/auth/login", json={"username": "admin", "password": password})
            headers = {"Authorization": f"Bearer {login.json()['token']}"}
            flows = (await http.get("/flows", headers=headers)).json()
            assert [(f["id"], f["version"], f["deployed_version"]) for f in flows] == [("simulated_line", 1, 1)]
            nodes: list[dict[str, Any]] = []

            async def all_running() -> bool:
                nodes[:] = (await http.get("/flows/simulated_line/status", headers=headers)).json()["nodes"]
                return {n["status"] for n in nodes} == {"RUNNING"}

            # A new consumer group reads the session's shared topics from their start (other tests' readings,
            # skipped): DEGRADED, truthfully behind by them, until it has caught up.
            await eventually(all_running, what="every node of the demo RUNNING", state=lambda: nodes)
        assert (await httpx.AsyncClient().get(event["health"])).json()["status"] in ("HEALTHY", "DEGRADED")
        # The local gateway's enrolment key went by a 0600 file it deleted: in no environment of any process of up's.
        assert not (tmp_path / "enrolment.key").exists()
        processes = descendants(process.pid)
        assert any(b"gateway" in command for command, _ in processes)
        assert any(b"streamforge.runtime.gateway.worker" in command for command, _ in processes)  # the demo's sources
        assert not [command for command, environment in processes if b"sfe_" in environment]
        # V8: the Kafka login went to the gateway and its workers as its 0600 file's path, never as the password.
        assert kafka.access.credentials is not None and kafka.access.credentials_file is not None
        secret = kafka.access.credentials.password.encode()
        assert not [command for command, environment in processes if secret in command or secret in environment]
        assert [command for command, _ in processes if str(kafka.access.credentials_file).encode() in command]
    finally:
        assert '"event": "stopped"' in await stop(process)
    again, lines, event = await start_up(tmp_path, kafka, registry_url, port)
    try:
        assert not any("password" in line for line in lines)  # the admin exists: no new password
        assert event["seeded"] is None and event["flows"] == ["simulated_line"]  # resumed, not re-seeded
        async with httpx.AsyncClient(base_url=event["api"], timeout=30) as http:
            login = await http.post("/auth/login", json={"username": "admin", "password": password})
            assert login.status_code == 200
    finally:
        await stop(again)
