"""The OpenAPI document is complete and valid; /docs needs nothing but this origin."""

from __future__ import annotations

import re

import pytest
from openapi_spec_validator import validate

from quart_auth_api import __version__, create_app
from quart_auth_api.errors import all_error_classes
from settings import Settings
from tests.helpers.processes import PROJECT_ROOT

OPERATIONS = {
    ("get", "/"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("get", "/auth/me"),
    ("patch", "/auth/me"),
    ("delete", "/auth/me"),
    ("get", "/auth/sessions"),
    ("delete", "/auth/sessions/{session_id}"),
    ("post", "/auth/password/forgot"),
    ("post", "/auth/password/reset"),
    ("post", "/auth/password/change"),
    ("post", "/auth/email/verify"),
    ("post", "/auth/email/verification"),
    ("post", "/auth/email/change"),
    ("post", "/auth/email/change/confirm"),
    ("post", "/auth/mfa/totp"),
    ("post", "/auth/mfa/totp/verify"),
    ("delete", "/auth/mfa/totp"),
    ("post", "/auth/mfa/challenge"),
    ("post", "/auth/mfa/recovery-codes"),
}
PROTECTED = {
    ("post", "/auth/refresh"),
    ("post", "/auth/logout"),
    ("get", "/auth/me"),
    ("patch", "/auth/me"),
    ("delete", "/auth/me"),
    ("get", "/auth/sessions"),
    ("delete", "/auth/sessions/{session_id}"),
    ("post", "/auth/password/change"),
    ("post", "/auth/email/change"),
    ("post", "/auth/mfa/totp"),
    ("post", "/auth/mfa/totp/verify"),
    ("delete", "/auth/mfa/totp"),
    ("post", "/auth/mfa/recovery-codes"),
}
#: A token is welcome but not needed (it keeps its session).
OPTIONALLY_PROTECTED = {("post", "/auth/email/change/confirm")}
EXPECTED_CODES = {
    ("post", "/auth/register"): {
        "400": {"invalid_json"},
        "409": {"email_taken"},
        "413": {"payload_too_large"},
        "415": {"unsupported_media_type"},
        "422": {"validation_failed"},
        "503": {"service_unavailable"},
    },
    ("post", "/auth/login"): {"401": {"invalid_credentials"}, "403": {"email_not_verified"}},
    ("post", "/auth/mfa/totp"): {"401": {"fresh_token_required"}, "409": {"mfa_already_enrolled"}},
    ("post", "/auth/mfa/totp/verify"): {"403": {"mfa_invalid_code"}, "404": {"not_found"}},
    ("post", "/auth/mfa/challenge"): {"401": {"mfa_invalid_code", "mfa_token_invalid"}},
    ("post", "/auth/mfa/recovery-codes"): {
        "401": {"fresh_token_required"},
        "403": {"aal2_required", "mfa_required"},
    },
    ("delete", "/auth/mfa/totp"): {
        "401": {"fresh_token_required"},
        "403": {"aal2_required", "mfa_required"},
        "404": {"not_found"},
    },
    ("post", "/auth/password/forgot"): {"429": {"rate_limited"}, "503": {"mail_unavailable"}},
    ("post", "/auth/password/reset"): {"400": {"invalid_link_token"}, "422": {"validation_failed"}},
    ("post", "/auth/password/change"): {
        "403": {"invalid_credentials", "aal2_required"},
        "429": {"rate_limited"},
    },
    ("post", "/auth/email/verify"): {"400": {"invalid_link_token"}},
    ("post", "/auth/email/verification"): {"503": {"mail_unavailable"}},
    ("post", "/auth/email/change"): {
        "403": {"invalid_credentials", "aal2_required"},
        "409": {"email_taken"},
    },
    ("post", "/auth/email/change/confirm"): {
        "400": {"invalid_link_token"},
        "409": {"email_taken"},
    },
    ("delete", "/auth/sessions/{session_id}"): {"404": {"not_found"}, "403": {"aal2_required"}},
    ("delete", "/auth/me"): {"401": {"fresh_token_required"}, "403": {"aal2_required"}},
    ("post", "/auth/logout"): {"403": {"aal2_required"}},
    ("post", "/auth/refresh"): {
        "401": {
            "token_missing",
            "token_invalid",
            "token_expired",
            "token_revoked",
            "wrong_token_type",
            "refresh_token_reused",
        }
    },
    ("get", "/readyz"): {"503": {"service_unavailable"}},
}


@pytest.fixture
async def schema(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return await response.get_json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield (method, path), operation


def codes(operation, status):
    schema = operation["responses"][status]["content"]["application/problem+json"]["schema"]
    return set(schema["allOf"][1]["properties"]["code"]["enum"])


async def test_schema_is_valid_openapi_3(schema):
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == __version__


async def test_every_operation_is_documented(schema):
    assert {key for key, _ in operations(schema)} == OPERATIONS
    for key, operation in operations(schema):
        assert operation["summary"], key
        assert operation["description"], key
        assert operation["tags"], key
        assert {"200", "201", "202", "204"} & set(operation["responses"]), key
        assert "500" in operation["responses"], key


async def test_security_is_bearer_where_required_and_public_elsewhere(schema):
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert scheme == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    for key, operation in operations(schema):
        expected = (
            [{"bearer": []}]
            if key in PROTECTED
            else [{}, {"bearer": []}]
            if key in OPTIONALLY_PROTECTED
            else []
        )
        assert operation["security"] == expected, key
        if key in PROTECTED:
            assert "401" in operation["responses"], key


@pytest.mark.parametrize(("operation_key", "expected"), EXPECTED_CODES.items())
async def test_error_responses_list_their_codes(schema, operation_key, expected):
    method, path = operation_key
    operation = schema["paths"][path][method]
    for status, wanted in expected.items():
        assert wanted <= codes(operation, status), (operation_key, status)


async def test_every_documented_code_exists(schema):
    known = {error.code for error in all_error_classes()}
    for _key, operation in operations(schema):
        for status, response in operation["responses"].items():
            if "application/problem+json" in response.get("content", {}):
                assert codes(operation, status) <= known


async def test_request_bodies_have_examples(schema):
    for key in [("post", "/auth/register"), ("post", "/auth/login")]:
        body = schema["paths"][key[1]][key[0]]["requestBody"]["content"]["application/json"]
        properties = body["schema"]["properties"]
        assert all(prop.get("examples") for prop in properties.values()), key


async def test_docs_page_loads_only_local_assets(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(source.startswith("/docs/assets/") for source in sources)
    for source in sources:
        asset = await client.get(source)
        assert asset.status_code == 200, source
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "http" not in csp and "unsafe-eval" not in csp


async def test_unknown_docs_asset_is_404(client):
    response = await client.get("/docs/assets/..%2Fsettings.py")
    assert response.status_code == 404


async def test_docs_can_be_turned_off(database_url):
    app = create_app(Settings.for_testing(database_url=database_url, docs_enabled=False))
    async with app.test_app():
        client = app.test_client()
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404


async def test_the_problem_schema_lists_every_code_the_service_answers(schema):
    """Also the codes no single operation names: an unknown path, another method."""
    code = schema["components"]["schemas"]["ProblemOut"]["properties"]["code"]
    assert set(code["enum"]) == {error.code for error in all_error_classes()}
    assert {"fresh_token_required", "not_found", "method_not_allowed"} <= set(code["enum"])
    for error in all_error_classes():
        assert f"{error.status} `{error.code}`" in code["description"]


async def test_every_code_the_service_answers_is_in_the_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = [e.code for e in all_error_classes() if f"| {e.status} | `{e.code}` |" not in readme]
    assert missing == []
