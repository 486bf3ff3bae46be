"""A developer's own blueprint, protected with the public guards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart import Blueprint, Quart, session

from quart_auth_api import create_app, current_user, get_jwt, get_jwt_identity, jwt_required
from quart_auth_api.db import get_db
from quart_auth_api.models import User
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, problem, register

reports = Blueprint("reports", __name__, url_prefix="/reports")


@reports.get("/mine")
@jwt_required()
async def mine() -> dict:
    return {"email": current_user.email, "sub": get_jwt_identity(), "sid": get_jwt()["sid"]}


@reports.post("/danger")
@jwt_required(fresh=True)
async def danger() -> dict:
    return {"done": True}


@reports.get("/maybe")
@jwt_required(optional=True)
async def maybe() -> dict:
    return {"user": current_user.email if current_user else None, "claims": get_jwt()}


@reports.post("/exchange")
@jwt_required(refresh=True)
async def exchange() -> dict:
    return {"type": get_jwt()["type"]}


@reports.post("/rename")
@jwt_required()
async def rename() -> dict:
    user = await get_db().get(User, current_user.id)  # the README's pattern
    assert user is not None
    user.name = "Renamed"
    await get_db().commit()
    return {"before": current_user.name, "after": user.name}


@reports.get("/session")
async def quart_session() -> dict:
    return {"null": session.__class__.__name__ == "NullSession", "keys": list(session)}


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(Settings.for_testing(database_url=database_url))
    app.register_blueprint(reports)
    async with app.test_app():
        yield app


async def test_protected_route_sees_current_user_and_claims(client):
    account = await register(client)
    response = await client.get("/reports/mine", headers=account.auth)
    assert response.status_code == 200
    body = await response.get_json()
    assert body["email"] == account.email
    assert body["sub"] == account.user["id"]
    assert body["sid"]


async def test_protected_route_without_token_is_401(client):
    await problem(await client.get("/reports/mine"), 401, "token_missing")


async def test_protected_route_after_logout_is_401(client):
    account = await register(client)
    assert (await client.post("/auth/logout", headers=account.auth)).status_code == 200
    await problem(await client.get("/reports/mine", headers=account.auth), 401, "token_revoked")


async def test_fresh_route_takes_a_login_token(client):
    account = await register(client)
    assert (await client.post("/reports/danger", headers=account.auth)).status_code == 200


async def test_fresh_route_refuses_a_refreshed_token(client):
    account = await register(client)
    refreshed = await (await client.post("/auth/refresh", headers=account.refresh_auth)).get_json()
    response = await client.post("/reports/danger", headers=bearer(refreshed["access_token"]))
    await problem(response, 401, "fresh_token_required")


async def test_fresh_route_takes_a_new_login_after_refresh(client):
    account = await register(client)
    login = await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    token = (await login.get_json())["access_token"]
    assert (await client.post("/reports/danger", headers=bearer(token))).status_code == 200


async def test_optional_route_without_token_has_no_user(client):
    response = await client.get("/reports/maybe")
    assert response.status_code == 200
    assert await response.get_json() == {"user": None, "claims": {}}


async def test_optional_route_with_token_has_the_user(client):
    account = await register(client)
    response = await client.get("/reports/maybe", headers=account.auth)
    assert (await response.get_json())["user"] == account.email


async def test_optional_route_still_refuses_a_bad_token(client):
    response = await client.get("/reports/maybe", headers=bearer("not.a.token"))
    await problem(response, 401, "token_invalid")


async def test_refresh_route_takes_only_refresh_tokens(client):
    account = await register(client)
    ok = await client.post("/reports/exchange", headers=account.refresh_auth)
    assert await ok.get_json() == {"type": "refresh"}
    await problem(
        await client.post("/reports/exchange", headers=account.auth), 401, "wrong_token_type"
    )


async def test_guarded_routes_are_documented_with_bearer_security(client):
    schema = await (await client.get("/openapi.json")).get_json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/reports/mine"]["get"]["security"] == [{"bearer": []}]
    assert schema["paths"]["/auth/me"]["get"]["security"] == [{"bearer": []}]
    assert schema["paths"]["/auth/login"]["post"]["security"] == []  # public


async def test_there_is_no_quart_session_only_tokens(client):
    """Quart's signed-cookie session is never opened or saved (hooks.NoSession): a view
    sees the empty null session, and no answer sets a session cookie."""
    response = await client.get("/reports/session", headers={"Cookie": "session=forged.value"})
    assert await response.get_json() == {"null": True, "keys": []}
    assert "Set-Cookie" not in response.headers


async def test_current_user_is_a_snapshot_and_the_row_is_one_get_away(client):
    account = await register(client)
    response = await client.post("/reports/rename", headers=bearer(account.access_token))
    assert await response.get_json() == {"before": account.name, "after": "Renamed"}
    me = await client.get("/auth/me", headers=bearer(account.access_token))
    assert (await me.get_json())["name"] == "Renamed"
