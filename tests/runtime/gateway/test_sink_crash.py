"""Every sink against its real destination, in a gateway: a run whose sink worker is SIGKILLed mid-stream ends with
the destination holding exactly what an uninterrupted run's holds (each record once, compared by content); a
destination that is down while data flows opens the circuit, lets the lag grow, and loses nothing; and the alert
router, killed between alarm transitions, pages once per transition.

(PostgreSQL, with an aggregator in front, is tests/runtime/test_crash_consistency.py; TimescaleDB is the same
tables and upserts, nodes/protocols/sql.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.testing import NodeHarness
from streamforge.nodes.simulator import Simulator
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.kafka.broker import free_port
from tests.destinations import CUSTOMER_USERS, Mailbox, Receiver, Services, committed_records, s3_objects
from tests.devices import running_plc
from tests.eventually import eventually

T0 = datetime(2026, 4, 2, 8, 0, tzinfo=UTC)
PER_SIGNAL = 300  # two signals at 100 Hz: 3 s of readings per run
SIGNALS = [
    {"asset_id": "pump_1", "parameter": "pressure", "offset": 5, "amplitude": 1},
    {"asset_id": "pump_2", "parameter": "flow", "shape": "random_walk", "offset": 100, "amplitude": 10},
]
FAST = {"timeout_s": 2, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
Content = Counter[tuple[str, str, str, float]]


def identity(record: dict[str, Any]) -> tuple[str, str, str, float]:
    """What a stored reading is, whichever destination holds it: asset, parameter, sequence number and value."""
    return record["asset_id"], record["parameter"], str(record["metadata"]["sim_seq"]), round(float(record["value"]), 9)


@dataclass
class Destination:
    """A sink's config (per run, so runs do not share a destination) and how to read back what a run left there."""

    config: Callable[[str], Awaitable[dict[str, Any]]]
    content: Callable[[str], Awaitable[Content]]


def http_destination(receiver: tuple[Receiver, str], **extra: Any) -> Destination:
    server, url = receiver

    async def config(run: str) -> dict[str, Any]:
        return {"url": f"{url}?run={run}", "batch_records": 40, "connection": FAST, **extra}

    async def content(run: str) -> Content:  # what the receiver keeps: a repeated idempotency key counted once
        kept: dict[str, list[dict[str, Any]]] = {}
        for request in server.requests:
            if request["status"] < 300 and request["query"] == f"run={run}":
                kept.setdefault(request["headers"]["idempotency-key"], request["records"])
        return Counter(identity(r) for records in kept.values() for r in records)

    return Destination(config, content)


def s3_destination(s3_endpoint: str, bucket: tuple[str, Any]) -> Destination:
    name, client = bucket

    async def config(run: str) -> dict[str, Any]:
        return {"bucket": name, "endpoint_url": s3_endpoint, "prefix": run, "region": "us-east-1",
                "access_key_id": "testing", "secret_access_key": "testing", "path_style": True,
                "roll_records": 50, "roll_age_s": 1, "connection": FAST}  # fmt: skip

    async def content(run: str) -> Content:
        found = await s3_objects(client, name)
        return Counter(identity(row) for key, rows in found.items() if key.startswith(f"{run}/") for row in rows)

    return Destination(config, content)


def kafka_destination(customer: Any) -> Destination:
    kafka, secure, pki = customer

    async def config(run: str) -> dict[str, Any]:
        return {"bootstrap": secure, "username": "gateway", "password": CUSTOMER_USERS["gateway"],
                "ca_file": str(pki.ca), "topics": {"telemetry": f"plant.{run}"}, "connection": FAST}  # fmt: skip

    async def content(run: str) -> Content:
        got = await committed_records(kafka, f"plant.{run}", 1)
        return Counter(identity(json.loads(value)) for _, value in got)

    return Destination(config, content)


@pytest.fixture(params=["http", "s3", "kafka"])
def destination(
    request: pytest.FixtureRequest, receiver: tuple[Receiver, str], s3_endpoint: str, bucket: tuple[str, Any],
    customer: Any,
) -> tuple[str, Destination]:  # fmt: skip
    """(sink type, its destination) for each sink this module runs."""
    sink_type: str = request.param
    made = {"http": lambda: http_destination(receiver), "s3": lambda: s3_destination(s3_endpoint, bucket),
            "kafka": lambda: kafka_destination(customer)}  # fmt: skip
    return sink_type, made[sink_type]()


async def expected() -> Content:
    """What the simulator produces with this config, run on its own: what every destination must end with."""
    async with NodeHarness(Simulator, simulator_config(realtime=False)) as simulator:
        while not simulator.node.exhausted:
            await simulator.poll()
    return Counter(identity(r) for r in simulator.captured["out"])


def simulator_config(realtime: bool = True) -> dict[str, Any]:
    return {"signals": SIGNALS, "rate_hz": 100, "limit": PER_SIGNAL, "start_time": T0.isoformat(), "batch_size": 20,
            "realtime": realtime}  # fmt: skip


def node_health(gateway: Gateway, flow: str, node: str) -> dict[str, Any]:
    return next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == node)


def sink_health(gateway: Gateway, flow: str) -> dict[str, Any]:
    return node_health(gateway, flow, "sink")


async def run_flow(gateway: Gateway, sink_type: str, destination: Destination, run: str,
                   during: Callable[[str], Awaitable[None]] | None = None) -> Content:  # fmt: skip
    """Deploy simulator -> sink, do `during` to it, and wait until the destination holds every reading and the
    sink's lag is 0 again."""
    flow = f"{run}f"
    document = {
        "id": flow,
        "nodes": [{"id": "sim", "type": "simulator", "config": simulator_config()},
                  {"id": "sink", "type": sink_type, "config": await destination.config(run)}],
        "edges": [{"from": "sim:out", "to": "sink:in"}],
    }  # fmt: skip
    await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
    if during is not None:
        await during(flow)
    total = 2 * PER_SIGNAL

    async def complete() -> bool:
        return sum((await destination.content(run)).values()) >= total and sink_health(gateway, flow).get("lag") == 0

    await eventually(complete, 90, 0.3, what=f"{sink_type}: all {total} readings delivered and lag 0",
                     state=lambda: sink_health(gateway, flow))  # fmt: skip
    return await destination.content(run)


def kill_sink_worker(gateway: Gateway, destination: Destination, run: str) -> Callable[[str], Awaitable[None]]:
    async def during(flow: str) -> None:
        async def a_third_delivered() -> bool:
            return sum((await destination.content(run)).values()) >= 2 * PER_SIGNAL // 3

        await eventually(a_third_delivered, 60, 0.05, what="a third of the readings delivered")
        os.kill(sink_health(gateway, flow)["pid"], signal.SIGKILL)  # mid-stream: no clean shutdown, no commit
        await eventually(lambda: sink_health(gateway, flow)["restarts"] == 1, 30, what="the sink worker restarted",
                         state=lambda: sink_health(gateway, flow))  # fmt: skip

    return during


async def test_sigkill_of_the_sink_worker_leaves_the_destination_as_an_uninterrupted_run_does(
    gateway: Gateway, destination: tuple[str, Destination], unique: str
) -> None:
    sink_type, where = destination
    run = "r" + str(abs(hash(unique)) % 10**9)
    reference = await run_flow(gateway, sink_type, where, f"{run}a")
    assert reference == await expected()  # complete and each reading once
    interrupted = await run_flow(gateway, sink_type, where, f"{run}b",
                                 kill_sink_worker(gateway, where, f"{run}b"))  # fmt: skip
    assert interrupted == reference


# The spec's 10 minutes, shortened; STREAMFORGE_TEST_OUTAGE_S=600 runs them (past Kafka's max.poll.interval.ms).
OUTAGE_S = float(os.environ.get("STREAMFORGE_TEST_OUTAGE_S", "8"))


@pytest.mark.timeout(OUTAGE_S + 300)  # the full ten minutes outlast the suite's 600 s per test
async def test_a_destination_down_opens_the_circuit_the_lag_grows_and_nothing_is_lost(
    gateway: Gateway, receiver: tuple[Receiver, str], unique: str
) -> None:
    server, _ = receiver
    destination = http_destination(receiver, circuit={"failures_to_open": 3, "open_s": 1})
    run = "o" + str(abs(hash(unique)) % 10**9)
    lags: list[int] = []

    async def outage(flow: str) -> None:
        opened = await eventually(
            lambda: (h := sink_health(gateway, flow))["circuit"] == "open" and h["status"] == "DEGRADED" and h,
            30, 0.1, what="the circuit open and the sink DEGRADED", state=lambda: sink_health(gateway, flow),
        )  # fmt: skip
        assert "circuit open after 3 consecutive failures" in opened["last_error"]
        for _ in range(int(OUTAGE_S)):
            await asyncio.sleep(1)
            lags.append(sink_health(gateway, flow)["lag"])
        server.down = False

    server.down = True
    delivered = await run_flow(gateway, "http", destination, run, outage)
    assert lags[0] > 0 and lags[-1] > lags[0], lags  # the backlog grew in Kafka while the receiver was away
    # What the flow made while the receiver was away (the shared topic's older records are skipped, not delivered).
    assert max(lags) - min(lags) <= 2 * PER_SIGNAL
    assert delivered == await expected()  # back: lag 0 (run_flow waited for it) and every reading once
    health = sink_health(gateway, f"{run}f")
    assert health["circuit"] == "closed" and health["restarts"] == 0  # kept its group membership all along


async def test_the_alert_router_pages_once_per_transition_across_worker_sigkills(
    gateway: Gateway, services: tuple[Services, str], smtp: tuple[Mailbox, int, Path], tmp_path: Path, unique: str
) -> None:
    """A real PLC (OPC UA) drives two real alarm rules; the router's worker is SIGKILLed after each transition."""
    state, url = services
    mailbox, smtp_port, ca = smtp
    flow, port = "ar" + str(abs(hash(unique)) % 10**9), free_port()
    points = [{"asset_id": "boiler_1", "parameter": "temp", "browse_path": "2:Line1/2:Temp"},
              {"asset_id": "boiler_1", "parameter": "count", "browse_path": "2:Line1/2:Count"}]  # fmt: skip
    router = {
        "destinations": {
            "pager": {"kind": "pagerduty", "routing_key": "R0UT1NGKEY", "url": f"{url}/pagerduty"},
            "sms": {"kind": "webhook", "url": f"{url}/hook"},
            "mail": {"kind": "email", "host": "127.0.0.1", "port": smtp_port, "ca_file": str(ca),
                     "sender": "gateway@plant.example", "to": ["shift-lead@plant.example"]},
        },
        "routes": [{"severities": ["CRITICAL"], "destinations": ["pager", "sms"]},
                   {"severities": ["MEDIUM"], "destinations": ["mail"], "digest_interval_s": 4}],
        "connection": FAST,
    }  # fmt: skip
    document = {
        "id": flow,
        "nodes": [
            {"id": "plc", "type": "opcua", "config": {"endpoint": f"opc.tcp://127.0.0.1:{port}/streamforge/",
                                                      "security_mode": "None", "allow_insecure": True,
                                                      "sampling_interval_ms": 50, "publishing_interval_ms": 100,
                                                      "points": points, "connection": FAST}},
            {"id": "hot", "type": "alarm_rule", "config": {"rule_id": "hot", "parameter": "temp", "high": 50,
                                                           "severity": "CRITICAL"}},
            {"id": "busy", "type": "alarm_rule", "config": {"rule_id": "busy", "parameter": "count", "high": 100,
                                                            "severity": "MEDIUM"}},
            {"id": "router", "type": "alert_router", "config": router},
        ],
        "edges": [{"from": "plc:out", "to": "hot:in"}, {"from": "plc:out", "to": "busy:in"},
                  {"from": "hot:alarms", "to": "router:in"}, {"from": "busy:alarms", "to": "router:in"}],
    }  # fmt: skip
    kills = 0

    async def kill_router() -> None:
        """SIGKILL between transitions: the last one was delivered (and the router done with it: its memory of what
        it sent is in the changelog); the next has not happened yet. A kill in the milliseconds between a receiver
        taking a message and that changelog write resends it, with the same dedup_key / Idempotency-Key."""
        nonlocal kills
        await asyncio.sleep(0.5)
        pid = node_health(gateway, flow, "router")["pid"]
        os.kill(pid, signal.SIGKILL)
        kills += 1
        await eventually(lambda: (h := node_health(gateway, flow, "router"))["restarts"] == kills
                         and h["status"] == "RUNNING" and h["pid"] != pid, 30, 0.1, what="the router's worker back",
                         state=lambda: node_health(gateway, flow, "router"))  # fmt: skip

    async def delivered(pages: int) -> None:
        await eventually(lambda: len(state.received["pagerduty"]) >= pages and len(state.received["hook"]) >= pages,
                         30, 0.1, what=f"{pages} PagerDuty events and SMS", state=lambda: state.received)  # fmt: skip

    async with running_plc(tmp_path, port) as plc:
        await gateway.deploy(compile_flow(validate_flow(document), gateway.node_types))
        await eventually(lambda: node_health(gateway, flow, "plc")["status"] == "RUNNING", 30, what="the PLC read")
        await plc.temp.write_value(80.0)  # CRITICAL: hot ACTIVE
        await delivered(1)
        await kill_router()
        await plc.count.write_value(150, ua.VariantType.Int32)  # MEDIUM: ACTIVE, back (RTN_UNACK), one digest
        await asyncio.sleep(0.5)
        await plc.count.write_value(7, ua.VariantType.Int32)
        raised = state.received["hook"][0]["event_id"]  # the transition the SMS told the shift lead about
        args = {"asset_id": "boiler_1", "parameter": "temp", "user": "shift-lead", "event_id": raised}
        await gateway.command(flow, "hot", "acknowledge", args)
        await delivered(2)
        await kill_router()  # the MEDIUM transitions wait for their digest meanwhile: replayed, not lost
        await plc.temp.write_value(20.0)  # hot CLEARED
        await delivered(3)
        await eventually(lambda: len(mailbox.messages) >= 1, 30, 0.1, what="the MEDIUM digest e-mail")
        await asyncio.sleep(6)  # more than a digest interval: anything sent twice would have arrived by now
    pages = state.received["pagerduty"]
    assert [(p["event_action"], p["dedup_key"]) for p in pages] == [
        ("trigger", "hot|boiler_1|temp"),
        ("acknowledge", "hot|boiler_1|temp"),
        ("resolve", "hot|boiler_1|temp"),
    ]
    assert [(m["state"], m["changed_by"]) for m in state.received["hook"]] == [
        ("ACTIVE", None), ("ACKNOWLEDGED", "shift-lead"), ("CLEARED", None)]  # fmt: skip
    ((recipients, digest),) = mailbox.messages
    assert recipients == ["shift-lead@plant.example"] and digest["Subject"] == "2 alarm transitions"
    body = digest.get_payload()
    assert "[MEDIUM] ACTIVE: count of boiler_1 is 150" in body and "[MEDIUM] RTN_UNACK" in body
