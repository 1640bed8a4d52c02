"""Users and tokens in headless Chromium (V5): a newcomer admin creates a user, issues a named token (shown once)
and revokes it; a disabled user's open editor goes back to the sign-in form saying why; everyone can log out."""

from __future__ import annotations

from playwright.async_api import Browser, Page, expect

from tests.editor.conftest import REPO, sign_in
from tests.stack import Stack

SCREENSHOT = REPO / "docs" / "editor-users.png"


async def test_a_newcomer_admin_creates_a_user_and_revokes_a_token(page: Page, browser: Browser,
                                                                   stack: Stack) -> None:  # fmt: skip
    """V5: the Users page lists users and tokens, creates a user, disables them (their open editor returns to the
    sign-in form with a clear message at its next call), and issues and revokes a named token."""
    await page.click("[data-testid=open-users]")
    await page.fill("input[name=new-username]", "maria")
    await page.fill("input[name=new-user-password]", "maria-password-1")
    await page.select_option("select[name=new-user-role]", "operator")
    await page.click("[data-testid=new-user] button[type=submit]")
    maria = page.locator("[data-testid=user-maria]")
    await expect(maria).to_contain_text("enabled")
    await expect(maria.get_by_label("role of maria")).to_have_value("operator")

    await page.fill("input[name=token-name]", "ci-script")
    await page.select_option("select[name=token-scope]", "mcp")
    await page.click("[data-testid=new-token] button[type=submit]")
    issued = page.locator("[data-testid=issued-token]")
    await expect(issued).to_contain_text("shown only now")
    secret = (await issued.locator("code").inner_text()).strip()
    assert secret.startswith("sf_")
    row = page.locator("[data-testid=token-ci-script]")
    await expect(row).to_contain_text("mcp")
    listed = (await stack.http.get("/tokens")).json()
    assert any(t["name"] == "ci-script" and t["scope"] == "mcp" for t in listed)
    assert secret not in (await page.locator("[data-testid=tokens]").inner_text())  # the list never shows it
    await page.screenshot(path=SCREENSHOT)  # docs/authentication.md's picture of this page
    await row.get_by_role("button", name="Revoke").click()
    await expect(row).to_have_count(0)
    mcp = await stack.http.post(f"{stack.url}/mcp", headers={"Authorization": f"Bearer {secret}"}, json={})
    assert mcp.status_code == 401 and "revoked" in mcp.text  # refused before any tool runs

    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        theirs = await context.new_page()
        await sign_in(theirs, stack, "maria", "maria-password-1")
        await maria.get_by_role("button", name="Disable").click()
        await expect(maria).to_contain_text("disabled")
        # Her editor's next call (it polls the alarm count) is refused: back to the sign-in form, saying why.
        await expect(theirs.locator("[data-testid=login-notice]")).to_contain_text("sign in again", timeout=60_000)
    finally:
        await context.close()


async def test_everyone_logs_out_and_the_session_is_revoked(page: Page, stack: Stack) -> None:
    """V5: "Log out" on the Account page revokes the session on the server, not only in the browser."""
    token = await page.evaluate("JSON.parse(sessionStorage.getItem('streamforge.session')).token")
    await page.click("[data-testid=open-account]")
    await expect(page.locator("[data-testid=password-form]")).to_be_visible()
    await page.click("[data-testid=sign-out]")
    await expect(page.locator("[data-testid=login-notice]")).to_contain_text("Signed out")
    after = await stack.http.get("/flows", headers={"Authorization": f"Bearer {token}"})
    assert after.status_code == 401
