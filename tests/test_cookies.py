"""Cookie transport with Flask-JWT-Extended's names and double-submit CSRF."""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookies import SimpleCookie

import pytest
from quart import Quart

from quart_auth_api import create_app
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, claims_of, problem

NEW_USER = {"email": "cookie@example.com", "password": PASSWORD, "name": "Cookie"}
TOKEN_COOKIES = {"access_token_cookie", "refresh_token_cookie"}
CSRF_COOKIES = {"csrf_access_token", "csrf_refresh_token"}


def make_app(database_url: str, location: tuple[str, ...], **extra) -> Quart:
    return create_app(
        Settings.for_testing(database_url=database_url, jwt_token_location=location, **extra)
    )


@pytest.fixture
async def cookie_app(database_url: str) -> AsyncIterator[Quart]:
    app = make_app(database_url, ("cookies",))
    async with app.test_app():
        yield app


@pytest.fixture
def browser(cookie_app):
    """A client that sends cookies only when a test puts them in the request."""
    return cookie_app.test_client(use_cookies=False)


def set_cookies(response) -> dict[str, SimpleCookie]:
    found = {}
    for header in response.headers.getlist("Set-Cookie"):
        cookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            found[name] = morsel
    return found


def cookie_header(cookies: dict, *names: str) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{name}={cookies[name].value}" for name in names)}


async def login_cookies(browser) -> dict:
    response = await browser.post("/auth/register", json=NEW_USER)
    assert response.status_code == 201
    return set_cookies(response)


async def test_login_sets_four_cookies_with_safe_flags(browser):
    cookies = await login_cookies(browser)
    assert set(cookies) == TOKEN_COOKIES | CSRF_COOKIES
    for name, morsel in cookies.items():
        assert morsel["samesite"] == "Lax"
        assert bool(morsel["httponly"]) == (name in TOKEN_COOKIES)
        assert not morsel["secure"]  # testing; production sets Secure
        # the refresh token goes to /auth/refresh only; both CSRF values are readable at /
        expected_path = "/auth/refresh" if name == "refresh_token_cookie" else "/"
        assert morsel["path"] == expected_path
    access_claims = claims_of(cookies["access_token_cookie"].value)
    assert access_claims["csrf"] == cookies["csrf_access_token"].value
    refresh_claims = claims_of(cookies["refresh_token_cookie"].value)
    assert refresh_claims["csrf"] == cookies["csrf_refresh_token"].value


async def test_secure_cookies_when_configured(database_url):
    app = make_app(database_url, ("cookies",), jwt_cookie_secure=True)
    async with app.test_app():
        response = await app.test_client().post("/auth/register", json=NEW_USER)
    assert all(morsel["secure"] for morsel in set_cookies(response).values())


async def test_get_with_the_access_cookie_needs_no_csrf(browser):
    cookies = await login_cookies(browser)
    response = await browser.get("/auth/me", headers=cookie_header(cookies, "access_token_cookie"))
    assert response.status_code == 200
    assert (await response.get_json())["email"] == NEW_USER["email"]


@pytest.mark.parametrize("csrf", [None, "", "forged-value"])
async def test_state_change_by_cookie_without_the_csrf_header_is_401(browser, csrf):
    cookies = await login_cookies(browser)
    headers = cookie_header(cookies, "access_token_cookie")
    if csrf is not None:
        headers["X-CSRF-TOKEN"] = csrf
    await problem(await browser.post("/auth/logout", headers=headers), 401, "csrf_failed")
    # the session is untouched
    me = await browser.get("/auth/me", headers=cookie_header(cookies, "access_token_cookie"))
    assert me.status_code == 200


async def test_the_refresh_csrf_value_does_not_unlock_access_requests(browser):
    cookies = await login_cookies(browser)
    headers = cookie_header(cookies, "access_token_cookie")
    headers["X-CSRF-TOKEN"] = cookies["csrf_refresh_token"].value
    await problem(await browser.post("/auth/logout", headers=headers), 401, "csrf_failed")


async def test_logout_by_cookie_with_csrf_revokes_and_clears_cookies(browser):
    cookies = await login_cookies(browser)
    headers = cookie_header(cookies, "access_token_cookie")
    headers["X-CSRF-TOKEN"] = cookies["csrf_access_token"].value
    response = await browser.post("/auth/logout", headers=headers)
    assert response.status_code == 200
    cleared = set_cookies(response)
    assert set(cleared) == TOKEN_COOKIES | CSRF_COOKIES
    assert all(morsel.value == "" for morsel in cleared.values())
    again = await browser.get("/auth/me", headers=cookie_header(cookies, "access_token_cookie"))
    await problem(again, 401, "token_revoked")


async def test_refresh_by_cookie_rotates_and_sets_new_cookies(browser):
    cookies = await login_cookies(browser)
    headers = cookie_header(cookies, "refresh_token_cookie")
    await problem(await browser.post("/auth/refresh", headers=headers), 401, "csrf_failed")
    headers["X-CSRF-TOKEN"] = cookies["csrf_refresh_token"].value
    response = await browser.post("/auth/refresh", headers=headers)
    assert response.status_code == 200
    fresh = set_cookies(response)
    assert set(fresh) == TOKEN_COOKIES | CSRF_COOKIES
    assert claims_of(fresh["refresh_token_cookie"].value)["gen"] == 1


async def test_cookie_only_mode_ignores_the_authorization_header(browser):
    response = await browser.post("/auth/register", json=NEW_USER)
    token = set_cookies(response)["access_token_cookie"].value
    await problem(await browser.get("/auth/me", headers=bearer(token)), 401, "token_missing")


async def test_header_mode_ignores_cookies_and_sets_none(client):
    response = await client.post("/auth/register", json=NEW_USER)
    assert response.headers.getlist("Set-Cookie") == []
    token = (await response.get_json())["access_token"]
    forged = {"Cookie": f"access_token_cookie={token}"}
    await problem(await client.get("/auth/me", headers=forged), 401, "token_missing")


async def test_both_transports_together(database_url):
    app = make_app(database_url, ("headers", "cookies"))
    async with app.test_app():
        client = app.test_client(use_cookies=False)
        response = await client.post("/auth/register", json=NEW_USER)
        token = (await response.get_json())["access_token"]
        cookies = set_cookies(response)
        assert (await client.get("/auth/me", headers=bearer(token))).status_code == 200
        by_cookie = cookie_header(cookies, "access_token_cookie")
        assert (await client.get("/auth/me", headers=by_cookie)).status_code == 200
        # a header-authenticated state change needs no CSRF header: no ambient credential
        assert (await client.post("/auth/logout", headers=bearer(token))).status_code == 200


async def test_cookie_only_bodies_carry_no_token(browser):
    """HttpOnly is the point: with cookies alone, page script never holds a token."""
    register = await browser.post("/auth/register", json=NEW_USER)
    cookies = set_cookies(register)
    login = await browser.post(
        "/auth/login", json={"email": NEW_USER["email"], "password": NEW_USER["password"]}
    )
    headers = cookie_header(cookies, "refresh_token_cookie")
    headers["X-CSRF-TOKEN"] = cookies["csrf_refresh_token"].value
    refresh = await browser.post("/auth/refresh", headers=headers)
    for response in (register, login, refresh):
        assert response.status_code in (200, 201)
        body = await response.get_json()
        assert set(body) == {"user", "token_type", "expires_in"}, body
        assert not ({"access_token", "refresh_token"} & set(body))
        assert set(set_cookies(response)) == TOKEN_COOKIES | CSRF_COOKIES


async def test_both_transports_keep_the_tokens_in_the_body(database_url):
    app = make_app(database_url, ("headers", "cookies"))
    async with app.test_app():
        response = await app.test_client(use_cookies=False).post("/auth/register", json=NEW_USER)
        body = await response.get_json()
        assert {"access_token", "refresh_token"} <= set(body)
        assert set_cookies(response)["access_token_cookie"].value == body["access_token"]
