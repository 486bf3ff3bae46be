"""Forged, expired, malformed and orphaned tokens, sent through the API (GET /auth/me)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from jose import jwt

from quart_auth_api import extensions
from quart_auth_api.crypto import tokens as jwt_tokens
from quart_auth_api.crypto.tokens import ACCESS, REFRESH, TokenRules, mint_token
from quart_auth_api.models import utcnow
from tests.helpers.http import Account, bearer, claims_of, problem, register

REQUIRED_CLAIMS = ["sub", "sid", "jti", "type", "iat", "nbf", "exp", "iss", "aud"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture
def keys(app) -> TokenRules:
    return extensions.token_rules(app)


def access_claims(account: Account, **changes: Any) -> dict[str, Any]:
    """Claims of a valid access token for `account`'s live session, with `changes`."""
    claims = claims_of(account.access_token)
    claims["jti"] = uuid.uuid4().hex
    claims.update(changes)
    return claims


def forge(
    keys: TokenRules,
    claims: dict[str, Any],
    *,
    secret: str | None = None,
    algorithm: str | None = None,
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign `claims`; by default exactly as the service does (its key, algorithm and kid)."""
    return jwt.encode(
        claims,
        keys.secret if secret is None else secret,
        algorithm=algorithm or keys.algorithm,
        headers={"kid": keys.kid} if headers is None else headers,
    )


async def me(client, authorization: str | None):
    headers = {} if authorization is None else {"Authorization": authorization}
    return await client.get("/auth/me", headers=headers)


async def rejected(response, code: str) -> dict[str, Any]:
    """A 401 problem for a token that was given: RFC 6750 `error="invalid_token"`."""
    body = await problem(response, 401, code)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer "), challenge
    assert 'error="invalid_token"' in challenge, challenge
    assert "access_token" not in body
    return body


# -- controls: the forging helpers make tokens the service accepts -------------------


async def test_a_token_forged_exactly_like_the_service_is_accepted(client, account, keys):
    response = await me(client, f"Bearer {forge(keys, access_claims(account))}")

    assert response.status_code == 200
    assert (await response.get_json())["id"] == account.user["id"]


async def test_a_token_minted_by_mint_token_is_accepted(client, account, keys):
    claims = claims_of(account.access_token)
    minted = mint_token(
        keys, token_type=ACCESS, subject=claims["sub"], session_id=claims["sid"], now=utcnow()
    )

    response = await me(client, f"Bearer {minted.token}")

    assert response.status_code == 200


async def test_the_bearer_scheme_is_case_insensitive(client, account):
    response = await me(client, f"bearer {account.access_token}")

    assert response.status_code == 200


# -- missing and malformed Authorization ----------------------------------------------


async def test_no_authorization_is_401_token_missing_without_an_error(client):
    response = await me(client, None)

    await problem(response, 401, "token_missing")
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer realm="), challenge
    assert "error=" not in challenge


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Basic dXNlcjpwYXNzd29yZA==", id="basic"),
        pytest.param("Bearer", id="bearer-without-token"),
        pytest.param("Bearer    ", id="bearer-blank"),
        pytest.param("Bearer garbage", id="garbage"),
        pytest.param("Bearer a.b.c", id="three-garbage-segments"),
        pytest.param("Bearer a b", id="two-tokens"),
        pytest.param("Token abc.def.ghi", id="other-scheme"),
        pytest.param("eyJhbGciOiJIUzI1NiJ9.e30.abc", id="no-scheme"),
    ],
)
async def test_a_malformed_authorization_is_401_token_invalid(client, authorization):
    response = await me(client, authorization)

    await rejected(response, "token_invalid")


async def test_a_valid_token_with_trailing_junk_is_401(client, account):
    response = await me(client, f"Bearer {account.access_token} junk")

    await rejected(response, "token_invalid")


# -- signature, algorithm and key id ------------------------------------------------


async def test_a_token_signed_with_another_key_is_401(client, account, keys):
    token = forge(keys, access_claims(account), secret="another-secret-" + "z" * 40)

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_an_unsigned_alg_none_token_is_401(client, account, keys, alg):
    header = {"alg": alg, "typ": "JWT", "kid": keys.kid}
    token = ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(access_claims(account)).encode()),
            "",
        ]
    )

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_a_token_with_an_algorithm_other_than_the_pinned_one_is_401(
    client, account, keys, algorithm
):
    assert keys.algorithm == "HS256"
    token = forge(keys, access_claims(account), algorithm=algorithm)

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"kid": "unknown-key-id"}, id="unknown-kid"),
        pytest.param({"kid": ""}, id="empty-kid"),
        pytest.param({}, id="no-kid"),
        pytest.param({"kid": 1}, id="kid-a-number"),
    ],
)
async def test_a_token_with_a_wrong_kid_is_401(client, account, keys, headers):
    token = forge(keys, access_claims(account), headers=headers)

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


async def test_a_tampered_payload_is_401(client, account, keys):
    other = await register(client, email="grace@example.com")
    header, _, signature = account.access_token.split(".")
    payload = b64url(json.dumps(access_claims(account, sub=other.user["id"])).encode())

    response = await me(client, f"Bearer {header}.{payload}.{signature}")

    await rejected(response, "token_invalid")


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: t.rsplit(".", 1)[0] + ".", id="signature-stripped"),
        pytest.param(lambda t: t.rsplit(".", 1)[0], id="two-segments"),
        pytest.param(lambda t: t[:-4] + ("AAAA" if t[-4:] != "AAAA" else "BBBB"), id="resigned"),
        pytest.param(lambda t: t + ".extra", id="four-segments"),
    ],
)
async def test_a_mangled_real_token_is_401(client, account, mangle):
    await rejected(await me(client, f"Bearer {mangle(account.access_token)}"), "token_invalid")


# -- claims --------------------------------------------------------------------------


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
async def test_a_token_missing_a_required_claim_is_401(client, account, keys, claim):
    claims = access_claims(account)
    del claims[claim]

    await rejected(await me(client, f"Bearer {forge(keys, claims)}"), "token_invalid")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"iss": "someone-else"}, id="wrong-iss"),
        pytest.param({"aud": "someone-else"}, id="wrong-aud"),
        pytest.param({"aud": ["someone-else"]}, id="wrong-aud-list"),
        pytest.param({"type": "id"}, id="unknown-type"),
        pytest.param({"sub": "not-a-uuid"}, id="sub-not-a-uuid"),
        pytest.param({"sub": 1}, id="sub-a-number"),
        pytest.param({"sid": "not-a-uuid"}, id="sid-not-a-uuid"),
        pytest.param({"fresh": "yes"}, id="fresh-not-a-bool"),
    ],
)
async def test_a_token_with_a_wrong_claim_is_401(client, account, keys, changes):
    token = forge(keys, access_claims(account, **changes))

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


async def test_an_expired_access_token_is_401_token_expired(client, account, keys):
    claims = claims_of(account.access_token)
    minted = mint_token(
        keys,
        token_type=ACCESS,
        subject=claims["sub"],
        session_id=claims["sid"],
        now=utcnow() - 2 * keys.access_ttl,
    )

    body = await rejected(await me(client, f"Bearer {minted.token}"), "token_expired")
    assert "expired" in body["detail"].lower()


async def test_an_expired_refresh_token_is_401_token_expired(client, account, keys):
    claims = claims_of(account.refresh_token)
    minted = mint_token(
        keys,
        token_type=REFRESH,
        subject=claims["sub"],
        session_id=claims["sid"],
        now=utcnow() - keys.refresh_ttl - timedelta(minutes=1),
        generation=0,
    )

    response = await client.post("/auth/refresh", headers=bearer(minted.token))

    await rejected(response, "token_expired")


async def test_a_token_not_yet_valid_is_401(client, account, keys):
    now = int(utcnow().timestamp())
    claims = access_claims(account, iat=now, nbf=now + 3600, exp=now + 7200)

    await rejected(await me(client, f"Bearer {forge(keys, claims)}"), "token_invalid")


async def test_a_token_over_8_kb_is_401(client, account, keys):
    token = forge(keys, access_claims(account, padding="p" * 8192))
    assert len(token) > 8192

    await rejected(await me(client, f"Bearer {token}"), "token_invalid")


# -- valid signature, but no live session -----------------------------------------------


async def test_a_signed_token_for_a_session_that_does_not_exist_is_401_revoked(
    client, account, keys
):
    minted = mint_token(
        keys,
        token_type=ACCESS,
        subject=account.user["id"],
        session_id=str(uuid.uuid4()),
        now=utcnow(),
    )

    await rejected(await me(client, f"Bearer {minted.token}"), "token_revoked")


async def test_a_signed_token_for_a_user_that_does_not_exist_is_401_revoked(client, account, keys):
    token = forge(keys, access_claims(account, sub=str(uuid.uuid4())))

    await rejected(await me(client, f"Bearer {token}"), "token_revoked")


async def test_another_users_session_id_does_not_authenticate(client, account, keys):
    grace = await register(client, email="grace@example.com")
    token = forge(keys, access_claims(account, sid=claims_of(grace.access_token)["sid"]))

    await rejected(await me(client, f"Bearer {token}"), "token_revoked")


# -- verified tokens remembered (crypto/tokens.VerifiedTokens) ------------------------------


async def test_a_token_seen_again_skips_the_signature_but_not_the_clock(
    client, account, keys, monkeypatch
):
    """The second use of a token comes from the cache (jose is not called again); when
    its `exp` passes, the cached token is refused as expired, like a fresh one."""

    verified: list[str] = []
    original = jwt_tokens._verify
    monkeypatch.setattr(
        jwt_tokens, "_verify", lambda keys, token: verified.append(token) or original(keys, token)
    )
    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200
    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200
    assert verified == [account.access_token]
    expires = claims_of(account.access_token)["exp"]
    monkeypatch.setattr(jwt_tokens, "_jose_now", lambda: expires + 1)
    await rejected(await me(client, f"Bearer {account.access_token}"), "token_expired")
    monkeypatch.setattr(jwt_tokens, "_jose_now", lambda: expires)  # jose: valid up to exp
    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200


async def test_a_cached_token_is_not_yet_valid_before_its_nbf(client, account, keys, monkeypatch):

    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200
    nbf = claims_of(account.access_token)["nbf"]
    monkeypatch.setattr(jwt_tokens, "_jose_now", lambda: nbf - 1)
    await rejected(await me(client, f"Bearer {account.access_token}"), "token_invalid")


async def test_a_changed_token_is_verified_again_never_matched(client, account, keys):
    """Only the exact string that passed is remembered: one changed character in the
    signature is verified from scratch, and refused."""
    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200
    token = account.access_token
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    await rejected(await me(client, f"Bearer {tampered}"), "token_invalid")


async def test_a_revoked_session_is_refused_even_with_a_remembered_token(client, account):
    assert (await me(client, f"Bearer {account.access_token}")).status_code == 200
    assert (await client.post("/auth/logout", headers=bearer(account.access_token))).status_code
    await rejected(await me(client, f"Bearer {account.access_token}"), "token_revoked")


def test_verified_tokens_forget_the_least_recently_used_first():
    from quart_auth_api.crypto.tokens import VerifiedTokens

    cache = VerifiedTokens(2)
    cache.put("a", {"n": 1})
    cache.put("b", {"n": 2})
    assert cache.get("a") == {"n": 1}  # now b is the least recently used
    cache.put("c", {"n": 3})
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ({"n": 1}, None, {"n": 3})
    assert len(cache) == 2
