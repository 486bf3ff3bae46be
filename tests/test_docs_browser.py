"""/docs in a real browser: Debian's chromium, headless, driven by Playwright.

A user registers through "Try it out", pastes the access token into Authorize and
calls GET /auth/me, with no console error and no request to any other host.
The screenshots are kept in `artifacts/` (the whole page, and the /auth/me call).
"""

from __future__ import annotations

import uuid

import pytest

from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    authorize,
    browser_missing,
    execute,
    skip_without_a_browser,
    watch,
)
from tests.helpers.processes import PROJECT_ROOT

pytestmark = pytest.mark.server

ARTIFACTS = PROJECT_ROOT / "artifacts"
OPERATIONS = 24  # as many as the OpenAPI document has (tests/test_docs.py OPERATIONS)

skip_without_a_browser()


async def test_register_authorize_and_me_through_swagger_ui(docs_server):
    from playwright.async_api import async_playwright

    assert not browser_missing(), f"{CHROMIUM} not found"
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            watched = watch(page, docs_server.base_url)

            await page.goto(f"{docs_server.base_url}/docs")
            await page.wait_for_selector(".opblock")
            assert await page.locator(".opblock").count() == OPERATIONS

            body = {"email": email, "password": "correct horse battery", "name": "Browser"}
            status, answer = await execute(page, "auth-post_register", body)
            assert status == 201, answer
            assert answer["user"]["email"] == email
            await authorize(page, answer["access_token"])

            status, shown = await execute(page, "auth-get_me")
            assert status == 200, shown
            assert shown["email"] == email
            me = page.locator("#operations-auth-get_me")

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=ARTIFACTS / "docs-browser.png", full_page=True)
            await me.screenshot(path=ARTIFACTS / "docs-browser-me.png")
        finally:
            await browser.close()

    assert watched.console_errors == []
    assert watched.foreign_requests == []
    assert "GET /auth/me 200" in docs_server.log()
