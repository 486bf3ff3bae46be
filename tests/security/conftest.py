"""The rule every attack case in `tests/security/` obeys, enforced on each test.

An autouse fixture (`exposure`) watches the whole test: it records every request the
Quart test client sends and every response it gets back (by wrapping
`QuartClient.open`, so clients of apps a test builds itself are watched too), and
every log record of the `quart_auth_api` logger (which does not propagate) and of
the root logger. From the traffic it learns the secrets of the test: every token
issued (bodies and `Set-Cookie`) or sent (`Authorization`, cookies, the query
string, `X-CSRF-TOKEN`), every password sent, every email of a login that failed.
After the test it asserts:

- no response had a status of 500 or more;
- no response body and no log line holds "Traceback" or a bcrypt hash;
- no log line holds any of those tokens, passwords or emails.

A test can name further secrets with `exposure.secret(...)`.

Fixtures for the attack modules live here too: `build_app` (apps with the settings a
test chooses, on the test's database) and `bcrypt_calls`; their helpers (`refused`,
`challenge`: the exact 401 answer per RFC 6750) are `tests/helpers/attacks.py`.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any

import pytest
from quart import Quart
from quart.testing import QuartClient
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app
from quart_auth_api.crypto import passwords
from settings import Settings
from tests.helpers.attacks import CountingBcrypt

#: Shorter values are not secrets worth scanning for (and would match by chance).
MIN_TOKEN_CHARS = 16
MIN_PASSWORD_CHARS = 6
BCRYPT_HASH = re.compile(r"\$2[abxy]?\$\d\d\$")
TOKEN_COOKIES = ("access_token_cookie", "refresh_token_cookie")

MakeApp = Callable[..., Awaitable[tuple[Quart, Client]]]


@dataclass
class Seen:
    method: str
    path: str
    status: int
    body: str


@dataclass
class Exposure:
    """What one test sent, received and logged, and the secrets among it."""

    tokens: set[str] = field(default_factory=set)
    passwords: set[str] = field(default_factory=set)
    failed_login_emails: set[str] = field(default_factory=set)
    responses: list[Seen] = field(default_factory=list)
    records: list[logging.LogRecord] = field(default_factory=list)

    def secret(self, *values: str) -> None:
        """Name more tokens (or other secrets) that no log line may hold."""
        self.tokens.update(value for value in values if len(value) >= MIN_TOKEN_CHARS)

    # -- learning from the traffic ----------------------------------------------------

    def note_request(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        for name, value in _header_items(kwargs.get("headers")):
            if name.lower() in ("authorization", "x-csrf-token"):
                self.secret(*re.split(r"[\s,]+", value))
            elif name.lower() == "cookie":
                self.secret(*(part.partition("=")[2] for part in value.split(";")))
        for value in (kwargs.get("query_string") or {}).values():
            self.secret(str(value))
        body = _json_of(kwargs)
        if isinstance(body, dict):
            password = body.get("password")
            if isinstance(password, str) and len(password) >= MIN_PASSWORD_CHARS:
                self.passwords.add(password)
            return body
        return None

    async def note_response(
        self, method: str, path: str, body: dict[str, Any] | None, response: Any
    ) -> None:
        text = (await response.get_data()).decode("utf-8", errors="replace")
        self.responses.append(Seen(method, path, response.status_code, text))
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if isinstance(answer, dict):
            self.secret(*(str(answer[k]) for k in ("access_token", "refresh_token") if k in answer))
        for header in response.headers.getlist("Set-Cookie"):
            self.secret(*_cookie_values(header))
        email = (body or {}).get("email")
        if path.startswith("/auth/login") and response.status_code != 200:
            if isinstance(email, str) and email:
                self.failed_login_emails.update({email, email.strip().lower()})

    # -- the rule -----------------------------------------------------------------------

    def violations(self) -> list[str]:
        found: list[str] = []
        for seen in self.responses:
            where = f"{seen.method} {seen.path} -> {seen.status}"
            if seen.status >= 500:
                found.append(f"{where}: a 5xx answer: {seen.body[:300]}")
            if "Traceback" in seen.body:
                found.append(f"{where}: a traceback in the body")
            if BCRYPT_HASH.search(seen.body):
                found.append(f"{where}: a bcrypt hash in the body")
        secrets = [
            *(("a token", token) for token in self.tokens),
            *(("a password", password) for password in self.passwords),
            *(("a failed login's email", email) for email in self.failed_login_emails),
        ]
        for record in self.records:
            line = _rendered(record)
            where = f"log {record.name} {record.levelname}: {record.getMessage()[:200]!r}"
            if "Traceback" in line:
                found.append(f"{where}: holds a traceback")
            if BCRYPT_HASH.search(line):
                found.append(f"{where}: holds a bcrypt hash")
            found.extend(f"{where}: holds {kind}" for kind, value in secrets if value in line)
        return found


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        if not any(seen is record for seen in self._records):  # on two loggers: once
            self._records.append(record)


@pytest.fixture(autouse=True)
def exposure(monkeypatch: pytest.MonkeyPatch) -> Iterator[Exposure]:
    """Watches the test's traffic and logs; fails it if the suite-wide rule is broken."""
    seen = Exposure()
    original_open = QuartClient.open

    async def recording_open(self: QuartClient, path: str, *args: Any, **kwargs: Any) -> Any:
        body = seen.note_request(kwargs)
        response = await original_open(self, path, *args, **kwargs)
        await seen.note_response(kwargs.get("method", "GET"), path, body, response)
        return response

    monkeypatch.setattr(QuartClient, "open", recording_open)
    handler = _Collect(seen.records)
    loggers = [logging.getLogger("quart_auth_api"), logging.getLogger()]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield seen
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    problems = seen.violations()
    assert not problems, "the suite-wide rule is broken:\n" + "\n".join(problems)


# -- apps and answers ------------------------------------------------------------------


@pytest.fixture
async def build_app(database_url: str) -> AsyncIterator[MakeApp]:
    """Serves apps on the test's database with the settings a test chooses."""
    async with AsyncExitStack() as stack:

        async def make(*, use_cookies: bool = True, **overrides: Any) -> tuple[Quart, Client]:
            app = create_app(Settings.for_testing(database_url=database_url, **overrides))
            await stack.enter_async_context(app.test_app())
            return app, app.test_client(use_cookies=use_cookies)

        yield make


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> CountingBcrypt:
    """Every bcrypt check and hash the service makes during the test."""
    counting = CountingBcrypt(passwords.bcrypt)
    monkeypatch.setattr(passwords, "bcrypt", counting)
    return counting


# -- internals -------------------------------------------------------------------------


def _header_items(headers: Any) -> Iterable[tuple[str, str]]:
    if headers is None:
        return []
    return [(str(name), str(value)) for name, value in headers.items()]


def _json_of(kwargs: dict[str, Any]) -> Any:
    if "json" in kwargs:
        return kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, str | bytes):
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return None
    return None


def _cookie_values(header: str) -> list[str]:
    cookie: SimpleCookie = SimpleCookie()
    try:
        cookie.load(header)
    except CookieError:
        return []
    return [morsel.value for morsel in cookie.values()]


def _rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for `record`: message, extras and traceback."""
    parts = [record.getMessage()]
    if record.exc_info:
        parts.append("".join(traceback.format_exception(*record.exc_info)))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    standard = logging.makeLogRecord({}).__dict__
    parts.extend(f"{name}={value}" for name, value in vars(record).items() if name not in standard)
    return "\n".join(parts)
