"""Benchmark: gateway config polls with ETag against the control plane, vs a bare Starlette endpoint.

Run: .venv/bin/python bench/bench_fleet.py [--gateways 10000] [--rate 333] [--seconds 20]

10,000 gateways polling every 30 s is 333 requests/s. Each simulated gateway is registered for real (enrolment
key, its own X25519 key, a JWT), fetches its desired state once (200 + ETag), then the timed phase sends paced
`POST /api/v1/gateways/{id}/sync` heartbeats with `If-None-Match` (304s), open loop: latency counts from each
request's scheduled time, so a stall is not hidden by the generator waiting for it. The baseline is a bare
Starlette app answering a constant to the same requests, in its own uvicorn process like the control plane.
The harness ceiling is the same generator unpaced against that bare endpoint: figures near it measure the
generator, not the control plane.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from nacl.public import PrivateKey

from streamforge.runtime.kafka.broker import free_port

BATCH = 32  # requests in flight while registering: httpx's pool slows down with many waiters

HEARTBEAT = {"status": "HEALTHY", "version": "0.1.0", "flows": {"line_1": 3}, "previous": {"line_1": 2},
             "kafka": "HEALTHY", "disk": {"total": 64_000_000_000, "used": 9_000_000_000, "free": 55_000_000_000},
             "nodes": [{"flow": "line_1", "node": n, "type": "modbus_tcp", "status": "RUNNING", "restarts": 0,
                        "last_error": None} for n in ("plc_1", "plc_2", "validator", "agg", "db")]}  # fmt: skip

BARE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def sync(request):
    await request.body()
    return Response(status_code=304, headers={"ETag": '"constant"'})

app = Starlette(routes=[Route("/api/v1/gateways/{gateway}/sync", sync, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


async def wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    raise TimeoutError(url)


async def register(http: httpx.AsyncClient, key: str, index: int) -> dict[str, Any]:
    public = base64.b64encode(bytes(PrivateKey.generate().public_key)).decode()
    answer = await http.post("/api/v1/gateways/register", json={
        "name": f"bench-{index:05d}", "instance_id": f"bench-instance-{index:05d}", "secret": f"s{index}",
        "public_key": public, "labels": {"site": f"s{index % 50}"}, "node_types": {},
        "enrolment_key": key})  # fmt: skip
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


async def paced(url: str, requests: list[tuple[str, dict[str, str]]], rate: float | None,
                concurrency: int = 64) -> dict[str, Any]:  # fmt: skip
    """Send `requests` at `rate` per second (None: as fast as `concurrency` allows); latency per request."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    body = json.dumps(HEARTBEAT).encode()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(index: int, path: str, headers: dict[str, str]) -> None:
            due = started + index / rate if rate else None
            if due is not None:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            async with gate:
                begin = due if due is not None else time.perf_counter()
                response = await http.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
                latencies.append(time.perf_counter() - begin)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        await asyncio.gather(*(one(i, path, headers) for i, (path, headers) in enumerate(requests)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "rate": len(latencies) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "max_ms": 1000 * latencies[-1],
            "statuses": statuses}  # fmt: skip


def servers(work: Path, cp_port: int, bare_port: int) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """The control plane and the bare app, each in a uvicorn process of its own."""
    cli = [sys.executable, "-m", "streamforge.runtime.cli", "control-plane", "--data-dir", str(work), "--port",
           str(cp_port)]  # fmt: skip
    control_plane = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return control_plane, subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port)], text=True)


async def main(gateways: int, rate: float, seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    cp_port, bare_port = free_port(), free_port()
    control_plane, bare = servers(work, cp_port, bare_port)
    try:
        assert control_plane.stdout is not None
        password = control_plane.stdout.readline().split("password ")[1].split()[0]
        cp_url, bare_url = f"http://127.0.0.1:{cp_port}", f"http://127.0.0.1:{bare_port}"
        await wait_up(f"{cp_url}/health/live")
        await wait_up(f"{bare_url}/")
        async with httpx.AsyncClient(base_url=cp_url, timeout=60,
                                     limits=httpx.Limits(max_connections=32)) as http:  # fmt: skip
            login = await http.post("/api/v1/auth/login", json={"username": "admin", "password": password})
            admin = {"Authorization": f"Bearer {login.json()['token']}"}
            key = (await http.post("/api/v1/enrolment-keys", json={"ttl_s": 3600}, headers=admin)).json()
            began = time.perf_counter()
            registered: list[dict[str, Any]] = []
            for start in range(0, gateways, BATCH):
                registered += await asyncio.gather(*(register(http, key["enrolment_key"], i)
                                                     for i in range(start, min(start + BATCH, gateways))))  # fmt: skip
            registration_s = time.perf_counter() - began
            etags: dict[str, str] = {}
            for start in range(0, gateways, BATCH):  # each gateway's first poll: 200 with its state and ETag
                answers = await asyncio.gather(*(
                    http.post(f"/api/v1/gateways/{g['gateway_id']}/sync", json=HEARTBEAT,
                              headers={"Authorization": f"Bearer {g['token']}"})
                    for g in registered[start:start + BATCH]))  # fmt: skip
                for g, answer in zip(registered[start : start + BATCH], answers, strict=True):
                    etags[g["gateway_id"]] = answer.headers["ETag"]
        count = int(rate * seconds)
        polls = [(f"/api/v1/gateways/{g['gateway_id']}/sync",
                  {"Authorization": f"Bearer {g['token']}", "If-None-Match": etags[g["gateway_id"]]})
                 for g in (registered[i % gateways] for i in range(count))]  # fmt: skip
        # httpx's pool slows down with many waiters: the ceiling is the best of a few concurrencies.
        ceilings = [await paced(bare_url, polls[: min(count, 3000)], None, c) for c in (4, 8, 16)]
        ceiling = max(ceilings, key=lambda run: run["rate"])
        baseline = await paced(bare_url, polls, rate)
        streamforge = await paced(cp_url, polls, rate)
    finally:
        for process in (control_plane, bare):
            process.terminate()
            process.wait(30)
    return {"gateways": gateways, "offered_rate": rate, "seconds": seconds, "registration_s": registration_s,
            "harness_ceiling_rate": ceiling["rate"], "bare": baseline, "streamforge": streamforge,
            "p50_ratio": streamforge["p50_ms"] / baseline["p50_ms"],
            "p99_ratio": streamforge["p99_ms"] / baseline["p99_ms"]}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=333.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    report = asyncio.run(main(args.gateways, args.rate, args.seconds))
    print(json.dumps(report, indent=2))
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"fleet-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
