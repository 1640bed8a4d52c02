"""The editor in real headless Chromium against a real `streamforge up`: build, configure, wire, deploy, tap,
export/import, undo/redo, versions, roles; and the README's screenshot of the demo flow running."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect

from tests.editor.conftest import REPO, sign_in
from tests.stack import Stack

RUNNING_TIMEOUT_MS = 90_000  # a deploy starts worker processes; a busy 2-core machine needs a while
SCREENSHOT = REPO / "docs" / "editor.png"
DEPLOY_DIALOG_SHOT = REPO / "docs" / "editor-deploy-dialog.png"
TOOLBAR_SHOT = REPO / "docs" / "editor-toolbar.png"


async def new_flow(page: Page, flow_id: str) -> None:
    await page.get_by_role("button", name="New", exact=True).click()
    await page.fill("[data-testid=new-id]", flow_id)
    await page.click("[data-testid=new-create]")
    await page.wait_for_url(f"**#/flows/{flow_id}")


async def open_flow(page: Page, flow_id: str) -> None:
    await page.select_option("[data-testid=flow-select]", flow_id)
    await page.wait_for_url(f"**#/flows/{flow_id}")  # set once the flow is loaded


async def drop(page: Page, node_type: str, x: int, y: int) -> None:
    """Drag a palette entry onto the canvas at (x, y) of the canvas."""
    pane = page.locator("[data-testid=canvas] .react-flow__pane")
    await page.locator(f"[data-testid=palette-{node_type}]").drag_to(pane, target_position={"x": x, "y": y})


async def wire(page: Page, source: str, target: str) -> None:
    """Drag from output handle `node:port` to input handle `node:port`."""
    (sn, sp), (tn, tp) = source.split(":"), target.split(":")
    start = await page.locator(f"[data-testid=out-{sn}-{sp}]").bounding_box()
    end = await page.locator(f"[data-testid=in-{tn}-{tp}]").bounding_box()
    assert start and end, f"no handle for {source} or {target}"
    await page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    await page.mouse.down()
    await page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=10)
    await page.mouse.up()


async def deploy_to_the_only_gateway(page: Page) -> None:
    """Deploy a flow assigned nowhere: the dialog asks where, with the only gateway (`up`'s local one) preselected."""
    await page.click("[data-testid=deploy]")
    dialog = page.locator("[data-testid=deploy-dialog]")
    await expect(dialog.locator("[data-testid=deploy-gateway-local] [data-testid=pick]")).to_be_checked()
    await dialog.locator("[data-testid=deploy-confirm]").click()
    await expect(dialog).to_have_count(0)


async def select(page: Page, node_id: str) -> None:
    header = page.locator(f"[data-testid=node-{node_id}] .sf-node-header")
    await header.wait_for()
    # A flow just loaded is fitted to the view in the next animation frame: a click aimed before it lands on the pane.
    await page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    await header.click()
    await expect(page.locator("[data-testid=node-config] h3")).to_contain_text(node_id)


async def stored(stack: Stack, flow_id: str) -> dict[str, Any]:
    response = await stack.http.get(f"/flows/{flow_id}")
    response.raise_for_status()
    flow: dict[str, Any] = response.json()
    return flow


def edges_of(flow: dict[str, Any]) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in flow["edges"]}


async def test_demo_flow_runs_live_and_the_readme_screenshot_is_taken(page: Page) -> None:
    await open_flow(page, "demo")
    for node in ("press", "boiler", "devices", "quality", "aggregate", "high_level", "warehouse"):
        await expect(page.locator(f"[data-testid=status-{node}]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    await expect(page.locator("[data-testid=gateway-status]")).to_contain_text("HEALTHY")
    await expect(page.locator("[data-testid=deploy]")).to_have_text("Deploy")  # nothing modified since deploy
    await expect(page.locator("[data-testid=detail-warehouse]")).to_contain_text("lag ", timeout=30_000)  # a sink
    await select(page, "quality")
    await page.click("[data-testid=tap-quality-clean]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("tapping demo/quality:clean on local")
    records = page.locator("[data-testid=debug-records] li")
    await expect(records.first).to_contain_text("quality:clean", timeout=30_000)
    await expect(records.nth(5)).to_be_visible(timeout=30_000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    await page.screenshot(path=SCREENSHOT)


async def test_build_configure_deploy_and_tap_from_an_empty_canvas(page: Page, stack: Stack) -> None:
    await new_flow(page, "built")
    await expect(page.locator(".react-flow__node")).to_have_count(0)
    await drop(page, "simulator", 120, 200)
    await drop(page, "validator", 440, 200)
    await drop(page, "aggregator", 760, 160)
    await expect(page.locator(".react-flow__node")).to_have_count(3)

    await wire(page, "simulator_1:out", "validator_1:in")
    await wire(page, "validator_1:dlq", "aggregator_1:in")  # dlq records into a telemetry input
    notice = page.locator("[data-testid=notice]")
    await expect(notice).to_contain_text("Wire refused")
    await expect(notice).to_contain_text("validator_1:dlq sends dlq records, but aggregator_1:in takes telemetry")
    await wire(page, "validator_1:clean", "aggregator_1:in")
    await expect(page.locator(".react-flow__edge")).to_have_count(2)

    await select(page, "simulator_1")
    if await page.locator("#cfg-simulator_1_signals_0_asset_id").count() == 0:
        await page.click("#cfg-simulator_1_signals__add")
    await page.fill("#cfg-simulator_1_signals_0_asset_id", "press_7")
    await page.fill("#cfg-simulator_1_signals_0_parameter", "speed")
    await page.select_option("#cfg-simulator_1_signals_0_shape", label="random_walk")
    await page.fill("#cfg-simulator_1_rate_hz", "-5")  # below the schema's exclusiveMinimum: shown inline
    await expect(page.locator("[data-testid=node-config]")).to_contain_text("must be > 0")
    await page.fill("#cfg-simulator_1_rate_hz", "20")
    await expect(page.locator("[data-testid=node-config]")).not_to_contain_text("must be > 0")
    await page.fill("[data-testid=node-name]", "Press 7")
    await select(page, "aggregator_1")
    await page.fill("#cfg-aggregator_1_allowed_lateness_s", "1")
    await expect(page.locator("[data-testid=modified-simulator_1]")).to_be_visible()

    await deploy_to_the_only_gateway(page)
    # The gateway acks once its nodes run.
    await expect(notice).to_contain_text("Deployed v", timeout=RUNNING_TIMEOUT_MS)
    for node in ("simulator_1", "validator_1", "aggregator_1"):
        await expect(page.locator(f"[data-testid=status-{node}]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    await expect(page.locator("[data-testid=modified-simulator_1]")).to_have_count(0)

    flow = await stored(stack, "built")
    nodes = {n["id"]: n for n in flow["nodes"]}
    signal = nodes["simulator_1"]["config"]["signals"][0]
    assert (signal["asset_id"], signal["parameter"], signal["shape"]) == ("press_7", "speed", "random_walk")
    assert nodes["simulator_1"]["config"]["rate_hz"] == 20 and nodes["simulator_1"]["name"] == "Press 7"
    assert nodes["aggregator_1"]["config"]["allowed_lateness_s"] == 1
    assert edges_of(flow) == {("simulator_1:out", "validator_1:in"), ("validator_1:clean", "aggregator_1:in")}

    await select(page, "validator_1")
    await page.click("[data-testid=tap-validator_1-clean]")
    await expect(page.locator("[data-testid=debug-records] li").first).to_contain_text("press_7", timeout=30_000)


async def test_a_new_flow_asks_where_to_deploy_and_undeploy_and_delete_ask_first(page: Page, stack: Stack) -> None:
    local_id = stack.event["gateway"]
    signals = [{"asset_id": "pump_3", "parameter": "speed"}]
    flow = {"format": "streamforge.flow/v1", "id": "placed", "label": "asks where", "edges": [],
            "nodes": [{"id": "sim", "type": "simulator", "x": 100, "y": 100,
                       "config": {"signals": signals, "rate_hz": 2}}]}  # fmt: skip
    assert (await stack.http.post("/flows", json=flow)).status_code == 201
    await page.reload()
    await open_flow(page, "placed")
    targets, badge = page.locator("[data-testid=deploy-targets]"), page.locator("[data-testid=gateway-status]")
    status, notice = page.locator("[data-testid=status-sim]"), page.locator("[data-testid=notice]")
    await expect(targets).to_have_text("→ no gateway yet")
    await expect(badge).to_have_text("not running")  # the live status of no gateway: a fact, not an error
    await expect(status).to_have_text("—")
    await page.wait_for_timeout(1500)  # a few more of those seconds: still signed in, nothing alarming
    await expect(page.locator("[data-testid=canvas]")).to_be_visible()
    await expect(notice).to_have_count(0)

    await page.click("[data-testid=deploy]")
    dialog = page.locator("[data-testid=deploy-dialog]")
    local = dialog.locator("[data-testid=deploy-gateway-local]")
    await expect(local.locator("[data-testid=pick]")).to_be_checked()  # the only gateway there is
    await expect(local).to_contain_text(local_id)
    await expect(local).to_contain_text("gateway=local")
    confirm = dialog.locator("[data-testid=deploy-confirm]")
    await expect(confirm).to_have_text("Deploy to local")
    await page.screenshot(path=DEPLOY_DIALOG_SHOT)
    await dialog.locator("[data-testid=deploy-kind-labels]").check()
    await expect(confirm).to_be_disabled()
    await dialog.locator("[data-testid=label-key-0]").fill("gateway")
    await dialog.locator("[data-testid=label-value-0]").fill("local")
    await expect(dialog.locator("[data-testid=label-matches]")).to_contain_text("Matches 1 gateway: local")
    await expect(confirm).to_have_text("Deploy to gateway=local (1 gateway)")
    await dialog.locator("[data-testid=deploy-kind-gateway]").check()
    await expect(confirm).to_have_text("Deploy to local")
    await confirm.click()

    await expect(notice).to_contain_text("Deployed v1 to local", timeout=RUNNING_TIMEOUT_MS)
    await expect(notice.locator("[data-testid=deploy-result-local]")).to_contain_text("APPLIED")
    await expect(status).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    await expect(targets).to_have_text("→ local")
    picker = page.locator("[data-testid=gateway-pick]")
    await expect(picker).to_have_value(local_id)
    await expect(picker.locator("option")).to_have_text(["local · v1"])
    await expect(page.locator("[data-testid=deploy]")).to_have_text("Deploy")  # nothing modified on local
    await page.locator("header.toolbar").screenshot(path=TOOLBAR_SHOT)
    placed = (await stack.http.get("/flows/placed/status")).json()
    assert [(t["target_kind"], t["target"]) for t in placed["targets"]] == [("gateway", local_id)], placed

    await page.click("[data-testid=flow-menu]")
    await page.click("[data-testid=menu-undeploy]")
    asked = page.locator("[data-testid=undeploy-dialog]")
    await expect(asked.locator("[data-testid=confirm-text]")).to_have_text("It stops on 1 gateway: local.")
    await asked.locator("[data-testid=confirm]").click()
    await expect(notice).to_contain_text("Undeployed placed: stopping on local")
    await expect(status).to_have_text("—", timeout=30_000)  # the badges go with the nodes
    await expect(targets).to_have_text("→ no gateway yet")
    await expect(badge).to_have_text("not running", timeout=30_000)
    placed = (await stack.http.get("/flows/placed/status")).json()
    assert placed["targets"] == [] and placed["gateways"] == {}, placed
    assert (await stack.http.get("/flows/placed")).status_code == 200  # still saved

    await page.click("[data-testid=flow-menu]")
    await page.click("[data-testid=menu-delete]")
    asked = page.locator("[data-testid=delete-dialog]")
    await expect(asked.locator("[data-testid=confirm-text]")).to_have_text("No gateway runs it now.")
    await expect(asked).to_contain_text("It leaves the flow list")
    await asked.locator("[data-testid=confirm]").click()
    await expect(notice).to_contain_text("Deleted flow placed")
    await expect(page.locator("[data-testid=flow-select] option[value=placed]")).to_have_count(0)
    await expect(page.locator("[data-testid=flow-select]")).not_to_have_value("placed")
    assert (await stack.http.get("/flows/placed")).status_code == 404


async def test_undo_redo_delete_copy_paste(page: Page) -> None:
    await new_flow(page, "history")
    nodes, edges = page.locator(".react-flow__node"), page.locator(".react-flow__edge")
    await drop(page, "simulator", 150, 200)
    await drop(page, "validator", 500, 200)
    await wire(page, "simulator_1:out", "validator_1:in")
    await expect(edges).to_have_count(1)

    await page.click("[data-testid=undo]")
    await expect(edges).to_have_count(0)
    await page.click("[data-testid=undo]")
    await expect(nodes).to_have_count(1)
    await page.click("[data-testid=redo]")
    await expect(nodes).to_have_count(2)
    await page.keyboard.press("Control+Shift+Z")
    await expect(edges).to_have_count(1)

    await select(page, "validator_1")
    await page.keyboard.press("Delete")
    await expect(nodes).to_have_count(1)
    await expect(edges).to_have_count(0)  # the wire goes with its node
    await page.keyboard.press("Control+Z")
    await expect(nodes).to_have_count(2)
    await expect(edges).to_have_count(1)

    await select(page, "simulator_1")
    await page.keyboard.press("Control+C")
    await page.keyboard.press("Control+V")
    await expect(page.locator("[data-testid=node-simulator_2]")).to_be_visible()
    await page.keyboard.press("Control+Z")
    await expect(page.locator("[data-testid=node-simulator_2]")).to_have_count(0)


async def test_export_then_import_back_unchanged_and_a_bad_import_stores_nothing(page: Page, stack: Stack,
                                                                                  tmp_path: Path) -> None:  # fmt: skip
    await open_flow(page, "demo")
    async with page.expect_download() as first:
        await page.click("[data-testid=export]")
    exported = await (await first.value).path()
    text = await asyncio.to_thread(Path(exported).read_text)
    assert "postgresql://" not in text and '"$secret"' in text  # the DSN stays in the secret store

    await page.get_by_role("button", name="Import", exact=True).click()
    await page.set_input_files("[data-testid=import-file]", exported)
    await page.click("[data-testid=import-submit]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("Imported demo as v")
    async with page.expect_download() as second:
        await page.click("[data-testid=export]")
    again = await asyncio.to_thread(Path(await (await second.value).path()).read_text)
    before, after = json.loads(text), json.loads(again)
    assert after["version"] == before["version"] + 1  # the import is a new version of the same content
    assert {**before, "version": 0} == {**after, "version": 0}

    flows_before = (await stack.http.get("/flows")).json()
    bad = {**before, "id": "broken", "nodes": [*before["nodes"], {"id": "x", "type": "no_such_type"}],
           "edges": [*before["edges"], {"from": "quality:dlq", "to": "aggregate:in"}]}  # fmt: skip
    await page.get_by_role("button", name="Import", exact=True).click()
    await page.fill("[data-testid=import-text]", json.dumps(bad))
    await page.click("[data-testid=import-submit]")
    errors = page.locator("[data-testid=import-errors]")
    await expect(errors).to_contain_text("2 problem(s)")
    await expect(errors).to_contain_text(f"/edges/{len(before['edges'])}")  # the dlq -> telemetry wire
    await expect(errors).to_contain_text("no_such_type")
    assert (await stack.http.get("/flows")).json() == flows_before


async def test_versions_diff_and_restore(page: Page, stack: Stack) -> None:
    flow = {"format": "streamforge.flow/v1", "id": "versioned", "label": "versions", "edges": [],
            "nodes": [{"id": "sim", "type": "simulator", "x": 100, "y": 100,
                       "config": {"signals": [{"asset_id": "a", "parameter": "p"}], "rate_hz": 5}}]}  # fmt: skip
    assert (await stack.http.post("/flows", json=flow)).status_code == 201
    await page.reload()
    await open_flow(page, "versioned")
    await select(page, "sim")
    await page.fill("#cfg-sim_rate_hz", "7")
    await page.fill("[data-testid=flow-label]", "versions, faster")
    await page.click("[data-testid=save]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("Saved v2")

    await page.click("[data-testid=tab-versions]")
    await page.locator("[data-testid=version-1] input").check()
    await page.locator("[data-testid=version-2] input").check()
    await expect(page.locator("[data-testid=diff-label]")).to_have_text('~ label: "versions" → "versions, faster"')
    await expect(page.locator("[data-testid=diff-node-sim]")).to_contain_text("config/rate_hz: 5 → 7")
    await expect(page.locator("[data-testid=node-sim]")).to_have_class(re.compile(r"\bdiff-changed\b"))
    await page.click("[data-testid=restore-1]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("Restored as v3")
    latest = await stored(stack, "versioned")
    assert latest["version"] == 3 and latest["nodes"][0]["config"]["rate_hz"] == 5
    await page.click("[data-testid=tab-node]")
    await select(page, "sim")
    await expect(page.locator("#cfg-sim_rate_hz")).to_have_value("5")


async def test_deploy_refused_shows_problems_on_the_node_and_runs_nothing(page: Page, stack: Stack) -> None:
    await new_flow(page, "dangling")
    await drop(page, "aggregator", 300, 200)  # its required input is not wired
    await page.click("[data-testid=deploy]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("Deploy refused: 1 problem")
    await expect(page.locator("[data-testid=problem-aggregator_1]")).to_contain_text("is not wired")
    await expect(page.locator("[data-testid=problems]")).to_contain_text("aggregator_1")
    status = (await stack.http.get("/flows/dangling/status")).json()
    assert status["deployed_version"] is None and status["nodes"] == []


async def test_sign_in_is_required_and_a_viewer_cannot_edit(browser: Browser, stack: Stack) -> None:
    created = await stack.http.post("/users", json={"username": "vera", "password": "viewer-pass-123",
                                                    "role": "viewer"})  # fmt: skip
    assert created.status_code == 201
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(stack.url + "/")
    await page.fill("input[name=username]", "vera")
    await page.fill("input[name=password]", "wrong")
    await page.click("button[type=submit]")
    await expect(page.locator("[role=alert]")).to_be_visible()
    await sign_in(page, stack, "vera", "viewer-pass-123")
    await expect(page.locator("[data-testid=palette]")).to_have_count(0)
    await expect(page.locator("[data-testid=deploy]")).to_be_disabled()
    await expect(page.locator("[data-testid=save]")).to_be_disabled()
    await open_flow(page, "demo")
    await expect(page.locator("[data-testid=status-devices]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    await context.close()


async def test_switching_flows_asks_first_and_stops_the_taps_of_the_flow_left(page: Page, stack: Stack) -> None:
    other = {"format": "streamforge.flow/v1", "id": "elsewhere", "label": "", "edges": [],
             "nodes": [{"id": "sim", "type": "simulator", "x": 100, "y": 100,
                        "config": {"signals": [{"asset_id": "a", "parameter": "p"}]}}]}  # fmt: skip
    assert (await stack.http.post("/flows", json=other)).status_code in (201, 409)
    await page.reload()
    await open_flow(page, "demo")
    await expect(page.locator("[data-testid=status-quality]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    records = page.locator("[data-testid=debug-records] li")
    await select(page, "quality")
    await page.click("[data-testid=tap-quality-clean]")
    await expect(page.locator("[data-testid=taps]")).to_contain_text("demo/quality:clean")  # once the server said so
    await expect(records.first).to_contain_text("quality:clean", timeout=30_000)

    await page.fill("[data-testid=node-name]", "Quality gate")  # an unsaved edit
    await page.select_option("[data-testid=flow-select]", "elsewhere")
    await expect(page.locator("[data-testid=discard-dialog]")).to_be_visible()
    await page.click("[data-testid=keep-editing]")
    await expect(page.locator("[data-testid=flow-select]")).to_have_value("demo")
    await expect(page.locator("[data-testid=node-name]")).to_have_value("Quality gate")  # nothing was lost

    await page.select_option("[data-testid=flow-select]", "elsewhere")
    await page.click("[data-testid=discard]")
    await page.wait_for_url("**#/flows/elsewhere")
    await expect(page.locator("[data-testid=taps]")).to_have_text("")
    await expect(records).to_have_count(0)
    await page.wait_for_timeout(2500)  # the demo keeps producing 10 readings/s: none of them may show here
    await expect(records).to_have_count(0)

    await open_flow(page, "demo")  # nothing unsaved now: no question
    await select(page, "quality")
    await page.click("[data-testid=tap-quality-clean]")
    await expect(records.first).to_contain_text("quality:clean", timeout=30_000)
    await page.click("[data-testid=stop-taps]")
    await expect(records).to_have_count(0)
    await page.wait_for_timeout(2500)
    await expect(records).to_have_count(0)
    await drop(page, "validator", 700, 600)  # on the canvas, not deployed: nothing to tap
    await expect(page.locator("[data-testid=node-config] h3")).to_contain_text("validator_1")
    await expect(page.locator("[data-testid^=tap-]")).to_have_count(0)


async def test_a_new_node_saves_what_its_form_shows_and_problems_lead_to_their_node(page: Page, stack: Stack) -> None:
    await new_flow(page, "shown_is_saved")
    await drop(page, "simulator", 150, 200)
    await drop(page, "aggregator", 600, 200)
    config = page.locator("[data-testid=node-config]")
    await expect(config).to_contain_text("Resolutions")
    await expect(config).not_to_contain_text("Resolutions-1")  # a list of plain values: no label per item
    await expect(config).not_to_contain_text("AggregatorConfig")
    await select(page, "simulator_1")
    await expect(page.locator("#cfg-simulator_1_signals_0_asset_id")).to_be_visible()  # the form shows one signal
    await expect(config).to_contain_text("Signals 1")
    await expect(config).not_to_contain_text("SimulatorConfig")
    await page.click("[data-testid=save]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("will not deploy")
    saved = await stored(stack, "shown_is_saved")
    signals = next(n for n in saved["nodes"] if n["id"] == "simulator_1")["config"]["signals"]
    assert len(signals) == 1  # the signal the form showed is in the document
    await page.click("[data-testid=tab-problems]")
    problems = page.locator("[data-testid=problems] li")
    pointers = await problems.all_inner_texts()
    assert any("/nodes/0/config/signals/0/asset_id" in p for p in pointers), pointers  # not "signals: required"
    await page.locator("[data-testid=problems] button", has_text="aggregator_1").first.click()
    await expect(page.locator("[data-testid=node-config] h3")).to_contain_text("aggregator_1")  # selected


async def test_modified_marks_and_count_are_what_a_deploy_would_restart(page: Page, stack: Stack) -> None:
    await open_flow(page, "demo")
    await expect(page.locator("[data-testid=status-quality]")).to_have_text("RUNNING", timeout=RUNNING_TIMEOUT_MS)
    deploy = page.locator("[data-testid=deploy]")
    await expect(deploy).to_have_text("Deploy")
    await select(page, "quality")
    await page.fill("[data-testid=node-name]", "Renamed")  # a rename restarts nothing
    await page.wait_for_timeout(800)
    await expect(deploy).to_have_text("Deploy")
    await expect(page.locator("[data-testid=modified-quality]")).to_have_count(0)
    await page.locator("[data-testid=node-devices] .sf-node-header").click()
    await page.keyboard.press("Delete")  # stopped, and quality loses one of its three inputs: it restarts
    await expect(page.locator("[data-testid=modified-quality]")).to_be_visible()
    await expect(deploy).to_have_text("Deploy (2 modified)")
    await page.locator("[data-testid=node-warehouse] .sf-node-header").click()
    await page.keyboard.press("Delete")  # stopped too; nothing downstream of it
    await expect(deploy).to_have_text("Deploy (3 modified)")
    assert await page.locator(".sf-modified").count() == 1


async def test_a_stale_save_offers_a_reload_by_its_error_code(page: Page, stack: Stack) -> None:
    flow = {"format": "streamforge.flow/v1", "id": "contended", "label": "", "edges": [],
            "nodes": [{"id": "sim", "type": "simulator", "x": 100, "y": 100,
                       "config": {"signals": [{"asset_id": "a", "parameter": "p"}]}}]}  # fmt: skip
    assert (await stack.http.post("/flows", json=flow)).status_code == 201
    await page.reload()
    await open_flow(page, "contended")
    meanwhile = (await stack.http.get("/flows/contended")).json()
    meanwhile["label"] = "saved by someone else"
    assert (await stack.http.put("/flows/contended", json=meanwhile)).status_code == 200
    await page.fill("[data-testid=flow-label]", "mine")
    await page.click("[data-testid=save]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("is at version 2")
    await page.click("[data-testid=reload]")
    await expect(page.locator("[data-testid=flow-label]")).to_have_value("saved by someone else")


async def test_every_sink_has_a_form_its_secrets_masked_and_stored_apart(page: Page, stack: Stack) -> None:
    await new_flow(page, "sink_forms")
    masked = {"http": ["bearer_token", "password"], "s3": ["secret_access_key"],
              "kafka": ["password", "registry_token"], "timescaledb": ["dsn"]}  # fmt: skip
    for index, (kind, secrets) in enumerate(masked.items()):
        await drop(page, kind, 150 + 250 * (index % 3), 120 + 180 * (index // 3))
        for field in secrets:  # the dropped node's form is open
            await expect(page.locator(f"#cfg-{kind}_1_{field}")).to_have_attribute("type", "password")
        if kind == "kafka":
            await expect(page.locator("#cfg-kafka_1_exactly_once")).to_be_checked()
    await drop(page, "alert_router", 400, 480)
    # The router's own connection default (10 s), not that of ConnectionSettings (3 s).
    await expect(page.locator("#cfg-alert_router_1_connection_timeout_s")).to_have_value("10")
    await page.click("#cfg-alert_router_1_destinations__add")
    entry = "#cfg-alert_router_1_destinations_newKey"
    await expect(page.locator(f"{entry}_kind")).to_have_value("slack")  # a new destination is the first choice
    await expect(page.locator(f"{entry}_url")).to_have_attribute("type", "password")  # a Slack URL is a secret
    await page.select_option(f"{entry}__oneof_select", label="pagerduty")
    await expect(page.locator(f"{entry}_kind")).to_have_value("pagerduty")
    await expect(page.locator(f"{entry}_kind")).to_have_attribute("readonly", "")
    await expect(page.locator(f"{entry}_routing_key")).to_have_attribute("type", "password")
    await page.fill(f"{entry}_routing_key", "R0UT1NGKEY")
    await page.fill(f"{entry}-key", "oncall")
    await page.keyboard.press("Tab")  # the key is renamed on blur
    await expect(page.locator("#cfg-alert_router_1_destinations_oncall_routing_key")).to_be_visible()
    await page.click("[data-testid=save]")
    await expect(page.locator("[data-testid=notice]")).to_contain_text("Saved", timeout=30_000)
    saved = await stored(stack, "sink_forms")
    router = next(n for n in saved["nodes"] if n["id"] == "alert_router_1")["config"]
    assert router["destinations"]["oncall"]["kind"] == "pagerduty"
    reference = "sink_forms.alert_router_1.destinations.oncall.routing_key"
    assert router["destinations"]["oncall"]["routing_key"] == {"$secret": reference}
    assert "R0UT1NGKEY" not in json.dumps(saved)  # the value lives in the secret store only
    await page.reload()
    await open_flow(page, "sink_forms")
    await select(page, "alert_router_1")
    shown = page.locator("#cfg-alert_router_1_destinations_oncall_routing_key")
    await expect(shown).to_have_attribute("placeholder", f'stored secret "{reference}" (type to replace)')
    await expect(shown).to_have_value("")
