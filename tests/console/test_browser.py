"""The console in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``;
``.ci/run`` installs it; skipped with a message where it cannot be had). Sign in with the
keyboard, open a model, create a token and read its secret from the page, call the API with it,
revoke it from the page and see the next call refused; no page overflows at 1280x800 or 390x844;
a screenshot of each page goes to ``tests/artifacts/``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import AuthGateway, auth_config
from tests.conftest import GatewayFactory

CHROMIUM = os.environ.get("IGW_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hello"}]}
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright for Python is not installed (pip install "
    "playwright; it is in the test extra)")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)",
                allow_module_level=True)


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, tmp_path: Path,
             core_transport: str) -> AsyncIterator[AuthGateway]:
    if core_transport != "local":
        pytest.skip("the browser test runs once")
    gateway = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    yield gateway
    await gateway.channel.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
        yield b
        await b.close()


async def _fits(page: Any, name: str) -> None:
    """Nothing overflows sideways; a screenshot for the artifacts."""
    ARTIFACTS.mkdir(exist_ok=True)
    size = page.viewport_size
    await page.screenshot(path=str(ARTIFACTS / f"console-{name}-{size['width']}.png"),
                          full_page=True)
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{name} at {size}: {overflow}px wider than the window"


async def _api(gw: AuthGateway, secret: str) -> int:
    async with aiohttp.ClientSession() as s, s.post(
            gw.gw.http + "/v1/chat/completions", json=CHAT,
            headers={"Authorization": f"Bearer {secret}"}) as r:
        return r.status


async def test_sign_in_create_use_and_revoke_a_token_in_the_browser(
        gw: AuthGateway, browser: Any) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    await page.goto(gw.gw.http + "/console/")
    assert page.url.endswith("/console/login")
    await _fits(page, "login")
    # Keyboard only: the credential field has the focus; Enter submits.
    await page.keyboard.type(gw.admin)
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/console/")
    await _fits(page, "models")
    await page.get_by_role("link", name="mock-chat", exact=True).click()
    await page.wait_for_url("**/console/models/mock-chat")
    await _fits(page, "model")
    # "+ Add new token" opens with the keyboard too.
    await page.locator("summary", has_text="Add new token").focus()
    await page.keyboard.press("Enter")
    await page.get_by_label("Name").fill("from-the-browser")
    await page.get_by_label("Expires").select_option("7")
    await page.get_by_role("button", name="Create token").click()
    await page.wait_for_selector("#new-secret")
    secret = (await page.locator("#new-secret").inner_text()).strip()
    assert secret.startswith("igw_") and "will not be shown again" in await page.content()
    assert secret not in page.url
    await _fits(page, "created")
    assert await _api(gw, secret) == 200
    # Revoke, confirming the browser's dialog.
    await page.goto(gw.gw.http + "/console/models/mock-chat")
    page.once("dialog", lambda d: d.accept())
    row = page.locator("tr", has_text="from-the-browser")
    await row.get_by_role("button", name="Revoke").click()
    await page.wait_for_load_state()
    assert await _api(gw, secret) == 401
    assert secret not in await page.content()
    assert not errors, errors
    await context.close()


async def test_pages_fit_a_phone(gw: AuthGateway, browser: Any) -> None:
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    page = await context.new_page()
    await page.goto(gw.gw.http + "/console/login")
    await _fits(page, "login")
    await page.get_by_label("Admin credential").fill(gw.admin)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/")
    await _fits(page, "models")
    await page.goto(gw.gw.http + "/console/models/mock-chat")
    await _fits(page, "model")
    await context.close()
