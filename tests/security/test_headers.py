"""Variants of the Authorization header, and the security headers on attack answers.

The guard reads exactly one `Authorization: Bearer <token>` header. The scheme is
case-insensitive (RFC 9110) and spaces around the token are tolerated; anything else
(another scheme, no token, two tokens, a second Authorization header, a token in the
query string) is never a way in. Every refusal carries the headers that stop sniffing,
framing, referrer leaks and caching. A few requests per test: default rate limits.
"""

from __future__ import annotations

import pytest
from werkzeug.datastructures import Headers

from quart_auth_api import create_app
from tests.helpers.attacks import MALFORMED_HEADER, refused
from tests.helpers.http import Account, problem, production_settings, register

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
}
HSTS = "max-age=63072000; includeSubDomains"


@pytest.fixture
async def account(client) -> Account:
    return await register(client, email="header@example.com")


async def me(client, headers, **kwargs):
    return await client.get("/auth/me", headers=headers, **kwargs)


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("bearer {token}", id="lowercase-scheme"),
        pytest.param("Bearer   {token}  ", id="extra-spaces"),
    ],
)
async def test_scheme_case_and_spaces_are_tolerated(client, account, template):
    response = await me(client, {"Authorization": template.format(token=account.access_token)})

    assert response.status_code == 200
    assert (await response.get_json())["id"] == account.user["id"]


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("Bearer", id="bearer-only"),
        pytest.param("Basic dmljdGltOnBhc3N3b3Jk", id="basic"),
        pytest.param("Bearer {token} {token}", id="two-tokens"),
    ],
)
async def test_a_malformed_authorization_is_refused(client, account, template):
    response = await me(client, {"Authorization": template.format(token=account.access_token)})

    await refused(response, "token_invalid", MALFORMED_HEADER)


async def test_a_token_in_the_query_string_is_ignored(client, account):
    """Query strings end up in proxy logs and Referer headers: never a credential."""
    response = await me(client, {}, query_string={"access_token": account.access_token})

    await refused(response, "token_missing")


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(("valid", "garbage"), id="valid-then-garbage"),
        pytest.param(("garbage", "valid"), id="garbage-then-valid"),
        pytest.param(("valid", "other-user"), id="two-users"),
    ],
)
async def test_duplicated_authorization_headers_are_refused(client, account, order):
    """Authorization is a singleton field (RFC 9110 section 5.3): two of them make the
    request ambiguous (a proxy may check one while the app uses the other), so it is
    refused whichever of them is valid."""
    other = await register(client, email="other-user@example.com")
    values = {"valid": account.access_token, "garbage": "x" * 40, "other-user": other.access_token}
    headers = Headers()
    for kind in order:
        headers.add("Authorization", f"Bearer {values[kind]}")

    response = await me(client, headers)

    await refused(response, "token_invalid", MALFORMED_HEADER)


# -- security headers on attack answers ------------------------------------------------


ATTACKS = {
    "forged-token": ("GET", "/auth/me", {"Authorization": "Bearer a.b.c"}, 401, "token_invalid"),
    "probe": ("GET", "/.env", {}, 404, "not_found"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_attack_answers_carry_the_security_headers(client, attack):
    method, path, headers, status, code = ATTACKS[attack]

    response = await client.open(path, method=method, headers=headers, data="x")

    await problem(response, status, code)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP in testing
    assert "Access-Control-Allow-Origin" not in response.headers  # no CORS_ORIGINS here
    assert "Server" not in response.headers


async def test_in_production_attack_answers_also_carry_hsts(database_url):
    app = create_app(production_settings(database_url))
    async with app.test_app():
        response = await app.test_client().get(
            "/auth/me", headers={"Authorization": "Bearer a.b.c"}
        )

    await refused(response, "token_invalid")
    assert response.headers["Strict-Transport-Security"] == HSTS
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
