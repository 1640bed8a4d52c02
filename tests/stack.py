"""`streamforge up` in a subprocess, as a user runs it, on the session's Kafka and registry (editor and MCP tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

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

    async def user_token(self, username: str, role: str) -> str:
        """A new user of `role` and a named API token for it."""
        password = f"{username}-password-123"
        created = await self.http.post("/users", json={"username": username, "password": password, "role": role})
        assert created.status_code == 201, created.text
        session = {"Authorization": f"Bearer {await self.token(username, password)}"}
        issued = await self.http.post("/tokens", json={"name": f"{username}-token"}, headers=session)
        token: str = issued.json()["token"]
        return token


@contextlib.asynccontextmanager
async def running_up(data: Path, demo: dict[str, Any], kafka: EmbeddedKafka, registry_url: str) -> AsyncIterator[Stack]:
    """Start `streamforge up` with `demo` as its first-start flow; Ctrl-C it afterwards."""
    (data / "demo.json").write_text(json.dumps(demo))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamforge.runtime.cli", "up", "--data-dir", str(data / "state"),
        "--bootstrap", kafka.bootstrap, "--registry", registry_url, "--port", str(free_port()),
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
        await asyncio.wait_for(process.communicate(), 60)
