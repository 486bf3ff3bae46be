"""Forged tokens, sent through the front door: each is the exact 401, never a 5xx.

Forging uses the app's own key material (`extensions.token_rules(app)`) so that every
refusal is for the one flaw a case puts in: the controls prove that a token forged the
way the service signs is accepted. A handful of requests per test: the default rate
limits stay on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwt

from quart_auth_api import extensions
from quart_auth_api.crypto.tokens import ACCESS, REFRESH, TokenRules, mint_token
from quart_auth_api.models import utcnow
from tests.helpers.attacks import NEEDS_ACCESS, NEEDS_REFRESH, refused
from tests.helpers.http import Account, bearer, claims_of, register

REQUIRED_CLAIMS = ["sub", "sid", "jti", "type", "iat", "nbf", "exp", "iss", "aud"]
OTHER_SECRET = "an-attackers-own-hmac-secret-" + "q" * 32


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A compact JWS built without jose: HS256 over any bytes, or unsigned (`None`)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return f"{signing_input}."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def keys(app) -> TokenRules:
    return extensions.token_rules(app)


@pytest.fixture
async def account(client) -> Account:
    return await register(client, email="victim@example.com", password="victim's passphrase")


def claims(account: Account, **changes: Any) -> dict[str, Any]:
    """The claims of `account`'s live access token, with a new jti and `changes`."""
    result = claims_of(account.access_token)
    result["jti"] = uuid.uuid4().hex
    result.update(changes)
    return result


def forge(keys: TokenRules, body: dict[str, Any], **options: Any) -> str:
    """Sign `body` as the service does (its secret, algorithm and kid) unless told otherwise."""
    return jwt.encode(
        body,
        options.get("secret", keys.secret),
        algorithm=options.get("algorithm", keys.algorithm),
        headers=options.get("headers", {"kid": keys.kid}),
    )


async def me(client, token: str):
    return await client.get("/auth/me", headers=bearer(token))


# -- controls ----------------------------------------------------------------------------


async def test_control_a_token_forged_like_the_service_is_accepted(client, account, keys):
    response = await me(client, forge(keys, claims(account)))

    assert response.status_code == 200
    assert (await response.get_json())["id"] == account.user["id"]


# -- signature, algorithm, key ----------------------------------------------------------


async def test_alg_none_is_refused(client, account, keys):
    token = by_hand({"alg": "none", "kid": keys.kid, "typ": "JWT"}, claims(account), None)

    await refused(await me(client, token), "token_invalid")


async def test_another_key_is_refused(client, account, keys):
    token = forge(keys, claims(account), secret=OTHER_SECRET)

    await refused(await me(client, token), "token_invalid")


async def test_another_hmac_algorithm_with_the_right_secret_is_refused(client, account, keys):
    assert keys.algorithm == "HS256"
    token = forge(keys, claims(account), algorithm="HS512")

    await refused(await me(client, token), "token_invalid")


async def test_an_unknown_kid_is_refused(client, account, keys):
    token = forge(keys, claims(account), headers={"kid": "unknown-key-id"})

    await refused(await me(client, token), "token_invalid")


# -- algorithm confusion against an RS256 server ----------------------------------------


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def rs256(build_app, tmp_path: Path):
    """An RS256 app (its private key in a file, as an operator configures it)."""
    path = tmp_path / "signing.pem"
    path.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    app, client = await build_app(jwt_algorithm="RS256", jwt_private_key_file=path)
    keys: TokenRules = extensions.token_rules(app)
    assert keys.algorithm == "RS256"
    account = await register(client, email="rsa@example.com")
    return client, keys, account


def public_pem() -> bytes:
    return (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


async def test_control_an_rs256_token_signed_with_the_private_key_is_accepted(rs256):
    client, keys, account = rs256
    token = jwt.encode(
        claims(account), keys.signing_key.signer, algorithm="RS256", headers={"kid": keys.kid}
    )

    assert (await me(client, token)).status_code == 200


@pytest.mark.parametrize("with_kid", [True, False], ids=["with-kid", "without-kid"])
async def test_the_rsa_public_key_as_an_hmac_secret_is_refused(rs256, with_kid):
    """The public key is public (JWKS serves it): HS256 signed with its PEM must not
    verify, whether the token names the RS256 key's kid or none."""
    client, keys, account = rs256
    header = {"alg": "HS256", "typ": "JWT", **({"kid": keys.kid} if with_kid else {})}
    token = by_hand(header, claims(account), public_pem())

    await refused(await me(client, token), "token_invalid")


# -- lifetime and claims ----------------------------------------------------------------


async def test_an_expired_access_token_is_refused(client, account, keys):
    body = claims(account)
    minted = mint_token(
        keys,
        token_type=ACCESS,
        subject=body["sub"],
        session_id=body["sid"],
        now=utcnow() - 2 * keys.access_ttl,
        fresh=True,
    )

    await refused(await me(client, minted.token), "token_expired")


async def test_an_expired_refresh_token_is_refused(client, account, keys):
    body = claims(account)
    minted = mint_token(
        keys,
        token_type=REFRESH,
        subject=body["sub"],
        session_id=body["sid"],
        now=utcnow() - 2 * keys.refresh_ttl,
        generation=0,
    )

    response = await client.post("/auth/refresh", headers=bearer(minted.token))

    await refused(response, "token_expired")


async def test_a_future_nbf_is_refused(client, account, keys):
    now = int(utcnow().timestamp())
    token = forge(keys, claims(account, iat=now, nbf=now + 3600, exp=now + 7200))

    await refused(await me(client, token), "token_invalid")


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_each_required_claim_missing_is_refused(client, account, keys, claim):
    body = claims(account)
    del body[claim]

    await refused(await me(client, forge(keys, body)), "token_invalid")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iss": "https://attacker.example"}, id="wrong-iss"),
        pytest.param({"aud": "another-service"}, id="wrong-aud"),
    ],
)
async def test_a_wrong_issuer_or_audience_is_refused(client, account, keys, changes):
    await refused(await me(client, forge(keys, claims(account, **changes))), "token_invalid")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"exp": None}, id="exp-null"),
        pytest.param({"iat": float("inf")}, id="iat-infinity"),
    ],
)
async def test_signed_time_claims_of_the_wrong_type_are_refused(client, account, keys, changes):
    """Correctly signed (a holder of a retired or leaked key, a buggy co-issuer), but
    `iat`, `nbf` or `exp` is not a NumericDate: 401, never a 500 with a traceback."""
    await refused(await me(client, forge(keys, claims(account, **changes))), "token_invalid")


async def test_a_tampered_payload_is_refused(client, account):
    """The original signature kept, the payload edited to name another user."""
    other = await register(client, email="attacker@example.com")
    header, _, signature = account.access_token.split(".")
    payload = b64url(json.dumps(claims(account, sub=other.user["id"])).encode())

    await refused(await me(client, f"{header}.{payload}.{signature}"), "token_invalid")


async def test_an_8_kb_token_is_refused(client, account, keys):
    token = forge(keys, claims(account, padding="p" * 8192))
    assert len(token) > 8192

    await refused(await me(client, token), "token_invalid")


# -- the wrong kind of token --------------------------------------------------------------


async def test_an_access_token_cannot_refresh(client, account):
    response = await client.post("/auth/refresh", headers=account.auth)

    await refused(response, "wrong_token_type", NEEDS_REFRESH)
    assert (await me(client, account.access_token)).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("GET", "/auth/me"), ("POST", "/auth/logout")])
async def test_a_refresh_token_is_not_an_access_token(client, account, method, path):
    response = await client.open(path, method=method, headers=account.refresh_auth)

    await refused(response, "wrong_token_type", NEEDS_ACCESS)
    assert (await me(client, account.access_token)).status_code == 200  # not logged out
