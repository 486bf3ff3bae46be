"""Body guards (400/413/415/422), 404/405/500 problems, request ids and security headers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest
from quart import Quart

from quart_auth_api import create_app
from settings import Settings
from tests.helpers.http import PASSWORD, problem, production_settings

JSON = {"Content-Type": "application/json"}
GENERATED_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
NEW_USER = {"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}


@pytest.fixture
async def failing_app(database_url: str) -> AsyncIterator[Quart]:
    """An app with one extra route that fails with an unexpected exception."""
    app = create_app(Settings.for_testing(database_url=database_url))

    @app.get("/boom")
    async def boom() -> dict[str, str]:
        raise RuntimeError("secret detail")

    async with app.test_app():
        yield app


@pytest.fixture
async def debug_app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(Settings.for_testing(database_url=database_url, debug=True))
    async with app.test_app():
        yield app


@pytest.fixture
async def production_app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(production_settings(database_url))
    async with app.test_app():
        yield app


# -- 415: not JSON at all --------------------------------------------------------


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/xml",
    ],
)
async def test_a_body_that_is_not_json_is_415(client, path, content_type):
    response = await client.post(
        path, data=json.dumps(NEW_USER), headers={"Content-Type": content_type}
    )

    body = await problem(response, 415, "unsupported_media_type")
    assert body["title"] == "Unsupported Media Type"


async def test_a_form_post_is_415(client):
    response = await client.post("/auth/register", form=NEW_USER)

    await problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
async def test_no_body_and_no_content_type_is_415(client, path):
    response = await client.post(path)

    await problem(response, 415, "unsupported_media_type")


async def test_json_with_a_charset_parameter_is_accepted(client):
    response = await client.post(
        "/auth/register",
        data=json.dumps(NEW_USER),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 201, await response.get_data(as_text=True)


# -- 400: JSON that does not parse -------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"email":', id="truncated"),
        pytest.param("{'email': 'ada@example.com'}", id="single-quotes"),
        pytest.param('{"email": "ada@example.com",}', id="trailing-comma"),
        pytest.param("", id="empty"),
        pytest.param("not json", id="text"),
    ],
)
@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
async def test_invalid_json_is_400_without_the_decoder_text(client, path, raw):
    response = await client.post(path, data=raw, headers=JSON)

    body = await problem(response, 400, "invalid_json")
    assert body["title"] == "Bad Request"
    text = await response.get_data(as_text=True)
    for leaked in ("Expecting", "line 1", "column", "char ", "JSONDecodeError"):
        assert leaked not in text, text


async def test_invalid_json_in_debug_mode_still_hides_the_decoder_text(debug_app):
    response = await debug_app.test_client().post("/auth/register", data='{"email":', headers=JSON)

    await problem(response, 400, "invalid_json")
    assert "Expecting" not in await response.get_data(as_text=True)


async def test_deeply_nested_json_is_a_client_error_not_a_500(client):
    raw = "[" * 20_000 + "]" * 20_000  # 40 KB, under the body limit

    response = await client.post("/auth/register", data=raw, headers=JSON)

    await problem(response, 400, "invalid_json")


@pytest.mark.parametrize("raw", [b"B\xc3(\x0e", b'{"email": "\xff@example.com"}'])
async def test_a_body_that_is_not_utf8_is_400_not_a_500(client, raw):
    response = await client.post("/auth/login", data=raw, headers=JSON)

    body = await problem(response, 400, "invalid_json")
    assert body["detail"] == "The request body is not valid UTF-8."


# -- 413: too large ---------------------------------------------------------------


async def test_a_body_over_64_kib_is_413(client):
    payload = dict(NEW_USER, name="n" * (64 * 1024))

    response = await client.post("/auth/register", json=payload)

    body = await problem(response, 413, "payload_too_large")
    assert body["title"] == "Content Too Large"


async def test_a_body_just_under_64_kib_is_read(client):
    padding = 64 * 1024 - len(json.dumps(dict(NEW_USER, pad=""))) - 1
    payload = dict(NEW_USER, pad="p" * padding)
    assert len(json.dumps(payload)) < 64 * 1024

    response = await client.post("/auth/register", json=payload)

    assert response.status_code == 201, await response.get_data(as_text=True)


# -- 422: the problem document of a validation failure ------------------------------


async def test_validation_problem_lists_each_field_with_a_message(client):
    response = await client.post(
        "/auth/register", json={"email": "nope", "password": PASSWORD, "name": "Ada"}
    )

    body = await problem(response, 422, "validation_failed")
    assert set(body) == {"type", "title", "status", "detail", "code", "request_id", "errors"}
    assert body["errors"] == [{"field": "email", "message": body["errors"][0]["message"]}]
    assert body["errors"][0]["message"]


# -- 404 / 405 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/auth/nope"), ("GET", "/auth/me/extra"), ("DELETE", "/x")],
)
async def test_an_unknown_path_is_a_404_problem(client, method, path):
    response = await client.open(path, method=method)

    body = await problem(response, 404, "not_found")
    assert body["title"] == "Not Found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/auth/login", "POST"),
        ("GET", "/auth/register", "POST"),
        ("PUT", "/auth/refresh", "POST"),
        ("POST", "/auth/me", "GET"),
        ("DELETE", "/healthz", "GET"),
    ],
)
async def test_a_wrong_method_is_a_405_problem_with_allow(client, method, path, allowed):
    response = await client.open(path, method=method)

    body = await problem(response, 405, "method_not_allowed")
    assert body["title"] == "Method Not Allowed"
    methods = {m.strip() for m in response.headers["Allow"].split(",")}
    assert allowed in methods, response.headers["Allow"]


# -- 500 -----------------------------------------------------------------------------


async def test_an_unexpected_exception_is_a_500_without_detail(failing_app):
    response = await failing_app.test_client().get("/boom")

    body = await problem(response, 500, "internal_error")
    assert body["title"] == "Internal Server Error"
    text = await response.get_data(as_text=True)
    for leaked in ("secret detail", "RuntimeError", "Traceback", "boom", 'File "'):
        assert leaked not in text, text
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


# -- X-Request-ID --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/auth/me", 401),
        ("GET", "/nope", 404),
        ("GET", "/auth/login", 405),
        ("POST", "/auth/register", 415),
    ],
)
async def test_every_response_carries_a_request_id(client, method, path, status):
    response = await client.open(path, method=method)

    assert response.status_code == status
    assert GENERATED_REQUEST_ID.fullmatch(response.headers["X-Request-ID"])


async def test_each_request_gets_its_own_request_id(client):
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.parametrize("incoming", ["req-12345678", "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"])
async def test_a_valid_incoming_request_id_is_kept(client, incoming):
    ok = await client.get("/healthz", headers={"X-Request-ID": incoming})
    error = await client.get("/auth/me", headers={"X-Request-ID": incoming})

    assert ok.headers["X-Request-ID"] == incoming
    body = await problem(error, 401, "token_missing")
    assert body["request_id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        pytest.param("r" * 300, id="300-chars"),
        pytest.param("a b c d e f", id="spaces"),
        pytest.param("<script>alert(1)</script>", id="markup"),
        pytest.param("short", id="too-short"),
        pytest.param("", id="empty"),
    ],
)
async def test_an_invalid_incoming_request_id_is_replaced(client, incoming):
    ok = await client.get("/healthz", headers={"X-Request-ID": incoming})
    error = await client.get("/nope", headers={"X-Request-ID": incoming})

    assert GENERATED_REQUEST_ID.fullmatch(ok.headers["X-Request-ID"])
    body = await problem(error, 404, "not_found")
    assert GENERATED_REQUEST_ID.fullmatch(body["request_id"])
    if incoming:
        assert incoming not in await error.get_data(as_text=True)


# -- security headers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/healthz", 200),
        ("GET", "/", 200),
        ("GET", "/auth/me", 401),
        ("GET", "/nope", 404),
        ("GET", "/auth/login", 405),
        ("POST", "/auth/login", 415),
    ],
)
async def test_security_headers_are_on_every_response(client, method, path, status):
    response = await client.open(path, method=method, headers={"Accept": "application/json"})

    assert response.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers.get("Content-Security-Policy")
    assert "Strict-Transport-Security" not in response.headers


async def test_security_headers_are_on_a_token_response(client):
    response = await client.post("/auth/register", json=NEW_USER)

    assert response.status_code == 201
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert response.headers.get("Content-Security-Policy")


async def test_api_content_security_policy_is_restrictive(client):
    response = await client.get("/healthz")

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "*" not in policy


async def test_production_adds_strict_transport_security(production_app):
    response = await production_app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
