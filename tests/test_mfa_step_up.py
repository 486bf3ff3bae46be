"""Step-up: for a user with a second factor, what would lock the owner out (password and
e-mail change, revoking sessions, deleting the account, removing the factor) needs a
session that passed it (`aal2`); `jwt_required(aal2=True)` does the same for a
developer's own route (403 `mfa_required` when the user has no factor). A password reset
never bypasses the factor. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from quart import Blueprint, Quart

from quart_auth_api import create_app, get_jwt, jwt_required
from settings import Settings
from tests.helpers.http import PASSWORD, Account, bearer, claims_of, login_body, problem, register
from tests.helpers.mailbox import deliver_all, link_token, mail_settings, to
from tests.helpers.mfa import Factor, challenge, code, enrol, mfa_token, raced_login

NEW_PASSWORD = "a different passphrase"

payouts = Blueprint("payouts", __name__, url_prefix="/payouts")


@payouts.post("")
@jwt_required(fresh=True, aal2=True)
async def payout() -> dict:
    return {"amr": get_jwt()["amr"]}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(Settings.for_testing(database_url=database_url))
    app.register_blueprint(payouts)
    async with app.test_app():
        yield app


@dataclass
class TwoSessions:
    """A user with a factor: `aal1`, a password-only session (a login that raced the
    enrolment), and `factor`, whose tokens are of the session that enrolled (aal2)."""

    account: Account
    aal1: str
    factor: Factor


@pytest.fixture
async def enrolled(app, client, mfa_clock) -> TwoSessions:
    account = await register(client, email="ada@example.com")
    earlier = await login_body(client, account.email)
    factor = await enrol(client, account, mfa_clock)
    return TwoSessions(account, await raced_login(app, earlier["access_token"]), factor)


async def test_enrolling_ends_every_other_session(client, mfa_clock):
    account = await register(client, email="ada@example.com")
    other = await login_body(client, account.email)

    factor = await enrol(client, account, mfa_clock)

    await problem(
        await client.get("/auth/me", headers=bearer(other["access_token"])), 401, "token_revoked"
    )
    assert (await client.get("/auth/me", headers=factor.auth)).status_code == 200


async def test_the_enrolling_sessions_old_access_token_is_not_aal2(client, account, mfa_clock):
    factor = await enrol(client, account, mfa_clock)  # the same session, its new tokens aal2

    response = await client.post(
        "/auth/mfa/recovery-codes", headers=account.auth
    )  # minted before: its claim says aal1

    await problem(response, 403, "aal2_required")
    assert (await client.post("/auth/mfa/recovery-codes", headers=factor.auth)).status_code == 200


def step_up_requests(sessions_id: str) -> list[tuple[str, str, dict]]:
    return [
        (
            "POST",
            "/auth/password/change",
            {"json": {"current_password": PASSWORD, "new_password": NEW_PASSWORD}},
        ),
        (
            "POST",
            "/auth/email/change",
            {"json": {"password": PASSWORD, "new_email": "new@example.com"}},
        ),
        ("DELETE", f"/auth/sessions/{sessions_id}", {}),
        ("POST", "/auth/logout", {"json": {"scope": "others"}}),
        ("POST", "/auth/logout", {"json": {"scope": "global"}}),
        ("DELETE", "/auth/me", {}),
        ("DELETE", "/auth/mfa/totp", {}),
        ("POST", "/auth/mfa/recovery-codes", {}),
    ]


@pytest.mark.parametrize("index", range(8))
async def test_a_password_alone_session_is_refused_what_needs_aal2(client, enrolled, index):
    other_sid = claims_of(enrolled.factor.access_token)["sid"]
    method, path, options = step_up_requests(other_sid)[index]

    response = await client.open(path, method=method, headers=bearer(enrolled.aal1), **options)

    await problem(response, 403, "aal2_required")
    assert (await client.get("/auth/me", headers=enrolled.factor.auth)).status_code == 200


async def test_logging_out_this_session_needs_no_second_factor(client, enrolled):
    response = await client.post("/auth/logout", headers=bearer(enrolled.aal1))

    assert response.status_code == 200
    await problem(await client.get("/auth/me", headers=bearer(enrolled.aal1)), 401, "token_revoked")


async def test_an_aal2_session_may_change_the_password_and_revoke(client, enrolled):
    aal1_sid = claims_of(enrolled.aal1)["sid"]

    revoked = await client.delete(f"/auth/sessions/{aal1_sid}", headers=enrolled.factor.auth)
    changed = await client.post(
        "/auth/password/change",
        headers=enrolled.factor.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )

    assert revoked.status_code == 204
    assert changed.status_code == 200, await changed.get_json()
    claims = claims_of((await changed.get_json())["access_token"])
    assert (claims["aal"], claims["amr"]) == ("aal2", ["pwd", "otp"])  # the session stays aal2


async def test_an_aal2_session_may_delete_the_account(client, enrolled):
    response = await client.delete("/auth/me", headers=enrolled.factor.auth)

    assert response.status_code == 204
    login = await client.post(
        "/auth/login", json={"email": enrolled.account.email, "password": PASSWORD}
    )
    await problem(login, 401, "invalid_credentials")


async def test_users_without_a_factor_are_not_asked_for_one(client):
    account = await register(client)

    changed = await client.post(
        "/auth/password/change",
        headers=account.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )

    assert changed.status_code == 200


# -- a developer's route -----------------------------------------------------------------


async def test_an_aal2_route_lets_an_aal2_session_through(client, enrolled, mfa_clock):
    token = await mfa_token(client, enrolled.account.email)
    passed = await challenge(client, token, code=code(enrolled.factor.secret, mfa_clock))

    response = await client.post(
        "/payouts", headers=bearer((await passed.get_json())["access_token"])
    )

    assert response.status_code == 200
    assert (await response.get_json())["amr"] == ["pwd", "otp"]


async def test_an_aal2_route_refuses_a_session_that_did_not_pass_the_factor(client, enrolled):
    await problem(
        await client.post("/payouts", headers=bearer(enrolled.aal1)), 403, "aal2_required"
    )


async def test_an_aal2_route_asks_a_user_without_a_factor_to_enrol(client):
    account = await register(client)

    await problem(await client.post("/payouts", headers=account.auth), 403, "mfa_required")


async def test_an_aal2_route_still_needs_a_fresh_token(client, enrolled):
    refreshed = await client.post("/auth/refresh", headers=bearer(enrolled.factor.refresh_token))
    token = (await refreshed.get_json())["access_token"]
    assert claims_of(token)["aal"] == "aal2"

    await problem(await client.post("/payouts", headers=bearer(token)), 401, "fresh_token_required")


# -- a password reset ------------------------------------------------------------------


async def test_a_password_reset_does_not_bypass_the_factor(database_url, smtp, mfa_clock):
    app = create_app(mail_settings(database_url, smtp))
    async with app.test_app():
        client = app.test_client()
        account = await register(client, email="ada@example.com")
        factor = await enrol(client, account, mfa_clock)
        pending = await mfa_token(client, account.email)
        assert (
            await client.post("/auth/password/forgot", json={"email": account.email})
        ).status_code == 202
        await deliver_all(app)
        [mail] = [m for m in to(smtp, account.email) if m["Subject"] == "Reset your password"]
        reset = await client.post(
            "/auth/password/reset", json={"token": link_token(mail), "password": NEW_PASSWORD}
        )
        assert reset.status_code == 200

        token = await mfa_token(client, account.email, NEW_PASSWORD)  # asks for the code again
        stale = await challenge(client, pending, code=code(factor.secret, mfa_clock))
        passed = await challenge(client, token, code=code(factor.secret, mfa_clock))

        await problem(stale, 401, "mfa_token_invalid")  # opened under the old password
        assert passed.status_code == 200
        await deliver_all(app)
        subjects = {m["Subject"] for m in to(smtp, account.email)}
        assert "Two-step login is on" in subjects
