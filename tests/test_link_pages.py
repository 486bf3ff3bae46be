"""The three pages that mailed links open (`/reset-password`, `/verify-email`,
`/confirm-email-change`): HTML under a strict CSP with a local script, never cached, no
referrer, not in the OpenAPI document; and a GET of a page, even with a real token in
its query string, never consumes the token: it still works afterwards through the API.
(The pages in a real browser: tests/test_link_pages_browser.py.)"""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest

from quart_auth_api.blueprints.pages import PAGE_CSP
from quart_auth_api.mail import LINK_PAGES, NOTICES
from tests.helpers.http import PASSWORD, bearer, login_body, problem, register
from tests.helpers.mailbox import deliver_all, link_of, link_token, to
from tests.helpers.processes import PROJECT_ROOT
from tests.helpers.smtp import SmtpServer

#: page -> the API route its form POSTs to.
PAGES = {
    "/reset-password": "/auth/password/reset",
    "/verify-email": "/auth/email/verify",
    "/confirm-email-change": "/auth/email/change/confirm",
}
STRICT_CSP = {
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "form-action 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
}
SCRIPT = PROJECT_ROOT / "quart_auth_api" / "static" / "pages" / "link.js"
NEW_PASSWORD = "a brand new passphrase"


def the_mail(smtp: SmtpServer, address: str, kind: str) -> EmailMessage:
    """The one mail of `kind` (its subject) that arrived for `address`."""
    subject = NOTICES[kind][0]
    found = [message for message in to(smtp, address) if message["Subject"] == subject]
    assert len(found) == 1, [message["Subject"] for message in to(smtp, address)]
    return found[0]


def test_the_pages_are_the_ones_the_links_open():
    assert set(LINK_PAGES.values()) == set(PAGES)


@pytest.mark.parametrize(("path", "action"), PAGES.items())
async def test_a_page_is_html_under_a_strict_csp_never_cached(client, path, action):
    response = await client.get(path)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"] == PAGE_CSP
    assert {part.strip() for part in PAGE_CSP.split(";")} == STRICT_CSP
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = await response.get_data(as_text=True)
    assert f'data-action="{action}"' in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/pages/assets/link.js" defer>']
    assert "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html, re.IGNORECASE)  # no inline handler


@pytest.mark.parametrize(
    ("filename", "mimetype"),
    [("link.js", "text/javascript"), ("link.css", "text/css")],
)
async def test_the_assets_are_served_from_this_origin(client, filename, mimetype):
    response = await client.get(f"/pages/assets/{filename}")

    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("filename", ["base.html", "..%2Fpages.py", "swagger-ui.css"])
async def test_nothing_else_is_served_as_an_asset(client, filename):
    await problem(await client.get(f"/pages/assets/{filename}"), 404, "not_found")


def test_the_script_writes_text_never_html():
    script = SCRIPT.read_text()
    assert "textContent" in script
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


async def test_the_pages_are_not_in_the_openapi_document(client):
    paths = (await (await client.get("/openapi.json")).get_json())["paths"]
    assert not set(paths) & {*PAGES, "/pages/assets/{filename}"}


async def test_the_page_of_a_reset_link_leaves_its_token_usable(mail_app, mail_client, smtp):
    user = await register(mail_client)
    await mail_client.post("/auth/password/forgot", json={"email": user.email})
    await deliver_all(mail_app)
    message = the_mail(smtp, user.email, "password_reset")
    token = link_token(message)

    await _open_the_page_every_way(mail_client, link_of(message), token)

    response = await mail_client.post(
        "/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    await login_body(mail_client, user.email, NEW_PASSWORD)


async def test_the_page_of_a_verification_link_verifies_nothing(mail_app, mail_client, smtp):
    user = await register(mail_client)
    await deliver_all(mail_app)
    message = the_mail(smtp, user.email, "email_verify")
    token = link_token(message)

    await _open_the_page_every_way(mail_client, link_of(message), token)

    me = await (await mail_client.get("/auth/me", headers=user.auth)).get_json()
    assert me["email_verified"] is False
    response = await mail_client.post("/auth/email/verify", json={"token": token})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["email_verified"] is True


async def test_the_page_of_an_email_change_link_changes_nothing(mail_app, mail_client, smtp):
    user = await register(mail_client)
    new_email = f"moved-{user.email}"
    response = await mail_client.post(
        "/auth/email/change",
        json={"password": PASSWORD, "new_email": new_email},
        headers=bearer(user.access_token),
    )
    assert response.status_code == 202, await response.get_data(as_text=True)
    await deliver_all(mail_app)
    message = the_mail(smtp, new_email, "email_change")
    token = link_token(message)

    await _open_the_page_every_way(mail_client, link_of(message), token)

    me = await (await mail_client.get("/auth/me", headers=user.auth)).get_json()
    assert me["email"] == user.email
    response = await mail_client.post("/auth/email/change/confirm", json={"token": token})
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert (await response.get_json())["email"] == new_email


async def _open_the_page_every_way(client, link: str, token: str) -> None:
    """GET the page of `link` as a browser does (the fragment stays behind), as a mail
    scanner might (the token moved into the query string), and with a HEAD: each is the
    plain page, and none shows the token back."""
    path = urlsplit(link).path
    assert path in PAGES
    for response in (
        await client.get(path),
        await client.get(path, query_string={"token": token}),
        await client.get(f"{path}?token={token}&again=1"),
        await client.head(path, query_string={"token": token}),
    ):
        assert response.status_code == 200
        assert token not in await response.get_data(as_text=True)
