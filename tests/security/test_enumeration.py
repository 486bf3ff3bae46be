"""Learning which emails have accounts, from register and login answers and their cost.

A wrong password and an unknown email get the same answer (only the request id
differs) and the same bcrypt work: one `bcrypt.checkpw`, counted by standing in for the
`bcrypt` module of `crypto/passwords.py`, never by timing. Register's 409 is inherent to the
contract (and rate limited, see test_rate_limits.py); what it must not do is answer a
validation failure differently for a taken email, or cost less than a registration.
Rate limits are turned off here (`rate_limit_enabled=False`): the cases repeat logins
for one email from one client.
"""

from __future__ import annotations

from typing import Any

import pytest

from settings import Settings
from tests.helpers.attacks import CountingBcrypt, refused
from tests.helpers.http import PASSWORD, login, register

KNOWN = "known@example.com"
UNKNOWN = "nobody@example.com"
WRONG = "wrong horse battery"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.for_testing(database_url=database_url, rate_limit_enabled=False)


async def answer(response) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of an answer, without its request id."""
    body = await response.get_json(force=True)
    body.pop("request_id")
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "x-request-id"}
    return response.status_code, body, headers


@pytest.mark.parametrize(
    "probe",
    [
        pytest.param(UNKNOWN, id="unknown-email"),
        pytest.param("not-an-email-at-all", id="not-even-an-email"),
    ],
)
async def test_login_answers_are_identical_for_unknown_emails_and_wrong_passwords(client, probe):
    await register(client, email=KNOWN)
    wrong_password = await login(client, KNOWN, WRONG)
    await refused(wrong_password, "invalid_credentials")

    other = await login(client, probe, WRONG)

    assert await answer(other) == await answer(wrong_password)


async def test_an_unknown_email_costs_one_bcrypt_check_like_a_wrong_password(
    client, bcrypt_calls: CountingBcrypt
):
    """Steady state (after the first unknown email of the process): one checkpw each,
    against a hash of the same cost, and nothing else."""
    account = await register(client, email=KNOWN)
    await login(client, "warm-up@example.com", WRONG)
    bcrypt_calls.calls.clear()

    await login(client, KNOWN, WRONG)
    wrong_password = list(bcrypt_calls.calls)
    bcrypt_calls.calls.clear()
    await login(client, UNKNOWN, WRONG)
    unknown_email = list(bcrypt_calls.calls)
    bcrypt_calls.calls.clear()
    await login(client, KNOWN, account.password)
    right_password = list(bcrypt_calls.calls)

    for calls in (wrong_password, unknown_email, right_password):
        assert [name for name, _, _ in calls] == ["checkpw"]
    cost = wrong_password[0][2][:7]
    assert cost == b"$2b$04$"
    assert unknown_email[0][2][:7] == cost


async def test_the_first_unknown_email_costs_no_more_than_a_wrong_password(
    client, bcrypt_calls: CountingBcrypt
):
    """The first unknown email after start must not pay for making the dummy hash:
    that one slower answer would tell an attacker the email has no account."""
    await register(client, email=KNOWN)
    bcrypt_calls.calls.clear()

    await login(client, UNKNOWN, WRONG)
    unknown_email = bcrypt_calls.names()
    bcrypt_calls.calls.clear()
    await login(client, KNOWN, WRONG)

    assert unknown_email == bcrypt_calls.names() == ["checkpw"]


async def test_register_for_a_taken_email_costs_a_hash_like_a_new_account(
    client, bcrypt_calls: CountingBcrypt
):
    await register(client, email=KNOWN)
    bcrypt_calls.calls.clear()

    taken = await client.post(
        "/auth/register", json={"email": KNOWN.upper(), "password": PASSWORD, "name": "Eve"}
    )

    assert taken.status_code == 409
    body = await taken.get_json()
    assert body["code"] == "email_taken"
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
    assert bcrypt_calls.names() == ["hashpw"]


async def test_register_validation_answers_do_not_depend_on_the_email_being_taken(client):
    await register(client, email=KNOWN)
    short = {"password": "short", "name": "Eve"}

    taken = await client.post("/auth/register", json={"email": KNOWN, **short})
    free = await client.post("/auth/register", json={"email": UNKNOWN, **short})

    assert taken.status_code == 422
    assert await answer(taken) == await answer(free)
