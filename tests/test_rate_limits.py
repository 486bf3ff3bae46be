"""Rate limits on login, register and refresh, counted in this process.

Every request names its client through the ASGI scope (`scope_base`), as a server
would. Time moves by a fake clock that replaces `time` in the two modules that read
it (the `limits` memory storage and `ratelimit.py`): no test sleeps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from functools import partial
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app, extensions
from quart_auth_api.client import client_key
from quart_auth_api.logs import RequestIdFilter
from quart_auth_api.ratelimit import LIMITER, account_key
from settings import Settings
from tests.helpers import http
from tests.helpers.http import PASSWORD, bearer, claims_of, problem, register
from tests.helpers.processes import free_port

PEER = {"client": ("192.0.2.10", 50000)}
OTHER_PEER = {"client": ("10.0.0.8", 1234)}
WRONG = "wrong horse battery"

MakeClient = Callable[..., Awaitable[tuple[Quart, Client]]]


@pytest.fixture
async def make_client(database_url: str) -> AsyncIterator[MakeClient]:
    """Builds served apps on the test database with rate-limit settings of the test's choice."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> tuple[Quart, Client]:
            app = create_app(Settings.for_testing(database_url=database_url, **overrides))
            await stack.enter_async_context(app.test_app())
            return app, app.test_client()

        yield make


@pytest.fixture
def security_log() -> Iterator[list[str]]:
    """Lines of the `quart_auth_api.security` logger, with their request id."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} [{record.request_id}] {record.getMessage()}")

    handler = Collect()
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("quart_auth_api.security")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


#: Logins from PEER unless a test says otherwise.
login = partial(http.login, scope=PEER)


async def register_as(client, email, scope=PEER):
    body = {"email": email, "password": PASSWORD, "name": "Ada"}
    return await client.post("/auth/register", json=body, scope_base=scope)


async def refresh(client, token, scope=PEER):
    return await client.post("/auth/refresh", headers=bearer(token), scope_base=scope)


async def rate_limited(response, scope: str | None = None) -> int:
    """`response` is the 429 `rate_limited` problem; its Retry-After in seconds."""
    body = await problem(response, 429, "rate_limited")
    assert body["title"] == "Too Many Requests"
    retry_after = response.headers["Retry-After"]
    assert re.fullmatch(r"[1-9]\d*", retry_after), retry_after
    return int(retry_after)


# -- login -----------------------------------------------------------------------------


async def test_login_is_limited_per_client_and_email_whatever_the_password(make_client):
    """RATE_LIMIT_LOGIN (default 10/minute): the 11th attempt is a 429 with Retry-After,
    even with the right password, and costs no bcrypt work."""
    app, client = await make_client()
    account = await register(client)
    for attempt in range(10):
        response = await login(client, account.email, PASSWORD if attempt % 2 else WRONG)
        assert response.status_code == (200 if attempt % 2 else 401)

    hasher = extensions.hasher(app)
    verified = []
    original = hasher.verify

    async def counting_verify(*args):
        verified.append(args)
        return await original(*args)

    hasher.verify = counting_verify
    response = await login(client, account.email)

    assert 55 <= await rate_limited(response) <= 61
    assert verified == []


async def test_another_email_from_the_same_client_is_allowed_until_the_client_limit(
    make_client,
):
    _, client = await make_client(rate_limit_login="3/minute", rate_limit_login_ip="5/minute")
    for _ in range(3):
        assert (await login(client, "a@example.com")).status_code == 401
    await rate_limited(await login(client, "a@example.com"))

    for _ in range(2):  # the client has spent 3 of its 5
        assert (await login(client, "b@example.com")).status_code == 401
    await rate_limited(await login(client, "b@example.com"))
    await rate_limited(await login(client, "c@example.com"))

    assert (await login(client, "a@example.com", scope=OTHER_PEER)).status_code == 401


async def test_another_client_is_allowed_for_the_same_email(make_client):
    _, client = await make_client(rate_limit_login="2/minute")
    account = await register(client)
    for _ in range(2):
        assert (await login(client, account.email, WRONG)).status_code == 401
    await rate_limited(await login(client, account.email))

    assert (await login(client, account.email, scope=OTHER_PEER)).status_code == 200


async def test_login_limit_ignores_the_case_of_the_email(make_client):
    _, client = await make_client(rate_limit_login="2/minute")
    assert (await login(client, "Ada@Example.com")).status_code == 401
    assert (await login(client, "ada@example.com")).status_code == 401
    await rate_limited(await login(client, "ADA@EXAMPLE.COM"))


async def test_a_limit_frees_up_as_its_window_moves_on(make_client, clock):
    """Moving window: Retry-After counts down, and once it has passed the client is
    allowed again."""
    _, client = await make_client(rate_limit_login="2/minute")
    await login(client, "ada@example.com")
    clock.advance(20)
    await login(client, "ada@example.com")

    assert await rate_limited(await login(client, "ada@example.com")) == 41
    clock.advance(30)
    assert await rate_limited(await login(client, "ada@example.com")) == 11
    clock.advance(11)
    assert (await login(client, "ada@example.com")).status_code == 401  # the first aged out
    assert await rate_limited(await login(client, "ada@example.com")) == 20
    clock.advance(20)
    assert (await login(client, "ada@example.com")).status_code == 401


async def test_forwarded_for_cannot_dodge_the_limit_without_trusted_proxies(make_client):
    """FORWARDED_PROXY_COUNT=0: the peer address counts, whatever X-Forwarded-For says."""
    _, client = await make_client(rate_limit_login="2/minute")
    for n in range(2):
        headers = {"X-Forwarded-For": f"203.0.113.{n}"}
        assert (await login(client, "ada@example.com", headers=headers)).status_code == 401
    spoofed = {"X-Forwarded-For": "198.51.100.7"}
    await rate_limited(await login(client, "ada@example.com", headers=spoofed))


async def test_behind_a_trusted_proxy_the_forwarded_client_counts(make_client):
    """FORWARDED_PROXY_COUNT=1: the address the proxy appended is the client; what the
    client itself put in front of it changes nothing."""
    _, client = await make_client(rate_limit_login="2/minute", forwarded_proxy_count=1)
    for fake in ("1.1.1.1", "2.2.2.2"):
        headers = {"X-Forwarded-For": f"{fake}, 203.0.113.5"}
        assert (await login(client, "ada@example.com", headers=headers)).status_code == 401
    headers = {"X-Forwarded-For": "3.3.3.3, 203.0.113.5"}
    await rate_limited(await login(client, "ada@example.com", headers=headers))

    other = {"X-Forwarded-For": "203.0.113.6"}  # same proxy, another client
    assert (await login(client, "ada@example.com", headers=other)).status_code == 401


async def test_ipv6_clients_are_counted_by_their_64_block(make_client):
    _, client = await make_client(rate_limit_login="2/minute")
    for host in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"):
        scope = {"client": (host, 1234)}
        assert (await login(client, "ada@example.com", scope=scope)).status_code == 401
    scope = {"client": ("2001:db8:1:2:abcd::1", 1234)}
    await rate_limited(await login(client, "ada@example.com", scope=scope))

    scope = {"client": ("2001:db8:1:3::1", 1234)}
    assert (await login(client, "ada@example.com", scope=scope)).status_code == 401


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("<local>", "unknown"),
        (None, "unknown"),
    ],
)
def test_client_key(address, key):
    assert client_key(address) == key


# -- register --------------------------------------------------------------------------


async def test_register_is_limited_per_email(make_client):
    """RATE_LIMIT_REGISTER (default 5/hour) per email, from any client."""
    _, client = await make_client()
    assert (await register_as(client, "new@example.com")).status_code == 201
    for n in range(4):
        scope = {"client": (f"198.51.100.{n}", 1234)}
        assert (await register_as(client, "NEW@example.com", scope)).status_code == 409

    retry_after = await rate_limited(await register_as(client, "new@example.com", OTHER_PEER))
    assert 3500 <= retry_after <= 3601
    assert (await register_as(client, "other@example.com")).status_code == 201


async def test_register_is_limited_per_client(make_client):
    """RATE_LIMIT_REGISTER_IP (default 20/hour) per client, over all emails."""
    _, client = await make_client(rate_limit_register_ip="3/hour")
    for n in range(3):
        assert (await register_as(client, f"user{n}@example.com")).status_code == 201
    await rate_limited(await register_as(client, "user3@example.com"))

    assert (await register_as(client, "user3@example.com", OTHER_PEER)).status_code == 201


# -- refresh ---------------------------------------------------------------------------


async def test_refresh_is_limited_per_session(make_client):
    """RATE_LIMIT_REFRESH per session id (`sid`), from any client; other sessions of
    the same user are not affected."""
    _, client = await make_client(rate_limit_refresh="2/minute")
    account = await register(client)
    token = account.refresh_token
    for n in range(2):
        response = await refresh(client, token, {"client": (f"198.51.100.{n}", 1)})
        assert response.status_code == 200
        token = (await response.get_json())["refresh_token"]
    await rate_limited(await refresh(client, token, OTHER_PEER))

    other = await (await login(client, account.email)).get_json()
    assert claims_of(other["refresh_token"])["sid"] != claims_of(token)["sid"]
    assert (await refresh(client, other["refresh_token"])).status_code == 200


async def test_refresh_is_limited_per_client_before_the_token_is_checked(make_client):
    """RATE_LIMIT_REFRESH_IP counts every refresh of a client, even with a bad token,
    so guessing tokens is bounded too."""
    _, client = await make_client(rate_limit_refresh_ip="3/minute")
    account = await register(client)
    for _ in range(2):
        await problem(await refresh(client, "not-a-token"), 401, "token_invalid")
    assert (await refresh(client, account.refresh_token)).status_code == 200

    await rate_limited(await refresh(client, "not-a-token"))
    await rate_limited(await refresh(client, account.refresh_token))
    assert (await refresh(client, account.refresh_token, OTHER_PEER)).status_code == 200


# -- turned off, logged, documented ----------------------------------------------------


async def test_turned_off_nothing_is_counted_and_nothing_is_stored(make_client):
    app, client = await make_client(rate_limit_enabled=False, rate_limit_login="1/minute")
    account = await register(client)
    for _ in range(12):
        assert (await login(client, account.email, WRONG)).status_code == 401
    for _ in range(7):
        assert (await register_as(client, account.email)).status_code == 409
    for _ in range(3):
        assert (await refresh(client, account.refresh_token)).status_code == 200
    assert "rate_limiter" not in app.extensions


async def test_keys_never_hold_the_email(make_client):
    app, client = await make_client()
    await login(client, "Secret.Person@example.com")

    keys = set(LIMITER.get(app).local.storage.events)
    assert not any("secret" in key.lower() or "@" in key for key in keys), keys
    digest = account_key("secret.person@example.com", extensions.digest_key(app))
    assert f"login:ip+account/192.0.2.10/{digest}/10/1/minute" in keys
    assert "login:ip/192.0.2.10/100/1/minute" in keys


async def test_each_429_is_one_security_log_line_without_secrets(make_client, security_log, clock):
    _, client = await make_client(rate_limit_login="1/minute")
    await login(client, "ada@example.com", "a secret password")
    security_log.clear()
    clock.advance(1)

    response = await login(
        client, "ada@example.com", "a secret password", headers={"X-Request-ID": "req-429-abcdef"}
    )

    await rate_limited(response)
    assert security_log == [
        "WARNING [req-429-abcdef] event=rate_limited ip=192.0.2.10 route=auth.login "
        "scope=ip+account retry_after=60"
    ]


async def test_the_three_routes_document_429(client):
    schema = await (await client.get("/openapi.json")).get_json()
    for path in ("/auth/login", "/auth/register", "/auth/refresh"):
        response = schema["paths"][path]["post"]["responses"]["429"]
        codes = response["content"]["application/problem+json"]["schema"]["allOf"][1]
        assert codes["properties"]["code"]["enum"] == ["rate_limited"], path
    for path, method in (("/auth/logout", "post"), ("/auth/me", "get")):
        assert "429" not in schema["paths"][path][method]["responses"], path


# -- Redis unreachable -----------------------------------------------------------------


async def test_unreachable_redis_counts_in_this_process_and_logs_an_error(make_client):
    """REDIS_URL on a closed port: logins still work, the limits still hold (in this
    process), and each request that could not reach Redis logs one ERROR line."""
    errors: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record)

    handler = Collect(logging.ERROR)
    logger = logging.getLogger("quart_auth_api.ratelimit")
    logger.addHandler(handler)
    try:
        _, client = await make_client(
            redis_url=f"redis://127.0.0.1:{free_port()}/0", rate_limit_login="2/minute"
        )
        account = await register(client)
        errors.clear()

        assert (await login(client, account.email)).status_code == 200
        assert (await login(client, account.email, WRONG)).status_code == 401
        await rate_limited(await login(client, account.email))
    finally:
        logger.removeHandler(handler)

    assert len(errors) == 3
    for record in errors:
        message = record.getMessage()
        assert message.startswith("rate limit storage unavailable"), message
        assert account.email not in message and PASSWORD not in message


def test_a_redis_url_of_another_scheme_stops_start_up():
    with pytest.raises(SystemExit, match="REDIS_URL"):
        create_app(Settings.for_testing(redis_url="http://127.0.0.1:6379/0"))
