"""Benchmark: 10,000 simulated gateways pushing heartbeats with rates (config polls with ETag, and metrics pushed over
their events websockets) against the control plane, vs a bare Starlette app carrying the same sockets.

Run: .venv/bin/python bench/bench_fleet.py [--gateways 10000] [--rate 333] [--seconds 20] [--push-interval 5]

10,000 gateways polling every 30 s is 333 requests/s. Each simulated gateway is registered for real (enrolment
key, its own X25519 key, a JWT) and fetches its desired state once (200 + ETag). Then each opens its events websocket
(`/api/v1/gateways/{id}/events` with its JWT and the gateway's own connect settings: pings both ways every 5 s,
per-message deflate); IDLE_S later it starts pushing a MetricsPush every push interval ±20 %: a 5-node gateway's
Prometheus text, made once from runtime/gateway/metrics.NodeMetrics (its size is reported), whose record counters rise
at a fixed rate per node (NODES), with those counters as `nodes`. One interval later (each gateway has pushed once)
the timed phase sends paced `POST /api/v1/gateways/{id}/sync` heartbeats with `If-None-Match` (304s) while the pushes
go on, open loop: latency counts from each request's scheduled time, so a stall is not hidden by the generator
waiting for it. Those requests go out on keep-alive connections written directly (Links), not through httpx, which
cost the generator 3-6 ms of CPU per request here and could not offer 333/s.

The baseline is a bare Starlette app in its own process, served by the control plane's own serve_app (uvicorn, same
ping settings): it answers the syncs with a constant and accepts the same websockets, json.loads each push and counts
it, so it carries the same socket load and does no work. One server's sockets are open at a time (bare first).
Reported: sync p50/p99 of both and their ratio; pushes/s offered, sent and (bare app) received; how many sockets were
open every 5 s and how the closed ones closed; for the control plane after the phase, which of a sample of gateways
have `rates` (GET /api/v1/gateways/{id}/metrics) matching the configured counter rates, how many gateways GET /metrics
shows, how long that scrape takes and how many sockets are still open after it; each server's RSS (VmRSS) before its
sockets open, with them open, at the end of the phase and the peak (sampled every second); and per stage (opening the
sockets, idle, warm-up, timed) each server's CPU in cores, the machine's, and what everything else took of it.

The harness ceiling is the same generator unpaced against the bare endpoint, before any socket is open: figures near
it measure the generator, not the control plane. One generator process also holds every socket, answers every ping
and sends every push: on a 2-core machine, driving 10,000 sockets is itself a limit, and it shares the cores with the
server under test. Its CPU share per stage (time.process_time / wall time: 1.0 is one core saturated) and its
event-loop lag are reported; near 1.0 the sent push rate falls short of gateways / interval, pongs go late (the
servers close a socket whose pong is 5 s late) and latencies include its own queueing. Work elsewhere on the machine
(`others_cpu_cores`) starves both the same way: figures from a busy machine are not the control plane's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from nacl.public import PrivateKey
from prometheus_client import generate_latest
from prometheus_client.utils import floatToGoString
from websockets.asyncio.client import ClientConnection

from streamforge.runtime.gateway.metrics import NodeMetrics
from streamforge.runtime.gateway.runners.status import NodeStatus
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.protocol import METRICS_PUSH_S, PING_INTERVAL_S, PING_TIMEOUT_S, PROTOCOL

BATCH = 32  # requests in flight while registering: httpx's pool slows down with many waiters
SOCKET_BATCH = 100  # websockets opened at a time
RATES_SAMPLE = 100  # gateways whose rates are checked on the control plane's API after the phase
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)
IDLE_S = 5.0  # the sockets open, before any push: what holding them costs each server
JITTER = 0.2  # each push interval is the nominal one ±20 %
GO_FLOAT: Callable[[float], str] = floatToGoString  # how prometheus_client writes a value (it is untyped)

HEARTBEAT = {"status": "HEALTHY", "version": "0.1.0", "flows": {"line_1": 3}, "previous": {"line_1": 2},
             "kafka": "HEALTHY", "disk": {"total": 64_000_000_000, "used": 9_000_000_000, "free": 55_000_000_000},
             "nodes": [{"flow": "line_1", "node": n, "type": "modbus_tcp", "status": "RUNNING", "restarts": 0,
                        "last_error": None} for n in ("plc_1", "plc_2", "validator", "agg", "db")]}  # fmt: skip

FLOW = "line_1"
# The heartbeat's five nodes: (node, records in/s, records out/s, its output port). Sources consume nothing.
NODES = (("plc_1", 0.0, 10.0, "out"), ("plc_2", 0.0, 10.0, "out"), ("validator", 20.0, 20.0, "valid"),
         ("agg", 20.0, 2.0, "out"), ("db", 2.0, 2.0, "write"))  # fmt: skip

BARE_APP = """
import asyncio, json, sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocketDisconnect
from streamforge.runtime.http import serve_app

counts = {"sockets": 0, "pushes": 0, "bytes": 0}

async def sync(request):
    await request.body()
    return Response(status_code=304, headers={"ETag": '"constant"'})

async def events(socket):
    await socket.accept()
    counts["sockets"] += 1
    try:
        while True:
            text = await socket.receive_text()
            counts["bytes"] += len(text)
            counts["pushes"] += json.loads(text).get("type") == "metrics"
    except WebSocketDisconnect:
        pass
    finally:
        counts["sockets"] -= 1

async def count(request):
    return JSONResponse(counts)

async def main():
    app = Starlette(routes=[Route("/api/v1/gateways/{gateway}/sync", sync, methods=["POST"]), Route("/count", count),
                            WebSocketRoute("/api/v1/gateways/{gateway}/events", events)])
    async with serve_app(app, host="127.0.0.1", port=int(sys.argv[1]), websockets=True):
        await asyncio.Event().wait()

asyncio.run(main())
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


class Links:
    """`size` keep-alive HTTP/1.1 connections to one server for the timed requests: precomputed bytes out, the
    status line and Content-Length in. httpx cost this generator 3-6 ms of CPU per request (measured here: 172
    requests/s when 333/s were paced at a bare endpoint, no socket open): with it, the generator was the limit."""

    def __init__(self, url: str, size: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.host, self.port, self.reconnects = host, int(port), 0
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(size):
            self.idle.put_nowait(None)

    @staticmethod
    async def _exchange(link: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> int:
        link[1].write(request)
        head = await link[0].readuntil(b"\r\n\r\n")
        length = CONTENT_LENGTH.search(head)
        if length:
            await link[0].readexactly(int(length.group(1)))
        return int(head[9:12])

    async def post(self, request: bytes) -> int:
        """The status of one request; on a keep-alive connection the server closed meanwhile, once more on a new one
        (counted in `reconnects`)."""
        link = await self.idle.get()
        try:
            if link is not None:
                try:
                    return await self._exchange(link, request)
                except (ConnectionError, asyncio.IncompleteReadError):
                    link[1].close()
                    link, self.reconnects = None, self.reconnects + 1
            link = await asyncio.open_connection(self.host, self.port)
            return await self._exchange(link, request)
        except BaseException:
            if link is not None:
                link[1].close()
                link = None
            raise
        finally:
            self.idle.put_nowait(link)

    def close(self) -> None:
        while not self.idle.empty():
            link = self.idle.get_nowait()
            if link is not None:
                link[1].close()


async def paced(url: str, requests: list[tuple[str, dict[str, str]]], rate: float | None,
                concurrency: int = 64) -> dict[str, Any]:  # fmt: skip
    """Send `requests` at `rate` per second (None: as fast as `concurrency` allows); latency per request."""
    latencies: list[float] = []
    statuses: dict[int | str, int] = {}  # HTTP status, or the error that stood for it
    body = json.dumps(HEARTBEAT).encode()
    host = url.removeprefix("http://")
    raw = [f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
           .encode() + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
           for path, headers in requests]  # fmt: skip
    links = Links(url, concurrency)
    started = time.perf_counter()

    async def one(index: int, request: bytes) -> None:
        due = started + index / rate if rate else None
        if due is not None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        begin = due if due is not None else time.perf_counter()
        try:
            status: int | str = await asyncio.wait_for(links.post(request), 30)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as failed:  # counted: one failure ends no run
            status = type(failed).__name__
        latencies.append(time.perf_counter() - begin)
        statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(one(i, request) for i, request in enumerate(raw)))
    elapsed = time.perf_counter() - started
    links.close()
    latencies.sort()
    return {"requests": len(latencies), "rate": len(latencies) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "max_ms": 1000 * latencies[-1],
            "statuses": statuses, "reconnects": links.reconnects}  # fmt: skip


def servers(work: Path, cp_port: int, bare_port: int) -> tuple[subprocess.Popen[str], subprocess.Popen[str]]:
    """The control plane and the bare app, each in a uvicorn process of its own."""
    cli = [sys.executable, "-m", "streamforge.runtime.cli", "control-plane", "--data-dir", str(work), "--port",
           str(cp_port)]  # fmt: skip
    control_plane = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return control_plane, subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port)], text=True)


# -- the pushed metrics ---------------------------------------------------------------------------------------------


class Exposition:
    """A 5-node gateway's Prometheus text as its workers publish it (NodeMetrics, series set as the runners set
    them), made once and split around its record counters, which each push fills in for its time."""

    def __init__(self) -> None:
        metrics, slots = NodeMetrics(), dict[str, tuple[str, str, float]]()
        for node, records_in, records_out, port in NODES:
            labels = {"flow": FLOW, "node": node}
            for status in NodeStatus:
                metrics.status.labels(**labels, status=status.value).set(1 if status is NodeStatus.RUNNING else 0)
            metrics.restarts.labels(**labels)
            metrics.batch_seconds.labels(**labels).observe(0.004)
            if records_in:  # consumes a topic
                slots[f"{100_000 + len(slots)}.125"] = (f"{FLOW}/{node}", "records_in", records_in)
                metrics.records_in.labels(**labels).inc(100_000 + len(slots) - 1 + 0.125)
                metrics.lag.labels(**labels).set(12)
            else:  # a source
                metrics.source_readings.labels(**labels, quality="GOOD").inc(1000)
                metrics.source_poll_seconds.labels(**labels).observe(0.02)
                metrics.source_last_reading.labels(**labels).set(time.time())
            if port == "write":  # a sink
                metrics.sink_circuit_state.labels(**labels).set(0)
                metrics.sink_write_seconds.labels(**labels).observe(0.008)
            slots[f"{100_000 + len(slots)}.125"] = (f"{FLOW}/{node}", "records_out", records_out)
            metrics.records_out.labels(**labels, port=port).inc(100_000 + len(slots) - 1 + 0.125)
        split = re.split(r"(1000\d\d\.125)", generate_latest(metrics.registry).decode())
        self.pieces = [json.dumps(piece)[1:-1] for piece in split[::2]]  # between the values, as in a JSON string
        self.slots = [slots[sentinel] for sentinel in split[1::2]]  # (`flow/node`, field, per second) of each value
        assert len(self.slots) == len(slots), "a record counter is missing from the exposition"

    def push(self, started: float) -> str:
        """The MetricsPush a gateway whose nodes started at `started` sends now: its exposition, and the node
        counters read from it."""
        now = time.time()
        values = [per_s * (now - started) for _, _, per_s in self.slots]
        text = self.pieces[0] + "".join(GO_FLOAT(value) + piece
                                        for value, piece in zip(values, self.pieces[1:], strict=True))  # fmt: skip
        nodes: dict[str, dict[str, float]] = {f"{FLOW}/{node}": {"records_in": 0.0, "at": now} for node, *_ in NODES}
        for (key, name, _), value in zip(self.slots, values, strict=True):
            nodes[key][name] = value
        return (f'{{"type": "metrics", "protocol": "{PROTOCOL}", "at": {now!r}, "exposition": "{text}", '
                f'"nodes": {json.dumps(nodes)}}}')  # fmt: skip


def plausible(rates: dict[str, dict[str, float]]) -> bool:
    """Every node's rates within 5 % of NODES."""
    for node, records_in, records_out, _ in NODES:
        got = rates.get(f"{FLOW}/{node}")
        if got is None:
            return False
        for name, want in (("in_per_s", records_in), ("out_per_s", records_out)):
            if abs(got.get(name, -1.0) - want) > max(0.05 * want, 0.01):
                return False
    return True


# -- the servers' processes and the generator ----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine since boot: every process, not only this benchmark's."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def runtime_version() -> dict[str, str]:
    """The commit, and a digest of runtime/'s uncommitted changes (new files by name): the figures belong to that
    code."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True).stdout

    diff = git("diff", "HEAD", "--", "runtime") + git("ls-files", "--others", "--exclude-standard", "runtime")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "runtime_changes_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else "none"}  # fmt: skip


def raise_fd_limit(needed: int) -> dict[str, Any]:
    """One descriptor per socket here and in the server: raise the soft limit (the servers inherit it) if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = {"soft_before": soft, "hard": hard, "needed": needed, "raised_to": None}
    if soft < needed:
        wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        limit["raised_to"] = wanted
    return limit


Mark = tuple[float, float, float, int, int]  # wall, generator CPU, server CPU, machine busy and total jiffies


def mark(pid: int) -> Mark:
    return time.perf_counter(), time.process_time(), cpu_s(pid), *machine_jiffies()


def cpu_since(pid: int, then: Mark) -> dict[str, float]:
    """CPU since `then`: the generator's share of one core, the server's cores, the machine's busy share and the
    cores everything else on the machine took (another workload there shows here)."""
    wall, generator, server, busy, total = (now - before for now, before in zip(mark(pid), then, strict=True))
    machine = busy / max(total, 1)
    return {"s": round(wall, 1), "generator_cpu_share": round(generator / wall, 2),
            "server_cpu_cores": round(server / wall, 2), "machine_cpu_busy": round(machine, 2),
            "others_cpu_cores": round((os.cpu_count() or 1) * machine - (generator + server) / wall, 2)}  # fmt: skip


@dataclass
class Watch:
    """While a phase runs: the server's RSS every second (peak), how many of the sockets are open every second, and
    the generator's event-loop lag (ticks of 100 ms)."""

    pid: int
    sockets: list[ClientConnection]
    peak_rss_mb: float = 0.0
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the phase, sockets open)
    lags: list[float] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _sample(self) -> None:
        began = time.perf_counter()
        while True:
            self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))
            open_now = sum(s.close_code is None for s in self.sockets)
            self.timeline.append((round(time.perf_counter() - began, 1), open_now))
            await asyncio.sleep(1.0)

    async def _lag(self) -> None:
        while True:
            due = time.perf_counter() + 0.1
            await asyncio.sleep(0.1)
            self.lags.append(time.perf_counter() - due)

    def taken_lags(self) -> dict[str, float] | None:
        """The lag since the last call, in ms."""
        lags, self.lags = sorted(self.lags), []
        if not lags:
            return None
        p99 = lags[int(0.99 * (len(lags) - 1))]
        return {"p50": round(1000 * statistics.median(lags), 1), "p99": round(1000 * p99, 1),
                "max": round(1000 * lags[-1], 1)}  # fmt: skip

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sample()), asyncio.create_task(self._lag())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.peak_rss_mb = max(self.peak_rss_mb, rss_mb(self.pid))


@dataclass
class Pushes:
    """What the simulated gateways sent over their events sockets, and which sockets closed under them."""

    sent: int = 0
    bytes: int = 0
    lost: dict[str, int] = field(default_factory=dict)  # close code or error -> sockets


async def open_sockets(ws_url: str, registered: list[dict[str, Any]], opened: list[ClientConnection]) -> dict[str, int]:
    """Every gateway's events socket into `opened`, SOCKET_BATCH at a time, as the gateway opens it
    (runtime/gateway/agent.py); why any was refused."""
    refused: dict[str, int] = {}

    async def one(gateway: dict[str, Any]) -> ClientConnection:
        return await websockets.connect(f"{ws_url}/api/v1/gateways/{gateway['gateway_id']}/events",
                                        additional_headers={"Authorization": f"Bearer {gateway['token']}"},
                                        open_timeout=30, ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                                        max_size=2**20, proxy=None)  # fmt: skip

    for start in range(0, len(registered), SOCKET_BATCH):
        for result in await asyncio.gather(*(one(g) for g in registered[start : start + SOCKET_BATCH]),
                                           return_exceptions=True):  # fmt: skip
            if isinstance(result, BaseException):
                why = f"{type(result).__name__}: {str(result)[:80]}"
                refused[why] = refused.get(why, 0) + 1
            else:
                opened.append(result)
    return refused


def closings(sockets: list[ClientConnection]) -> dict[str, int]:
    """How the closed sockets closed: close code and reason -> sockets."""
    found: dict[str, int] = {}
    for socket in sockets:
        if socket.close_code is not None:
            why = f"{socket.close_code} {socket.close_reason}".strip()
            found[why] = found.get(why, 0) + 1
    return found


@dataclass
class Held:
    """The sockets of a phase and their pushes, which go on until close(): a gateway silent for LINK_SILENCE_S is
    closed by the control plane, so the checks after the phase run with the pushes still going."""

    sockets: list[ClientConnection]
    pushers: list[asyncio.Task[None]]

    async def close(self) -> None:
        for pusher in self.pushers:
            pusher.cancel()
        await asyncio.gather(*self.pushers, return_exceptions=True)
        for start in range(0, len(self.sockets), 1000):
            await asyncio.gather(*(s.close() for s in self.sockets[start : start + 1000]), return_exceptions=True)


async def push(socket: ClientConnection, exposition: Exposition, interval: float, pushes: Pushes) -> None:
    """One gateway's metrics pushes, the first at a random point of the first interval (gateways start apart)."""
    started = time.time() - random.uniform(600, 86_400)  # its nodes have been running for a while
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        message = exposition.push(started)
        try:
            await socket.send(message)
        except websockets.ConnectionClosed as closed:
            code = str(closed.rcvd.code if closed.rcvd else closed.sent.code if closed.sent else "no close frame")
            pushes.lost[code] = pushes.lost.get(code, 0) + 1
            return
        pushes.sent += 1
        pushes.bytes += len(message)
        await asyncio.sleep(interval * random.uniform(1 - JITTER, 1 + JITTER))


Polls = list[tuple[str, dict[str, str]]]  # (path, headers) of each paced heartbeat


async def phase(name: str, url: str, pid: int, registered: list[dict[str, Any]], polls: Polls, rate: float,
                interval: float, exposition: Exposition) -> tuple[dict[str, Any], Held]:  # fmt: skip
    """Open every gateway's events socket to one server, hold them IDLE_S, start the pushes, and after one interval
    send the paced heartbeats while they go on. The sockets are left open and pushing (the caller checks, then
    closes them)."""
    print(f"{name}: opening {len(registered)} events sockets", file=sys.stderr)
    sockets: list[ClientConnection] = []
    watch = Watch(pid, sockets)
    watch.start()
    rss_before, began = rss_mb(pid), mark(pid)
    refused = await open_sockets(url.replace("http://", "ws://", 1), registered, sockets)
    cpu, lags = {"opening": cpu_since(pid, began)}, {"opening": watch.taken_lags()}
    rss_connected, began = rss_mb(pid), mark(pid)
    await asyncio.sleep(IDLE_S)  # the sockets alone: pings, and whatever the server does for an open socket
    cpu["idle"], lags["idle"] = cpu_since(pid, began), watch.taken_lags()
    began = mark(pid)
    pushes = Pushes()
    pushers = [asyncio.create_task(push(s, exposition, interval, pushes)) for s in sockets]
    await asyncio.sleep(interval)  # every gateway has pushed once: the push load is steady
    cpu["warm_up"], lags["warm_up"] = cpu_since(pid, began), watch.taken_lags()
    print(f"{name}: {len(sockets)} sockets open in {cpu['opening']['s']} s, timed phase", file=sys.stderr)
    count_url = f"{url}/count" if name == "bare" else None
    async with httpx.AsyncClient(timeout=60) as http:
        received = (await http.get(count_url)).json() if count_url else None
        sent, began = pushes.sent, mark(pid)
        sync = await paced(url, polls, rate)
        cpu["timed"], lags["timed"], sent = cpu_since(pid, began), watch.taken_lags(), pushes.sent - sent
        received_after = (await http.get(count_url)).json() if count_url else None
    rss_end, closed, timed_s = rss_mb(pid), closings(sockets), cpu["timed"]["s"]
    await watch.stop()
    report: dict[str, Any] = {
        "sockets": {"opened": len(sockets), "refused": refused, "open_s": cpu["opening"]["s"],
                    "lost_to_a_push": dict(pushes.lost), "closed_at_end": closed,
                    "open_every_5s": watch.timeline[::5]},
        "sync": sync,
        "pushes": {"offered_per_s": round(len(sockets) / interval, 1), "sent_per_s": round(sent / timed_s, 1),
                   "sent_total": pushes.sent, "mean_bytes": round(pushes.bytes / max(pushes.sent, 1))},
        "server_rss_mb": {"before_sockets": round(rss_before, 1), "sockets_open": round(rss_connected, 1),
                          "end_of_phase": round(rss_end, 1), "peak": round(watch.peak_rss_mb, 1)},
        "cpu": cpu, "generator_loop_lag_ms": lags, "generator_rss_mb": round(rss_mb(os.getpid()), 1),
        "loadavg": os.getloadavg(),
    }  # fmt: skip
    if received is not None and received_after is not None:
        report["pushes"]["received_per_s"] = round((received_after["pushes"] - received["pushes"]) / timed_s, 1)
        report["sockets"]["held_by_server_at_end"] = received_after["sockets"]
    return report, Held(sockets, pushers)


async def check_control_plane(url: str, admin: dict[str, str], registered: list[dict[str, Any]],
                              sockets: list[ClientConnection]) -> dict[str, Any]:  # fmt: skip
    """After the phase, the pushes still going: do sampled gateways show plausible rates, and does /metrics carry the
    fleet's series? A request that fails is counted, not fatal (a fresh client: the registration one sat idle)."""
    sample = registered[:: max(1, len(registered) // RATES_SAMPLE)][:RATES_SAMPLE]
    with_rates, good, errors, example = 0, 0, dict[str, int](), None
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for gateway in sample:
            try:
                answer = await http.get(f"/api/v1/gateways/{gateway['gateway_id']}/metrics", headers=admin)
                answer.raise_for_status()
            except httpx.HTTPError as failed:
                errors[type(failed).__name__] = errors.get(type(failed).__name__, 0) + 1
                continue
            rates = answer.json()["rates"]
            with_rates += bool(rates)
            good += plausible(rates)
            example = example or rates
        open_before = sum(s.close_code is None for s in sockets)
        began, text, status = time.perf_counter(), "", "no answer"
        try:
            scrape = await http.get("/metrics", timeout=600)
            text, status = scrape.text, str(scrape.status_code)
        except httpx.HTTPError as failed:
            status = type(failed).__name__
        scrape_s = time.perf_counter() - began
    labelled = set(re.findall(r'streamforge_node_records_out_total\{[^}]*gateway="([^"]+)"', text))
    await asyncio.sleep(2 * (PING_INTERVAL_S + PING_TIMEOUT_S))  # a socket whose pings went unanswered is closed by now
    return {"rates_sample": len(sample), "rates_non_empty": with_rates, "rates_plausible": good,
            "rates_errors": errors, "rates_example": example, "metrics_scrape_s": round(scrape_s, 2),
            "metrics_status": status, "metrics_bytes": len(text.encode()),
            "metrics_gateways_with_pushed_series": len(labelled), "sockets_open_before_scrape": open_before,
            "sockets_still_open_after_scrape": sum(s.close_code is None for s in sockets),
            "sockets_closed_after_scrape": closings(sockets)}  # fmt: skip


async def main(gateways: int, rate: float, seconds: float, interval: float) -> dict[str, Any]:
    loadavg = os.getloadavg()  # anything else running on the machine shows here and in each phase's others_cpu_cores
    fd_limit, version = raise_fd_limit(gateways + 1024), runtime_version()  # before the servers start: they inherit it
    exposition = Exposition()
    sample_push = exposition.push(time.time() - 3600)
    exposition_bytes = len(json.loads(sample_push)["exposition"].encode())
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
            key = (await http.post("/api/v1/enrolment-keys", json={"ttl_s": 3600, "uses": gateways},
                                   headers=admin)).json()  # fmt: skip
            began = time.perf_counter()
            registered: list[dict[str, Any]] = []
            for start in range(0, gateways, BATCH):
                registered += await asyncio.gather(*(register(http, key["enrolment_key"], i)
                                                     for i in range(start, min(start + BATCH, gateways))))  # fmt: skip
            registration_s = time.perf_counter() - began
            print(f"{gateways} gateways registered in {registration_s:.0f} s", file=sys.stderr)
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
            ceilings = [await paced(bare_url, polls[: min(count, 3000)], None, c) for c in (4, 16, 64)]  # the best
            ceiling = max(ceilings, key=lambda run: run["rate"])
            # One server's sockets at a time: the generator holds each gateway's socket once, as a fleet would.
            baseline, held = await phase("bare", bare_url, bare.pid, registered, polls, rate, interval, exposition)
            await held.close()
            streamforge, held = await phase("streamforge", cp_url, control_plane.pid, registered, polls, rate,
                                          interval, exposition)  # fmt: skip
            print("streamforge: checking rates and /metrics", file=sys.stderr)
            streamforge["check"] = await check_control_plane(cp_url, admin, registered, held.sockets)
            streamforge["server_rss_mb"]["after_scrape"] = round(rss_mb(control_plane.pid), 1)
            await held.close()
    finally:
        for process in (control_plane, bare):
            process.terminate()
        for process in (control_plane, bare):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                print(f"process {process.pid} still running 30 s after SIGTERM: killed", file=sys.stderr)
                process.kill()
                process.wait()
    return {"version": version, "gateways": gateways, "offered_rate": rate, "seconds": seconds,
            "push_interval_s": interval, "push_jitter": JITTER, "exposition_bytes": exposition_bytes,
            "push_bytes": len(sample_push.encode()),
            "node_rates": {f"{FLOW}/{n}": {"in_per_s": i, "out_per_s": o} for n, i, o, _ in NODES},
            "fd_limit": fd_limit, "cpus": os.cpu_count(), "loadavg_at_start": loadavg, "registration_s": registration_s,
            "harness_ceiling_rate": ceiling["rate"], "bare": baseline, "streamforge": streamforge,
            "p50_ratio": streamforge["sync"]["p50_ms"] / baseline["sync"]["p50_ms"],
            "p99_ratio": streamforge["sync"]["p99_ms"] / baseline["sync"]["p99_ms"]}  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=333.0, help="requests per second offered")
    parser.add_argument("--seconds", type=float, default=20.0, help="the timed phase")
    parser.add_argument("--push-interval", type=float, default=METRICS_PUSH_S, help="seconds between a gateway's "
                        "metrics pushes (±20 %%)")  # fmt: skip
    args = parser.parse_args()
    report = asyncio.run(main(args.gateways, args.rate, args.seconds, args.push_interval))
    print(json.dumps(report, indent=2))
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / f"fleet-{int(time.time())}.json").write_text(json.dumps(report, indent=2))
