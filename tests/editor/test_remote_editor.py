"""Remote mode in the editor: headless Chromium against a standalone `streamforge control-plane` (HTTPS with its own
CA) whose two gateways run on other simulated network hosts (tests/remote.py), each with the same local ports. Sign
in and stay signed in with nothing running; build a flow on the canvas and deploy it to a label selector; each
gateway's live badges and a tap on the remote one picked; the Health page's rates against each gateway's own
/metrics, read inside its own network namespace.

Chromium trusts the control plane by pinning: the public key of the certificate the control plane serves, checked
against its CA first, is the only one Chromium accepts besides the system's roots (--ignore-certificate-errors-spki-
list). Playwright has no option to add a CA, and adding one to Chromium's NSS store needs NSS's certutil, which this
machine does not have; a browser without the pin refuses the control plane (checked below)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.async_api import Browser, Error, Locator, Page, async_playwright, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests import netns
from tests.editor.conftest import CHROMIUM_FLAGS, REPO
from tests.editor.test_editor import drop, new_flow, select, wire
from tests.eventually import eventually
from tests.netns import NetHostFactory
from tests.remote import Remote, remote_fleet
from tests.runtime.test_remote_mode import counters, inside

net_hosts = netns.net_hosts

FLOW, SIM, VAL = "remote_line", "simulator_1", "validator_1"
RATE_HZ, SIGNALS = 10, 2  # 20 readings a second on each gateway
TIMEOUT_MS = 120_000  # a deploy starts worker processes on two gateways while a suite may share the CPU
SIGNED_IN_S = 10.0
RATE_WINDOW_S = 30.0  # a gateway's counters step as its workers publish (every 2 s): its own rate over 30 s
SCREENSHOT = REPO / "docs" / "editor-remote.png"

# Every websocket the page opens, with the close codes it saw: a 4401 is the live socket signing the user out.
SOCKET_WATCH = """(() => {
  const Native = window.WebSocket;
  const seen = (window.__sfSockets = []);
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const entry = { path: new URL(String(url), location.href).pathname, closes: [] };
      seen.push(entry);
      this.addEventListener('close', (event) => entry.closes.push(event.code));
    }
  };
})();"""


@pytest.fixture
async def remote(net_hosts: NetHostFactory, tmp_path: Path) -> AsyncIterator[Remote]:
    async with remote_fleet(net_hosts, tmp_path) as fleet:
        yield fleet


async def served_key_pin(remote: Remote) -> str:
    """base64 SHA-256 of the SubjectPublicKeyInfo of the certificate the control plane serves, once the handshake
    has checked that certificate against the control plane's CA (and for the name 127.0.0.1)."""
    address = urlsplit(remote.url)
    assert address.hostname and address.port
    _, writer = await asyncio.open_connection(address.hostname, address.port, ssl=remote.ssl_context())
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        await writer.wait_closed()
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
async def pinned(remote: Remote) -> AsyncIterator[Browser]:
    """Debian's Chromium that accepts the control plane's own certificate, and no other the system does not."""
    executable = os.environ.get("STREAMFORGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    pin = f"--ignore-certificate-errors-spki-list={await served_key_pin(remote)}"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=[*CHROMIUM_FLAGS, pin])
        yield launched
        await launched.close()


async def own_rate(remote: Remote, name: str) -> float:
    """Records a second out of the simulator, from the rise of the gateway's own counter over RATE_WINDOW_S, read
    on its own loopback inside its own namespace (every gateway serves /metrics on the same port)."""
    host, metrics_url = remote.hosts[name], remote.gateways[name].event["metrics"]
    key = f"{FLOW}/{SIM}:out"

    async def published() -> dict[str, float] | None:  # a worker's first counters come with its first publish
        found = counters(await inside(host, metrics_url))
        return found if key in found else None

    first = await eventually(published, 60, interval_s=1, what=f"{name}'s simulator counters")
    started = time.monotonic()
    await asyncio.sleep(RATE_WINDOW_S)  # the measuring window, not a wait for something
    last, seconds = counters(await inside(host, metrics_url)), time.monotonic() - started
    return (last[key] - first[key]) / seconds


def simulator_out(page: Page, name: str) -> Locator:
    """The simulator's out rate on the Health page, in gateway `name`'s table."""
    row = page.locator(f"[data-testid=health-{name}]").locator(f'[data-testid="component-{FLOW}/{SIM}"]')
    return row.locator("[data-testid=rate-out]")


def shown_rate(text: str) -> float:
    """A rate as the Health page shows it ("20.1/s"), as a number."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)/s", text.strip())
    assert match, f"not a rate: {text!r}"
    return float(match.group(1))


async def test_the_editor_drives_remote_gateways_on_other_hosts(remote: Remote, pinned: Browser, browser: Browser,
                                                                tmp_path: Path) -> None:  # fmt: skip
    shots = tmp_path / "shots"
    shots.mkdir()

    # The pin is what makes Chromium accept the control plane: without it the same page is refused.
    unpinned = await browser.new_context()
    with pytest.raises(Error, match="ERR_CERT_AUTHORITY_INVALID"):
        await (await unpinned.new_page()).goto(remote.url + "/")
    await unpinned.close()

    context = await pinned.new_context(viewport={"width": 1600, "height": 1000})
    await context.add_init_script(SOCKET_WATCH)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await drive(page, remote, remote.ids, shots)
    finally:
        await page.screenshot(path=shots / "last.png")
        await context.close()
    assert not errors, f"the page threw: {errors}"


async def drive(page: Page, remote: Remote, ids: dict[str, str], shots: Path) -> None:
    admin = remote.admin
    login = page.locator("[data-testid=login]")

    # 1. Sign in through the login page; still signed in 10 s later with nothing running anywhere.
    assert all(row["running"] == {} for row in (await admin.get("/gateways")).json())
    await page.goto(remote.url + "/")
    await page.fill("input[name=username]", "admin")
    await page.fill("input[name=password]", remote.password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("[data-testid=canvas]")
    signed_in = time.monotonic()
    live_sockets = "window.__sfSockets.filter((s) => s.path === '/api/v1/live')"
    await eventually(lambda: page.evaluate(live_sockets), 30, what="the live socket opened")
    with pytest.raises(PlaywrightTimeout):  # watched all along: the login form must not come back
        await login.wait_for(state="attached", timeout=SIGNED_IN_S * 1000)
    assert time.monotonic() - signed_in >= SIGNED_IN_S
    sockets: list[dict[str, Any]] = await page.evaluate("window.__sfSockets")
    assert not any(4401 in s["closes"] for s in sockets), f"signed out by the live socket: {sockets}"
    live: list[dict[str, Any]] = await page.evaluate(live_sockets)
    assert len(live) == 1 and not live[0]["closes"], sockets  # the one live socket stayed open all along
    await expect(page.locator("[data-testid=gateway-status]")).not_to_have_text("offline")
    await expect(page.locator("[data-testid=canvas]")).to_be_visible()
    assert all(row["running"] == {} for row in (await admin.get("/gateways")).json())  # still nothing running
    await page.screenshot(path=shots / "1-signed-in.png")

    # 2. Build the flow on the canvas: a simulator (2 signals at 10 Hz, realtime) wired to a validator.
    await new_flow(page, FLOW)
    await drop(page, "simulator", 160, 220)
    await drop(page, "validator", 520, 220)
    await expect(page.locator(".react-flow__node")).to_have_count(2)
    await wire(page, f"{SIM}:out", f"{VAL}:in")
    await expect(page.locator(".react-flow__edge")).to_have_count(1)
    await select(page, SIM)
    if await page.locator(f"#cfg-{SIM}_signals_0_asset_id").count() == 0:
        await page.click(f"#cfg-{SIM}_signals__add")
    await page.click(f"#cfg-{SIM}_signals__add")
    for index in range(SIGNALS):
        await page.fill(f"#cfg-{SIM}_signals_{index}_asset_id", f"pump_{index}")
        await page.fill(f"#cfg-{SIM}_signals_{index}_parameter", "pressure")
    await page.fill(f"#cfg-{SIM}_rate_hz", str(RATE_HZ))
    realtime = page.locator(f"#cfg-{SIM}_realtime")
    if not await realtime.is_checked():
        await realtime.check()
    await expect(realtime).to_be_checked()

    await page.click("[data-testid=deploy]")  # saves, then asks where: the flow is assigned nowhere
    dialog = page.locator("[data-testid=deploy-dialog]")
    await expect(dialog.locator("#deploy-title")).to_have_text(f"Where should {FLOW} run?")
    confirm = dialog.locator("[data-testid=deploy-confirm]")
    await expect(dialog.locator("[data-testid=pick]")).to_have_count(2)  # both approved; neither chosen for you
    await expect(confirm).to_be_disabled()
    await dialog.locator("[data-testid=deploy-kind-labels]").check()
    await dialog.locator("[data-testid=label-key-0]").fill("site")
    await dialog.locator("[data-testid=label-value-0]").fill("north")
    await expect(dialog.locator("[data-testid=label-matches]")).to_contain_text("Matches 2 gateways: plant_a, plant_b")
    await expect(confirm).to_have_text("Deploy to site=north (2 gateways)")
    await page.screenshot(path=shots / "2-deploy-dialog.png")
    await confirm.click()
    await expect(dialog).to_have_count(0)

    notice = page.locator("[data-testid=notice]")
    await expect(notice).to_contain_text(re.compile(r"Deployed v\d+ to site=north \(2 gateways\)"), timeout=TIMEOUT_MS)
    for name in ids:  # the badge itself: "NOT APPLIED" contains "APPLIED"
        await expect(notice.locator(f"[data-testid=deploy-result-{name}] .sf-badge")).to_have_text("APPLIED")
    await expect(page.locator("[data-testid=deploy-targets]")).to_have_text("→ site=north (2 gateways)")
    await page.screenshot(path=shots / "2-deployed.png")

    stored = (await admin.get(f"/flows/{FLOW}")).json()
    assert {(e["from"], e["to"]) for e in stored["edges"]} == {(f"{SIM}:out", f"{VAL}:in")}, stored
    config = next(n for n in stored["nodes"] if n["id"] == SIM)["config"]
    assert [s["asset_id"] for s in config["signals"]] == ["pump_0", "pump_1"], config
    assert config["rate_hz"] == RATE_HZ and config.get("realtime", True) is True, config
    status = (await admin.get(f"/flows/{FLOW}/status")).json()
    assert [(t["target_kind"], t["labels"]) for t in status["targets"]] == [("label", {"site": "north"})], status

    # 3. The gateway picker lists both; the badges are those of the one picked, and all RUNNING.
    picker, badge = page.locator("[data-testid=gateway-pick]"), page.locator("[data-testid=gateway-status]")
    version = stored["version"]
    listed = [f"{name} · v{version}" for name in sorted(ids, key=lambda name: ids[name])]  # in the order of ids
    await expect(picker.locator("option")).to_have_text(listed, timeout=TIMEOUT_MS)
    for name in ("plant_a", "plant_b"):
        await picker.select_option(ids[name])
        await expect(badge).to_have_attribute("data-gateway", ids[name], timeout=30_000)
        for node in (SIM, VAL):
            await expect(page.locator(f"[data-testid=status-{node}]")).to_have_text("RUNNING", timeout=TIMEOUT_MS)
        await expect(badge).to_have_text("HEALTHY", timeout=TIMEOUT_MS)
        await page.screenshot(path=shots / f"3-badges-{name}.png")

    # 4. A tap on the validator's clean output, with plant_b picked: the server taps it there, records show.
    await expect(picker).to_have_value(ids["plant_b"])
    await select(page, VAL)
    await page.click(f"[data-testid=tap-{VAL}-clean]")
    await expect(notice).to_contain_text(f"tapping {FLOW}/{VAL}:clean on plant_b (telemetry.clean)")
    records = page.locator("[data-testid=debug-records] li")
    await expect(records.first).to_contain_text(re.compile(rf"{VAL}:clean @\d+ asset_id=pump_[01]"), timeout=60_000)
    await expect(records.nth(4)).to_be_visible(timeout=30_000)
    await page.screenshot(path=shots / "4-tap-plant_b.png")
    await page.screenshot(path=SCREENSHOT)

    # 5. Health: each gateway's simulator out rate, as shown, is its own /metrics rate within 10 %.
    await page.click("[data-testid=open-health]")
    for name in ids:
        await expect(simulator_out(page, name)).to_have_text(re.compile(r"^\d+\.\d/s$"), timeout=TIMEOUT_MS)
    own = dict(zip(ids, await asyncio.gather(*(own_rate(remote, name) for name in ids)), strict=True))
    shown = {name: shown_rate(await simulator_out(page, name).inner_text()) for name in ids}
    await page.screenshot(path=shots / "5-health.png")
    print(f"simulator out/s: shown {shown}, each gateway's own {own}")
    for name in ids:
        assert abs(shown[name] - own[name]) <= 0.1 * own[name], (name, shown[name], own[name])
        assert abs(own[name] - RATE_HZ * SIGNALS) <= 0.2 * RATE_HZ * SIGNALS, (name, own[name])

    # The tap's records are plant_b's: with plant_a's cable cut (OFFLINE), records still come.
    await page.click("[data-testid=back-to-flows]")
    await expect(picker).to_have_value(ids["plant_b"])
    await expect(page.locator("[data-testid=taps]")).to_contain_text(f"tapping {FLOW}/{VAL}:clean")
    host_a = remote.hosts["plant_a"]
    await host_a.link_down()
    try:

        async def a_offline() -> bool:
            rows = (await admin.get("/gateways")).json()
            return any(row["id"] == ids["plant_a"] and row["health"] == "OFFLINE" for row in rows)

        await eventually(a_offline, 60, interval_s=0.5, what="plant_a OFFLINE")
        await page.click("[data-testid=clear-records]")
        await expect(records.first).to_contain_text(re.compile(r"asset_id=pump_[01]"), timeout=30_000)
        await expect(records.nth(4)).to_be_visible(timeout=30_000)
        await page.screenshot(path=shots / "6-plant_a-cut.png")
    finally:
        await host_a.link_up()
