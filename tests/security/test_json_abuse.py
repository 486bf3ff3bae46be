"""Abusive JSON bodies on register and login: each is a fixed 4xx problem, never a 5xx.

Wrong types, nulls, NUL bytes, bodies too big, too deep or not decodable, passwords
over bcrypt's 72 bytes and fields the API does not know (`is_admin`). Rate limits are
turned off here (`rate_limit_enabled=False`): registering many bodies from one client
would otherwise meet the register limits, which `test_rate_limits.py` covers.
"""

from __future__ import annotations

import json

import pytest

from settings import Settings
from tests.helpers.attacks import CountingBcrypt, refused
from tests.helpers.http import PASSWORD, USER_KEYS, problem

JSON = {"Content-Type": "application/json"}
USER = {"email": "abuse@example.com", "password": PASSWORD, "name": "Abuse"}
USER_FIELDS = USER_KEYS
TOO_LONG = "must be at most 72 bytes in UTF-8 (bcrypt's limit); use a shorter passphrase"


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.for_testing(database_url=database_url, rate_limit_enabled=False)


async def post_raw(client, path: str, raw: str | bytes):
    return await client.post(path, data=raw, headers=JSON)


async def fields_refused(response, *fields: str) -> dict:
    """A 422 `validation_failed` naming exactly `fields`, without echoing the input."""
    body = await problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == list(fields), body
    assert all(set(error) == {"field", "message"} for error in body["errors"]), body
    return body


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(json.dumps({**USER, "email": 12345}), "email", id="email-a-number"),
        pytest.param(json.dumps({**USER, "email": None}), "email", id="email-null"),
        pytest.param(json.dumps({**USER, "password": [PASSWORD]}), "password", id="password-list"),
        pytest.param(json.dumps([USER]), "body", id="body-a-list"),
    ],
)
async def test_wrong_types_and_nulls_are_422(client, raw, field):
    await fields_refused(await post_raw(client, "/auth/register", raw), field)


@pytest.mark.parametrize(
    ("path", "raw", "field"),
    [
        pytest.param(
            "/auth/register",
            json.dumps({**USER, "email": "abuse\u0000@example.com"}),
            "email",
            id="nul-in-email",
        ),
        pytest.param(
            "/auth/login",
            json.dumps({"email": USER["email"], "password": "correct\u0000horse"}),
            "password",
            id="nul-in-login-password",
        ),
        pytest.param(
            "/auth/login",
            '{"email": "\\ud800@example.com", "password": "correct horse"}',
            "email",
            id="lone-surrogate",
        ),
    ],
)
async def test_nul_bytes_and_lone_surrogates_are_422(client, bcrypt_calls, path, raw, field):
    await fields_refused(await post_raw(client, path, raw), field)
    assert bcrypt_calls.calls == []


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        pytest.param(
            "[" * 30000 + "]" * 30000, "The request body is nested too deeply.", id="deep-arrays"
        ),
        pytest.param(
            '{"email": ' + "9" * 5000 + "}", "The request body is not valid JSON.", id="huge-int"
        ),
        pytest.param(
            b'{"email": "\xff\xfe@example.com", "password": "x"}',
            "The request body is not valid UTF-8.",
            id="invalid-utf8",
        ),
    ],
)
async def test_bodies_that_cannot_be_read_are_400(client, raw, detail):
    response = await post_raw(client, "/auth/login", raw)

    body = await problem(response, 400, "invalid_json")
    assert body["detail"] == detail
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}


async def test_a_body_over_64_kib_is_413_unread(client, bcrypt_calls):
    raw = json.dumps({**USER, "name": "n" * (64 * 1024)})

    response = await post_raw(client, "/auth/register", raw)

    await problem(response, 413, "payload_too_large")
    assert bcrypt_calls.calls == []


@pytest.mark.parametrize(
    ("path", "password", "status"),
    [
        pytest.param("/auth/register", "p" * 73, 422, id="register-73-bytes"),
        pytest.param("/auth/register", "é" * 37, 422, id="register-37-chars-74-bytes"),
        pytest.param("/auth/login", "p" * 73, 401, id="login-73-bytes"),
        pytest.param("/auth/register", "p" * 72, 201, id="register-72-bytes-ok"),
    ],
)
async def test_bcrypt_never_sees_more_than_72_bytes(
    client, bcrypt_calls: CountingBcrypt, path, password, status
):
    """Longer is a 422 with a clear message, never a silent truncation (where two
    passwords sharing 72 bytes would both log in)."""
    response = await client.post(path, json={**USER, "password": password})

    if status == 422:
        body = await fields_refused(response, "password")
        assert body["errors"][0]["message"] == TOO_LONG
        assert bcrypt_calls.calls == []
    elif status == 401:  # a login: the same bcrypt check as any wrong password, 72 bytes
        await refused(response, "invalid_credentials")
        assert bcrypt_calls.names() == ["checkpw"]
        assert len(bcrypt_calls.calls[0][1]) == 72
    else:
        assert response.status_code == 201
        assert bcrypt_calls.names() == ["hashpw"]
        assert len(bcrypt_calls.calls[0][1]) == 72


async def test_unknown_fields_like_is_admin_are_ignored_and_never_stored(client):
    planted = {
        "is_admin": True,
        "role": "admin",
        "id": "00000000-0000-0000-0000-000000000001",
        "password_hash": "$2b$04$" + "A" * 53,
        "created_at": "1970-01-01T00:00:00Z",
    }
    response = await client.post("/auth/register", json={**USER, **planted})

    assert response.status_code == 201
    user = (await response.get_json())["user"]
    assert set(user) == USER_FIELDS
    assert user["id"] != planted["id"] and not user["created_at"].startswith("1970")
    token = (await response.get_json())["access_token"]
    me = await (
        await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    ).get_json()
    assert me == user
    login = await client.post("/auth/login", json={"email": USER["email"], "password": PASSWORD})
    assert login.status_code == 200
