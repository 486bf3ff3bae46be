"""Log injection: nothing a client sends can forge a log line, in either format.

A percent-encoded line break in the path decodes to a real one, which the access line
used to write as it was: `GET /x%0A2026-12-02 ... WARNING quart_auth_api.security
event=login_ok` printed a second, forged security line. Every field of every line now
writes what is not printable as an escape; a traceback keeps its lines, indented.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from quart import Quart

from tests.helpers.logs import FORGED, Captured, assert_no_forged_line, captured_log

BREAKS = {
    "LF": "%0A",
    "CR": "%0D",
    "CRLF": "%0D%0A",
    "NEL": "%C2%85",  # a line break to str.splitlines() and to some log viewers
    "LS": "%E2%80%A8",
    "ESC": "%1B%5B2K",  # an ANSI sequence that erases the terminal line
    "DEL": "%7F",
}


@pytest.fixture(params=["text", "json"])
def log_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def captured(app: Quart, log_format: str) -> Iterator[Captured]:
    with captured_log(app, log_format) as lines:
        yield lines


@pytest.mark.parametrize("kind", list(BREAKS))
async def test_a_line_break_in_the_path_cannot_forge_a_line(client, captured, log_format, kind):
    response = await client.get(f"/x{BREAKS[kind]}{FORGED.replace(' ', '%20')}")
    assert response.status_code == 404

    lines = assert_no_forged_line(captured, log_format)
    access = [line for line in lines if "quart_auth_api.access" in line]
    assert len(access) == 1, lines
    assert not any(line.startswith(FORGED[:23]) for line in lines)
    if log_format == "text":  # the path as it came on the wire, percent-encoded
        assert f"GET /x{BREAKS[kind]}2026-12-02%2012:00:00,000%20WARNING" in access[0]
    else:
        assert json.loads(access[0])["path"].startswith("/x\\")


async def test_every_field_of_a_security_event_stays_on_its_line(client, captured, log_format):
    """The login's email is only a digest in the event, whatever it holds."""
    email = f"victim@example.com\n{FORGED}"
    response = await client.post("/auth/login", json={"email": email, "password": "wrong horse"})
    assert response.status_code == 401

    lines = assert_no_forged_line(captured, log_format)
    assert any("event=login_failed" in line or '"login_failed"' in line for line in lines)
    assert "victim@example.com" not in "\n".join(lines)


async def test_a_text_line_keeps_its_fields_and_its_escapes_unambiguous(client, captured):
    """A space in the path cannot add a field to the text line, and a literal `\\x0a`
    in it cannot pass for an escaped line break."""
    await client.get("/x%20200%200.3ms%20user=admin/%5Cx0a")
    (access,) = [line for line in captured.lines() if "quart_auth_api.access" in line]
    if log_format_of(access) == "text":
        assert "GET /x%20200%200.3ms%20user=admin/%5Cx0a 404 " in access
    else:
        assert json.loads(access)["path"] == r"/x 200 0.3ms user=admin/\\x0a"  # doubled


def log_format_of(line: str) -> str:
    return "json" if line.startswith("{") else "text"
