"""What the attack suite (`tests/security/`) expects of a refusal, and a bcrypt counter."""

from __future__ import annotations

from typing import Any

from tests.helpers.http import problem

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
