"""Debian's chromium, headless, for the browser tests (Playwright drives it; its own
browser download needs the internet). Without chromium the tests skip locally; CI sets
QAA_REQUIRE_BROWSER=1, which turns the skip into a failure."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
