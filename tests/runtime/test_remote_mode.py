"""Remote mode: a standalone `streamforge control-plane` on one network host and two gateways on others (network
namespaces joined by veth pairs, so no loopback is shared), each gateway with the same local ports. Everything the
control plane shows or does for a gateway travels over the link the gateway opened: deploy to a label selector,
status, rates, debug taps, MCP, logs; a link cut with data flowing is noticed in seconds, and nothing is lost.

`STREAMFORGE_OUTAGE_S` sets the outage (default 20 s; the issue's soak is 180)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from mcp import Client, StdioServerParameters
from prometheus_client.parser import text_string_to_metric_families

from tests import netns
from tests.eventually import eventually
from tests.netns import NetHost, NetHostFactory
from tests.remote import GATEWAY_PORT, POLL_S, Remote, remote_fleet

net_hosts = netns.net_hosts

OUTAGE_S = float(os.environ.get("STREAMFORGE_OUTAGE_S", "20"))
RATE_HZ, SIGNALS = 10, 2  # the simulator: 20 readings a second on each gateway
FLOW = "remote_line"


async def inside(host: NetHost, url: str) -> str:
    """GET `url` from inside `host` (its own loopback): what the gateway itself serves there."""
    code = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    process = await asyncio.create_subprocess_exec(*host.argv([sys.executable, "-c", code]),
                                                   stdout=asyncio.subprocess.PIPE)  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, f"GET {url} inside {host.name} failed"
    return out.decode()


def counters(exposition: str) -> dict[str, float]:
    """`flow/node:direction` -> records counter, from a gateway's own /metrics text."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name in ("streamforge_node_records_in_total", "streamforge_node_records_out_total"):
                key = f"{sample.labels['flow']}/{sample.labels['node']}:{sample.name.split('_')[3]}"
                found[key] = found.get(key, 0.0) + sample.value
    return found


def flow_document() -> dict[str, Any]:
    signals = [{"asset_id": f"pump_{i}", "parameter": "pressure", "offset": 5, "amplitude": 1} for i in range(SIGNALS)]
    return {"format": "streamforge.flow/v1", "id": FLOW, "label": "remote", "version": 0,
            "nodes": [{"id": "sim", "type": "simulator", "x": 0, "y": 0,
                       "config": {"signals": signals, "rate_hz": RATE_HZ, "batch_size": 10}},
                      {"id": "val", "type": "validator", "x": 300, "y": 0, "config": {}}],
            "edges": [{"from": "sim:out", "to": "val:in"}]}  # fmt: skip


@pytest.fixture
async def remote(net_hosts: NetHostFactory, tmp_path: Path) -> AsyncIterator[Remote]:
    async with remote_fleet(net_hosts, tmp_path) as fleet:
        yield fleet


async def test_a_standalone_control_plane_drives_remote_gateways_over_their_own_links(remote: Remote) -> None:
    admin, a, b = remote.admin, remote.ids["plant_a"], remote.ids["plant_b"]
    assert all(g.event["health"].startswith(f"http://127.0.0.1:{GATEWAY_PORT}") for g in remote.gateways.values())
    saved = await admin.post("/flows", json=flow_document())
    assert saved.status_code == 201, saved.text

    # Deploy to a label selector: both gateways run it, each result in the answer.
    nowhere = await admin.post(f"/flows/{FLOW}/deploy")
    assert nowhere.status_code == 409 and nowhere.json()["error"]["code"] == "no_target"
    deployed = await admin.post(f"/flows/{FLOW}/deploy", json={"labels": {"site": "north"}})
    assert deployed.status_code == 200, deployed.text
    assert {g: r["result"] for g, r in deployed.json()["gateways"].items()} == {a: "APPLIED", b: "APPLIED"}
    status = (await admin.get(f"/flows/{FLOW}/status", params={"gateway": b})).json()
    assert status["gateway"] == b and status["deployed_version"] == 1
    assert {g: s["version"] for g, s in status["gateways"].items()} == {a: 1, b: 1}
    assert {n["node"]: n["status"] for n in status["nodes"]} == {"sim": "RUNNING", "val": "RUNNING"}

    # The live socket: per-gateway status with rates, and a debug tap of the other gateway's records.
    base = str(admin.base_url).replace("https://", "wss://").rstrip("/")
    async with websockets.connect(f"{base}/live?token={remote.token}", ssl=remote.ssl_context()) as live:
        await live.send(json.dumps({"subscribe": "status", "gateway": a}))
        await live.send(json.dumps({"tap": {"flow": FLOW, "node": "val", "port": "clean", "gateway": b}}))
        seen: dict[str, list[dict[str, Any]]] = {"status": [], "record": [], "tapped": []}
        while len(seen["record"]) < 5 or not any(s["rates"] for s in seen["status"]):
            message = json.loads(await asyncio.wait_for(live.recv(), 60))
            seen.setdefault(message["type"], []).append(message)
    assert {s["gateway"] for s in seen["status"]} == {a}
    assert seen["tapped"][0]["gateway"] == b and seen["tapped"][0]["topic"] == "telemetry.clean"
    assert seen["record"][0]["record"]["asset_id"].startswith("pump_")

    # Rates on the Health page equal each gateway's own /metrics within 10 %, though both use the same ports. Its
    # counters step as its workers publish (every 2 s), so its own rate is taken over 30 s.
    async def own_rate(name: str) -> float:
        host, metrics_url = remote.hosts[name], remote.gateways[name].event["metrics"]

        async def published() -> dict[str, float] | None:  # a worker's first counters come with its first publish
            found = counters(await inside(host, metrics_url))
            return found if f"{FLOW}/sim:out" in found else None

        first, started = await eventually(published, 30, what=f"{name}'s simulator counters"), time.monotonic()
        await asyncio.sleep(30)
        last, seconds = counters(await inside(host, metrics_url)), time.monotonic() - started
        return (last[f"{FLOW}/sim:out"] - first[f"{FLOW}/sim:out"]) / seconds

    own = dict(zip(remote.ids, await asyncio.gather(*(own_rate(name) for name in remote.ids)), strict=True))
    health = (await admin.get("/health")).json()
    for name, gateway_id in remote.ids.items():
        shown = next(g for g in health["gateways"] if g["gateway"] == gateway_id)
        rate = next(c for c in shown["components"] if c["component"] == f"{FLOW}/sim")["out_per_s"]
        assert abs(rate - own[name]) <= 0.1 * own[name], (name, rate, own[name])
        assert abs(own[name] - RATE_HZ * SIGNALS) <= 0.2 * RATE_HZ * SIGNALS, (name, own[name])
    scraped = (await admin.get(admin.base_url.copy_with(path="/metrics"))).text
    for gateway_id in (a, b):
        assert f'gateway="{gateway_id}"' in scraped and "streamforge_node_records_out_total" in scraped

    # MCP against the standalone control plane, through `streamforge mcp --ca`.
    command = StdioServerParameters(command=sys.executable, args=["-m", "streamforge.runtime.cli", "mcp", "--ca",
                                                                  str(remote.ca)],
                                    env={"STREAMFORGE_URL": str(admin.base_url.copy_with(path="/")),
                                         "STREAMFORGE_TOKEN": remote.token})  # fmt: skip
    async with Client(command) as mcp:

        async def call(tool: str, **arguments: Any) -> Any:
            return json.loads((await mcp.call_tool(tool, arguments)).content[0].text)  # type: ignore[union-attr]

        assert {g["id"] for g in (await call("list_gateways"))["device_data"]["values"]} == {a, b}
        samples = (await call("get_metrics", prefix="streamforge_node_records_out", gateway_id=b))["device_data"]
        samples = samples["values"]
        assert any(s["labels"].get("flow") == FLOW and s["value"] > 0 for s in samples), samples
        recent = await call("get_recent_records", topic="telemetry.clean", limit=5, gateway_id=a)
        assert len(recent["device_data"]["values"]) == 5, recent
        assert "ambiguous" in json.dumps(await call("get_metrics"))  # two gateways: it asks which

    # Link down with data flowing: OFFLINE within 3 missed heartbeats, commands refused at once, logs kept.
    host_a = remote.hosts["plant_a"]
    before_cut = counters(await inside(host_a, remote.gateways["plant_a"].event["metrics"]))
    cut_at = time.time()
    await host_a.link_down()
    asked = time.monotonic()
    refused = await admin.post(f"/flows/{FLOW}/nodes/sim/restart", json={"gateway": a})
    assert time.monotonic() - asked < 15 and refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "gateway_offline"
    again = time.monotonic()
    refused = await admin.post(f"/flows/{FLOW}/nodes/sim/restart", json={"gateway": a})
    assert time.monotonic() - again < 2 and "offline since" in refused.json()["error"]["message"]

    async def offline() -> bool:
        return any(g["id"] == a and g["health"] == "OFFLINE" for g in (await admin.get("/gateways")).json())

    await eventually(offline, 4 * POLL_S + 10, what="plant_a OFFLINE")
    logs = (await admin.get("/logs", params={"gateway": a, "limit": 500})).json()
    assert a in logs["unreachable"] and logs["lines"] and all(line["kept"] for line in logs["lines"])
    assert any("desired state applied" in line.get("message", "") for line in logs["lines"])
    own = (await admin.get("/logs", params={"gateway": "control-plane", "limit": 500})).json()["lines"]
    assert any(line["message"] == "control plane serving" for line in own)  # the control plane's own, kept too
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.time() - cut_at)))
    await host_a.link_up()
    outage_s = time.time() - cut_at

    async def back() -> bool:
        return any(g["id"] == a and g["health"] == "HEALTHY" for g in (await admin.get("/gateways")).json())

    await eventually(back, 60, what="plant_a back")

    # Nothing lost: the gateway produced all through the outage, and its validator took every reading.
    after = counters(await inside(host_a, remote.gateways["plant_a"].event["metrics"]))
    produced = after[f"{FLOW}/sim:out"] - before_cut[f"{FLOW}/sim:out"]
    assert produced >= 0.8 * RATE_HZ * SIGNALS * outage_s, (produced, outage_s)

    async def caught_up() -> bool:
        now = counters(await inside(host_a, remote.gateways["plant_a"].event["metrics"]))
        return now[f"{FLOW}/val:in"] >= after[f"{FLOW}/sim:out"]

    await eventually(caught_up, 30, what="plant_a's validator to take every reading")

    # The metrics history has a point every HISTORY_STEP_S while the gateway was reachable, none missing.
    history = (await admin.get(f"/gateways/{a}/metrics")).json()["points"]
    times = [point["at"] for point in history]
    reachable = [(t1 - t0) for t0, t1 in itertools.pairwise(times) if t1 < cut_at or t0 > cut_at + outage_s]
    assert len(times) >= 2 and all(gap < 30 + 2 * 5 for gap in reachable), times
    assert history[-1]["nodes"][f"{FLOW}/sim"]["records_out"] > 0

    # Deleting the flow unassigns it everywhere: both gateways stop it.
    assert (await admin.delete(f"/flows/{FLOW}")).status_code == 204
    assert (await admin.get("/assignments", params={"flow": FLOW})).json() == []

    async def stopped() -> bool:
        rows = (await admin.get("/gateways")).json()
        return all(FLOW not in row["running"] for row in rows)

    await eventually(stopped, 30, what="both gateways to stop the deleted flow")
