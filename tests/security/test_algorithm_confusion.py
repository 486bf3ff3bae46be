"""Algorithm confusion through the API: an RS256 server refuses an HS256 token keyed with
its public key, every other `alg` under its `kid`, a header that brings keys or
extensions, and a JWE (which jose never decrypts)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jose.jwe
import pytest
from jose import jwt

from quart_auth_api import extensions
from tests.helpers.http import claims_of, register
from tests.helpers.keys import (
    asymmetric_settings,
    b64url,
    hs256_by_hand,
    me,
    private,
    public_der,
    public_pem,
    refused,
    serving,
    signing_material,
)

# -- through the API: algorithm confusion -------------------------------------------------------


@pytest.fixture
async def rs256(database_url, tmp_path):
    """An RS256 app, its client, one account and the server's RSA kid."""
    async with serving(asymmetric_settings(database_url, tmp_path, "RS256", "rsa")) as (app, c):
        account = await register(c)
        yield c, account, extensions.token_rules(app).kid


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(lambda: public_pem(private("rsa")), id="public-key-pem"),
        pytest.param(lambda: public_der(private("rsa")), id="public-key-der"),
    ],
)
@pytest.mark.parametrize("kid", ["server", "absent", "of-the-secret"])
async def test_an_hs256_token_keyed_with_the_public_key_is_401(rs256, secret, kid):
    client, account, server_kid = rs256
    public = secret()
    header: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
    if kid == "server":
        header["kid"] = server_kid
    elif kid == "of-the-secret":
        header["kid"] = hashlib.sha256(b"quart-auth-api kid:" + public).hexdigest()[:16]
    token = hs256_by_hand(header, claims_of(account.access_token), public)

    await refused(await me(client, token))


def none_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none", "ES256", "RS384", "RS512"])
async def test_an_rs256_server_refuses_every_other_alg_under_its_kid(rs256, alg):
    client, account, kid = rs256
    claims = claims_of(account.access_token)
    header = {"alg": alg, "kid": kid, "typ": "JWT"}
    if alg == "none":
        token = none_token(header, claims)
    elif alg.startswith("HS"):
        token = jwt.encode(claims, "attacker-secret-" + "a" * 32, algorithm=alg, headers=header)
    elif alg == "ES256":
        token = jwt.encode(claims, signing_material("ES256"), algorithm=alg, headers=header)
    else:  # the server's own RSA key, another RSA algorithm
        token = jwt.encode(claims, signing_material("RS256"), algorithm=alg, headers=header)

    await refused(await me(client, token))


async def test_the_control_token_signed_by_the_server_key_is_accepted(rs256):
    client, account, kid = rs256
    token = jwt.encode(
        claims_of(account.access_token),
        signing_material("RS256"),
        algorithm="RS256",
        headers={"kid": kid},
    )

    assert (await me(client, token)).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"jku": "https://attacker.example/jwks.json"}, id="jku"),
        pytest.param({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}, id="jwk"),
        pytest.param({"x5u": "https://attacker.example/cert.pem"}, id="x5u"),
        pytest.param({"x5c": ["MIIB"]}, id="x5c"),
        pytest.param({"crit": ["exp"]}, id="crit"),
        pytest.param({"enc": "A256GCM"}, id="enc"),
        pytest.param({"zip": "DEF"}, id="zip"),
        pytest.param({"typ": "at+jwt"}, id="other-typ"),
    ],
)
async def test_a_header_that_brings_keys_or_extensions_is_401(rs256, extra):
    """Signed by the server's own key: only the extra header parameter is wrong."""
    client, account, kid = rs256
    token = jwt.encode(
        claims_of(account.access_token),
        signing_material("RS256"),
        algorithm="RS256",
        headers={"kid": kid, **extra},
    )

    await refused(await me(client, token))


async def test_a_jwe_is_401_and_jose_never_decrypts_it(client, account, app, monkeypatch):
    keys = extensions.token_rules(app)
    payload = json.dumps(claims_of(account.access_token)).encode()
    token = jose.jwe.encrypt(
        payload, b"k" * 32, algorithm="dir", encryption="A256GCM", kid=keys.kid
    )
    token = token.decode() if isinstance(token, bytes) else token
    assert token.count(".") == 4
    decrypted: list[Any] = []

    def decrypt(*args: Any, **kwargs: Any) -> Any:
        decrypted.append(args)
        raise AssertionError("jose.jwe.decrypt must never be called")

    monkeypatch.setattr(jose.jwe, "decrypt", decrypt)

    await refused(await me(client, token))
    assert decrypted == []
