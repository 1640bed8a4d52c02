"""The Gateways page in headless Chromium: a second, real gateway process registers against `streamforge up`;
approve it, assign a flow version to it, see both gateways' status and running versions, roll it back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.editor.conftest import REPO
from tests.stack import ServiceProcess, Stack

TIMEOUT_MS = 60_000


@pytest.fixture
async def remote_gateway(stack: Stack, kafka: EmbeddedKafka, registry_url: str, tmp_path: Path
                         ) -> AsyncIterator[ServiceProcess]:  # fmt: skip
    gateway = ServiceProcess(["gateway", "--control-plane", stack.url, "--name", "remote_1", "--data-dir",
                              str(tmp_path / "remote_1"), *kafka.access.cli_arguments(), "--registry", registry_url,
                              "--poll-interval", "5"], tmp_path / "remote_1.stderr", "gateway")  # fmt: skip
    await gateway.start()
    yield gateway
    await gateway.stop()


def small_flow(flow_id: str, rate: float) -> dict[str, object]:
    return {"format": "streamforge.flow/v1", "id": flow_id, "label": "remote", "version": 0, "edges": [],
            "nodes": [{"id": "sim", "type": "simulator", "x": 40, "y": 80, "config": {
                "signals": [{"asset_id": "pump_9", "parameter": "speed"}], "rate_hz": rate}}]}  # fmt: skip


async def test_approve_assign_watch_and_roll_back_a_gateway(page: Page, stack: Stack,
                                                            remote_gateway: ServiceProcess) -> None:  # fmt: skip
    flow_id = "remote_pumps"
    created = await stack.http.post("/flows", json=small_flow(flow_id, 1))
    assert created.status_code == 201, created.text
    second = await stack.http.put(f"/flows/{flow_id}", json={**small_flow(flow_id, 2), "version": 1})
    assert second.status_code == 200, second.text

    await page.click("[data-testid=open-gateways]")
    remote = page.locator("[data-testid=gateway-remote_1]")
    await expect(remote.locator("[data-testid=approval]")).to_have_text("pending", timeout=TIMEOUT_MS)
    local = page.locator("[data-testid=gateway-local]")
    await expect(local.locator("[data-testid=approval]")).to_have_text("approved")
    await expect(local.locator("[data-testid=running]")).to_contain_text("demo v1")
    await expect(local.locator("[data-testid=disk]")).to_have_text(re.compile(r"^\d+%"))  # from its heartbeat
    await remote.get_by_role("button", name="Approve").click()
    await expect(remote.locator("[data-testid=approval]")).to_have_text("approved", timeout=TIMEOUT_MS)

    async def assign(version: int) -> None:
        await page.select_option("[data-testid=assign-flow]", flow_id)
        await page.select_option("[data-testid=assign-version]", str(version))
        gateway_id = (await stack.http.get("/gateways")).json()
        target = next(g["id"] for g in gateway_id if g["name"] == "remote_1")
        await page.select_option("[data-testid=assign-gateway]", target)
        await page.click("[data-testid=assign]")
        await expect(page.locator("[data-testid=page-notice]")).to_contain_text("done")

    await assign(1)
    await expect(remote.locator("[data-testid=running]")).to_have_text(f"{flow_id} v1", timeout=TIMEOUT_MS)
    await expect(remote.locator("[data-testid=health]")).to_have_text("HEALTHY", timeout=TIMEOUT_MS)
    await expect(remote.locator("[data-testid=last-apply]")).to_have_text("APPLIED")
    await expect(local.locator("[data-testid=health]")).not_to_have_text("OFFLINE")

    await assign(2)
    await expect(remote.locator("[data-testid=running]")).to_have_text(f"{flow_id} v2", timeout=TIMEOUT_MS)
    await remote.locator("[data-testid=rollback]").click()
    await expect(remote.locator("[data-testid=running]")).to_have_text(f"{flow_id} v1", timeout=TIMEOUT_MS)
    rows = {g["name"]: g for g in (await stack.http.get("/gateways")).json()}
    assert rows["remote_1"]["running"] == {flow_id: 1} and rows["local"]["running"].get("demo") == 1
    await page.screenshot(path=REPO / "docs" / "gateways.png")  # the README's picture of this page

    # On the canvas: the flow's target, then a second gateway by "Deploy to…", and the live view on either one.
    ids = {g["name"]: g["id"] for g in (await stack.http.get("/gateways")).json()}
    await page.click("[data-testid=back-to-flows]")
    await page.select_option("[data-testid=flow-select]", flow_id)
    await page.wait_for_url(f"**#/flows/{flow_id}")
    await expect(page.locator("[data-testid=deploy-targets]")).to_have_text("→ remote_1")
    await expect(page.locator("[data-testid=status-sim]")).to_have_text("RUNNING", timeout=TIMEOUT_MS)
    picker, badge = page.locator("[data-testid=gateway-pick]"), page.locator("[data-testid=gateway-status]")
    await expect(picker).to_have_value(ids["remote_1"])
    await page.click("[data-testid=flow-menu]")
    await page.click("[data-testid=menu-deploy-to]")
    dialog = page.locator("[data-testid=deploy-dialog]")
    await expect(dialog.locator("[data-testid=pick]")).to_have_count(2)  # both approved; neither chosen for you
    await expect(dialog.locator("[data-testid=deploy-confirm]")).to_be_disabled()
    await dialog.locator("[data-testid=deploy-gateway-local]").click()
    await dialog.locator("[data-testid=deploy-confirm]").click()
    notice = page.locator("[data-testid=notice]")
    await expect(notice).to_contain_text("Deployed v2 to local, remote_1", timeout=TIMEOUT_MS)
    for name in ("local", "remote_1"):
        await expect(notice.locator(f"[data-testid=deploy-result-{name}]")).to_contain_text("APPLIED")
    await expect(page.locator("[data-testid=deploy-targets]")).to_have_text("→ local, remote_1")
    await expect(picker.locator("option")).to_have_count(2, timeout=TIMEOUT_MS)
    for name in ("local", "remote_1", "local"):
        await picker.select_option(ids[name])
        await expect(badge).to_have_attribute("data-gateway", ids[name])  # the live status is of the one picked
        await expect(page.locator("[data-testid=status-sim]")).to_have_text("RUNNING", timeout=TIMEOUT_MS)
    await picker.select_option(ids["remote_1"])
    await page.locator("[data-testid=node-sim] .sf-node-header").click()
    await page.click("[data-testid=tap-sim-out]")
    await expect(notice).to_contain_text(f"tapping {flow_id}/sim:out on remote_1")  # on the gateway picked
    await expect(page.locator("[data-testid=debug-records] li").first).to_contain_text("pump_9", timeout=30_000)


async def test_a_pending_identity_claiming_a_gateways_instance_id_is_marked_and_an_admin_decides(
    page: Page, stack: Stack
) -> None:
    """V1 / W3 in the editor: a registration with the local gateway's instance id but not its secret shows beside
    it as pending, marked "claims the instance id of gateway local", with Replace / Reject / Delete for an Admin;
    pending ones are rejected in bulk and deleted."""
    local = next(g for g in (await stack.http.get("/gateways")).json() if g["name"] == "local")
    instance_id = (await stack.http.get(f"/gateways/{local['id']}")).json()["instance_id"]
    public_key = "9n0t2vFMW7Df9N2qRSdp8yzZ2rT1RWf/VpXNl3Q6uzY="
    for name, instance in (("intruder", instance_id), ("spare", "spare-instance")):
        answer = await stack.http.post(
            "/gateways/register",
            json={"name": name, "instance_id": instance, "secret": f"{name}-secret", "public_key": public_key},
        )
        assert answer.status_code == 202, answer.text  # fmt: skip
    await page.click("[data-testid=open-gateways]")
    intruder = page.locator("[data-testid=gateway-intruder]")
    await expect(intruder.locator("[data-testid=claims]")).to_have_text(
        f"claims the instance id of gateway local ({local['id']})", timeout=TIMEOUT_MS
    )
    await expect(intruder.get_by_role("button", name="Replace local")).to_be_visible()
    await expect(intruder.get_by_role("button", name="Approve")).to_have_count(0)  # replace, or reject: not a twin
    await expect(page.locator("[data-testid=gateway-spare] [data-testid=claims]")).to_have_count(0)
    await page.screenshot(path=REPO / "docs" / "gateways-claims.png")
    await page.click("[data-testid=reject-all-pending]")
    for name in ("intruder", "spare"):
        approval = page.locator(f"[data-testid=gateway-{name}] [data-testid=approval]")
        await expect(approval).to_have_text("rejected", timeout=TIMEOUT_MS)
    await intruder.locator("[data-testid=delete]").click()
    await expect(intruder).to_have_count(0, timeout=TIMEOUT_MS)
    await expect(page.locator("[data-testid=gateway-local] [data-testid=approval]")).to_have_text("approved")
