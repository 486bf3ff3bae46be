"""Talking to an app through Quart's test client: accounts, tokens and problems."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from quart.typing import TestClientProtocol

from settings import Settings

PASSWORD = "correct horse battery"
#: What `User` shows, and nothing more.
USER_KEYS = {
    "id",
    "email",
    "name",
    "email_verified",
    "email_verified_at",
    "created_at",
    "updated_at",
}
TOKEN_BODY_KEYS = {"user", "access_token", "refresh_token", "token_type", "expires_in"}


@dataclass
class Account:
    """A registered user and the tokens of its first session."""

    email: str
    password: str
    name: str
    user: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def refresh_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.refresh_token}"}


async def register(
    client: TestClientProtocol,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post(
        "/auth/register", json={"email": email, "password": password, "name": name}
    )
    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    return Account(email, password, name, body["user"], body["access_token"], body["refresh_token"])


async def login(
    client: TestClientProtocol,
    email: str,
    password: str = PASSWORD,
    *,
    scope: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """`POST /auth/login` with these credentials, from the peer `scope` describes."""
    options: dict[str, Any] = {"headers": headers or {}}
    if scope is not None:
        options["scope_base"] = scope
    return await client.post("/auth/login", json={"email": email, "password": password}, **options)


async def login_body(client: TestClientProtocol, email: str, password: str = PASSWORD) -> Any:
    """The token body of a login that must succeed."""
    response = await login(client, email, password)
    assert response.status_code == 200, await response.get_data(as_text=True)
    return dict(await response.get_json())


def credentials(email: str, password: str = PASSWORD) -> dict[str, str]:
    return {"email": email, "password": password}


def production_settings(database_url: str, **overrides: Any) -> Settings:
    """Production settings for an app in the test process: fresh strong secrets (the
    fixed ones of `for_testing` are public, so production refuses them), bcrypt 10."""
    values: dict[str, Any] = {
        "env": "production",
        "database_url": database_url,
        "secret_key": secrets.token_urlsafe(48),
        "jwt_secret_key": secrets.token_urlsafe(48),
        "bcrypt_rounds": 10,
    }
    return Settings.for_testing(**(values | overrides))


def claims_of(token: str) -> dict[str, Any]:
    """The JWT payload, read without verification (what any client can see)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert `response` is the problem document for `status` / `code`; return it."""
    text_body = await response.get_data(as_text=True)
    assert response.status_code == status, text_body
    assert response.mimetype == "application/problem+json", response.mimetype
    body = await response.get_json(force=True)
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in text_body
    return dict(body)


class Clock:
    """Stands in for the `time` module where rate limits read the time (no sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
