"""/docs in a real browser: Debian's chromium, headless, driven by Playwright.

A user registers through "Try it out", pastes the access token into Authorize and
calls GET /auth/me, with no console error and no request to any other host.
The screenshots are kept in `artifacts/` (the whole page, and the /auth/me call).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    browser_missing,
    skip_without_a_browser,
)
from tests.helpers.processes import PROJECT_ROOT, Server, production_env, run_alembic, serve

pytestmark = pytest.mark.server

ARTIFACTS = PROJECT_ROOT / "artifacts"
OPERATIONS = 24  # as many as the OpenAPI document has (tests/test_docs.py OPERATIONS)

skip_without_a_browser()


@pytest.fixture
def docs_server(tmp_path: Path) -> Iterator[Server]:
    database_url = f"sqlite:///{tmp_path / 'docs.db'}"
    run_alembic(database_url, "upgrade", "head")
    with serve(production_env(database_url, workers=1), tmp_path / "server.log") as server:
        yield server


async def test_register_authorize_and_me_through_swagger_ui(docs_server):
    from playwright.async_api import async_playwright

    assert not browser_missing(), f"{CHROMIUM} not found"
    origin = urlsplit(docs_server.base_url).netloc
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    console_errors: list[str] = []
    foreign_requests: list[str] = []

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            page.on(
                "console",
                lambda message: message.type == "error" and console_errors.append(message.text),
            )
            page.on("pageerror", lambda error: console_errors.append(str(error)))
            page.on(
                "request",
                lambda request: (
                    urlsplit(request.url).netloc != origin
                    and not request.url.startswith("data:")
                    and foreign_requests.append(request.url)
                ),
            )

            await page.goto(f"{docs_server.base_url}/docs")
            await page.wait_for_selector(".opblock")
            assert await page.locator(".opblock").count() == OPERATIONS

            register = page.locator("#operations-auth-post_register")
            await register.locator(".opblock-summary").click()
            await register.get_by_role("button", name="Try it out").click()
            body = {"email": email, "password": "correct horse battery", "name": "Browser"}
            await register.locator("textarea.body-param__text").fill(json.dumps(body))
            await register.get_by_role("button", name="Execute").click()
            status = register.locator(".live-responses-table .response .response-col_status")
            await status.first.wait_for()
            assert (await status.first.inner_text()).strip() == "201"
            answer = json.loads(
                await register.locator(".live-responses-table .microlight").first.inner_text()
            )
            assert answer["user"]["email"] == email

            await page.locator(".auth-wrapper .authorize").click()
            dialog = page.locator(".dialog-ux .modal-ux")
            await dialog.locator("input").fill(answer["access_token"])
            await dialog.locator("button.modal-btn.authorize").click()
            await dialog.locator("button.btn-done").click()

            me = page.locator("#operations-auth-get_me")
            await me.locator(".opblock-summary").click()
            await me.get_by_role("button", name="Try it out").click()
            await me.get_by_role("button", name="Execute").click()
            status = me.locator(".live-responses-table .response .response-col_status")
            await status.first.wait_for()
            assert (await status.first.inner_text()).strip() == "200"
            shown = await me.locator(".live-responses-table .microlight").first.inner_text()
            assert json.loads(shown)["email"] == email

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "docs-browser.png", full_page=True)
            await me.screenshot(path=ARTIFACTS / "docs-browser-me.png")
        finally:
            await browser.close()

    assert console_errors == []
    assert foreign_requests == []
    assert "GET /auth/me 200" in docs_server.log()
