"""Key rotation, RS256/ES256 key files and JWKS, through the front door.

Tokens go through `/auth/*` of apps built on one database with different keys, the way
an operator rotates: restart with the new key and the old one listed as a fallback,
then restart without the old one once its tokens expired. Key files and secrets that
must stop start-up are `test_key_config.py`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt
from openapi_spec_validator import validate

from quart_auth_api.crypto import keys as jwt_keys
from quart_auth_api.extensions import build_token_rules
from settings import Settings
from tests.helpers.http import bearer, claims_of, problem, register
from tests.helpers.keys import (
    ALGORITHMS,
    AUDIENCE,
    ISSUER,
    asymmetric_settings,
    header_of,
    hmac_kid,
    me,
    private,
    refused,
    serving,
)

OLD = "old-jwt-secret-" + "o" * 40
NEW = "new-jwt-secret-" + "n" * 40
JWKS = "/.well-known/jwks.json"


# -- HMAC rotation ---------------------------------------------------------------------


async def test_a_retired_secret_still_verifies_and_the_new_one_signs(database_url):
    async with serving(Settings.for_testing(database_url=database_url, jwt_secret_key=OLD)) as (
        _,
        client,
    ):
        account = await register(client)
    assert header_of(account.access_token)["kid"] == hmac_kid(OLD)

    rotated = Settings.for_testing(
        database_url=database_url, jwt_secret_key=NEW, jwt_secret_key_fallbacks=(OLD,)
    )
    async with serving(rotated) as (_, client):
        assert (await me(client, account.access_token)).status_code == 200
        response = await client.post("/auth/refresh", headers=bearer(account.refresh_token))
        assert response.status_code == 200, await response.get_data(as_text=True)
        body = await response.get_json()
        for token in (body["access_token"], body["refresh_token"]):
            assert header_of(token) == {"alg": "HS256", "kid": hmac_kid(NEW), "typ": "JWT"}
            jwt.decode(token, NEW, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
        assert (await me(client, body["access_token"])).status_code == 200
        login = {"email": account.email, "password": account.password}
        fresh = await (await client.post("/auth/login", json=login)).get_json()
        assert header_of(fresh["access_token"])["kid"] == hmac_kid(NEW)


async def test_a_secret_no_longer_listed_is_401_token_invalid(database_url):
    async with serving(Settings.for_testing(database_url=database_url, jwt_secret_key=OLD)) as (
        _,
        client,
    ):
        account = await register(client)

    async with serving(Settings.for_testing(database_url=database_url, jwt_secret_key=NEW)) as (
        _,
        client,
    ):
        await refused(await me(client, account.access_token))
        await refused(await client.post("/auth/refresh", headers=bearer(account.refresh_token)))
        assert (await register(client)).access_token  # the new key works


@pytest.mark.parametrize(
    ("secret", "kid"),
    [
        pytest.param(NEW, "unknown-kid", id="unknown-kid"),
        pytest.param(NEW, hmac_kid(OLD), id="new-secret-old-kid"),
        pytest.param(OLD, hmac_kid(NEW), id="old-secret-new-kid"),
        pytest.param(OLD, None, id="no-kid"),
    ],
)
async def test_a_kid_that_does_not_name_the_signing_key_is_401(database_url, secret, kid):
    settings = Settings.for_testing(
        database_url=database_url, jwt_secret_key=NEW, jwt_secret_key_fallbacks=(OLD,)
    )
    async with serving(settings) as (_, client):
        account = await register(client)
        claims = claims_of(account.access_token)
        headers = {} if kid is None else {"kid": kid}

        token = jwt.encode(claims, secret, algorithm="HS256", headers=headers)

        await refused(await me(client, token))


def test_retired_keys_only_verify_and_the_active_key_comes_first(tmp_path):
    settings = Settings.for_testing(jwt_secret_key=NEW, jwt_secret_key_fallbacks=(OLD, NEW))
    keys = build_token_rules(settings)

    assert keys.kid == hmac_kid(NEW) and keys.algorithm == "HS256"
    assert [key.kid for key in keys.verification_keys] == [hmac_kid(OLD), hmac_kid(NEW)]
    assert all(key.signer is None for key in keys.verification_keys)
    assert keys.public_jwks() == []
    assert NEW not in repr(keys) and OLD not in repr(keys)


# -- RS256 and ES256 -----------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "label"), ALGORITHMS)
async def test_asymmetric_keys_end_to_end(database_url, tmp_path, algorithm, label):
    settings = asymmetric_settings(database_url, tmp_path, algorithm, label)
    async with serving(settings) as (_, client):
        account = await register(client)
        jwks = (await (await client.get(JWKS)).get_json())["keys"]
        header = header_of(account.access_token)
        assert header == {"alg": algorithm, "kid": jwks[0]["kid"], "typ": "JWT"}

        assert (await me(client, account.access_token)).status_code == 200
        response = await client.post("/auth/refresh", headers=bearer(account.refresh_token))
        assert response.status_code == 200
        tokens = await response.get_json()
        assert header_of(tokens["refresh_token"]) == header
        assert (await me(client, tokens["access_token"])).status_code == 200
        logout = await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
        assert logout.status_code == 200

        await refused(await me(client, tokens["access_token"]), "token_revoked")


async def test_asymmetric_rotation_with_a_public_key_fallback_file(database_url, tmp_path):
    async with serving(asymmetric_settings(database_url, tmp_path, "RS256", "rsa")) as (_, c):
        account = await register(c)
        old_kid = (await (await c.get(JWKS)).get_json())["keys"][0]["kid"]

    rotated = asymmetric_settings(database_url, tmp_path, "ES256", "ec", retired=("rsa",))
    async with serving(rotated) as (_, client):
        jwks = (await (await client.get(JWKS)).get_json())["keys"]
        assert [(k["alg"], k["kid"] == old_kid) for k in jwks] == [
            ("ES256", False),
            ("RS256", True),
        ]
        assert (await me(client, account.access_token)).status_code == 200
        response = await client.post("/auth/refresh", headers=bearer(account.refresh_token))
        assert response.status_code == 200
        access = (await response.get_json())["access_token"]
        assert header_of(access) == {"alg": "ES256", "kid": jwks[0]["kid"], "typ": "JWT"}

    retired = asymmetric_settings(database_url, tmp_path, "ES256", "ec")
    async with serving(retired) as (_, client):
        await refused(await me(client, account.access_token))
        assert (await me(client, access)).status_code == 200


async def test_retired_hmac_secrets_keep_verifying_after_a_move_to_rs256(database_url, tmp_path):
    async with serving(Settings.for_testing(database_url=database_url, jwt_secret_key=OLD)) as (
        _,
        client,
    ):
        account = await register(client)

    moved = asymmetric_settings(
        database_url, tmp_path, "RS256", "rsa", jwt_secret_key_fallbacks=(OLD,)
    )
    async with serving(moved) as (_, client):
        assert (await me(client, account.access_token)).status_code == 200
        response = await client.post("/auth/refresh", headers=bearer(account.refresh_token))
        assert header_of((await response.get_json())["access_token"])["alg"] == "RS256"
        jwks = (await (await client.get(JWKS)).get_json())["keys"]
        assert [key["alg"] for key in jwks] == ["RS256"]  # the secret is never published


# -- JWKS ------------------------------------------------------------------------------------


def expected_jwk(key: Any) -> dict[str, str]:
    """The public JWK members, computed here independently of the service."""

    def b64(value: int, size: int | None = None) -> str:
        raw = value.to_bytes(size or (value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    numbers = key.public_key().public_numbers()
    if isinstance(key, rsa.RSAPrivateKey):
        return {"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e)}
    return {"kty": "EC", "crv": "P-256", "x": b64(numbers.x, 32), "y": b64(numbers.y, 32)}


@pytest.mark.parametrize(("algorithm", "label"), ALGORITHMS)
async def test_jwks_serves_the_public_keys_that_verify_the_tokens(
    database_url, tmp_path, algorithm, label
):
    settings = asymmetric_settings(database_url, tmp_path, algorithm, label)
    async with serving(settings) as (_, client):
        account = await register(client)

        response = await client.get(JWKS)

        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert response.headers["Cache-Control"] == "public, max-age=300"
        (jwk,) = (await response.get_json())["keys"]
        members = expected_jwk(private(label))
        thumbprint_input = json.dumps(members, sort_keys=True, separators=(",", ":"))
        thumbprint = base64.urlsafe_b64encode(hashlib.sha256(thumbprint_input.encode()).digest())
        assert jwk == {
            **members,
            "kid": thumbprint.rstrip(b"=").decode(),
            "alg": algorithm,
            "use": "sig",
        }
        claims = jwt.decode(
            account.access_token, jwk, algorithms=[jwk["alg"]], audience=AUDIENCE, issuer=ISSUER
        )
        assert claims["sub"] == account.user["id"]


def test_the_kid_is_the_rfc_7638_thumbprint():
    """RFC 7638 section 3.1's example key and its thumbprint."""
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    pem = (
        rsa.RSAPublicNumbers(65537, modulus)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )

    key = jwt_keys.public_key(pem)

    assert key.kid == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert key.algorithm == "RS256" and key.signer is None
    jwk = {"kty": "RSA", "kid": key.kid, "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"}
    assert key.public_jwk == jwk


async def test_jwks_is_a_404_problem_when_keys_are_hmac(client):
    response = await client.get(JWKS)

    body = await problem(response, 404, "not_found")
    assert "HMAC" in body["detail"]
    assert "keys" not in body


async def test_openapi_lists_the_jwks_only_when_there_are_public_keys(database_url, tmp_path):
    async with serving(Settings.for_testing(database_url=database_url)) as (_, client):
        assert JWKS not in (await (await client.get("/openapi.json")).get_json())["paths"]

    settings = asymmetric_settings(database_url, tmp_path, "ES256", "ec")
    async with serving(settings) as (_, client):
        schema = await (await client.get("/openapi.json")).get_json()
    validate(schema)
    operation = schema["paths"][JWKS]["get"]
    assert operation["tags"] == ["keys"] and operation["security"] == []
    assert operation["summary"] and operation["description"]
    assert {"200", "404", "500"} <= set(operation["responses"])
