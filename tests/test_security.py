"""crypto/passwords.py: bcrypt off the loop; crypto/tokens.py: token mint/decode rules."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

import quart_auth_api
from quart_auth_api import create_app, extensions
from quart_auth_api.crypto import keys as jwt_keys
from quart_auth_api.crypto import passwords
from quart_auth_api.crypto import tokens as jwt_tokens
from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession, User
from settings import Settings
from tests.helpers.http import PASSWORD, register

PACKAGE = Path(quart_auth_api.__file__).parent


def rules(**overrides):
    values = {
        "keys": jwt_keys.KeySet(jwt_keys.hmac_key("k" * 48, "HS256")),
        "issuer": "quart-auth-api",
        "audience": "quart-auth-api",
        "access_ttl": timedelta(minutes=15),
        "refresh_ttl": timedelta(days=30),
    }
    return jwt_tokens.TokenRules(**(values | overrides))


KEYS = rules()
SUB = "6a0c5ed6-7d5e-4a53-9c43-3f1f0a7c2a11"
SID = "0f5b1c1e-2f9e-4d0b-8a49-0c2f4c1b9e77"


@pytest.fixture
async def hasher():
    hasher = passwords.PasswordHasher(rounds=4, threads=2)
    yield hasher
    hasher.close()


async def test_hash_and_verify(hasher):
    hashed = await hasher.hash(PASSWORD)
    assert hashed.startswith("$2b$04$")
    assert await hasher.verify(PASSWORD, hashed)
    assert not await hasher.verify(PASSWORD + "x", hashed)


async def test_verify_without_a_hash_is_false_and_still_runs_bcrypt(hasher, monkeypatch):
    calls = []
    original = passwords.bcrypt.checkpw
    monkeypatch.setattr(passwords.bcrypt, "checkpw", lambda *a: calls.append(a) or original(*a))
    assert not await hasher.verify(PASSWORD, None)
    assert len(calls) == 1


async def test_bcrypt_never_runs_on_the_event_loop_thread(hasher, monkeypatch):
    threads = []
    original = passwords.bcrypt.hashpw
    monkeypatch.setattr(
        passwords.bcrypt,
        "hashpw",
        lambda *a: threads.append(threading.current_thread()) or original(*a),
    )
    await asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(4)))
    assert threading.main_thread() not in threads
    assert {thread.name.split("_")[0] for thread in threads} == {"bcrypt"}


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread priority is Linux's")
async def test_bcrypt_threads_are_nicer_than_the_event_loop(hasher, monkeypatch):
    """Under a login storm the loop (token checks) must win the CPU over hashing."""
    niceness = []
    original = passwords.bcrypt.hashpw

    def hashpw(*args):
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return original(*args)

    monkeypatch.setattr(passwords.bcrypt, "hashpw", hashpw)
    await asyncio.gather(*(hasher.hash(PASSWORD) for _ in range(4)))
    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    expected = min(19, loop_niceness + passwords.HASHING_NICENESS)
    assert niceness and set(niceness) == {expected}


async def test_passwords_over_72_bytes_are_refused_never_truncated(hasher):
    with pytest.raises(ValueError):
        await hasher.hash("é" * 37)  # 74 bytes
    assert await hasher.verify("a" * 72, await hasher.hash("a" * 72))


def test_needs_rehash_when_cost_went_up():
    hasher = passwords.PasswordHasher(rounds=12, threads=1)
    try:
        assert hasher.needs_rehash("$2b$04$" + "a" * 53)
        assert not hasher.needs_rehash("$2b$12$" + "a" * 53)
        assert hasher.needs_rehash("garbage")
    finally:
        hasher.close()


def mint(token_type="access", **overrides):
    now = overrides.pop("now", datetime.now(UTC))
    return jwt_tokens.mint_token(
        KEYS, token_type=token_type, subject=SUB, session_id=SID, now=now, **overrides
    )


def test_minted_access_token_round_trips():
    claims = jwt_tokens.decode_token(KEYS, mint(fresh=True).token)
    assert claims["type"] == "access" and claims["fresh"] is True
    assert (claims["sub"], claims["sid"]) == (SUB, SID)
    assert claims["iss"] == claims["aud"] == "quart-auth-api"
    assert claims["nbf"] == claims["iat"] and claims["exp"] - claims["iat"] == 900


def test_refresh_token_carries_the_generation():
    claims = jwt_tokens.decode_token(KEYS, mint("refresh", generation=3).token)
    assert claims["type"] == "refresh" and claims["gen"] == 3


def test_every_token_names_its_key():
    from jose import jwt

    header = jwt.get_unverified_header(mint().token)
    assert header == {"alg": "HS256", "kid": KEYS.kid, "typ": "JWT"}
    assert KEYS.secret not in KEYS.kid


def test_expired_token_is_token_expired():
    old = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(jwt_tokens.TokenExpired):
        jwt_tokens.decode_token(KEYS, mint(now=old).token)


@pytest.mark.parametrize(
    "other",
    [
        {"keys": jwt_keys.KeySet(jwt_keys.hmac_key("z" * 48, "HS256"))},
        {"keys": jwt_keys.KeySet(jwt_keys.hmac_key("k" * 48, "HS512"))},
        {"issuer": "someone-else"},
        {"audience": "someone-else"},
    ],
)
def test_token_for_other_keys_or_claims_is_refused(other):
    foreign = rules(**other)
    token = jwt_tokens.mint_token(
        foreign, token_type="access", subject=SUB, session_id=SID, now=datetime.now(UTC)
    ).token
    with pytest.raises(jwt_tokens.TokenError):
        jwt_tokens.decode_token(KEYS, token)


def test_only_hmac_algorithms_are_accepted_as_keys():
    with pytest.raises(ValueError):
        jwt_keys.hmac_key("k" * 48, "none")


def test_jose_is_imported_only_by_crypto_tokens_py():
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name == "jose" or name.startswith("jose.") for name in names):
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert set(importers) == {"crypto/tokens.py"}  # one file, several import lines


async def test_login_rehashes_a_password_hashed_at_a_lower_cost(database_url):
    cheap = create_app(Settings.for_testing(database_url=database_url, bcrypt_rounds=4))
    async with cheap.test_app():
        account = await register(cheap.test_client())
    dearer = create_app(Settings.for_testing(database_url=database_url, bcrypt_rounds=5))
    async with dearer.test_app():
        client = dearer.test_client()
        login = {"email": account.email, "password": PASSWORD}
        assert (await client.post("/auth/login", json=login)).status_code == 200
        async with DATABASE.get(dearer).sessionmaker() as db:
            hashed = await db.scalar(select(User.password_hash))
        assert hashed.startswith("$2b$05$")
        assert (await client.post("/auth/login", json=login)).status_code == 200


async def test_a_rehash_at_login_never_overwrites_a_password_changed_meanwhile(database_url):
    """The login checked the old password; a change lands during its bcrypt check: the
    change wins (the rehash updates only the hash it checked), and the login that proved
    only the old password opens no session (401, as a login racing a reset must)."""
    cheap = create_app(Settings.for_testing(database_url=database_url, bcrypt_rounds=4))
    async with cheap.test_app():
        account = await register(cheap.test_client())
    dearer = create_app(Settings.for_testing(database_url=database_url, bcrypt_rounds=5))
    async with dearer.test_app():
        hasher = extensions.hasher(dearer)
        original = hasher.verify
        changed = "$2b$05$" + "c" * 53  # what a password change wrote meanwhile

        async def verify_while_changed(password: str, hashed: str | None) -> bool:
            ok = await original(password, hashed)
            async with DATABASE.get(dearer).sessionmaker() as db:
                await db.execute(update(User).values(password_hash=changed))
                await db.commit()
            return ok

        hasher.verify = verify_while_changed  # type: ignore[method-assign]
        login = {"email": account.email, "password": PASSWORD}
        assert (await dearer.test_client().post("/auth/login", json=login)).status_code == 401
        async with DATABASE.get(dearer).sessionmaker() as db:
            assert await db.scalar(select(User.password_hash)) == changed
            assert await db.scalar(select(func.count()).select_from(AuthSession)) == 1  # register's
