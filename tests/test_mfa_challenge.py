"""A login with a second factor: the password opens no session but an mfa_token; the
challenge checks RFC 6238 strictly (±1 step, no code twice, no earlier step), allows 5
tries per mfa_token for 5 minutes, and is limited per account across tokens. Time comes
from `mfa_clock` (no sleeps). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from quart_auth_api import extensions
from quart_auth_api.models import AuthSession, MfaChallenge
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, claims_of, problem, register
from tests.helpers.mfa import challenge, code, enrol, mfa_token, rows, start_enrolment

pytestmark = pytest.mark.usefixtures("mfa_clock")


async def live_sessions(client, token: str) -> int:
    response = await client.get("/auth/sessions", headers=bearer(token))
    assert response.status_code == 200, await response.get_data(as_text=True)
    return len((await response.get_json())["sessions"])


# -- login with a factor ----------------------------------------------------------------


async def test_login_asks_for_the_code_and_opens_no_session(app, client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    before = await live_sessions(client, factor.access_token)

    response = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})

    body = await response.get_json()
    assert response.status_code == 200
    assert set(body) == {"mfa_required", "mfa_token", "expires_in"}
    assert (body["mfa_required"], body["expires_in"]) == (True, 300)
    assert response.headers["Cache-Control"] == "no-store"
    assert await live_sessions(client, factor.access_token) == before
    assert await rows(app, MfaChallenge) == 1


async def test_a_factor_confirmed_during_the_password_check_gets_the_challenge(
    app, client, account, mfa_clock, monkeypatch
):
    """The login's session insert itself requires that no confirmed factor guards the
    account (no read of its own before it): a factor confirmed between the password
    check and the insert answers with the challenge and opens no password-only session."""
    started = await start_enrolment(client, account.auth)
    hasher = extensions.hasher(app)
    original = hasher.verify

    async def verify_then_confirm(password: str, hashed: str | None) -> bool:
        result = await original(password, hashed)
        proof = {"factor_id": started["factor_id"], "code": code(started["secret"], mfa_clock)}
        confirmed = await client.post("/auth/mfa/totp/verify", headers=account.auth, json=proof)
        assert confirmed.status_code == 200, await confirmed.get_data(as_text=True)
        return result

    monkeypatch.setattr(hasher, "verify", verify_then_confirm)
    before = await rows(app, AuthSession)

    response = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})

    body = await response.get_json()
    assert response.status_code == 200, body
    assert body["mfa_required"] is True and "access_token" not in body, body
    assert await rows(app, AuthSession) == before
    assert await rows(app, MfaChallenge) == 1


async def test_a_wrong_password_is_still_invalid_credentials(client, account, mfa_clock):
    await enrol(client, account, mfa_clock)

    response = await client.post(
        "/auth/login", json={"email": account.email, "password": "wrong password"}
    )

    await problem(response, 401, "invalid_credentials")


async def test_the_challenge_answers_the_token_body_of_an_aal2_session(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock))

    body = await response.get_json()
    assert response.status_code == 200, body
    assert {"user", "access_token", "refresh_token", "token_type", "expires_in"} == set(body)
    claims = claims_of(body["access_token"])
    assert (claims["aal"], claims["amr"], claims["fresh"]) == ("aal2", ["pwd", "otp"], True)
    assert claims["sid"] != claims_of(factor.access_token)["sid"]
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert (await me.get_json())["email"] == account.email


@pytest.mark.parametrize("steps", [-1, 0, 1])
async def test_one_step_of_drift_either_way_is_accepted(client, account, mfa_clock, steps):
    factor = await enrol(client, account, mfa_clock)
    mfa_clock.advance(30)  # the step before now must not be the one the enrolment used
    token = await mfa_token(client, account.email)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock, steps))

    assert response.status_code == 200, await response.get_json()


@pytest.mark.parametrize("steps", [-2, 2])
async def test_two_steps_of_drift_are_refused(client, account, mfa_clock, steps):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock, steps))

    await problem(response, 401, "mfa_invalid_code")


async def test_a_code_is_accepted_once_even_inside_its_window(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    used = code(factor.secret, mfa_clock)
    first = await challenge(client, await mfa_token(client, account.email), code=used)
    assert first.status_code == 200

    again = await challenge(client, await mfa_token(client, account.email), code=used)

    await problem(again, 401, "mfa_invalid_code")


async def test_a_code_of_an_earlier_step_is_refused_after_a_later_one(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    later = await challenge(
        client, await mfa_token(client, account.email), code=code(factor.secret, mfa_clock, 1)
    )
    assert later.status_code == 200

    earlier = await challenge(
        client, await mfa_token(client, account.email), code=code(factor.secret, mfa_clock)
    )

    await problem(earlier, 401, "mfa_invalid_code")


async def test_the_next_step_is_accepted_after_one_was_used(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    first = await challenge(
        client, await mfa_token(client, account.email), code=code(factor.secret, mfa_clock)
    )
    assert first.status_code == 200
    mfa_clock.advance(30)

    second = await challenge(
        client, await mfa_token(client, account.email), code=code(factor.secret, mfa_clock)
    )

    assert second.status_code == 200


async def test_five_wrong_codes_void_the_mfa_token(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)
    right = code(factor.secret, mfa_clock)
    wrong = f"{(int(right) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        await problem(await challenge(client, token, code=wrong), 401, "mfa_invalid_code")

    response = await challenge(client, token, code=right)

    await problem(response, 401, "mfa_token_invalid")
    fresh = await challenge(client, await mfa_token(client, account.email), code=right)
    assert fresh.status_code == 200  # the code itself was never spent


async def test_an_mfa_token_is_used_once(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)
    assert (await challenge(client, token, code=code(factor.secret, mfa_clock))).status_code == 200
    mfa_clock.advance(30)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock))

    await problem(response, 401, "mfa_token_invalid")


async def test_an_mfa_token_expires_after_five_minutes(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)
    mfa_clock.advance(300)

    response = await challenge(client, token, code=code(factor.secret, mfa_clock))

    await problem(response, 401, "mfa_token_invalid")


@pytest.mark.parametrize("token", ["not-a-token", "a" * 43, "x" * 4096, "access", "refresh"])
async def test_unknown_mfa_tokens_are_one_answer(client, account, mfa_clock, token):
    await enrol(client, account, mfa_clock)
    token = {"access": account.access_token, "refresh": account.refresh_token}.get(token, token)

    response = await challenge(client, token, code="123456")

    await problem(response, 401, "mfa_token_invalid")


@pytest.mark.parametrize("token", ["", "x" * 4097, "a\x00b"])
async def test_a_malformed_mfa_token_is_422(client, token):
    await problem(await challenge(client, token, code="123456"), 422, "validation_failed")


@pytest.mark.parametrize(
    "proof",
    [
        {},
        {"code": "12345"},
        {"code": "1234567"},
        {"code": "12a456"},
        {"code": "123456", "recovery_code": "abcd-efgh-jkmn-pqrs"},
    ],
)
async def test_the_challenge_needs_exactly_one_well_formed_proof(client, account, proof):
    response = await challenge(client, "a" * 43, **proof)

    await problem(response, 422, "validation_failed")


async def test_codes_are_limited_per_account_across_mfa_tokens(database_url, mfa_clock):
    from quart_auth_api import create_app

    app = create_app(Settings.for_testing(database_url=database_url, rate_limit_mfa="3/hour"))
    async with app.test_app():
        client = app.test_client()
        account = await register(client, email="ada@example.com")
        factor = await enrol(client, account, mfa_clock)  # the confirmation spends one
        wrong = f"{(int(code(factor.secret, mfa_clock)) + 1) % 1_000_000:06d}"
        for _ in range(2):
            token = await mfa_token(client, account.email)
            await problem(await challenge(client, token, code=wrong), 401, "mfa_invalid_code")

        token = await mfa_token(client, account.email)
        response = await challenge(client, token, code=code(factor.secret, mfa_clock))

        await problem(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) > 0
        other = await register(client)  # another account is not held up
        other_factor = await enrol(client, other, mfa_clock)
        token = await mfa_token(client, other.email)
        assert (
            await challenge(client, token, code=code(other_factor.secret, mfa_clock))
        ).status_code == 200
