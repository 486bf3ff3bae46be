"""Password change (`POST /auth/password/change`, with an access token) through the test
client, with mail to a real SMTP server (aiosmtpd):

- it answers a new token body for the current session (the same `sid`, fresh), whose old
  refresh token is spent; every other session ends, outstanding reset links stop working,
  a notice is mailed, and the new password logs in;
- a wrong current password is a 403 `invalid_credentials` that ends no session, and is
  limited as logins are; a new password equal to the current one, or weak, is a 422;
  no token is a 401 `token_missing`;
- with MAIL_BACKEND=none it works the same and queues nothing.

SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import func, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import OutboxMessage
from tests.helpers.http import (
    PASSWORD,
    TOKEN_BODY_KEYS,
    bearer,
    claims_of,
    login,
    login_body,
    problem,
    register,
)
from tests.helpers.mailbox import deliver_all, link_token, text_of, to

NEW_PASSWORD = "a brand new passphrase"
WRONG = "wrong horse battery"


async def change(client, access_token, current=PASSWORD, new=NEW_PASSWORD):
    body = {"current_password": current, "new_password": new}
    return await client.post("/auth/password/change", json=body, headers=bearer(access_token))


async def me(client, access_token):
    return await client.get("/auth/me", headers=bearer(access_token))


async def refresh(client, refresh_token):
    return await client.post("/auth/refresh", headers=bearer(refresh_token))


async def test_a_change_rotates_this_session_and_ends_every_other_one(mail_client):
    account = await register(mail_client)
    others = [await login_body(mail_client, account.email) for _ in range(2)]

    response = await change(mail_client, account.access_token)

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == TOKEN_BODY_KEYS
    assert body["user"]["id"] == account.user["id"]
    assert {body["access_token"], body["refresh_token"]}.isdisjoint(
        {account.access_token, account.refresh_token}
    )
    old, new = claims_of(account.access_token), claims_of(body["access_token"])
    assert new["sid"] == old["sid"]
    assert new["fresh"] is True
    assert new["type"] == "access"
    assert (await me(mail_client, body["access_token"])).status_code == 200

    for other in others:
        await problem(await me(mail_client, other["access_token"]), 401, "token_revoked")
        await problem(await refresh(mail_client, other["refresh_token"]), 401, "token_revoked")
    assert (await refresh(mail_client, body["refresh_token"])).status_code == 200


async def test_the_old_refresh_token_of_the_changed_session_is_refused(mail_client):
    account = await register(mail_client)
    body = await (await change(mail_client, account.access_token)).get_json()

    await problem(await refresh(mail_client, account.refresh_token), 401, "refresh_token_reused")
    # a replay of the spent token ends the session (reuse detection), as after a refresh
    await problem(await me(mail_client, body["access_token"]), 401, "token_revoked")


async def test_the_new_password_logs_in_and_the_old_one_does_not(mail_client):
    account = await register(mail_client)
    assert (await change(mail_client, account.access_token)).status_code == 200

    assert (await login(mail_client, account.email, NEW_PASSWORD)).status_code == 200
    await problem(await login(mail_client, account.email, PASSWORD), 401, "invalid_credentials")


async def test_a_change_voids_outstanding_reset_links_and_mails_a_notice(
    mail_app, mail_client, smtp
):
    account = await register(mail_client)
    forgot = await mail_client.post("/auth/password/forgot", json={"email": account.email})
    assert forgot.status_code == 202
    await deliver_all(mail_app)
    (reset_mail,) = [m for m in to(smtp, account.email) if m["Subject"] == "Reset your password"]
    token = link_token(reset_mail)

    assert (await change(mail_client, account.access_token)).status_code == 200

    body = {"token": token, "password": "reset after the change"}
    await problem(
        await mail_client.post("/auth/password/reset", json=body), 400, "invalid_link_token"
    )
    assert (await login(mail_client, account.email, NEW_PASSWORD)).status_code == 200
    smtp.received.clear()
    await deliver_all(mail_app)
    (notice,) = to(smtp, account.email)
    assert notice["Subject"] == "Your password was changed"
    assert "Quart Auth API" in text_of(notice)
    assert "#token=" not in text_of(notice)


async def test_a_wrong_current_password_is_403_and_ends_no_session(mail_client):
    account = await register(mail_client)

    response = await change(mail_client, account.access_token, current=WRONG)

    body = await problem(response, 403, "invalid_credentials")
    assert body["status"] == 403
    assert "WWW-Authenticate" not in response.headers  # not a token problem
    assert (await me(mail_client, account.access_token)).status_code == 200
    assert (await login(mail_client, account.email, PASSWORD)).status_code == 200
    await problem(await login(mail_client, account.email, WRONG), 401, "invalid_credentials")


async def test_a_new_password_equal_to_the_current_one_is_422(mail_client):
    account = await register(mail_client)

    response = await change(mail_client, account.access_token, new=PASSWORD)

    body = await problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["new_password"]
    assert (await me(mail_client, account.access_token)).status_code == 200


async def test_a_weak_new_password_is_422(mail_client):
    account = await register(mail_client)

    body = await problem(
        await change(mail_client, account.access_token, new="short"), 422, "validation_failed"
    )

    assert [error["field"] for error in body["errors"]] == ["new_password"]
    assert (await login(mail_client, account.email, PASSWORD)).status_code == 200


async def test_a_change_without_a_token_is_401_token_missing(mail_client):
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = await mail_client.post("/auth/password/change", json=body)

    await problem(response, 401, "token_missing")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_changes_are_limited_per_account_as_logins_are(mail_client, clock):
    """RATE_LIMIT_LOGIN (10/minute) per account: the 11th attempt is a 429, even with
    the right password; a minute later it goes through."""
    account = await register(mail_client)
    for _ in range(10):
        assert (await change(mail_client, account.access_token, current=WRONG)).status_code == 403

    limited = await change(mail_client, account.access_token)

    await problem(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert (await login(mail_client, account.email, PASSWORD)).status_code == 200
    clock.advance(61)
    assert (await change(mail_client, account.access_token)).status_code == 200


async def test_without_mail_a_change_works_and_queues_nothing(app, client, account):
    response = await change(client, account.access_token)

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await login(client, account.email, NEW_PASSWORD)).status_code == 200
    async with DATABASE.get(app).sessionmaker() as db:
        assert await db.scalar(select(func.count()).select_from(OutboxMessage)) == 0
