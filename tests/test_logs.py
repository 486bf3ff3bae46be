"""Tracebacks in the logs: every line kept, none able to pass for a record.

(The attack suite's own rule forbids a 500 and a traceback in its cases, so this case of
log injection lives here; the others are `tests/security/test_log_injection.py`.)
"""

from __future__ import annotations

import json

import pytest

from quart_auth_api import create_app
from settings import Settings
from tests.helpers.logs import FORGED, assert_no_forged_line, captured_log


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_a_traceback_keeps_its_lines_but_cannot_pass_for_a_record(database_url, log_format):
    app = create_app(Settings.for_testing(database_url=database_url))

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise ValueError(f"bad input\n{FORGED}\r\x1b[2K")

    async with app.test_app():
        with captured_log(app, log_format) as captured:
            assert (await app.test_client().get("/boom")).status_code == 500

    lines = assert_no_forged_line(captured, log_format)
    assert "unhandled error: ValueError" in captured.text()
    if log_format == "text":
        assert any(line.startswith("    ") and FORGED in line for line in lines)
    else:
        record = next(json.loads(line) for line in lines if "exc_info" in line)
        continuation = record["exc_info"].split("\n")[1:]
        assert continuation and all(line.startswith("    ") for line in continuation)
