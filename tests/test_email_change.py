"""E-mail change: `POST /auth/email/change` mails a confirmation link to the new address
and a notice to the old one and changes nothing; `POST /auth/email/change/confirm` with
the link's token moves the account, proves the address and ends every other session
(all of them, or all but the one whose access token the confirm carries). The token
works once (also under racing confirms); an address taken meanwhile is 409 and leaves
the token unused. Mail through a real SMTP server (aiosmtpd); SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.http import PASSWORD, bearer, login, login_body, problem, register
from tests.helpers.mailbox import deliver_all, link_of, link_token, text_of, to

NEW = "ada.new@example.com"
CONFIRM = "/auth/email/change/confirm"
CHANGE_SUBJECT = "Confirm your new address"
NOTICE_SUBJECT = "A new address was requested for your account"


async def ask(client, account, new_email: str = NEW, password: str = PASSWORD):
    return await client.post(
        "/auth/email/change",
        json={"password": password, "new_email": new_email},
        headers=account.auth,
    )


async def change_token(app, client, smtp, account, new_email: str = NEW) -> str:
    """Ask for the change, deliver, and read the token out of the mail to `new_email`."""
    response = await ask(client, account, new_email)
    assert response.status_code == 202, await response.get_data(as_text=True)
    await deliver_all(app)
    mails = [m for m in to(smtp, new_email) if m["Subject"] == CHANGE_SUBJECT]
    assert len(mails) == 1
    return link_token(mails[-1])


async def me(client, token: str):
    return await client.get("/auth/me", headers=bearer(token))


@pytest.fixture
async def ada(mail_client):
    return await register(mail_client, email="ada@example.com")


# -- asking -------------------------------------------------------------------------


async def test_asking_answers_202_and_mails_a_link_to_the_new_address(
    mail_app, mail_client, smtp, ada
):
    response = await ask(mail_client, ada)

    assert response.status_code == 202
    assert set(await response.get_json()) == {"message"}
    await deliver_all(mail_app)
    [mail] = [m for m in to(smtp, NEW) if m["Subject"] == CHANGE_SUBJECT]
    assert link_of(mail).startswith("http://localhost:5000/confirm-email-change#token=")
    assert len(link_token(mail)) >= 43  # 32 random bytes


async def test_asking_mails_the_old_address_a_notice_without_a_link(
    mail_app, mail_client, smtp, ada
):
    assert (await ask(mail_client, ada)).status_code == 202

    await deliver_all(mail_app)

    [notice] = [m for m in to(smtp, ada.email) if m["Subject"] == NOTICE_SUBJECT]
    assert "#token=" not in text_of(notice) and "http" not in text_of(notice)
    assert "wasn't you" in text_of(notice)


async def test_asking_changes_nothing_until_confirmed(mail_app, mail_client, smtp, ada):
    await change_token(mail_app, mail_client, smtp, ada)

    body = await (await me(mail_client, ada.access_token)).get_json()
    assert body["email"] == ada.email
    assert (await login(mail_client, ada.email)).status_code == 200
    await problem(await login(mail_client, NEW), 401, "invalid_credentials")


async def test_asking_with_a_wrong_password_is_403_and_mails_nothing(
    mail_app, mail_client, smtp, ada
):
    response = await ask(mail_client, ada, password="not the password")

    await problem(response, 403, "invalid_credentials")
    await deliver_all(mail_app)
    assert to(smtp, NEW) == []
    assert [m for m in to(smtp, ada.email) if m["Subject"] == NOTICE_SUBJECT] == []


@pytest.mark.parametrize("same", ["ada@example.com", "ADA@Example.com"])
async def test_asking_for_the_current_address_is_422(mail_client, ada, same):
    body = await problem(await ask(mail_client, ada, same), 422, "validation_failed")

    assert [error["field"] for error in body["errors"]] == ["new_email"]


async def test_asking_for_another_accounts_address_is_409_email_taken(mail_client, ada):
    await register(mail_client, email="grace@example.com")

    await problem(await ask(mail_client, ada, "Grace@example.com"), 409, "email_taken")


@pytest.mark.parametrize("bad", ["not-an-address", "ada@", "@example.com", "a@b@example.com", ""])
async def test_asking_for_a_malformed_address_is_422(mail_client, ada, bad):
    await problem(await ask(mail_client, ada, bad), 422, "validation_failed")


async def test_asking_without_mail_is_503_mail_unavailable(client, account):
    await problem(await ask(client, account), 503, "mail_unavailable")


async def test_asking_without_a_token_is_401(mail_client):
    response = await mail_client.post(
        "/auth/email/change", json={"password": PASSWORD, "new_email": NEW}
    )

    await problem(response, 401, "token_missing")


# -- confirming ---------------------------------------------------------------------


async def test_confirming_answers_200_with_the_new_verified_address(
    mail_app, mail_client, smtp, ada
):
    token = await change_token(mail_app, mail_client, smtp, ada)

    response = await mail_client.post(CONFIRM, json={"token": token})

    assert response.status_code == 200
    body = await response.get_json()
    assert body["id"] == ada.user["id"]
    assert body["email"] == NEW
    assert body["email_verified"] is True and body["email_verified_at"] is not None


async def test_after_confirming_the_new_address_logs_in_and_the_old_one_does_not(
    mail_app, mail_client, smtp, ada
):
    token = await change_token(mail_app, mail_client, smtp, ada)
    assert (await mail_client.post(CONFIRM, json={"token": token})).status_code == 200

    tokens = await login_body(mail_client, NEW)
    assert tokens["user"]["email"] == NEW
    await problem(await login(mail_client, ada.email), 401, "invalid_credentials")


async def test_confirming_without_a_token_ends_every_session(mail_app, mail_client, smtp, ada):
    second = await login_body(mail_client, ada.email)
    token = await change_token(mail_app, mail_client, smtp, ada)

    assert (await mail_client.post(CONFIRM, json={"token": token})).status_code == 200

    await problem(await me(mail_client, ada.access_token), 401, "token_revoked")
    await problem(await me(mail_client, second["access_token"]), 401, "token_revoked")
    refresh = await mail_client.post("/auth/refresh", headers=ada.refresh_auth)
    await problem(refresh, 401, "token_revoked")


async def test_confirming_with_an_access_token_keeps_that_session_only(
    mail_app, mail_client, smtp, ada
):
    second = await login_body(mail_client, ada.email)
    third = await login_body(mail_client, ada.email)
    token = await change_token(mail_app, mail_client, smtp, ada)

    response = await mail_client.post(
        CONFIRM, json={"token": token}, headers=bearer(second["access_token"])
    )

    assert response.status_code == 200
    kept = await me(mail_client, second["access_token"])
    assert kept.status_code == 200 and (await kept.get_json())["email"] == NEW
    await problem(await me(mail_client, ada.access_token), 401, "token_revoked")
    await problem(await me(mail_client, third["access_token"]), 401, "token_revoked")


async def test_confirming_with_another_users_token_keeps_none_of_this_users_sessions(
    mail_app, mail_client, smtp, ada
):
    grace = await register(mail_client, email="grace@example.com")
    token = await change_token(mail_app, mail_client, smtp, ada)

    response = await mail_client.post(CONFIRM, json={"token": token}, headers=grace.auth)

    assert (await response.get_json())["email"] == NEW
    await problem(await me(mail_client, ada.access_token), 401, "token_revoked")
    grace_now = await me(mail_client, grace.access_token)
    assert (await grace_now.get_json())["email"] == "grace@example.com"


async def test_confirming_leaves_other_users_sessions_alone(mail_app, mail_client, smtp, ada):
    grace = await register(mail_client, email="grace@example.com")
    token = await change_token(mail_app, mail_client, smtp, ada)

    assert (await mail_client.post(CONFIRM, json={"token": token})).status_code == 200

    assert (await me(mail_client, grace.access_token)).status_code == 200


async def test_a_used_token_is_400_invalid_link_token(mail_app, mail_client, smtp, ada):
    token = await change_token(mail_app, mail_client, smtp, ada)
    assert (await mail_client.post(CONFIRM, json={"token": token})).status_code == 200

    again = await mail_client.post(CONFIRM, json={"token": token})

    await problem(again, 400, "invalid_link_token")


async def test_a_newer_request_voids_the_older_link(mail_app, mail_client, smtp, ada):
    first = await change_token(mail_app, mail_client, smtp, ada)
    second = await change_token(mail_app, mail_client, smtp, ada, "ada.other@example.com")

    await problem(await mail_client.post(CONFIRM, json={"token": first}), 400, "invalid_link_token")
    response = await mail_client.post(CONFIRM, json={"token": second})
    assert (await response.get_json())["email"] == "ada.other@example.com"


@pytest.mark.parametrize("token", ["bogus", "A" * 43, "../../etc/passwd", "tok en", "é" * 50])
async def test_a_bogus_token_is_400_invalid_link_token(mail_client, ada, token):
    response = await mail_client.post(CONFIRM, json={"token": token})

    await problem(response, 400, "invalid_link_token")


@pytest.mark.parametrize("body", [{}, {"token": ""}, {"token": "x" * 201}, {"token": 7}])
async def test_a_missing_or_malformed_token_is_422(mail_client, ada, body):
    await problem(await mail_client.post(CONFIRM, json=body), 422, "validation_failed")


async def test_a_verification_token_does_not_confirm_a_change(mail_app, mail_client, smtp, ada):
    await deliver_all(mail_app)
    [verification] = [m for m in to(smtp, ada.email) if m["Subject"] == "Confirm your address"]

    response = await mail_client.post(CONFIRM, json={"token": link_token(verification)})

    await problem(response, 400, "invalid_link_token")
    assert (await (await me(mail_client, ada.access_token)).get_json())["email"] == ada.email


async def test_an_address_taken_meanwhile_is_409_and_the_link_stays_usable(
    mail_app, mail_client, smtp, ada
):
    token = await change_token(mail_app, mail_client, smtp, ada)
    taker = await register(mail_client, email=NEW)

    response = await mail_client.post(CONFIRM, json={"token": token})

    await problem(response, 409, "email_taken")
    body = await (await me(mail_client, ada.access_token)).get_json()
    assert body["email"] == ada.email
    assert (await login(mail_client, ada.email)).status_code == 200
    # the address frees up again: the same link now works (it was never used)
    assert (await mail_client.delete("/auth/me", headers=taker.auth)).status_code == 204
    response = await mail_client.post(CONFIRM, json={"token": token})
    assert response.status_code == 200
    assert (await response.get_json())["email"] == NEW


async def test_racing_confirms_with_one_token_let_exactly_one_through(
    mail_app, mail_client, smtp, ada
):
    token = await change_token(mail_app, mail_client, smtp, ada)

    responses = await asyncio.gather(
        *(mail_client.post(CONFIRM, json={"token": token}) for _ in range(2))
    )

    assert sorted(response.status_code for response in responses) == [200, 400]
    [loser] = [response for response in responses if response.status_code == 400]
    await problem(loser, 400, "invalid_link_token")
    assert (await login(mail_client, NEW)).status_code == 200
