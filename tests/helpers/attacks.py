"""What the attack suite (`tests/security/`) expects of a refusal, and a bcrypt counter."""

from __future__ import annotations

import json
import logging
from contextlib import AsyncExitStack
from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app
from quart_auth_api.mail import NOTICES
from tests.helpers.http import problem
from tests.helpers.mailbox import link_token, mail_settings, to
from tests.helpers.smtp import SmtpServer

REALM = 'Bearer realm="quart-auth-api"'
#: The fixed details of the 401 answers (what a client may show; nothing else).
DETAILS = {
    "token_missing": "A bearer token is required.",
    "token_invalid": "The token is invalid.",
    "token_expired": "The token has expired.",
    "token_revoked": "The token has been revoked.",
    "refresh_token_reused": "This refresh token was already used; the session has been revoked.",
    "invalid_credentials": "Invalid email or password.",
    "csrf_failed": "The X-CSRF-TOKEN header is missing or does not match the token.",
}
MALFORMED_HEADER = "The Authorization header must be 'Bearer <token>'."
NEEDS_ACCESS = "This endpoint needs an access token."
NEEDS_REFRESH = "This endpoint needs a refresh token."


def challenge(code: str, detail: str | None = None) -> str:
    """The exact `WWW-Authenticate` of a 401: RFC 6750 `error` only when a token was given."""
    if code in ("token_missing", "invalid_credentials", "csrf_failed"):
        return REALM
    description = (detail or DETAILS[code]).replace('"', "'")
    return f'{REALM}, error="invalid_token", error_description="{description}"'


async def refused(response: Any, code: str, detail: str | None = None) -> dict[str, Any]:
    """`response` is exactly the 401 problem `code`, with its fixed detail and challenge."""
    body = await problem(response, 401, code)
    assert body["detail"] == (detail or DETAILS[code]), body
    assert body["title"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"] == challenge(code, detail)
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}, body
    return body


class CountingBcrypt:
    """Stands in for the `bcrypt` module inside `crypto/passwords.py`, counting the
    costly calls."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[tuple[str, bytes, bytes]] = []

    def checkpw(self, password: bytes, hashed: bytes) -> bool:
        self.calls.append(("checkpw", password, hashed))
        return bool(self._real.checkpw(password, hashed))

    def hashpw(self, password: bytes, salt: bytes) -> bytes:
        self.calls.append(("hashpw", password, salt))
        return bytes(self._real.hashpw(password, salt))

    def gensalt(self, *args: Any, **kwargs: Any) -> bytes:
        return bytes(self._real.gensalt(*args, **kwargs))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


# -- the account lifecycle (test_account_attacks.py, test_account_enumeration.py) --------

#: Headers that differ between any two answers, whatever the answers say.
PER_REQUEST_HEADERS = frozenset({"x-request-id", "date"})


async def answer_of(response: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body without its request id, and headers (lower-cased names) without the
    per-request ones: what must be identical between two answers that may tell nothing."""
    body = dict(await response.get_json(force=True))
    body.pop("request_id", None)
    headers = {
        name.lower(): value
        for name, value in response.headers.items()
        if name.lower() not in PER_REQUEST_HEADERS
    }
    return response.status_code, body, headers


def mailed_token(smtp: SmtpServer, address: str, kind: str) -> str:
    """The token of the newest link mail of `kind` (a purpose) that arrived for `address`."""
    subject = NOTICES[kind][0]
    found = [message for message in to(smtp, address) if message["Subject"] == subject]
    assert found, f"no {kind} mail for {address}: {[m['Subject'] for m in smtp.received]}"
    return link_token(found[-1])


async def open_mail_app(
    stack: AsyncExitStack, database_url: str, smtp: SmtpServer, **overrides: Any
) -> tuple[Quart, Client]:
    """An app sending through `smtp` with these settings, serving until `stack` closes
    (hold its background sender back first: `monkeypatch.setattr(cli, "MAIL_POLL", ...)`)."""
    app = create_app(mail_settings(database_url, smtp, **overrides))
    await stack.enter_async_context(app.test_app())
    return app, app.test_client()


def event_text(record: logging.LogRecord) -> str:
    """A log record as any handler could write it: its message and its extra fields."""
    standard = vars(logging.makeLogRecord({}))
    extras = {name: value for name, value in vars(record).items() if name not in standard}
    return record.getMessage() + " " + json.dumps(extras, default=str, sort_keys=True)
