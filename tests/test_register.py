"""POST /auth/register: the token body, input rules and the 409 / 422 problems."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.helpers.http import (
    PASSWORD,
    TOKEN_BODY_KEYS,
    USER_KEYS,
    bearer,
    claims_of,
    problem,
    register,
)


def assert_utc_iso8601(value: str) -> None:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    assert abs(datetime.now(UTC) - parsed) < timedelta(hours=1), value


def new_user(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    body.update(changes)
    return body


async def test_register_answers_201_with_the_user_and_its_tokens(client):
    response = await client.post("/auth/register", json=new_user(name="Ada Lovelace"))

    assert response.status_code == 201
    assert response.mimetype == "application/json"
    body = await response.get_json()
    assert set(body) == TOKEN_BODY_KEYS
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    user = body["user"]
    assert set(user) == USER_KEYS
    assert str(uuid.UUID(user["id"])) == user["id"]
    assert user["email"] == "ada@example.com"
    assert user["name"] == "Ada Lovelace"
    assert_utc_iso8601(user["created_at"])
    assert_utc_iso8601(user["updated_at"])


async def test_register_tokens_belong_to_the_new_user_and_a_new_session(client):
    response = await client.post("/auth/register", json=new_user())
    body = await response.get_json()

    access, refresh = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert access["type"] == "access" and refresh["type"] == "refresh"
    assert access["sub"] == refresh["sub"] == body["user"]["id"]
    assert access["sid"] == refresh["sid"]
    uuid.UUID(access["sid"])
    assert access["fresh"] is True
    assert refresh["gen"] == 0
    assert access["exp"] - access["iat"] == 900
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200
    assert await me.get_json() == body["user"]


async def test_register_response_is_not_cacheable(client):
    response = await client.post("/auth/register", json=new_user())
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"


async def test_register_stores_the_email_lower_cased(client):
    response = await client.post("/auth/register", json=new_user(email="Ada@Example.COM"))
    assert response.status_code == 201
    body = await response.get_json()
    assert body["user"]["email"] == "ada@example.com"

    login = await client.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200


@pytest.mark.parametrize("second", ["ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.com"])
async def test_register_with_a_taken_email_is_409_whatever_its_case(client, second):
    await register(client, email="Ada@example.com")

    response = await client.post("/auth/register", json=new_user(email=second))

    body = await problem(response, 409, "email_taken")
    assert body["title"] == "Conflict"
    assert "password" not in json.dumps(body).lower()


async def test_register_body_never_shows_a_hash_or_an_internal_id(client):
    response = await client.post("/auth/register", json=new_user())
    text = await response.get_data(as_text=True)

    assert response.status_code == 201
    assert "$2b$" not in text
    assert "password" not in text.lower()
    user = (await response.get_json())["user"]
    assert not isinstance(user["id"], int)
    assert set(user) == USER_KEYS


async def test_register_ignores_unknown_fields_and_never_echoes_them(client):
    payload = new_user(is_admin=True, id=1, password_hash="$2b$12$forged", role="admin")

    response = await client.post("/auth/register", json=payload)
    text = await response.get_data(as_text=True)

    assert response.status_code == 201, text
    user = (await response.get_json())["user"]
    assert set(user) == USER_KEYS
    assert user["id"] != 1
    uuid.UUID(user["id"])
    for leaked in ("is_admin", "role", "$2b$12$forged"):
        assert leaked not in text
    # the forged hash was not stored: the real password still logs in
    login = await client.post(
        "/auth/login", json={"email": "ada@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200


async def test_register_trims_the_name(client):
    response = await client.post("/auth/register", json=new_user(name="  Ada Lovelace \t"))
    assert response.status_code == 201
    body = await response.get_json()
    assert body["user"]["name"] == "Ada Lovelace"
    me = await client.get("/auth/me", headers=bearer(body["access_token"]))
    assert (await me.get_json())["name"] == "Ada Lovelace"


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("x" * 72, id="72-ascii-bytes"),
        pytest.param("€" * 24, id="24-three-byte-chars"),
        pytest.param("x" * 8, id="8-chars"),
    ],
)
async def test_register_accepts_a_password_at_the_limits(client, password):
    response = await client.post("/auth/register", json=new_user(password=password))
    assert response.status_code == 201, await response.get_data(as_text=True)

    login = await client.post(
        "/auth/login", json={"email": "ada@example.com", "password": password}
    )
    assert login.status_code == 200


async def test_register_never_truncates_a_password(client):
    """A 72-byte password is stored whole: its 71-byte prefix does not log in."""
    await register(client, email="ada@example.com", password="a" * 71 + "b")

    login = await client.post(
        "/auth/login", json={"email": "ada@example.com", "password": "a" * 71 + "c"}
    )

    await problem(login, 401, "invalid_credentials")


async def test_register_accepts_a_name_of_100_characters(client):
    response = await client.post("/auth/register", json=new_user(name="n" * 100))
    assert response.status_code == 201
    assert (await response.get_json())["user"]["name"] == "n" * 100


LONG_EMAIL = "a" * 64 + "@" + ".".join(["b" * 60] * 4) + ".com"  # 313 characters

INVALID_REGISTRATIONS = [
    pytest.param({"password": PASSWORD, "name": "Ada"}, "email", id="missing-email"),
    pytest.param({"email": "ada@example.com", "name": "Ada"}, "password", id="missing-password"),
    pytest.param({"email": "ada@example.com", "password": PASSWORD}, "name", id="missing-name"),
    pytest.param(new_user(email="not-an-email"), "email", id="email-without-at"),
    pytest.param(new_user(email="ada@"), "email", id="email-without-domain"),
    pytest.param(new_user(email=""), "email", id="email-empty"),
    pytest.param(new_user(email=LONG_EMAIL), "email", id="email-over-254-chars"),
    pytest.param(new_user(email=123), "email", id="email-a-number"),
    pytest.param(new_user(email=None), "email", id="email-null"),
    pytest.param(new_user(password="x" * 7), "password", id="password-7-chars"),
    pytest.param(new_user(password="x" * 73), "password", id="password-73-ascii-bytes"),
    pytest.param(new_user(password="€" * 25), "password", id="password-25-chars-75-bytes"),
    pytest.param(new_user(password=None), "password", id="password-null"),
    pytest.param(new_user(password=12345678), "password", id="password-a-number"),
    pytest.param(new_user(password="correct\x00horse"), "password", id="password-nul"),
    pytest.param(new_user(name=""), "name", id="name-empty"),
    pytest.param(new_user(name="   \t "), "name", id="name-whitespace-only"),
    pytest.param(new_user(name="n" * 101), "name", id="name-101-chars"),
    pytest.param(new_user(name=["x"]), "name", id="name-a-list"),
    pytest.param(new_user(name="Ada\x00Lovelace"), "name", id="name-nul"),
]


@pytest.mark.parametrize(("payload", "field"), INVALID_REGISTRATIONS)
async def test_register_with_invalid_input_is_422_naming_the_field(client, payload, field):
    response = await client.post("/auth/register", json=payload)

    body = await problem(response, 422, "validation_failed")
    assert body["title"] == "Unprocessable Content"
    assert body["errors"], body
    assert all(set(error) == {"field", "message"} for error in body["errors"])
    assert field in [error["field"] for error in body["errors"]], body["errors"]
    assert all(error["message"] for error in body["errors"])


async def test_register_with_a_password_over_72_bytes_says_so(client):
    response = await client.post("/auth/register", json=new_user(password="€" * 25))

    body = await problem(response, 422, "validation_failed")
    messages = [e["message"] for e in body["errors"] if e["field"] == "password"]
    assert messages and "72 bytes" in messages[0], body["errors"]


async def test_register_validation_errors_do_not_echo_the_password(client):
    secret = "€" * 25 + "do-not-echo"
    response = await client.post("/auth/register", json=new_user(password=secret))

    await problem(response, 422, "validation_failed")
    assert "do-not-echo" not in await response.get_data(as_text=True)


async def test_register_reports_every_invalid_field_at_once(client):
    response = await client.post(
        "/auth/register", json={"email": "nope", "password": "short", "name": ""}
    )

    body = await problem(response, 422, "validation_failed")
    assert {e["field"] for e in body["errors"]} == {"email", "password", "name"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("[]", id="array"),
        pytest.param('[{"email": "ada@example.com"}]', id="array-of-object"),
        pytest.param("42", id="number"),
        pytest.param('"ada@example.com"', id="string"),
        pytest.param("true", id="boolean"),
        pytest.param("null", id="null"),
    ],
)
async def test_register_with_a_json_body_that_is_not_an_object_is_422(client, raw):
    response = await client.post(
        "/auth/register", data=raw, headers={"Content-Type": "application/json"}
    )

    body = await problem(response, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["body"], body["errors"]


# -- addresses at special-use names: the schema states the rule validation applies ---------


@pytest.fixture
async def email_pattern(client) -> re.Pattern[str]:
    schema = await (await client.get("/openapi.json")).get_json()
    body = schema["paths"]["/auth/register"]["post"]["requestBody"]["content"]
    email = body["application/json"]["schema"]["properties"]["email"]
    return re.compile(email["pattern"])


@pytest.mark.parametrize(
    ("email", "accepted"),
    [
        ("-t~u@4pyp.test", False),  # what schemathesis found
        ("ada@app.TEST", False),
        ("ada@printer.local", False),
        ("ada@x.localhost", False),
        ("ada@hidden.onion", False),
        ("ada@1.0.0.127.in-addr.arpa", False),
        ("ada@nothing.invalid", False),
        ("ada@example.com", True),
        ("ada@test.example.com", True),
        ("ada@contest.io", True),
        ("ada@local.example.org", True),
    ],
)
async def test_the_schema_states_which_addresses_register_refuses(
    client, email_pattern, email, accepted
):
    response = await client.post("/auth/register", json=new_user(email=email))

    assert (email_pattern.search(email) is not None) is accepted
    if accepted:
        assert response.status_code == 201, await response.get_data(as_text=True)
    else:
        body = await problem(response, 422, "validation_failed")
        assert body["errors"][0]["field"] == "email"
        assert "special-use" in body["errors"][0]["message"]


@pytest.fixture
async def name_pattern(client) -> re.Pattern[str]:
    schema = await (await client.get("/openapi.json")).get_json()
    body = schema["paths"]["/auth/register"]["post"]["requestBody"]["content"]
    return re.compile(body["application/json"]["schema"]["properties"]["name"]["pattern"])


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("\u200b", False),  # zero width space (Cf)
        ("\u202e", False),  # right-to-left override (Cf)
        ("\u200b\u202e \u00a0", False),  # with a space and a no-break space (Zs)
        ("\ufeff\u2060", False),  # byte order mark, word joiner (Cf)
        ("\u3000\u2028", False),  # ideographic space (Zs), line separator (Zl)
        ("\U000e0041\U000e0064", False),  # tag characters (Cf, beyond the BMP)
        ("\u3164\u115f", False),  # Hangul fillers: letters that show nothing
        ("\u2800", False),  # the blank braille pattern
        ("\u034f\ufe0f\U000e0100", False),  # combining marks alone (Mn)
        ("\ue000", False),  # private use (Co)
        ("Zo\u0308e", True),  # a combining mark on a letter
        ("A\u200bda", True),  # a visible character is enough
        ("\u0410\u0434\u0430", True),  # Cyrillic
        ("\U0001f600", True),  # an emoji
    ],
)
async def test_a_name_needs_a_visible_character_by_unicode_category(
    client, name_pattern, name, accepted
):
    response = await client.post("/auth/register", json=new_user(name=name))

    assert (name_pattern.fullmatch(name) is not None) is accepted  # the schema says the same
    if accepted:
        assert response.status_code == 201, await response.get_data(as_text=True)
    else:
        body = await problem(response, 422, "validation_failed")
        assert [error["field"] for error in body["errors"]] == ["name"]
