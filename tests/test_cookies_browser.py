"""Cookie transport in a real browser: Debian's chromium, headless, against `run.py` in
production with `JWT_TOKEN_LOCATION=cookies`.

A page on the service's origin registers with `fetch`, calls `/auth/me`, refreshes and
logs out, reading the `X-CSRF-TOKEN` values from `document.cookie` (both CSRF cookies
are at `/`), and its script never sees a token: not in a body, not in `document.cookie`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    browser_missing,
    skip_without_a_browser,
)
from tests.helpers.processes import Server, production_env, run_alembic, serve

pytestmark = pytest.mark.server
skip_without_a_browser()

#: A helper the page's script gets: one call, its status and text, what
#: `document.cookie` showed after it; the X-CSRF-TOKEN read from `document.cookie`.
CALL = """
window.call = async (method, path, body, csrfCookie) => {
  const csrf = (name) => (document.cookie.split('; ').find((c) => c.startsWith(name + '='))
                          || '=').split('=')[1];
  const headers = {'Content-Type': 'application/json'};
  if (csrfCookie) headers['X-CSRF-TOKEN'] = csrf(csrfCookie);
  const options = {method, headers, credentials: 'same-origin'};
  if (body !== null) options.body = JSON.stringify(body);
  const response = await fetch(path, options);
  return {path, status: response.status, text: await response.text(), cookies: document.cookie};
};
"""
STEPS = [
    ("POST", "/auth/register", "new user", None),
    ("GET", "/auth/me", None, None),
    ("POST", "/auth/refresh", None, "csrf_refresh_token"),
    ("GET", "/auth/me", None, None),
    ("POST", "/auth/logout", None, "csrf_access_token"),
    ("GET", "/auth/me", None, None),
]


@pytest.fixture
def cookie_server(tmp_path: Path) -> Iterator[Server]:
    database_url = f"sqlite:///{tmp_path / 'cookies.db'}"
    run_alembic(database_url, "upgrade", "head")
    env = production_env(database_url, workers=1, JWT_TOKEN_LOCATION="cookies")
    with serve(env, tmp_path / "server.log") as server:
        yield server


async def test_a_page_logs_in_refreshes_and_logs_out_without_ever_holding_a_token(
    cookie_server,
):
    from playwright.async_api import async_playwright

    assert not browser_missing(), f"{CHROMIUM} not found"
    user = {"email": f"cookies-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse 1"}
    seen: list[dict[str, Any]] = []
    tokens: set[str] = set()  # every token the browser stored, read outside the page
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            # a page of the service's origin whose CSP lets script call it (connect-src 'self')
            await page.goto(f"{cookie_server.base_url}/docs")
            await page.evaluate(CALL)
            for method, path, body, csrf in STEPS:
                payload = {**user, "name": "Ada"} if body else None
                step = await page.evaluate(
                    "([m, p, b, c]) => window.call(m, p, b, c)", [method, path, payload, csrf]
                )
                seen.append(step)
                for cookie in await context.cookies():
                    if cookie["name"] in ("access_token_cookie", "refresh_token_cookie"):
                        assert cookie["httpOnly"] and cookie["secure"], cookie
                        tokens.add(cookie["value"])
        finally:
            await browser.close()

    assert [(step["path"], step["status"]) for step in seen] == [
        ("/auth/register", 201),
        ("/auth/me", 200),
        ("/auth/refresh", 200),
        ("/auth/me", 200),
        ("/auth/logout", 200),
        ("/auth/me", 401),
    ]
    assert len(tokens) == 4  # access and refresh, then both rotated by the refresh
    for step in seen[:4]:  # both CSRF values readable at /; the tokens never
        assert "csrf_access_token=" in step["cookies"] and "csrf_refresh_token=" in step["cookies"]
        assert "token_cookie" not in step["cookies"]
    script_saw = " ".join(step["text"] + step["cookies"] for step in seen)
    assert not any(token in script_saw for token in tokens)
    assert user["email"] in seen[1]["text"]
