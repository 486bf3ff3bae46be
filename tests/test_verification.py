"""Proving an address (`POST /auth/email/verify`, `POST /auth/email/verification`) and
`EMAIL_VERIFICATION`, through the test client with mail to a real SMTP server (aiosmtpd):

- registration mails a verification link; its token proves the address once
  (`email_verified`, `email_verified_at` in `User`, which has exactly seven keys);
- a resend answers the same 202 for every address, mails only an active account whose
  address is not proved, and is allowed once a minute per address, known or not;
- a verification token sent before an e-mail change proves nothing afterwards;
- with `EMAIL_VERIFICATION=mandatory` registration answers the user and no tokens (and
  opens no session), a login with the right password is a 403 `email_not_verified` until
  the address is proved, a wrong password stays the generic 401; mandatory without mail
  is a config error.

SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError
from quart import Quart
from sqlalchemy import func, select, update

from quart_auth_api import cli, create_app
from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, User
from settings import ConfigError, Settings
from tests.helpers.http import PASSWORD, USER_KEYS, bearer, login, problem, register
from tests.helpers.mailbox import deliver_all, link_of, link_token, mail_settings, to
from tests.helpers.smtp import SmtpServer

VERIFY_LINK = "http://localhost:5000/verify-email#token="
WRONG = "wrong horse battery"


async def verify(client, token):
    return await client.post("/auth/email/verify", json={"token": token})


async def resend(client, email):
    return await client.post("/auth/email/verification", json={"email": email})


async def verification_token(smtp, email) -> str:
    """The token of the last verification mail `email` received."""
    mails = [m for m in to(smtp, email) if m["Subject"] == "Confirm your address"]
    assert mails, [m["Subject"] for m in to(smtp, email)]
    return link_token(mails[-1])


async def set_user(app, address, **values) -> None:
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(update(User).where(User.email == address).values(**values))
        await db.commit()


# -- verify ----------------------------------------------------------------------------


async def test_registration_mails_a_link_that_proves_the_address_once(mail_app, mail_client, smtp):
    account = await register(mail_client)
    assert set(account.user) == USER_KEYS
    assert account.user["email_verified"] is False
    assert account.user["email_verified_at"] is None
    await deliver_all(mail_app)
    (mail,) = to(smtp, account.email)
    assert mail["Subject"] == "Confirm your address"
    assert link_of(mail) == VERIFY_LINK + link_token(mail)

    response = await verify(mail_client, link_token(mail))

    assert response.status_code == 200, await response.get_data(as_text=True)
    user = await response.get_json()
    assert set(user) == USER_KEYS
    assert user["id"] == account.user["id"]
    assert user["email_verified"] is True
    assert user["email_verified_at"] is not None
    me = await (await mail_client.get("/auth/me", headers=account.auth)).get_json()
    assert set(me) == USER_KEYS
    assert (me["email_verified"], me["email_verified_at"]) == (True, user["email_verified_at"])

    await problem(await verify(mail_client, link_token(mail)), 400, "invalid_link_token")


async def test_a_bogus_or_reset_token_proves_nothing(mail_app, mail_client, smtp):
    account = await register(mail_client)
    await mail_client.post("/auth/password/forgot", json={"email": account.email})
    await deliver_all(mail_app)
    (reset_mail,) = [m for m in to(smtp, account.email) if m["Subject"] == "Reset your password"]

    await problem(await verify(mail_client, "A" * 43), 400, "invalid_link_token")
    await problem(await verify(mail_client, link_token(reset_mail)), 400, "invalid_link_token")

    me = await (await mail_client.get("/auth/me", headers=account.auth)).get_json()
    assert me["email_verified"] is False


async def test_a_token_sent_before_an_email_change_does_not_prove_the_new_address(
    mail_app, mail_client, smtp
):
    account = await register(mail_client)
    await deliver_all(mail_app)
    old_token = await verification_token(smtp, account.email)
    change = {"password": PASSWORD, "new_email": "moved@example.com"}
    response = await mail_client.post("/auth/email/change", json=change, headers=account.auth)
    assert response.status_code == 202, await response.get_data(as_text=True)
    await deliver_all(mail_app)
    (confirm,) = to(smtp, "moved@example.com")
    moved = await mail_client.post(
        "/auth/email/change/confirm", json={"token": link_token(confirm)}
    )
    assert moved.status_code == 200, await moved.get_data(as_text=True)

    await problem(await verify(mail_client, old_token), 400, "invalid_link_token")


async def test_a_verification_token_is_bound_to_the_address_it_was_sent_to(
    mail_app, mail_client, smtp
):
    """Even a token no flow voided: the account's address changed underneath it."""
    account = await register(mail_client)
    await deliver_all(mail_app)
    token = await verification_token(smtp, account.email)
    await set_user(mail_app, account.email, email="elsewhere@example.com")

    await problem(await verify(mail_client, token), 400, "invalid_link_token")
    me = await (await mail_client.get("/auth/me", headers=account.auth)).get_json()
    assert (me["email"], me["email_verified"]) == ("elsewhere@example.com", False)


# -- resend ----------------------------------------------------------------------------


async def test_resend_answers_alike_for_every_address_and_mails_only_the_unproved(
    mail_app, mail_client, smtp
):
    unproved = await register(mail_client, email="unproved@example.com")
    proved = await register(mail_client, email="proved@example.com")
    inactive = await register(mail_client, email="inactive@example.com")
    await deliver_all(mail_app)
    assert (
        await verify(mail_client, await verification_token(smtp, proved.email))
    ).status_code == 200
    await set_user(mail_app, inactive.email, is_active=False)
    smtp.received.clear()

    addresses = (unproved.email, "nobody@example.com", proved.email, inactive.email)
    answers = [await resend(mail_client, email) for email in addresses]

    assert [response.status_code for response in answers] == [202] * 4
    bodies = [await response.get_json() for response in answers]
    assert all(body == bodies[0] for body in bodies) and set(bodies[0]) == {"message"}
    await deliver_all(mail_app)
    assert [mail["To"] for mail in smtp.received] == [unproved.email]
    token = await verification_token(smtp, unproved.email)
    assert (await verify(mail_client, token)).status_code == 200


async def test_resend_is_allowed_once_a_minute_per_address_known_or_not(
    mail_app, mail_client, smtp, clock
):
    account = await register(mail_client)
    for email in (account.email, "nobody@example.com"):
        assert (await resend(mail_client, email)).status_code == 202

        limited = await resend(mail_client, email)

        await problem(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 61
    assert (await resend(mail_client, "someone-else@example.com")).status_code == 202

    clock.advance(61)
    for email in (account.email, "nobody@example.com"):
        assert (await resend(mail_client, email)).status_code == 202


async def test_a_resent_link_voids_the_earlier_one(mail_app, mail_client, smtp):
    account = await register(mail_client)
    await deliver_all(mail_app)
    first = await verification_token(smtp, account.email)
    assert (await resend(mail_client, account.email)).status_code == 202
    await deliver_all(mail_app)
    second = await verification_token(smtp, account.email)

    await problem(await verify(mail_client, first), 400, "invalid_link_token")
    assert (await verify(mail_client, second)).status_code == 200


# -- EMAIL_VERIFICATION=mandatory ------------------------------------------------------


@pytest.fixture
async def mandatory_app(
    database_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Quart]:
    monkeypatch.setattr(cli, "MAIL_POLL", 3600.0)  # the test delivers (deliver_all)
    app = create_app(mail_settings(database_url, smtp, email_verification="mandatory"))
    async with app.test_app():
        yield app


async def session_count(app) -> int:
    async with DATABASE.get(app).sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(AuthSession)) or 0)


async def test_mandatory_registration_answers_the_user_and_no_tokens(mandatory_app, smtp):
    client = mandatory_app.test_client()
    body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}

    response = await client.post("/auth/register", json=body)

    assert response.status_code == 201, await response.get_data(as_text=True)
    answer = await response.get_json()
    assert set(answer) == {"user", "verification_required"}
    assert answer["verification_required"] is True
    assert set(answer["user"]) == USER_KEYS
    assert answer["user"]["email_verified"] is False
    assert await session_count(mandatory_app) == 0
    await deliver_all(mandatory_app)
    assert len(to(smtp, "ada@example.com")) == 1


async def test_mandatory_login_waits_for_the_address_to_be_proved(mandatory_app, smtp):
    client = mandatory_app.test_client()
    body = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    assert (await client.post("/auth/register", json=body)).status_code == 201

    await problem(await login(client, "ada@example.com"), 403, "email_not_verified")
    wrong = await problem(await login(client, "ada@example.com", WRONG), 401, "invalid_credentials")
    unknown = await problem(await login(client, "nobody@example.com"), 401, "invalid_credentials")
    assert {k: v for k, v in wrong.items() if k != "request_id"} == {
        k: v for k, v in unknown.items() if k != "request_id"
    }
    assert await session_count(mandatory_app) == 0

    await deliver_all(mandatory_app)
    token = await verification_token(smtp, "ada@example.com")
    assert (await verify(client, token)).status_code == 200

    response = await login(client, "ada@example.com")
    assert response.status_code == 200, await response.get_data(as_text=True)
    tokens = await response.get_json()
    me = await (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).get_json()
    assert me["email_verified"] is True


@pytest.mark.parametrize("mail", [{}, {"mail_backend": "none"}], ids=["default", "none"])
def test_mandatory_verification_without_mail_is_a_config_error(mail):
    """At start-up (`Settings.load`) one `config error` line naming the setting; the
    testing constructor refuses it too."""
    with pytest.raises(ConfigError, match="^config error: EMAIL_VERIFICATION: "):
        Settings.load(_env_file=None, env="testing", email_verification="mandatory", **mail)
    with pytest.raises(ValidationError, match="EMAIL_VERIFICATION"):
        Settings.for_testing(email_verification="mandatory", **mail)
