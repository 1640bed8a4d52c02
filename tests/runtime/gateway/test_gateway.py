"""The gateway on a real broker: a flow end to end, modified-nodes deploy, rollback, restarts, health."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import pytest
from aiokafka.admin import NewTopic
from pydantic import BaseModel

from streamforge.engine.compiler import compile_flow
from streamforge.engine.flow import validate_flow
from streamforge.engine.node_types import NodeTypes, load_node_types
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import FlowInvalid
from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.engine.sdk import Emitted, Message, NodeConfig, Port, PortType, ProcessorNode
from streamforge.runtime.gateway.gateway import DeployFailed, Gateway, health_app
from streamforge.runtime.gateway.local_auth import read_token
from streamforge.runtime.gateway.runners import CommandNotDelivered, changelog_spec, changelog_topic
from streamforge.runtime.gateway.supervisor import TaskHandle
from streamforge.runtime.http import serve_app
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from streamforge.runtime.kafka.topics import create_topics
from tests.eventually import eventually
from tests.kafka_reading import read_from, topic_configs

T0 = datetime(2026, 1, 29, 10, 0, tzinfo=UTC)
READINGS = 300  # per signal, at 10 Hz of device time: 30 s


class Broken(ProcessorNode[NodeConfig]):
    """Refuses its configuration in start(): a deploy that includes it must roll back."""

    type = "test_broken"
    inputs = (Port("in", PortType.TELEMETRY),)

    async def start(self) -> None:
        raise ValueError("lookup table /etc/streamforge/limits.csv does not exist")


class Crashy(ProcessorNode[NodeConfig]):
    """Fails on every batch: the restart policy must give up and say FAILED."""

    type = "test_crashy"
    inputs = (Port("in", PortType.TELEMETRY),)

    async def process(self, batch: Sequence[Message]) -> Emitted:
        raise ValueError("bug in node code")


class SlowConfig(NodeConfig):
    batch_s: float = 1.5


class Note(BaseModel):
    text: str


class Slow(ProcessorNode[SlowConfig]):
    """Takes 1.5 s per batch (at most about 1,300 records/s): offered more, it falls behind. Its one command,
    `note`, keeps the text: which commands ran."""

    type = "test_slow"
    inputs = (Port("in", PortType.TELEMETRY),)
    commands: ClassVar[dict[str, builtins.type[BaseModel]]] = {"note": Note}

    async def start(self) -> None:
        self.notes: list[str] = []

    async def process(self, batch: Sequence[Message]) -> Emitted:
        await asyncio.sleep(self.config.batch_s)
        return {}

    async def command(self, name: str, args: BaseModel) -> Emitted:
        assert isinstance(args, Note)
        self.notes.append(args.text)
        return {}


def node_types() -> NodeTypes:
    registry = load_node_types(include_plugins=False)
    for cls in (Broken, Crashy, Slow):
        registry.register(cls, "test")
    return registry


def simulated_flow(
    flow_id: str,
    extra_nodes: Sequence[dict[str, Any]] = (),
    extra_edges: Sequence[tuple[str, str]] = (),
    resolutions: Sequence[str] = ("1s",),
) -> ExecutionPlan:
    doc = {
        "id": flow_id,
        "nodes": [
            {
                "id": "sim",
                "type": "simulator",
                "config": {
                    "signals": [
                        {"asset_id": "pump_1", "parameter": "pressure", "offset": 5, "amplitude": 1},
                        {"asset_id": "pump_2", "parameter": "pressure", "offset": 6, "amplitude": 1},
                    ],
                    "rate_hz": 10,
                    "realtime": False,
                    "limit": READINGS,
                    "start_time": T0.isoformat(),
                    "batch_size": 100,
                    "faults": {"out_of_range_every": 20, "duplicate_every": 33},
                },
            },
            {"id": "val", "type": "validator", "config": {"rules": [{"parameter": "pressure", "min": 0, "max": 10}]}},
            {
                "id": "agg",
                "type": "aggregator",
                "config": {"resolutions": list(resolutions), "allowed_lateness_s": 0, "idle_close_s": 1},
            },
            *extra_nodes,
        ],
        "edges": [{"from": a, "to": b} for a, b in [("sim:out", "val:in"), ("val:clean", "agg:in"), *extra_edges]],
    }
    return compile_flow(validate_flow(doc), node_types())


async def test_flow_end_to_end(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    flow = unique.replace("-", "_")[:60]
    report = await gateway.deploy(simulated_flow(flow))
    assert report.started == ["agg", "sim", "val"]
    # 2 x 300 readings; every 20th is out of range (15 each); every 33rd (not also 20th) is duplicated (9 each).
    raw_total, bad, dups = 2 * READINGS + 2 * 9, 2 * 15, 2 * 9
    clean = await read_from(kafka, registry, "telemetry.clean", flow, "val", raw_total - bad - dups)
    dead = await read_from(kafka, registry, "dlq.telemetry", flow, "val", bad + dups)
    assert len(clean) == raw_total - bad - dups
    assert Counter(d["reasons"][0]["code"] for d in dead) == {"out_of_range": bad, "duplicate": dups}
    aggregates = await read_from(kafka, registry, "telemetry.1s", flow, "agg", 2 * 30)
    by_window: dict[tuple[str, datetime], list[float]] = {}
    for reading in clean:
        t = reading["timestamps"]["device_time"]
        by_window.setdefault((reading["asset_id"], t.replace(microsecond=0)), []).append(reading["value"])
    produced = {
        (a["asset_id"], a["window_start"]): (a["aggregates"]["count"], a["aggregates"]["max"]) for a in aggregates
    }
    assert produced == {key: (len(values), max(values)) for key, values in by_window.items()}
    health = gateway.health()
    assert health["status"] == "HEALTHY" and {n["status"] for n in health["nodes"]} == {"RUNNING"}
    assert gateway.metrics.records_in.labels(flow=flow, node="val")._value.get() == raw_total


async def test_modified_nodes_deploy_restarts_only_what_changed(gateway: Gateway, unique: str) -> None:
    flow = unique.replace("-", "_")[:60]
    await gateway.deploy(simulated_flow(flow))
    before = dict(gateway.handles[flow])
    report = await gateway.deploy(simulated_flow(flow, resolutions=["1s", "1min"]))
    assert report.started == ["agg"] and report.stopped == ["agg"] and report.unchanged == ["sim", "val"]
    assert gateway.handles[flow]["sim"] is before["sim"] and gateway.handles[flow]["agg"] is not before["agg"]


async def test_a_node_that_fails_to_start_rolls_the_deploy_back(gateway: Gateway, unique: str) -> None:
    flow = unique.replace("-", "_")[:60]
    first = simulated_flow(flow)
    await gateway.deploy(first)
    running_val = gateway.handles[flow]["val"]
    broken = simulated_flow(
        flow, [{"id": "bad", "type": "test_broken"}], [("val:clean", "bad:in")], resolutions=["1min"]
    )
    gateway.node_types.register(Broken, "test")
    with pytest.raises(DeployFailed, match=r"node bad failed to start: ValueError: lookup table /etc/streamforge/"):
        await gateway.deploy(broken)
    assert gateway.plans[flow] is first
    assert set(gateway.handles[flow]) == {"sim", "val", "agg"}
    assert gateway.handles[flow]["val"] is running_val
    assert gateway.handles[flow]["agg"].plan == first.node("agg")  # the old version came back
    assert {h.current_status().value for h in gateway.handles[flow].values()} == {"RUNNING"}


def local_client(gateway: Gateway, url: str) -> httpx.AsyncClient:
    """A client of the gateway's own port, sending its local token (W2)."""
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {read_token(gateway.state_dir)}"})


async def test_restart_policy_gives_up_and_health_tells_the_truth(gateway: Gateway, unique: str) -> None:
    flow = unique.replace("-", "_")[:60]
    gateway.node_types.register(Crashy, "test")
    await gateway.deploy(simulated_flow(flow, [{"id": "crashy", "type": "test_crashy"}], [("val:clean", "crashy:in")]))
    handle = gateway.handles[flow]["crashy"]
    await eventually(lambda: handle.current_status().value == "FAILED", 20, what="crashy FAILED")
    assert handle.health()["status"] == "FAILED" and handle.restarts == 2
    assert "ValueError: bug in node code" in (handle.last_error or "")
    async with serve_app(health_app(gateway, token_dir=gateway.state_dir)) as url, local_client(gateway, url) as http:
        assert (await http.get("/health/live")).status_code == 200
        ready = await http.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "UNHEALTHY"
        full = (await http.get("/health")).json()
        assert next(n for n in full["nodes"] if n["node"] == "crashy")["status"] == "FAILED"
        metrics = (await http.get("/metrics")).text
        assert f'streamforge_node_restarts_total{{flow="{flow}",node="crashy"}} 2.0' in metrics
        assert "streamforge_node_batch_duration_seconds_bucket" in metrics
        # The simulator runs in a worker process: its series reach the gateway's /metrics too, once.
        sim_out = f'streamforge_node_records_out_total{{flow="{flow}",node="sim",port="out"}} 618.0'

        async def exposition() -> str | None:
            text = (await http.get("/metrics")).text
            return text if sim_out in text else None

        metrics = await eventually(exposition, 10, 0.2, what="the worker's series in /metrics")
        assert (
            len([line for line in metrics.splitlines() if line.startswith("# TYPE streamforge_node_records_out_total")])
            == 1
        )


async def test_alarm_acknowledged_through_the_runtime_api(
    gateway: Gateway, kafka: EmbeddedKafka, registry: CachedSchemaRegistry, unique: str
) -> None:
    flow = unique.replace("-", "_")[:60]
    rule = {"rule_id": "hi", "asset_id": "pump_1", "parameter": "pressure", "high": 3.0, "on_delay_s": 0}
    plan = simulated_flow(flow, [{"id": "alarm", "type": "alarm_rule", "config": rule}], [("val:clean", "alarm:in")])
    await gateway.deploy(plan)
    raised = await read_from(kafka, registry, "alarms.clean", flow, "alarm", 1)
    assert [(r["state"], r["alarm_id"]) for r in raised] == [("ACTIVE", "hi|pump_1|pressure")]  # stays above 3
    base = f"/api/v1/flows/{flow}/nodes/alarm/commands"
    where = {"asset_id": "pump_1", "parameter": "pressure", "user": "operator_ana", "event_id": raised[0]["event_id"]}
    async with serve_app(health_app(gateway, token_dir=gateway.state_dir)) as url, local_client(gateway, url) as http:
        anonymous = await httpx.AsyncClient(base_url=url).post(f"{base}/acknowledge", json=where)
        assert anonymous.status_code == 401  # W2: a node command on the gateway's own port wants its local token
        refused = await http.post(f"{base}/acknowledge", json={"asset_id": "pump_1", "parameter": "pressure"})
        assert refused.status_code == 422, refused.text  # the command's model says what is missing, and where
        assert sorted((p["code"], p["pointer"], p["node_id"]) for p in refused.json()["error"]["problems"]) == [
            ("invalid_argument", "/event_id", "alarm"), ("invalid_argument", "/user", "alarm")
        ]  # fmt: skip
        unknown = await http.post(f"{base}/explode", json=where)
        assert unknown.status_code == 400 and "commands: acknowledge, shelve, unshelve, suppress" in unknown.text
        stale = await http.post(f"{base}/acknowledge", json={**where, "event_id": "hi|pump_1|pressure#0"})
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale", stale.text
        ghost = await http.post(f"/api/v1/flows/{flow}/nodes/ghost/commands/acknowledge", json=where)
        assert ghost.status_code == 404
        acked = await http.post(f"{base}/acknowledge", json=where)
        assert acked.status_code == 200, acked.text
        assert acked.json()["emitted"]["alarms"][0]["state"] == "ACKNOWLEDGED"
    transitions = await read_from(kafka, registry, "alarms.clean", flow, "alarm", 2)
    assert [(r["state"], r["changed_by"]) for r in transitions] == [("ACTIVE", None), ("ACKNOWLEDGED", "operator_ana")]


async def test_a_deploy_fsyncs_the_changelogs_no_replay_rebuilds_and_reconfigures_older_ones(
    gateway: Gateway, kafka: EmbeddedKafka, unique: str
) -> None:
    flow = unique.replace("-", "_")[:60]
    # As a release before this one made it: every changelog fsynced per write. A deploy reconfigures it.
    await create_topics(kafka.access, [NewTopic(changelog_topic(flow, "val"), 1, 1, topic_configs={
        "cleanup.policy": "compact", "flush.messages": "1"})])  # fmt: skip
    rule = {"rule_id": "hi", "asset_id": "pump_1", "parameter": "pressure", "high": 3.0}
    await gateway.deploy(simulated_flow(flow, [{"id": "alarm", "type": "alarm_rule", "config": rule}],
                                        [("val:clean", "alarm:in")]))  # fmt: skip
    names = {node: changelog_topic(flow, node) for node in ("sim", "val", "agg", "alarm")}
    configs = await topic_configs(kafka.access, list(names.values()))
    flushed = {node: configs[topic]["flush.messages"] == "1" for node, topic in names.items()}
    assert flushed == {"sim": False, "val": False, "agg": False, "alarm": True}  # acknowledgements replay from nowhere
    assert {configs[topic]["cleanup.policy"] for topic in names.values()} == {"compact"}


def test_a_sinks_changelog_is_fsynced_its_sources_not_and_a_processors_if_it_takes_commands() -> None:
    sink = {"id": "post", "type": "http", "config": {"url": "http://127.0.0.1:9/ingest"}}
    alarm = {"id": "alarm", "type": "alarm_rule", "config": {"rule_id": "hi", "parameter": "pressure", "high": 3.0}}
    plan = simulated_flow("f", [sink, alarm], [("val:clean", "post:in"), ("val:clean", "alarm:in")])
    configs = {node.node_id: changelog_spec("f", node, node_types()).topic_configs for node in plan.nodes}
    assert {node: c.get("flush.messages") == "1" for node, c in configs.items()} == {
        "sim": False, "val": False, "agg": False, "alarm": True, "post": True
    }  # fmt: skip
    assert {c["cleanup.policy"] for c in configs.values()} == {"compact"}


def slow_flow(flow_id: str, batch_s: float) -> dict[str, Any]:
    signals = [{"asset_id": "pump_1", "parameter": "pressure"}, {"asset_id": "pump_2", "parameter": "pressure"}]
    return {"id": flow_id, "nodes": [
        {"id": "sim", "type": "simulator", "config": {"signals": signals, "realtime": False, "limit": 10_000,
                                                     "batch_size": 2000, "start_time": T0.isoformat()}},
        {"id": "slow", "type": "test_slow", "config": {"batch_s": batch_s}}],
        "edges": [{"from": "sim:out", "to": "slow:in"}]}  # fmt: skip


async def test_every_operator_command_gets_an_answer_and_one_given_up_on_neither_runs_nor_breaks_the_node(
    gateway: Gateway, unique: str
) -> None:
    """A caller whose wait ran out (the API's timeout) cancels its command: one still queued is not run, and the
    node never fails answering it. A command queued when the node stops is answered CommandNotDelivered at once,
    not left to its caller's timeout."""
    flow = unique.replace("-", "_")[:60]
    gateway.node_types.register(Slow, "test")
    await gateway.deploy(compile_flow(validate_flow(slow_flow(flow, 1.5)), gateway.node_types))
    handle = gateway.handles[flow]["slow"]
    assert isinstance(handle, TaskHandle) and handle.runner is not None
    runner = handle.runner
    records_in = gateway.metrics.records_in.labels(flow=flow, node="slow")
    await eventually(lambda: records_in._value.get() > 0, 30, 0.05, what="the slow node inside its first batch")
    with pytest.raises(TimeoutError):  # queued behind a 1.5 s batch: the caller gives up first
        await asyncio.wait_for(runner.submit("note", {"text": "given up"}), 0.1)
    assert await asyncio.wait_for(runner.submit("note", {"text": "waited for"}), 20) == {}
    node = runner.node
    assert isinstance(node, Slow) and node.notes == ["waited for"]
    assert handle.health()["restarts"] == 0

    stuck = f"{flow[:50]}_stuck"
    await gateway.deploy(compile_flow(validate_flow(slow_flow(stuck, 600)), gateway.node_types))
    stuck_handle = gateway.handles[stuck]["slow"]
    assert isinstance(stuck_handle, TaskHandle) and stuck_handle.runner is not None
    stuck_in = gateway.metrics.records_in.labels(flow=stuck, node="slow")
    await eventually(lambda: stuck_in._value.get() > 0, 30, 0.05, what="the stuck node inside its first batch")
    queued = asyncio.ensure_future(stuck_handle.runner.submit("note", {"text": "never run"}))
    await asyncio.sleep(0.1)  # queued: the node is 600 s into one batch
    await gateway.undeploy(stuck)
    with pytest.raises(CommandNotDelivered, match="the node stopped before running it"):
        await asyncio.wait_for(queued, 10)


async def test_an_invalid_flow_leaves_the_running_one_untouched(gateway: Gateway, unique: str) -> None:
    flow = unique.replace("-", "_")[:60]
    running = simulated_flow(flow)
    await gateway.deploy(running)
    handles = dict(gateway.handles[flow])
    broken = {"id": flow, "nodes": [{"id": "sim", "type": "simulator", "config": {}},
                                    {"id": "x", "type": "teleporter"}], "edges": []}  # fmt: skip
    for document in (json.dumps(broken), "{not json", json.dumps({**broken, "label": "x" * 10_000_000})):
        with pytest.raises(FlowInvalid):
            await gateway.deploy_document(document)
    assert gateway.plans[flow] is running and gateway.handles[flow] == handles
    assert {h.current_status().value for h in handles.values()} == {"RUNNING"}


async def test_a_node_offered_more_than_it_drains_says_how_far_behind_and_recovers(
    gateway: Gateway, unique: str
) -> None:
    flow = unique.replace("-", "_")[:60]
    gateway.node_types.register(Slow, "test")
    await gateway.deploy(compile_flow(validate_flow(slow_flow(flow, 1.5)), gateway.node_types))

    def slow() -> dict[str, Any]:
        return next(n for n in gateway.node_health() if n["flow"] == flow and n["node"] == "slow")

    behind = await eventually(lambda: (h := slow())["status"] == "DEGRADED" and "behind by" in (h["last_error"] or "")
                              and h, 60, 0.1, what="the slow node DEGRADED: behind by N",
                              state=slow)  # fmt: skip
    assert int(behind["last_error"].split("behind by ")[1].split()[0].replace(",", "")) >= 10_000
    await eventually(lambda: slow()["status"] == "RUNNING" and slow()["lag"] < 5_000, 60, 0.2,
                     what="caught up: RUNNING again", state=slow)  # fmt: skip
    fell_behind = gateway.metrics.errors.labels(flow=flow, node="slow", kind="lag")._value.get()
    batches = gateway.metrics.records_in.labels(flow=flow, node="slow")._value.get() / 2000
    # Counted once per fall-behind (a busy machine may see two waves), never once per batch while behind.
    assert 1 <= fell_behind < batches / 2
