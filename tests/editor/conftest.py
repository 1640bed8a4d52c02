"""Editor fixtures: one real `streamforge up` (demo flow on the session's Kafka and PostgreSQL) and one headless
Debian Chromium per module, driven by Playwright; each test gets a fresh signed-in page."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Generator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from streamforge.runtime.control_plane.editor import BUILD_HINT, editor_dist
from streamforge.runtime.kafka.supervisor import EmbeddedKafka
from tests.stack import Stack, running_up

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [  # the machine's network is closed: no background fetches, no sandbox as root
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
async def stack(kafka: EmbeddedKafka, registry_url: str, postgres_dsn: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:  # fmt: skip
    """`streamforge up` as a user runs it, with the demo flow's sink pointed at the session's PostgreSQL."""
    if not (editor_dist() / "index.html").is_file():
        pytest.fail(f"the editor is not built: run `{BUILD_HINT}` (scripts/setup.sh does)")
    demo = json.loads((REPO / "flows" / "demo.json").read_text())
    for node in demo["nodes"]:
        if node["type"] == "postgres":
            node["config"]["dsn"] = postgres_dsn
    async with running_up(tmp_path_factory.mktemp("up"), demo, kafka, registry_url) as stack:
        yield stack


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium (scripts/setup.sh installs it); Playwright never downloads a browser here."""
    executable = os.environ.get("STREAMFORGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if shutil.which(executable) is None:
        pytest.fail("Chromium is missing: `apt-get install chromium` (scripts/setup.sh does)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        await launched.close()


async def sign_in(page: Page, stack: Stack, username: str = "admin", password: str | None = None) -> None:
    await page.goto(stack.url + "/")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password or stack.password)
    await page.click("button[type=submit]")
    await page.wait_for_selector("[data-testid=canvas]")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()
# W7: the editor works under its CSP with nothing refused (an eval, an inline style or script); a refusal is no
# console message Playwright sees, so the page reports it as one.
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (event) =>
  console.error(`Content Security Policy violation: ${event.violatedDirective} ${event.blockedURI}`));"""


@pytest.fixture
async def page(browser: Browser, stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A signed-in page; when its test fails, a screenshot of it lands in the temp dir, named in the log."""
    context = await browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    await context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if "Content Security Policy" in message.text
            else None)  # fmt: skip
    await sign_in(page, stack)
    yield page
    if request.node.stash.get(FAILED, False):
        shot = Path(tempfile.gettempdir()) / f"streamforge-{request.node.name}.png"
        await page.screenshot(path=shot)
        print(f"screenshot of the failed test: {shot}")
    await context.close()
    assert not errors, f"the page threw, or broke its CSP: {errors}"
