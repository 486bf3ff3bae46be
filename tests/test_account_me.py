"""`PATCH /auth/me` changes the caller's name (trimmed, visible, nothing else) and
`DELETE /auth/me` (fresh access token only) deletes the account with everything it
owns: sessions, link tokens and mail still waiting, also mail queued by address before
anyone knew whose; its tokens stop working and the address can register again. Other
users are never touched. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import func, or_, select

from quart_auth_api.db import DATABASE
from quart_auth_api.models import AccountToken, AuthSession, OutboxMessage, User
from tests.helpers.http import bearer, login, login_body, problem, register
from tests.helpers.mailbox import deliver_all, to


async def rename(client, account, name):
    return await client.patch("/auth/me", json={"name": name}, headers=account.auth)


async def me(client, account) -> dict:
    response = await client.get("/auth/me", headers=account.auth)
    assert response.status_code == 200
    return dict(await response.get_json())


async def count(app, statement) -> int:
    async with DATABASE.get(app).sessionmaker() as db:
        return int(await db.scalar(statement) or 0)


async def user_id_of(app, email: str) -> int:
    async with DATABASE.get(app).sessionmaker() as db:
        found = await db.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return int(found)


async def rows_of(app, user_id: int, email: str) -> dict[str, int]:
    """How many rows of each table belong to this user (or wait for their address)."""
    pending_to = (OutboxMessage.to_address == email) & OutboxMessage.sent_at.is_(None)
    return {
        "users": await count(app, select(func.count()).where(User.id == user_id)),
        "auth_sessions": await count(
            app, select(func.count()).where(AuthSession.user_id == user_id)
        ),
        "account_tokens": await count(
            app, select(func.count()).where(AccountToken.user_id == user_id)
        ),
        "outbox_messages": await count(
            app,
            select(func.count()).where(or_(OutboxMessage.user_id == user_id, pending_to)),
        ),
    }


# -- PATCH /auth/me ------------------------------------------------------------------


async def test_rename_answers_200_with_the_trimmed_name(client, account):
    response = await rename(client, account, "  Ada King \t")

    assert response.status_code == 200
    body = await response.get_json()
    assert body["name"] == "Ada King"
    assert body["id"] == account.user["id"] and body["email"] == account.email
    assert (await me(client, account))["name"] == "Ada King"


async def test_rename_moves_updated_at_and_not_created_at(client, account):
    before = await me(client, account)

    body = await (await rename(client, account, "Countess of Lovelace")).get_json()

    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(before["updated_at"])
    assert body["created_at"] == before["created_at"]


async def test_rename_changes_only_the_name(client, account):
    response = await client.patch(
        "/auth/me",
        json={"name": "Ada", "email": "evil@example.com", "email_verified": True, "id": "x"},
        headers=account.auth,
    )

    body = await response.get_json()
    assert response.status_code == 200 and body["name"] == "Ada"
    assert body["email"] == account.email and body["id"] == account.user["id"]
    assert body["email_verified"] is False
    assert (await login(client, account.email)).status_code == 200


@pytest.mark.parametrize(
    "name",
    ["", "   ", "\t", "\u200b", "\u200b\u202e", "\u3164", "\u2800", "a\nb", "a\x00b", "x" * 101],
)
async def test_rename_to_an_invisible_empty_or_bad_name_is_422(client, account, name):
    body = await problem(await rename(client, account, name), 422, "validation_failed")

    assert [error["field"] for error in body["errors"]] == ["name"]
    assert (await me(client, account))["name"] == "Ada Lovelace"


@pytest.mark.parametrize("body", [{}, {"name": None}, {"name": 7}, {"nom": "Ada"}])
async def test_rename_without_a_name_string_is_422(client, account, body):
    response = await client.patch("/auth/me", json=body, headers=account.auth)

    await problem(response, 422, "validation_failed")


async def test_rename_with_a_body_that_is_not_json_is_415(client, account):
    response = await client.patch(
        "/auth/me", data="name=Ada", headers={**account.auth, "Content-Type": "text/plain"}
    )

    await problem(response, 415, "unsupported_media_type")


async def test_rename_without_a_token_is_401(client):
    response = await client.patch("/auth/me", json={"name": "Mallory"})

    await problem(response, 401, "token_missing")


async def test_rename_leaves_other_users_alone(client, account):
    grace = await register(client, email="grace@example.com", name="Grace Hopper")

    assert (await rename(client, account, "Ada King")).status_code == 200

    assert await me(client, grace) == grace.user


# -- DELETE /auth/me -----------------------------------------------------------------


async def test_delete_answers_204_with_no_body(client, account):
    response = await client.delete("/auth/me", headers=account.auth)

    assert response.status_code == 204
    assert await response.get_data() == b""


async def test_after_delete_every_token_of_the_user_is_401(client, account):
    second = await login_body(client, account.email)

    assert (await client.delete("/auth/me", headers=account.auth)).status_code == 204

    for token in (account.access_token, second["access_token"]):
        await problem(await client.get("/auth/me", headers=bearer(token)), 401, "token_revoked")
    for token in (account.refresh_token, second["refresh_token"]):
        response = await client.post("/auth/refresh", headers=bearer(token))
        await problem(response, 401, "token_revoked")


async def test_after_delete_login_is_401_and_the_address_can_register_again(client, account):
    assert (await client.delete("/auth/me", headers=account.auth)).status_code == 204

    await problem(await login(client, account.email), 401, "invalid_credentials")
    again = await register(client, email=account.email, password="another good password")
    assert again.user["id"] != account.user["id"]
    assert (await login(client, account.email, "another good password")).status_code == 200


async def test_delete_removes_every_row_of_the_user(mail_app, mail_client, smtp):
    ada = await register(mail_client, email="ada@example.com")
    await login_body(mail_client, ada.email)
    await deliver_all(mail_app)  # the verification link: an account token
    change = {"password": ada.password, "new_email": "ada.new@example.com"}
    assert (
        await mail_client.post("/auth/email/change", json=change, headers=ada.auth)
    ).status_code == 202  # pending: a link mail and a notice with the user's id
    forgot = await mail_client.post("/auth/password/forgot", json={"email": ada.email})
    assert forgot.status_code == 202  # pending, queued by address only
    user_id = await user_id_of(mail_app, ada.email)
    before = await rows_of(mail_app, user_id, ada.email)
    assert all(before.values()), before

    assert (await mail_client.delete("/auth/me", headers=ada.auth)).status_code == 204

    assert await rows_of(mail_app, user_id, ada.email) == dict.fromkeys(before, 0)


async def test_a_reset_mail_queued_before_the_delete_is_never_sent(mail_app, mail_client, smtp):
    """Not even to a new account at the same address: the queued mail is gone."""
    ada = await register(mail_client, email="ada@example.com")
    await deliver_all(mail_app)
    forgot = await mail_client.post("/auth/password/forgot", json={"email": ada.email})
    assert forgot.status_code == 202
    assert (await mail_client.delete("/auth/me", headers=ada.auth)).status_code == 204
    await register(mail_client, email=ada.email, name="Another Ada")
    smtp.received.clear()

    await deliver_all(mail_app)

    subjects = [message["Subject"] for message in to(smtp, ada.email)]
    assert subjects == ["Confirm your address"]  # the new account's own verification


async def test_delete_with_a_refreshed_access_token_is_401_fresh_token_required(client, account):
    refreshed = await (await client.post("/auth/refresh", headers=account.refresh_auth)).get_json()

    response = await client.delete("/auth/me", headers=bearer(refreshed["access_token"]))

    await problem(response, 401, "fresh_token_required")
    assert (
        await client.get("/auth/me", headers=bearer(refreshed["access_token"]))
    ).status_code == 200
    assert (await login(client, account.email)).status_code == 200


async def test_delete_without_a_token_is_401(client, account):
    await problem(await client.delete("/auth/me"), 401, "token_missing")

    assert (await login(client, account.email)).status_code == 200


async def test_delete_leaves_other_users_alone(app, client, account):
    grace = await register(client, email="grace@example.com", name="Grace Hopper")
    grace_id = await user_id_of(app, grace.email)

    assert (await client.delete("/auth/me", headers=account.auth)).status_code == 204

    assert await me(client, grace) == grace.user
    assert (await rows_of(app, grace_id, grace.email))["auth_sessions"] == 1
    assert (await login(client, grace.email)).status_code == 200
