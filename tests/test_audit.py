"""Security events: one structured line each, never a token, a password or a hash."""

from __future__ import annotations

import hashlib
import logging
import re

import pytest

from quart_auth_api import create_app
from quart_auth_api.audit import account_ref
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, problem, register


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [
            record.getMessage()
            for record in self.records
            if record.name == "quart_auth_api.security"
        ]

    def text(self) -> str:
        return "\n".join(
            f"{record.getMessage()} {getattr(record, 'request_id', '')}" for record in self.records
        )


@pytest.fixture
def logs(app):
    """Every log line of the package during the test (added after create_app's own)."""
    handler = Lines()
    logger = logging.getLogger("quart_auth_api")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def event(logs: Lines, name: str) -> str:
    matches = [line for line in logs.events() if line.startswith(f"event={name} ")]
    assert len(matches) == 1, logs.events()
    return matches[0]


async def test_register_login_refresh_logout_are_logged(client, logs):
    account = await register(client)
    login = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    tokens = await login.get_json()
    await client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    user = account.user["id"]
    assert f"user={user}" in event(logs, "register")
    assert f"user={user}" in event(logs, "login_ok")
    assert "gen=1" in event(logs, "refresh")
    assert f"user={user}" in event(logs, "logout")


async def test_failed_login_names_the_account_by_digest_only(client, logs):
    await register(client, email="victim@example.com")
    await client.post("/auth/login", json={"email": "victim@example.com", "password": "wrong pass"})
    await client.post("/auth/login", json={"email": "nobody@example.com", "password": "wrong pass"})
    failed = [line for line in logs.events() if line.startswith("event=login_failed ")]
    assert len(failed) == 2
    for line in failed:
        assert re.search(r"account=acct_[0-9a-f]{16}", line)
        assert "@" not in line and "wrong pass" not in line
    assert failed[0].split("account=")[1] != failed[1].split("account=")[1]
    assert all(
        r.levelno == logging.WARNING for r in logs.records if "login_failed" in r.getMessage()
    )


async def test_replay_is_logged(client, logs):
    # within the 10 s reuse interval only a token two generations old is a replay
    account = await register(client)
    first = await (await client.post("/auth/refresh", headers=account.refresh_auth)).get_json()
    await client.post("/auth/refresh", headers=bearer(first["refresh_token"]))
    response = await client.post("/auth/refresh", headers=account.refresh_auth)
    await problem(response, 401, "refresh_token_reused")
    line = event(logs, "refresh_token_reused")
    assert f"user={account.user['id']}" in line and "route=auth.refresh" in line


async def test_event_lines_carry_the_request_id(client, logs):
    response = await client.post(
        "/auth/login",
        json={"email": "x@example.com", "password": "wrong pass"},
        headers={"X-Request-ID": "audit-test-0001"},
    )
    assert response.status_code == 401
    records = [r for r in logs.records if r.getMessage().startswith("event=login_failed")]
    assert [r.request_id for r in records] == ["audit-test-0001"]


async def test_no_secret_ever_reaches_a_log_line(client, logs):
    account = await register(client, password="Sup3r secret passphrase")
    login = await client.post(
        "/auth/login", json={"email": account.email, "password": "Sup3r secret passphrase"}
    )
    tokens = await login.get_json()
    await client.post("/auth/refresh", headers=bearer(tokens["refresh_token"]))
    await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    text = logs.text()
    assert text  # something was logged
    for secret in (
        "Sup3r secret passphrase",
        tokens["access_token"],
        tokens["refresh_token"],
        account.access_token,
        tokens["access_token"].split(".")[2],
        "$2b$",
    ):
        assert secret not in text


async def test_accounts_are_named_by_a_keyed_digest_stable_per_secret(database_url):
    """Not SHA-256 of the address (one line of Python would reverse a known one): an HMAC
    under a key derived from SECRET_KEY, the same in every worker and after a restart."""
    email = "ada@example.com"

    async def name_under(secret: str) -> str:
        app = create_app(Settings.for_testing(database_url=database_url, secret_key=secret))
        async with app.app_context():
            return account_ref(email)

    first = await name_under("a" * 10 + "-first-secret-key-0123456789")
    assert first == await name_under("a" * 10 + "-first-secret-key-0123456789")
    assert first != await name_under("b" * 10 + "-other-secret-key-0123456789")
    assert re.fullmatch(r"acct_[0-9a-f]{16}", first)
    assert first[5:] not in hashlib.sha256(email.encode()).hexdigest()
