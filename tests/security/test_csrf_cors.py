"""Cross-site request forgery with cookie transport, and reading answers cross-origin.

The app here authenticates by cookie only (`jwt_token_location=("cookies",)`) and
allows one origin (`cors_origins=("https://app.example.com",)`). A forged cross-site
request carries the victim's cookies but cannot read them, so it cannot send the
matching `X-CSRF-TOKEN`: `csrf_failed`, and the session is untouched. A foreign origin
gets no CORS header at all, so its page cannot read any answer. Few requests per test:
the default rate limits stay on.
"""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest

from tests.helpers.attacks import refused
from tests.helpers.http import PASSWORD

APP_ORIGIN = "https://app.example.com"
VICTIM = {"email": "cookie-victim@example.com", "password": PASSWORD, "name": "Victim"}
FOREIGN_ORIGINS = [
    pytest.param("https://evil.example.net", id="another-site"),
    pytest.param("https://app.example.com.evil.net", id="suffix-trick"),
    pytest.param("null", id="null-origin"),
]
CORS_RESPONSE_HEADERS = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "Access-Control-Expose-Headers",
)


@pytest.fixture
async def browser(build_app):
    """A cookie-only app; the client sends only the cookies a test puts in a request."""
    _, client = await build_app(
        jwt_token_location=("cookies",), cors_origins=(APP_ORIGIN,), use_cookies=False
    )
    return client


async def cookies_of(browser, email: str = VICTIM["email"]) -> dict[str, str]:
    response = await browser.post("/auth/register", json={**VICTIM, "email": email})
    assert response.status_code == 201, await response.get_data(as_text=True)
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        jar.load(header)
    return {name: morsel.value for name, morsel in jar.items()}


def sent(cookies: dict[str, str], name: str, csrf: str | None) -> dict[str, str]:
    """Headers a browser sends: the cookie (always) and, maybe, an X-CSRF-TOKEN."""
    headers = {"Cookie": f"{name}={cookies[name]}", "Origin": "https://evil.example.net"}
    if csrf is not None:
        headers["X-CSRF-TOKEN"] = csrf
    return headers


# -- CSRF -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cookie", "csrf"),
    [
        pytest.param("/auth/logout", "access_token_cookie", None, id="logout-missing"),
        pytest.param("/auth/logout", "access_token_cookie", "forged", id="logout-mismatched"),
        pytest.param(
            "/auth/logout", "access_token_cookie", "csrf_refresh_token", id="logout-refresh-csrf"
        ),
        pytest.param(
            "/auth/refresh", "refresh_token_cookie", "csrf_access_token", id="refresh-access-csrf"
        ),
        pytest.param(
            "/auth/logout", "access_token_cookie", "another-session", id="logout-other-session"
        ),
    ],
)
async def test_a_cookie_request_without_its_own_csrf_value_is_refused(browser, path, cookie, csrf):
    cookies = await cookies_of(browser)
    if csrf in ("csrf_refresh_token", "csrf_access_token"):
        csrf = cookies[csrf]  # the other token type's value: cross-type
    elif csrf == "another-session":  # the attacker's own, valid, CSRF value
        csrf = (await cookies_of(browser, "attacker@example.com"))["csrf_access_token"]

    response = await browser.post(path, headers=sent(cookies, cookie, csrf))

    await refused(response, "csrf_failed")
    me = await browser.get("/auth/me", headers=sent(cookies, "access_token_cookie", None))
    assert me.status_code == 200  # the session is untouched


async def test_control_the_matching_csrf_value_is_accepted(browser):
    cookies = await cookies_of(browser)
    headers = sent(cookies, "access_token_cookie", cookies["csrf_access_token"])

    response = await browser.post("/auth/logout", headers=headers)

    assert response.status_code == 200


# -- CORS -------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
async def test_a_foreign_origin_gets_no_cors_headers(browser, origin):
    cookies = await cookies_of(browser)
    headers = {"Cookie": f"access_token_cookie={cookies['access_token_cookie']}", "Origin": origin}

    response = await browser.get("/auth/me", headers=headers)

    assert response.status_code == 200  # answered, but the browser will not let it be read
    for name in CORS_RESPONSE_HEADERS:
        assert name not in response.headers, name
    assert "Origin" in response.headers.get("Vary", "")


async def test_the_allowed_origin_gets_its_own_origin_back_with_vary(browser):
    cookies = await cookies_of(browser)
    headers = {
        "Cookie": f"access_token_cookie={cookies['access_token_cookie']}",
        "Origin": APP_ORIGIN,
    }

    response = await browser.get("/auth/me", headers=headers)

    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN  # never "*"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]


async def test_a_preflight_from_a_foreign_origin_gets_no_allow_headers(browser):
    response = await browser.options(
        "/auth/logout",
        headers={
            "Origin": "https://evil.example.net",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-CSRF-TOKEN, Content-Type",
        },
    )

    assert response.status_code == 200  # Quart's automatic OPTIONS: an empty answer
    assert await response.get_data() == b""
    for name in CORS_RESPONSE_HEADERS:
        assert name not in response.headers, name
    assert "Origin" in response.headers["Vary"]
