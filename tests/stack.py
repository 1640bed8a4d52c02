"""StreamForge's commands in subprocesses, as a user runs them: `streamforge up` (editor and MCP tests) and
`streamforge run` (crash tests), on the session's Kafka and registry or on an embedded broker of their own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from streamforge.runtime.kafka.access import CREDENTIALS_FILE, KafkaAccess
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka


@dataclass
class Stack:
    url: str
    password: str
    http: httpx.AsyncClient  # signed in as admin, base /api/v1
    event: dict[str, Any]

    async def token(self, username: str = "admin", password: str | None = None) -> str:
        login = await self.http.post("/auth/login", json={"username": username, "password": password or self.password})
        login.raise_for_status()
        token: str = login.json()["token"]
        return token

    async def user_token(self, username: str, role: str, scope: str = "api") -> str:
        """A new user of `role` and a named token for it (`mcp`: an agent's, that works only on /mcp)."""
        password = f"{username}-password-123"
        created = await self.http.post("/users", json={"username": username, "password": password, "role": role})
        assert created.status_code == 201, created.text
        session = {"Authorization": f"Bearer {await self.token(username, password)}"}
        issued = await self.http.post("/tokens", json={"name": f"{username}-token", "scope": scope},
                                     headers=session)  # fmt: skip
        token: str = issued.json()["token"]
        return token


@contextlib.asynccontextmanager
async def running_up(data: Path, demo: dict[str, Any], kafka: EmbeddedKafka, registry_url: str) -> AsyncIterator[Stack]:
    """Start `streamforge up` with `demo` as its first-start flow; Ctrl-C it afterwards."""
    (data / "demo.json").write_text(json.dumps(demo))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamforge.runtime.cli", "up", "--data-dir", str(data / "state"),
        *kafka.access.cli_arguments(), "--registry", registry_url, "--port", str(free_port()),
        "--demo", str(data / "demo.json"), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    password, event = "", None
    while event is None:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode().strip()
        assert line, "streamforge up exited early"
        if "password " in line:
            password = line.split("password ")[1].split(" ")[0]
        elif line.startswith("{") and json.loads(line)["event"] == "up":
            event = json.loads(line)
    try:
        async with httpx.AsyncClient(base_url=event["api"], timeout=60) as http:
            stack = Stack(event["url"], password, http, event)
            http.headers["Authorization"] = f"Bearer {await stack.token()}"
            yield stack
    finally:
        process.send_signal(signal.SIGINT)
        # `up` gives its gateway 90 s to stop cleanly (runtime/up.py): wait longer than that, or a slow but clean
        # stop under load looks like a hang.
        await asyncio.wait_for(process.communicate(), 150)


class ServiceProcess:
    """A long-running `streamforge` command in its own process group, started when its JSON `event` line is out."""

    def __init__(self, args: list[str], log: Path, ready_event: str, prefix: Sequence[str] = ()) -> None:
        self.args, self.log, self.ready_event = (
            [sys.executable, "-m", "streamforge.runtime.cli", *args],
            log,
            ready_event,
        )
        self.prefix = list(prefix)  # run through this first, e.g. `ip netns exec NAME` (tests/netns.py on_host)
        self.process: asyncio.subprocess.Process | None = None
        self.event: dict[str, Any] = {}
        self.lines: list[str] = []

    async def start(self) -> dict[str, Any]:
        with self.log.open("ab") as stderr:
            self.process = await asyncio.create_subprocess_exec(
                *self.prefix, *self.args, stdout=asyncio.subprocess.PIPE, stderr=stderr, start_new_session=True
            )
        assert self.process.stdout is not None
        while True:
            line = (await asyncio.wait_for(self.process.stdout.readline(), 120)).decode().strip()
            assert line, f"{self.args[3]} exited before it was ready: {self.log.read_text()[-3000:]}"
            self.lines.append(line)
            if line.startswith("{") and json.loads(line).get("event") == self.ready_event:
                self.event = json.loads(line)
                return self.event

    def local_token(self) -> dict[str, str]:
        """The header a gateway's own port wants (W2): its local token, from the file its event names."""
        return {"Authorization": f"Bearer {Path(self.event['token_file']).read_text().strip()}"}

    async def kill(self) -> None:
        """SIGKILL of the whole process group: nothing of it gets to clean up."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    async def interrupt(self) -> int:
        """SIGINT to the whole process group, as a terminal's Ctrl-C; the exit code once it has stopped."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        return await asyncio.wait_for(self.process.wait(), 90)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 90)


class GatewayProcess(ServiceProcess):
    """`streamforge run FLOW`; `kafka` None: with its own embedded broker."""

    def __init__(self, flow: Path, data_dir: Path, registry_url: str, kafka: KafkaAccess | None = None) -> None:
        args = ["run", str(flow), "--data-dir", str(data_dir), "--registry", registry_url, "--port", str(free_port())]
        super().__init__([*args, *kafka.cli_arguments()] if kafka else args,
                         data_dir.parent / f"{data_dir.name}.stderr", "running")  # fmt: skip
        self.data_dir, self.existing_kafka = data_dir, kafka

    @property
    def kafka(self) -> KafkaAccess:
        """Its broker: the one it was given, or its embedded one with the login beside that broker's data."""
        if self.existing_kafka is not None:
            return self.existing_kafka
        return KafkaAccess.load(str(self.event["kafka"]), self.data_dir / "kafka" / CREDENTIALS_FILE)

    @property
    def health_url(self) -> str:
        return str(self.event["health"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(headers=self.local_token()) as http:
            return dict((await http.get(self.health_url)).json())

    async def kill(self, group: bool = False) -> None:
        """SIGKILL: no clean shutdown, no final commit. `group`: its whole process group, as `kill -9 -PGID`."""
        if group:
            await super().kill()
            return
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
