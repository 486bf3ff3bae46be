"""The link pages in a real browser: Debian's chromium, headless, driven by Playwright,
against `python run.py` in production mode that mails through a real SMTP server.

For each flow the link is the one in the mail that the server's own background sender
delivered: opening it clears the token from the address bar and consumes nothing (a
mail scanner may open it); only the button does, and the API then shows the effect
(a reset ends every session, a verified address, a moved account). A used, bogus or
missing token shows why, with no form to submit. No page has a console or CSP error
or asks another host for anything. Screenshots go to `artifacts/`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from quart_auth_api.errors import InvalidLinkToken
from quart_auth_api.mail import NOTICES
from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    browser_missing,
    skip_without_a_browser,
)
from tests.helpers.http import PASSWORD, bearer, credentials
from tests.helpers.mailbox import link_of, link_token, to
from tests.helpers.processes import PROJECT_ROOT, Server, production_env, serve
from tests.helpers.smtp import SmtpServer

pytestmark = pytest.mark.server

skip_without_a_browser()

ARTIFACTS = PROJECT_ROOT / "artifacts"
#: The server's sender polls every 2 s (cli.MAIL_POLL): a mail arrives well within this.
MAIL_TIMEOUT = 20.0
POLL_INTERVAL = 0.1
NEW_PASSWORD = "a brand new passphrase"
#: 36 characters but 108 bytes in UTF-8: the page lets it through, the API refuses it.
TOO_LONG_PASSWORD = "€" * 36


@pytest.fixture
def link_server(migrated_url: str, smtp: SmtpServer, tmp_path: Path) -> Iterator[Server]:
    """A production server whose mail goes to `smtp` and whose links point to itself."""
    env = production_env(
        migrated_url,
        workers=1,
        MAIL_BACKEND="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_SECURITY="none",
        RATE_LIMIT_ENABLED="false",
    )
    env["FRONTEND_URL"] = f"http://{env['HOST']}:{env['PORT']}"
    with serve(env, tmp_path / "server.log") as server:
        yield server


@pytest.fixture
async def http(link_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=link_server.base_url, timeout=10.0) as client:
        yield client


@dataclass
class Browsing:
    """A page in chromium, and what it did: script, CSP and console errors, requests to
    another host, and the (method, path) of every request it made."""

    page: Any
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def posts(self) -> list[str]:
        return [path for method, path in self.requests if method == "POST"]

    async def screenshot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.screenshot(path=ARTIFACTS / f"link-page-{name}.png", full_page=True)


@asynccontextmanager
async def browsing(server: Server) -> AsyncIterator[Browsing]:
    from playwright.async_api import async_playwright

    assert not browser_missing(), f"{CHROMIUM} not found"
    origin = urlsplit(server.base_url).netloc
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            seen = Browsing(page)
            page.on("console", lambda message: _console(seen, message))
            page.on("pageerror", lambda error: seen.errors.append(str(error)))
            page.on("request", lambda request: _request(seen, origin, request))
            yield seen
        finally:
            await browser.close()
    assert seen.errors == []
    assert seen.foreign == []


def _console(seen: Browsing, message: Any) -> None:
    # Chromium reports every 4xx answer as "Failed to load resource"; the pages expect
    # those (a dead link, a refused password). Anything else is a real error (a CSP
    # refusal is "Refused to ...").
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        seen.errors.append(message.text)


def _request(seen: Browsing, origin: str, request: Any) -> None:
    url = urlsplit(request.url)
    if url.netloc != origin:
        seen.foreign.append(request.url)
    seen.requests.append((request.method, url.path))


async def wait_for_mail(smtp: SmtpServer, address: str, kind: str) -> EmailMessage:
    """The mail of `kind` for `address`, once the server's sender delivered it."""
    subject = NOTICES[kind][0]
    deadline = time.monotonic() + MAIL_TIMEOUT
    while True:
        found = [message for message in to(smtp, address) if message["Subject"] == subject]
        if found:
            assert len(found) == 1, [message["Subject"] for message in to(smtp, address)]
            return found[0]
        assert time.monotonic() < deadline, f"no {kind!r} mail for {address} in {MAIL_TIMEOUT}s"
        await asyncio.sleep(POLL_INTERVAL)


async def register(http: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    email = f"browser-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": PASSWORD, "name": "Browser"}
    response = await http.post("/auth/register", json=body)
    assert response.status_code == 201, response.text
    return email, response.json()


async def open_link(seen: Browsing, server: Server, link: str) -> None:
    """Open a mailed link; its form shows, and the token has left the address bar."""
    assert link.startswith(f"{server.base_url}/") and "#token=" in link
    await seen.page.goto(link)
    await seen.page.locator("#link-form").wait_for(state="visible")
    assert seen.page.url == link.split("#", 1)[0]
    assert await seen.page.evaluate("location.hash") == ""


async def result_of(seen: Browsing, kind: str) -> str:
    """The text of the result the page shows, which must be of `kind`."""
    result = seen.page.locator(f"#link-result.{kind}")
    await result.wait_for(state="visible")
    return str(await result.text_content())


async def test_a_reset_link_sets_the_new_password_and_ends_every_session(link_server, http, smtp):
    email, registered = await register(http)
    assert (await http.post("/auth/password/forgot", json={"email": email})).status_code == 202
    message = await wait_for_mail(smtp, email, "password_reset")

    async with browsing(link_server) as seen:
        await open_link(seen, link_server, link_of(message))
        page = seen.page
        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password-repeat", NEW_PASSWORD + "!")
        await page.click("#link-submit")
        assert "differ" in await result_of(seen, "problem")
        assert seen.posts() == []  # checked on the page

        await page.fill("#password", TOO_LONG_PASSWORD)
        await page.fill("#password-repeat", TOO_LONG_PASSWORD)
        await page.click("#link-submit")
        assert "72 bytes" in await result_of(seen, "problem")  # the API's own message
        assert seen.posts() == ["/auth/password/reset"]

        await page.fill("#password", NEW_PASSWORD)
        await page.fill("#password-repeat", NEW_PASSWORD)
        await page.click("#link-submit")
        assert "Your password has been reset" in await result_of(seen, "success")
        assert await page.locator("#link-form").is_hidden()
        await seen.screenshot("reset")

    assert (
        await http.post("/auth/login", json=credentials(email, NEW_PASSWORD))
    ).status_code == 200
    assert (await http.post("/auth/login", json=credentials(email))).status_code == 401
    me = await http.get("/auth/me", headers=bearer(registered["access_token"]))
    assert me.status_code == 401


async def test_a_verification_link_verifies_only_when_the_button_is_pressed(
    link_server, http, smtp
):
    email, registered = await register(http)
    auth = bearer(registered["access_token"])
    message = await wait_for_mail(smtp, email, "email_verify")

    async with browsing(link_server) as seen:
        await open_link(seen, link_server, link_of(message))
        assert seen.posts() == []
        assert (await http.get("/auth/me", headers=auth)).json()["email_verified"] is False

        await seen.page.get_by_role("button", name="Confirm my address").click()
        assert "Your address is confirmed" in await result_of(seen, "success")
        assert seen.posts() == ["/auth/email/verify"]
        await seen.screenshot("verify")

    assert (await http.get("/auth/me", headers=auth)).json()["email_verified"] is True


async def test_an_email_change_link_moves_the_account_to_the_new_address(link_server, http, smtp):
    email, registered = await register(http)
    new_email = f"moved-{email}"
    response = await http.post(
        "/auth/email/change",
        json={"password": PASSWORD, "new_email": new_email},
        headers=bearer(registered["access_token"]),
    )
    assert response.status_code == 202, response.text
    message = await wait_for_mail(smtp, new_email, "email_change")

    async with browsing(link_server) as seen:
        await open_link(seen, link_server, link_of(message))
        assert seen.posts() == []
        await seen.page.get_by_role("button", name="Confirm my new address").click()
        assert "Your new address is confirmed" in await result_of(seen, "success")
        await seen.screenshot("email-change")

    assert (await http.post("/auth/login", json=credentials(new_email))).status_code == 200
    assert (await http.post("/auth/login", json=credentials(email))).status_code == 401


async def test_a_used_a_bogus_or_a_missing_token_says_the_link_is_dead(link_server, http, smtp):
    email, _ = await register(http)
    message = await wait_for_mail(smtp, email, "email_verify")
    used = await http.post("/auth/email/verify", json={"token": link_token(message)})
    assert used.status_code == 200, used.text
    bogus = f"{link_server.base_url}/confirm-email-change#token={'A' * 43}"

    async with browsing(link_server) as seen:
        for link in (link_of(message), bogus):
            await open_link(seen, link_server, link)
            await seen.page.get_by_role("button").click()
            assert await result_of(seen, "problem") == InvalidLinkToken.detail
            assert await seen.page.locator("#link-form").is_hidden()
        await seen.screenshot("invalid")

        await seen.page.goto(f"{link_server.base_url}/reset-password")
        assert "link is incomplete" in await result_of(seen, "problem")
        assert await seen.page.locator("#link-form").is_hidden()
        assert seen.posts() == ["/auth/email/verify", "/auth/email/change/confirm"]
