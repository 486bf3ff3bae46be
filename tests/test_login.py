"""POST /auth/login: the token body, one generic 401 and a new session per login."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text, update

from quart_auth_api import extensions
from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, User
from tests.helpers.http import (
    PASSWORD,
    TOKEN_BODY_KEYS,
    bearer,
    claims_of,
    login,
    problem,
    register,
)


async def test_login_answers_200_with_the_token_body(client, account):
    response = await login(client, account.email)

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.get_json()
    assert set(body) == TOKEN_BODY_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert body["user"] == account.user
    access, refresh = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert access["type"] == "access" and access["fresh"] is True
    assert refresh["type"] == "refresh" and refresh["gen"] == 0
    assert access["sub"] == refresh["sub"] == account.user["id"]
    text = await response.get_data(as_text=True)
    assert "$2b$" not in text and "password" not in text.lower()


async def test_login_access_token_works(client, account):
    body = await (await login(client, account.email)).get_json()

    me = await client.get("/auth/me", headers=bearer(body["access_token"]))

    assert me.status_code == 200
    assert await me.get_json() == account.user


@pytest.mark.parametrize("email", ["ADA@EXAMPLE.COM", "Ada@Example.com", "ada@EXAMPLE.com"])
async def test_login_email_is_case_insensitive(client, account, email):
    response = await login(client, email)

    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["user"]["email"] == "ada@example.com"


async def test_login_with_a_wrong_password_is_401_invalid_credentials(client, account):
    response = await login(client, account.email, "wrong horse battery")

    body = await problem(response, 401, "invalid_credentials")
    assert body["title"] == "Unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "access_token" not in body


async def test_login_unknown_email_and_wrong_password_are_indistinguishable(client, account):
    wrong_password = await login(client, account.email, "wrong horse battery")
    unknown_email = await login(client, "nobody@example.com")

    wrong_body = await problem(wrong_password, 401, "invalid_credentials")
    unknown_body = await problem(unknown_email, 401, "invalid_credentials")
    assert wrong_body.pop("request_id") != unknown_body.pop("request_id")
    assert wrong_body == unknown_body
    assert wrong_password.headers["WWW-Authenticate"] == unknown_email.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "password",
    ["x" * 73, "é" * 37, "€" * 25, "p" * 5000],
    ids=["73", "74-bytes", "75-bytes", "5000"],
)
async def test_login_with_a_password_over_72_bytes_is_401_like_any_wrong_one(
    client, account, password
):
    """No account can have such a password (register refuses it): it is simply wrong."""
    response = await login(client, account.email, password)

    body = await problem(response, 401, "invalid_credentials")
    assert body["detail"] == "Invalid email or password."


async def test_a_password_longer_than_72_bytes_never_matches_its_first_72(client):
    """bcrypt would compare only the first 72 bytes: the service never lets it."""
    account = await register(client, password="p" * 72)

    await problem(await login(client, account.email, "p" * 73), 401, "invalid_credentials")
    assert (await login(client, account.email, "p" * 72)).status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        pytest.param({"password": PASSWORD}, "email", id="missing-email"),
        pytest.param({"email": "ada@example.com"}, "password", id="missing-password"),
        pytest.param({"email": 1, "password": PASSWORD}, "email", id="email-a-number"),
        pytest.param({"email": "ada@example.com", "password": None}, "password", id="null"),
        pytest.param({"email": "ada@example.com", "password": ""}, "password", id="empty"),
        pytest.param({"email": "ada\x00@example.com", "password": PASSWORD}, "email", id="nul"),
    ],
)
async def test_login_with_invalid_input_is_422_naming_the_field(client, account, payload, field):
    response = await client.post("/auth/login", json=payload)

    body = await problem(response, 422, "validation_failed")
    assert field in [e["field"] for e in body["errors"]], body["errors"]


async def test_login_with_a_json_array_body_is_422(client):
    response = await client.post(
        "/auth/login", data="[]", headers={"Content-Type": "application/json"}
    )

    body = await problem(response, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["body"]


async def test_each_login_opens_a_new_session(client, account):
    first = await (await login(client, account.email)).get_json()
    second = await (await login(client, account.email)).get_json()

    sids = {
        claims_of(account.access_token)["sid"],
        claims_of(first["access_token"])["sid"],
        claims_of(second["access_token"])["sid"],
    }
    assert len(sids) == 3
    assert claims_of(first["refresh_token"])["sid"] == claims_of(first["access_token"])["sid"]
    for token in (account.access_token, first["access_token"], second["access_token"]):
        me = await client.get("/auth/me", headers=bearer(token))
        assert me.status_code == 200


async def test_the_password_check_holds_no_database_connection(app, client, account, monkeypatch):
    """bcrypt waits in a queue under a login storm: a login must not hold a pooled
    connection (or a transaction) meanwhile, or the pool runs dry and requests get 503."""
    hasher = extensions.hasher(app)
    original = hasher.verify
    checked_out: list[int] = []

    async def verify(password: str, hashed: str | None) -> bool:
        checked_out.append(DATABASE.get(app).engine.pool.checkedout())
        return await original(password, hashed)

    monkeypatch.setattr(hasher, "verify", verify)
    assert (await login(client, account.email)).status_code == 200
    assert checked_out == [0]


async def test_a_user_disabled_during_the_password_check_gets_no_session(
    app, client, account, monkeypatch
):
    """The session opens in one statement that still requires an active user: a
    `disable` that commits between the password check and the insert wins (401)."""
    hasher = extensions.hasher(app)
    original = hasher.verify

    async def verify_then_disable(password: str, hashed: str | None) -> bool:
        result = await original(password, hashed)
        async with DATABASE.get(app).sessionmaker() as db:
            await db.execute(
                update(User).where(User.email == account.email).values(is_active=False)
            )
            await db.commit()
        return result

    monkeypatch.setattr(hasher, "verify", verify_then_disable)
    await problem(await login(client, account.email), 401, "invalid_credentials")
    async with DATABASE.get(app).sessionmaker() as db:
        sessions = await db.scalar(
            select(func.count())
            .select_from(AuthSession)
            .join(User, User.id == AuthSession.user_id)
            .where(User.email == account.email)
        )
    assert sessions == 1  # the registration's, none for the login


#: Changes of the user's row that must win over a login whose password check they follow.
ROW_CHANGES = {
    "password": {"password_hash": "$2b$12$" + "x" * 53},
    "disable": {"is_active": False},
    "email": {"email": "moved@example.com"},
}


async def _until_a_statement_waits_on_a_lock(app, backend: str) -> None:
    """PostgreSQL: until some backend waits on a lock (the login's insert on the row);
    SQLite has no such view: a pause long enough for the insert to meet the write lock."""
    if backend == "sqlite":
        await asyncio.sleep(0.3)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    async with asyncio.timeout(10):
        while True:
            async with DATABASE.get(app).engine.connect() as connection:
                if await connection.scalar(query):
                    return
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("change", sorted(ROW_CHANGES))
async def test_a_change_holding_the_user_row_while_the_session_opens_wins(
    app, client, account, backend, monkeypatch, change
):
    """After the password check, another transaction changes the user's row and holds it
    uncommitted: the login's insert waits for it (PostgreSQL: for the row its share lock
    asks for, then checks the new row; SQLite: for the write lock) and, once it commits,
    finds the change: 401 and no session."""
    database = DATABASE.get(app)
    hasher = extensions.hasher(app)
    original = hasher.verify
    async with database.sessionmaker() as db:
        user_id = await db.scalar(select(User.id).where(User.email == account.email))
    changed = asyncio.Event()
    async with database.engine.connect() as holder:

        async def verify_then_change(password: str, hashed: str | None) -> bool:
            result = await original(password, hashed)
            await holder.execute(
                update(User).where(User.id == user_id).values(**ROW_CHANGES[change])
            )
            changed.set()
            return result

        monkeypatch.setattr(hasher, "verify", verify_then_change)
        attempt = asyncio.create_task(login(client, account.email))
        await changed.wait()
        await _until_a_statement_waits_on_a_lock(app, backend)
        await holder.commit()
        response = await attempt
    await problem(response, 401, "invalid_credentials")
    async with database.sessionmaker() as db:
        count = select(func.count()).where(AuthSession.user_id == user_id)
        assert await db.scalar(count) == 1  # the registration's, none for the login
