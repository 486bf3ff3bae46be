"""TOTP enrolment (pending, confirmed with a code, one per user, expiring after 10
minutes, the secret sealed at rest), recovery codes (single use, regenerated) and
removal of the factor. Time comes from `mfa_clock` (no sleeps). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from quart_auth_api import create_app
from quart_auth_api.db import DATABASE
from quart_auth_api.models import MfaChallenge, RecoveryCode, TotpFactor
from settings import Settings
from tests.helpers.http import bearer, claims_of, login_body, problem, register
from tests.helpers.mfa import challenge, code, enrol, mfa_token, rows, start_enrolment

pytestmark = pytest.mark.usefixtures("mfa_clock")


# -- enrolment --------------------------------------------------------------------------


async def test_enrolment_answers_a_secret_an_otpauth_uri_and_a_qr_code(client, account):
    started = await start_enrolment(client, account.auth)

    assert set(started) == {"factor_id", "secret", "otpauth_uri", "qr_svg"}
    assert re.fullmatch(r"[A-Z2-7]{32}", started["secret"])  # base32, 160 bits
    assert len(base64.b32decode(started["secret"])) == 20
    uri = urlsplit(started["otpauth_uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert uri.path == "/Quart%20Auth%20API:ada%40example.com"
    assert parse_qs(uri.query) == {"secret": [started["secret"]], "issuer": ["Quart Auth API"]}
    svg = started["qr_svg"]
    assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.endswith("</svg>\n")
    assert "<script" not in svg and "href" not in svg


async def test_enrolment_needs_a_fresh_token(client, account):
    refreshed = await client.post("/auth/refresh", headers=account.refresh_auth)
    token = (await refreshed.get_json())["access_token"]

    response = await client.post("/auth/mfa/totp", headers=bearer(token))

    await problem(response, 401, "fresh_token_required")


async def test_the_secret_is_sealed_at_rest(app, client, account):
    started = await start_enrolment(client, account.auth)

    async with DATABASE.get(app).sessionmaker() as db:
        stored = await db.scalar(select(TotpFactor.secret))
    assert stored is not None and started["secret"] not in stored
    assert stored.startswith("gAAAAA")  # a Fernet token


async def test_a_wrong_code_leaves_the_factor_pending(client, account, mfa_clock):
    started = await start_enrolment(client, account.auth)
    wrong = f"{(int(code(started['secret'], mfa_clock)) + 1) % 1_000_000:06d}"

    response = await client.post(
        "/auth/mfa/totp/verify",
        headers=account.auth,
        json={"factor_id": started["factor_id"], "code": wrong},
    )

    await problem(response, 403, "mfa_invalid_code")
    assert "access_token" in await login_body(client, account.email)  # no second factor yet


async def test_a_pending_factor_expires_after_ten_minutes(client, account, mfa_clock):
    started = await start_enrolment(client, account.auth)
    mfa_clock.advance(600)

    response = await client.post(
        "/auth/mfa/totp/verify",
        headers=account.auth,
        json={"factor_id": started["factor_id"], "code": code(started["secret"], mfa_clock)},
    )

    await problem(response, 404, "not_found")


async def test_enrolling_again_replaces_the_pending_factor(client, account, mfa_clock):
    first = await start_enrolment(client, account.auth)
    second = await start_enrolment(client, account.auth)

    response = await client.post(
        "/auth/mfa/totp/verify",
        headers=account.auth,
        json={"factor_id": first["factor_id"], "code": code(first["secret"], mfa_clock)},
    )

    await problem(response, 404, "not_found")
    assert second["factor_id"] != first["factor_id"]


async def test_another_users_pending_factor_is_not_found(client, account, mfa_clock):
    started = await start_enrolment(client, account.auth)
    other = await register(client)

    response = await client.post(
        "/auth/mfa/totp/verify",
        headers=other.auth,
        json={"factor_id": started["factor_id"], "code": code(started["secret"], mfa_clock)},
    )

    await problem(response, 404, "not_found")


async def test_confirming_answers_recovery_codes_and_aal2_tokens(app, client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)

    assert len(factor.recovery_codes) == 10 == len(set(factor.recovery_codes))
    assert all(re.fullmatch(r"([a-z2-9]{4}-){3}[a-z2-9]{4}", c) for c in factor.recovery_codes)
    claims = claims_of(factor.access_token)
    assert (claims["aal"], claims["amr"], claims["sid"]) == (
        "aal2",
        ["pwd", "otp"],
        claims_of(account.access_token)["sid"],
    )
    assert claims_of(account.access_token)["aal"] == "aal1"
    async with DATABASE.get(app).sessionmaker() as db:
        digests = set(await db.scalars(select(RecoveryCode.digest)))
    assert len(digests) == 10 and not digests & set(factor.recovery_codes)


async def test_confirming_spends_the_sessions_old_refresh_token(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)

    replay = await client.post("/auth/refresh", headers=account.refresh_auth)

    await problem(replay, 401, "refresh_token_reused")
    assert (await client.get("/auth/me", headers=factor.auth)).status_code == 401


async def test_refresh_keeps_the_sessions_assurance(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)

    refreshed = await client.post("/auth/refresh", headers=bearer(factor.refresh_token))

    claims = claims_of((await refreshed.get_json())["access_token"])
    assert (claims["aal"], claims["amr"], claims["fresh"]) == ("aal2", ["pwd", "otp"], False)


async def test_one_factor_per_user(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)

    response = await client.post("/auth/mfa/totp", headers=factor.auth)

    await problem(response, 409, "mfa_already_enrolled")


# -- recovery codes ----------------------------------------------------------------------


async def test_a_recovery_code_logs_in_once(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    typed = " " + factor.recovery_codes[3].upper().replace("-", " ") + " "

    response = await challenge(client, await mfa_token(client, account.email), recovery_code=typed)

    body = await response.get_json()
    assert response.status_code == 200, body
    claims = claims_of(body["access_token"])
    assert (claims["aal"], claims["amr"]) == ("aal2", ["pwd", "recovery_code"])
    again = await challenge(
        client, await mfa_token(client, account.email), recovery_code=factor.recovery_codes[3]
    )
    await problem(again, 401, "mfa_invalid_code")
    other = await challenge(
        client, await mfa_token(client, account.email), recovery_code=factor.recovery_codes[4]
    )
    assert other.status_code == 200


async def test_new_recovery_codes_void_the_old_ones(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)

    response = await client.post("/auth/mfa/recovery-codes", headers=factor.auth)

    new = (await response.get_json())["recovery_codes"]
    assert (
        response.status_code == 200 and len(new) == 10 and not set(new) & set(factor.recovery_codes)
    )
    old = await challenge(
        client, await mfa_token(client, account.email), recovery_code=factor.recovery_codes[0]
    )
    await problem(old, 401, "mfa_invalid_code")
    fresh = await challenge(client, await mfa_token(client, account.email), recovery_code=new[0])
    assert fresh.status_code == 200


async def test_new_recovery_codes_need_aal2(client, account, mfa_clock):
    await problem(
        await client.post("/auth/mfa/recovery-codes", headers=account.auth), 403, "mfa_required"
    )
    factor = await enrol(client, account, mfa_clock)
    refreshed = await client.post("/auth/refresh", headers=bearer(factor.refresh_token))

    stale = await client.post("/auth/mfa/recovery-codes", headers=account.auth)  # claims aal1
    not_fresh = await client.post(
        "/auth/mfa/recovery-codes", headers=bearer((await refreshed.get_json())["access_token"])
    )

    await problem(stale, 403, "aal2_required")
    await problem(not_fresh, 401, "fresh_token_required")


# -- removal -----------------------------------------------------------------------------


async def test_removing_the_factor_ends_other_sessions_and_the_codes(
    app, client, account, mfa_clock
):
    factor = await enrol(client, account, mfa_clock)
    token = await mfa_token(client, account.email)
    other = await challenge(client, token, code=code(factor.secret, mfa_clock))
    other_token = (await other.get_json())["access_token"]

    response = await client.delete("/auth/mfa/totp", headers=factor.auth)

    assert response.status_code == 204
    assert (await client.get("/auth/me", headers=factor.auth)).status_code == 200
    await problem(await client.get("/auth/me", headers=bearer(other_token)), 401, "token_revoked")
    assert "access_token" in await login_body(client, account.email)
    assert await rows(app, TotpFactor) == await rows(app, RecoveryCode) == 0
    await problem(await client.delete("/auth/mfa/totp", headers=factor.auth), 404, "not_found")


async def test_removing_the_factor_needs_a_fresh_token(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    refreshed = await client.post("/auth/refresh", headers=bearer(factor.refresh_token))

    response = await client.delete(
        "/auth/mfa/totp", headers=bearer((await refreshed.get_json())["access_token"])
    )

    await problem(response, 401, "fresh_token_required")


async def test_deleting_the_account_deletes_its_factor(app, client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)
    await mfa_token(client, account.email)

    assert (await client.delete("/auth/me", headers=factor.auth)).status_code == 204

    for model in (TotpFactor, RecoveryCode, MfaChallenge):
        assert await rows(app, model) == 0, model


async def test_setting_an_encryption_key_later_loses_no_factor(
    database_url, account, client, mfa_clock
):
    """A server that ran with the key derived from SECRET_KEY, restarted with its own
    MFA_ENCRYPTION_KEY: the factors still open, and each is sealed anew under the new key
    at its next accepted code."""
    factor = await enrol(client, account, mfa_clock)  # sealed under the derived key
    key = Fernet.generate_key().decode()
    restarted = create_app(Settings.for_testing(database_url=database_url, mfa_encryption_key=key))
    async with restarted.test_app():
        other = restarted.test_client()
        token = await mfa_token(other, account.email)

        response = await challenge(other, token, code=code(factor.secret, mfa_clock))

        assert response.status_code == 200, await response.get_json()
        async with DATABASE.get(restarted).sessionmaker() as db:
            sealed = await db.scalar(select(TotpFactor.secret))
    assert Fernet(key.encode()).decrypt(sealed.encode()).decode() == factor.secret
