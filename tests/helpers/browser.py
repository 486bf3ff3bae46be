"""Debian's chromium, headless, for the browser tests (Playwright drives it; its own
browser download needs the internet). Without chromium the tests skip locally; CI sets
QAA_REQUIRE_BROWSER=1, which turns the skip into a failure."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TIMEOUT_MS = 20_000
#: Flags that keep Chromium from calling home on a machine with no internet access.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
]


def browser_missing() -> bool:
    return not Path(CHROMIUM).exists()


def skip_without_a_browser() -> None:
    """Skip the calling test module when chromium is missing (unless CI requires it)."""
    if browser_missing() and not os.environ.get("QAA_REQUIRE_BROWSER"):
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium; CI installs it)",
            allow_module_level=True,
        )


@dataclass
class Watched:
    """What a page did wrong: console errors and page errors, and requests to another
    host than `origin` (data: URLs aside)."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)


def watch(page: Any, base_url: str) -> Watched:
    """Record the page's errors and its requests to other hosts from now on."""
    watched = Watched(urlsplit(base_url).netloc)
    page.on(
        "console",
        lambda message: message.type == "error" and watched.console_errors.append(message.text),
    )
    page.on("pageerror", lambda error: watched.console_errors.append(str(error)))
    page.on(
        "request",
        lambda request: (
            urlsplit(request.url).netloc != watched.origin
            and not request.url.startswith("data:")
            and watched.foreign_requests.append(request.url)
        ),
    )
    return watched


# -- Swagger UI at /docs ------------------------------------------------------------------


async def execute(page: Any, operation: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """ "Try it out" and "Execute" on `#operations-<operation>` (with `body` as its JSON):
    the status and the body Swagger UI shows."""
    block = page.locator(f"#operations-{operation}")
    await block.locator(".opblock-summary").click()
    await block.get_by_role("button", name="Try it out").click()
    if body is not None:
        await block.locator("textarea.body-param__text").fill(json.dumps(body))
    await block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table .response .response-col_status")
    await status.first.wait_for()
    shown = await block.locator(".live-responses-table .microlight").first.inner_text()
    return int((await status.first.inner_text()).strip()), json.loads(shown)


async def authorize(page: Any, access_token: str) -> None:
    """Put `access_token` into the Authorize dialog, logging the previous one out."""
    await page.locator(".auth-wrapper .authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await dialog.locator(".auth-btn-wrapper button").first.wait_for()
    logout = dialog.get_by_role("button", name="Remove authorization")  # shown as "Logout"
    if await logout.count():
        await logout.click()
    await dialog.locator("input").fill(access_token)
    await dialog.locator("button.modal-btn.authorize").click()
    await dialog.locator("button.btn-done").click()
