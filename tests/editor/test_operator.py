"""The operator's day in headless Chromium against a real `streamforge up`, signed in as an Operator: alarms (ACK,
shelve, stale refusal), the DLQ workflow (re-validate into telemetry.clean exactly once), logs, node rates, and an
agent's acknowledge_alarm behind a human's approval."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from prometheus_client.parser import text_string_to_metric_families

from streamforge.engine.schema_registry import CachedSchemaRegistry
from streamforge.nodes.validator import JUDGED_ALONE
from streamforge.runtime.kafka.broker import free_port
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.editor.conftest import sign_in
from tests.editor.test_editor import RUNNING_TIMEOUT_MS, open_flow
from tests.eventually import eventually
from tests.kafka_reading import tail
from tests.runtime.control_plane.test_mcp import call, over_http
from tests.stack import Stack

OPERATOR, PASSWORD = "olga", "olga-password-123"
TANK_ALARM = "tank_level_high|tank_1|level"  # the demo's step signal crosses 3.5 m every 30 s
pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module", autouse=True)
async def operator(stack: Stack) -> dict[str, str]:
    """An Operator user and a session of theirs for the REST calls the page makes."""
    created = await stack.http.post("/users", json={"username": OPERATOR, "password": PASSWORD, "role": "operator"})
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {await stack.token(OPERATOR, PASSWORD)}"}


@contextlib.asynccontextmanager
async def operator_page(browser: Browser, stack: Stack) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await sign_in(page, stack, OPERATOR, PASSWORD)
        yield page
    finally:
        await context.close()
    assert not errors, f"the page threw: {errors}"


async def alarm(stack: Stack) -> dict[str, Any] | None:
    alarms = (await stack.http.get("/alarms", params={"flow": "demo"})).json()["alarms"]
    return next((a for a in alarms if a["alarm_id"] == TANK_ALARM), None)


async def test_an_alarm_is_shown_live_acknowledged_shelved_and_a_stale_ack_refused(
    browser: Browser, stack: Stack, operator: dict[str, str], kafka: EmbeddedKafka, registry: CachedSchemaRegistry
) -> None:
    async with tail(kafka, registry, ["alarms.clean"], "demo", "high_level") as stream, \
            operator_page(browser, stack) as page:  # fmt: skip
        await expect(page.locator("[data-testid=palette]")).to_have_count(0)  # an Operator edits no flow
        await expect(page.locator("[data-testid=alarm-count]")).to_have_text(re.compile(r"^\d+$"))
        await page.click("[data-testid=open-alarms]")
        row = page.locator(f"[data-testid='alarm-{TANK_ALARM}']")
        before = await alarm(stack)
        seen_before = before["event_id"] if before else None
        # The next ACTIVE transition: when the page shows it, against when its reading was taken.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if await row.count() and await row.get_attribute("data-state") == "ACTIVE" and \
                    await row.get_attribute("data-event") != seen_before:  # fmt: skip
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"no new ACTIVE alarm {TANK_ALARM} on the page within 90 s")
        shown_at = time.time()
        event_id = str(await row.get_attribute("data-event"))
        active = (await stack.http.get(f"/alarms/events/{quote(event_id, safe='')}")).json()["event"]
        reading_at = datetime.fromisoformat(active["timestamps"]["device_time"]).timestamp()
        assert shown_at - reading_at <= 2.0, f"shown {shown_at - reading_at:.2f} s after its reading"
        await expect(page.locator("[data-testid=alarm-counts]")).not_to_have_text("0 unacknowledged")

        await row.locator("[data-testid=ack]").click()
        await expect(row).to_have_attribute("data-state", "ACKNOWLEDGED")
        await expect(page.locator("[data-testid=page-notice]")).to_contain_text("acknowledge")
        stale = await stack.http.post("/alarms/acknowledge", json={"event_id": event_id}, headers=operator)
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "stale", stale.text
        assert "is not this alarm's latest event" in stale.json()["error"]["message"]

        await page.select_option("[data-testid=shelve-for]", label="1 min")
        await row.locator("[data-testid=shelve]").click()
        await expect(row).to_have_attribute("data-state", "SHELVED")
        await expect(row).not_to_have_attribute("data-state", "SHELVED", timeout=80_000)  # back after a minute
        latest = await alarm(stack)
        assert latest is not None
        history = (await stack.http.get(f"/alarms/events/{quote(latest['event_id'], safe='')}")).json()["history"]
        by = {h["event_id"]: h for h in history}
        assert any(h["message"].startswith("shelving expired") for h in history)
        acked = next(h for h in history if h["state"] == "ACKNOWLEDGED")
        assert acked["changed_by"] == OPERATOR
        assert any(h["state"] == "SHELVED" and h["changed_by"] == OPERATOR for h in history)

        # The database and the alarm stream agree: every transition streamed since the one acted on is stored, the same.
        await eventually(lambda: any(m.record["event_id"] == latest["event_id"] for m in stream), 10, 0.2)
        incarnation, _, first_seq = event_id.rpartition(".")
        since = [m.record for m in stream if m.record["event_id"].rpartition(".")[0] == incarnation
                 and int(m.record["event_id"].rpartition(".")[2]) >= int(first_seq)]  # fmt: skip
        assert len(since) >= 4  # ACKNOWLEDGED, SHELVED, ... back
        assert [(r["event_id"], r["state"]) for r in since] == [
            (r["event_id"], by[r["event_id"]]["state"]) for r in since
        ]
        assert since[-1]["event_id"] == latest["event_id"]


async def test_injected_faults_are_on_the_dlq_page_and_revalidating_lands_each_once(
    browser: Browser, stack: Stack, kafka: EmbeddedKafka, registry: CachedSchemaRegistry
) -> None:
    async with operator_page(browser, stack) as page:
        await page.click("[data-testid=open-dlq]")
        await expect(page.locator("[data-testid=dlq-count-out_of_range]")).to_be_visible(timeout=60_000)
        reasons = page.locator("[data-testid=dlq-reasons]")
        await expect(reasons.filter(has_text="out_of_range").first).to_contain_text("> max")
        await reasons.filter(has_text="out_of_range").first.click()
        detail = page.locator("[data-testid=dlq-detail]")  # the reasons beside the decoded reading
        await expect(detail).to_contain_text("out_of_range at /value")
        await expect(detail).to_contain_text('"sim_fault":')

        # An Engineer widens the validator's ranges (the demo's faults are 1e6), and deploys.
        document = (await stack.http.get("/flows/demo")).json()
        for node in document["nodes"]:
            if node["id"] == "quality":
                for rule in node["config"]["rules"]:
                    rule["max"] = 2e6
        document = {k: v for k, v in document.items() if k not in ("saved_at", "saved_by")}
        saved = await stack.http.put("/flows/demo", json=document)
        assert saved.status_code == 200, saved.text
        assert (await stack.http.post("/flows/demo/deploy")).status_code == 200

        async with tail(kafka, registry, ["telemetry.clean"], "demo", "quality") as clean:
            await page.click("[data-testid=dlq-revalidate-demo-quality]")
            job_text = page.locator("[data-testid=dlq-job]")
            await expect(job_text).to_contain_text("DONE", timeout=120_000)
            text = await job_text.inner_text()
            job_id = re.search(r"job (\w+) \(revalidate, olga\)", text)
            assert job_id, text
            reprocessed = int(re.search(r"(\d+) reprocessed", text).group(1))  # type: ignore[union-attr]
            assert reprocessed > 0

            def landed() -> list[dict[str, Any]]:
                return [m.record for m in clean if m.record["metadata"].get("sf-reprocessed") == job_id.group(1)]

            await eventually(lambda: len(landed()) >= reprocessed, 30, 0.2, what="the reprocessed readings")
            await asyncio.sleep(2)  # anything sent twice would be here by now
            letters = Counter(r["metadata"]["sf-dlq"] for r in landed())
            assert len(letters) == reprocessed and set(letters.values()) == {1}
            values = Counter(r["value"] for r in landed())
            assert all(0 <= value <= 2e6 for value in values) and values[1e6] > 0, values  # pass the widened rules

        listing = (await stack.http.get("/dlq", params={"flow": "demo", "limit": "2000"})).json()
        waiting = [r for r in listing["records"] if r["reprocessed"] is None]
        assert all(any(reason["code"] not in JUDGED_ALONE for reason in r["reasons"]) for r in waiting)
        assert (
            sum(1 for r in listing["records"] if (r["reprocessed"] or {}).get("job") == job_id.group(1)) == reprocessed
        )
        await expect(page.locator("[data-testid=dlq-status]").filter(has_text="reprocessed").first).to_be_visible()


async def test_a_workers_error_line_is_on_the_logs_page_filtered_by_its_node(browser: Browser, stack: Stack) -> None:
    port = free_port()  # nobody listens: the worker's connection fails, and it says so
    document = {"format": "streamforge.flow/v1", "id": "unplugged", "label": "a PLC that is not there", "version": 0,
                "nodes": [{"id": "far_plc", "type": "modbus_tcp", "x": 0, "y": 0, "config": {
                    "host": "127.0.0.1", "port": port, "poll_interval_s": 1,
                    "points": [{"address": 0, "asset_id": "press_9", "parameter": "speed"}]}}],
                "edges": []}  # fmt: skip
    assert (await stack.http.post("/flows", json=document)).status_code == 201
    deployed = await stack.http.post("/flows/unplugged/deploy", json={"gateway": stack.event["gateway"]})
    assert deployed.status_code == 200, deployed.text  # a new flow's first deploy says where
    async with operator_page(browser, stack) as page:
        await page.click("[data-testid=open-logs]")
        await page.select_option("[data-testid=logs-level]", "WARNING")
        await page.fill("[data-testid=logs-node]", "far_plc")
        line = page.locator("[data-testid=log-line]").filter(has_text=f"127.0.0.1:{port}")
        await expect(line.first).to_be_visible(timeout=60_000)
        await expect(line.first).to_contain_text("worker:far_plc")
        await expect(page.locator("[data-testid=log-line]").filter(has_text="demo/")).to_have_count(0)


def records_in(exposition: str, flow: str, node: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(exposition) for s in family.samples
               if s.name == "streamforge_node_records_in_total" and s.labels.get("flow") == flow
               and s.labels.get("node") == node)  # fmt: skip


async def test_node_rates_on_the_canvas_match_the_gateways_metrics(browser: Browser, stack: Stack) -> None:
    metrics = stack.event["gateway_health"].replace("/health", "/metrics")
    async with operator_page(browser, stack) as page, httpx.AsyncClient() as http:
        await open_flow(page, "demo")
        await expect(page.locator("[data-testid=status-quality]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
        await expect(page.locator("[data-testid=rate-quality]")).to_contain_text("/s in", timeout=30_000)
        first, started = records_in((await http.get(metrics)).text, "demo", "quality"), time.monotonic()
        await asyncio.sleep(10)
        last, seconds = records_in((await http.get(metrics)).text, "demo", "quality"), time.monotonic() - started
        shown = float(re.search(r"([\d.]+)/s in", await page.locator("[data-testid=rate-quality]").inner_text())
                      .group(1))  # type: ignore[union-attr]  # fmt: skip
        measured = (last - first) / seconds
        assert measured > 0 and abs(shown - measured) <= 0.1 * measured, f"canvas {shown}/s, /metrics {measured:.2f}/s"


async def test_an_agents_acknowledge_needs_a_humans_approval_and_both_are_audited(
    stack: Stack, operator: dict[str, str]
) -> None:
    agent = await stack.user_token("alarm_agent", "operator")
    viewer = await stack.user_token("alarm_viewer", "viewer")
    forbidden = await stack.http.post("/alarms/acknowledge", json={"event_id": "any#1"},
                                      headers={"Authorization": f"Bearer {viewer}"})  # fmt: skip
    assert forbidden.status_code == 403  # a Viewer sees alarms and acts on none

    async def fresh_unacknowledged() -> dict[str, Any] | None:
        found = await alarm(stack)
        if found is None or found["state"] not in ("ACTIVE", "RTN_UNACK"):
            return None
        moment = datetime.fromisoformat(found["timestamps"]["gateway_time"]).timestamp()
        return found if time.time() - moment < 10 else None  # the next transition is ~30 s away

    target = await eventually(fresh_unacknowledged, 90, 0.2, what="an unacknowledged tank alarm, just raised")
    async with over_http(stack, agent) as mcp:
        refused = await call(mcp, "acknowledge_alarm", event_id=target["event_id"])
        assert refused["refused"] == "approval_required" and "action-approvals" in refused["message"]
        approval = await stack.http.post("/action-approvals", headers=operator, json={
            "action": "acknowledge_alarm", "arguments": {"event_id": target["event_id"]}})  # fmt: skip
        assert approval.status_code == 201, approval.text
        token = approval.json()["approval_token"]
        done = await call(mcp, "acknowledge_alarm", event_id=target["event_id"], approval_token=token)
        assert done["event_id"] == target["event_id"] and done["by"] == "alarm_agent", done
        assert done["approved_by"] == OPERATOR and "device_data" in done  # the alarm's words came from a device
        again = await call(mcp, "acknowledge_alarm", event_id=target["event_id"], approval_token=token)
        assert again["refused"] == "approval_used"
    trail = (await stack.http.get("/audit", params={"tool": "acknowledge_alarm"})).json()
    mine = [(e["outcome"], e["approved_by"]) for e in reversed(trail) if e["identity"] == "alarm_agent"]
    assert mine == [("refused", None), ("ok", OPERATOR), ("refused", None)]
    store_side = (await stack.http.get("/audit", params={"tool": "alarm.acknowledge"})).json()
    assert any(e["identity"] == "alarm_agent" and e["approved_by"] == OPERATOR for e in store_side)


async def test_the_audit_page_shows_who_did_what_over_rest_and_mcp(
    browser: Browser, stack: Stack, operator: dict[str, str], tmp_path: Path
) -> None:
    """#41 W4: the trail is queryable in the editor: an Engineer or Admin filters it by who did it."""
    approval = await stack.http.post("/action-approvals", headers=operator, json={
        "action": "restart_component", "arguments": {"flow": "demo", "node": "quality"}})  # fmt: skip
    assert approval.status_code == 201, approval.text
    context = await browser.new_context(viewport={"width": 1600, "height": 1000})
    page = await context.new_page()
    try:
        await sign_in(page, stack)  # the Admin: an Operator has no Audit button
        await page.click("[data-testid=open-audit]")
        await page.fill("[data-testid=audit-identity]", OPERATOR)
        row = page.locator("[data-testid=audit-row]").filter(has_text="approve_action").first
        await expect(row).to_be_visible(timeout=30_000)
        await expect(row).to_contain_text("operator")  # the role it acted as
        await expect(row).to_contain_text("rest")
        await page.screenshot(path=tmp_path / "audit-page.png")
        await page.select_option("[data-testid=audit-channel]", "mcp")
        await expect(page.locator("[data-testid=audit-row]").filter(has_text="approve_action")).to_have_count(0)
    finally:
        await context.close()
