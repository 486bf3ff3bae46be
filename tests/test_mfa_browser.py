"""The TOTP flow through /docs in a real browser: Debian's chromium, headless, by Playwright.

A user registers and authorizes, enrols a TOTP factor (its `qr_svg` rendered as an image
in the docs page), confirms it with a code the test computes, logs out, logs in with the
password and a code, and calls GET /auth/me with the new token: every call through "Try
it out", with no console error and no request to any other host. The QR code's
screenshot is kept in `artifacts/mfa-qr.png`, the whole page in `artifacts/mfa-browser.png`.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from quart_auth_api.crypto import totp
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
from tests.helpers.http import PASSWORD, claims_of
from tests.helpers.processes import PROJECT_ROOT

pytestmark = pytest.mark.server

ARTIFACTS = PROJECT_ROOT / "artifacts"

skip_without_a_browser()

#: Appends the QR code to the docs page as an <img>; answers its natural size once loaded.
SHOW_IMAGE = """src => new Promise((resolve, reject) => {
    const image = document.createElement("img");
    image.id = "mfa-qr";
    image.style.cssText = "display:block; padding:16px; background:#fff";
    image.onload = () => resolve([image.naturalWidth, image.naturalHeight]);
    image.onerror = () => reject(new Error("the QR code did not load"));
    image.src = src;
    document.body.append(image);
})"""


async def test_enrol_log_out_and_log_in_with_a_code_through_swagger_ui(docs_server):
    from playwright.async_api import async_playwright

    assert not browser_missing(), f"{CHROMIUM} not found"
    email = f"mfa-browser-{uuid.uuid4().hex[:8]}@example.com"

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(TIMEOUT_MS)
            watched = watch(page, docs_server.base_url)
            await page.goto(f"{docs_server.base_url}/docs")
            await page.wait_for_selector("#operations-mfa-post_enrol_totp")

            account = {"email": email, "password": PASSWORD, "name": "Browser"}
            status, registered = await execute(page, "auth-post_register", account)
            assert status == 201, registered
            await authorize(page, registered["access_token"])

            status, enrolment = await execute(page, "mfa-post_enrol_totp")
            assert status == 201, enrolment
            assert set(enrolment) == {"factor_id", "secret", "otpauth_uri", "qr_svg"}
            secret = enrolment["secret"]

            svg = base64.b64encode(enrolment["qr_svg"].encode()).decode()
            width, height = await page.evaluate(SHOW_IMAGE, f"data:image/svg+xml;base64,{svg}")
            assert width > 100 and height == width
            ARTIFACTS.mkdir(exist_ok=True)
            await page.locator("#mfa-qr").screenshot(path=ARTIFACTS / "mfa-qr.png")

            step = totp.time_step(datetime.now(UTC))
            confirmation = {"factor_id": enrolment["factor_id"], "code": totp.code_at(secret, step)}
            status, enrolled = await execute(page, "mfa-post_verify_totp", confirmation)
            assert status == 200, enrolled
            assert len(enrolled["recovery_codes"]) == 10
            assert claims_of(enrolled["access_token"])["aal"] == "aal2"
            await authorize(page, enrolled["access_token"])

            status, logged_out = await execute(page, "auth-post_logout", {"scope": "local"})
            assert status == 200, logged_out

            credentials = {"email": email, "password": PASSWORD}
            status, login = await execute(page, "auth-post_login", credentials)
            assert status == 200, login
            assert login["mfa_required"] is True and login["mfa_token"], login
            assert "access_token" not in login

            # the enrolment's step is spent (replay guard); the next one is within drift
            proof = {"mfa_token": login["mfa_token"], "code": totp.code_at(secret, step + 1)}
            status, tokens = await execute(page, "mfa-post_challenge", proof)
            assert status == 200, tokens
            assert tokens["user"]["email"] == email
            assert claims_of(tokens["access_token"])["aal"] == "aal2"
            await authorize(page, tokens["access_token"])

            status, me = await execute(page, "auth-get_me")
            assert status == 200, me
            assert me["email"] == email

            await page.screenshot(path=ARTIFACTS / "mfa-browser.png", full_page=True)
        finally:
            await browser.close()

    assert watched.console_errors == []
    assert watched.foreign_requests == []
    log = docs_server.log()
    assert "POST /auth/mfa/challenge 200" in log
    assert "GET /auth/me 200" in log
