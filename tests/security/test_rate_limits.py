"""Guessing passwords and tokens: the production rate limits reached, reset, not dodged.

The apps run with the default limits (10 logins a minute per client and email, 5
registrations an hour per email, 30 refreshes a minute per session). Time moves by a
fake clock standing in for `time` where the limits read it (the `limits` memory
storage and `ratelimit.py`), the seam `tests/test_rate_limits.py` uses: no sleeps.
Every request names its client through the ASGI scope, as a server would.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers.attacks import CountingBcrypt, refused
from tests.helpers.http import PASSWORD, Clock, bearer, login, problem

PEER = {"client": ("192.0.2.10", 50000)}
VICTIM = "limited@example.com"
WRONG = "wrong horse battery"


async def attempt(client, password: str = WRONG, headers: dict[str, str] | None = None):
    """A login as VICTIM from PEER."""
    return await login(client, VICTIM, password, scope=PEER, headers=headers)


async def registered(client) -> dict:
    response = await client.post(
        "/auth/register",
        json={"email": VICTIM, "password": PASSWORD, "name": "Limited"},
        scope_base=PEER,
    )
    assert response.status_code == 201
    return await response.get_json()


async def limited(response) -> int:
    """The exact 429 `rate_limited` answer; its Retry-After in seconds."""
    body = await problem(response, 429, "rate_limited")
    assert body["title"] == "Too Many Requests"
    assert body["detail"] == (
        "Too many attempts; try again after the number of seconds in Retry-After."
    )
    assert "WWW-Authenticate" not in response.headers
    assert re.fullmatch(r"[1-9]\d*", response.headers["Retry-After"])
    return int(response.headers["Retry-After"])


async def spend_logins(client, clock: Clock) -> None:
    """The default 10 logins a minute, one a second, all wrong."""
    for _ in range(10):
        await refused(await attempt(client), "invalid_credentials")
        clock.advance(1)


async def test_the_eleventh_login_in_a_minute_is_429_even_with_the_right_password(
    client, clock, bcrypt_calls: CountingBcrypt
):
    await registered(client)
    await spend_logins(client, clock)
    bcrypt_calls.calls.clear()

    response = await attempt(client, PASSWORD)

    assert await limited(response) == 51  # the first attempt, 10 s ago, frees up in 51
    assert bcrypt_calls.calls == []  # a refused guess costs the server nothing


async def test_the_limit_resets_once_its_window_has_passed(client, clock):
    await registered(client)
    await spend_logins(client, clock)
    clock.advance(await limited(await attempt(client, PASSWORD)))

    response = await attempt(client, PASSWORD)

    assert response.status_code == 200
    assert set(await response.get_json()) >= {"access_token", "refresh_token"}


@pytest.mark.parametrize(
    "spoof",
    [
        pytest.param(lambda n: {"X-Forwarded-For": f"203.0.113.{n}"}, id="x-forwarded-for"),
        pytest.param(
            lambda n: {"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.{n}"}, id="forwarded-chain"
        ),
    ],
)
async def test_spoofed_client_addresses_do_not_reset_the_budget(client, clock, spoof):
    """FORWARDED_PROXY_COUNT=0 (the default): only the peer address counts."""
    for n in range(10):
        await refused(await attempt(client, headers=spoof(n)), "invalid_credentials")

    await limited(await attempt(client, headers=spoof(99)))


async def test_the_sixth_registration_of_an_email_in_an_hour_is_429(client, clock):
    await registered(client)
    for n in range(4):
        taken = await client.post(
            "/auth/register",
            json={"email": VICTIM.upper(), "password": PASSWORD, "name": "Again"},
            scope_base={"client": (f"198.51.100.{n}", 1234)},  # from anywhere
        )
        assert taken.status_code == 409

    response = await client.post(
        "/auth/register",
        json={"email": VICTIM, "password": PASSWORD, "name": "Again"},
        scope_base={"client": ("203.0.113.200", 1234)},
    )

    assert await limited(response) == 3601


async def test_the_thirty_first_refresh_of_a_session_in_a_minute_is_429(client, clock):
    token = (await registered(client))["refresh_token"]
    for _ in range(30):
        response = await client.post("/auth/refresh", headers=bearer(token), scope_base=PEER)
        assert response.status_code == 200
        token = (await response.get_json())["refresh_token"]

    response = await client.post("/auth/refresh", headers=bearer(token), scope_base=PEER)

    assert await limited(response) == 61
