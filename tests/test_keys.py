"""Key rotation, RS256/ES256 key files, JWKS, and key files that must stop start-up.

Tokens go through the front door (`/auth/*`) of apps built on one database with
different keys, the way an operator rotates: restart with the new key and the old
one listed as a fallback, then restart without the old one once its tokens expired.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt
from openapi_spec_validator import validate
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app, security, token_keys
from settings import ConfigError, Settings
from tests.conftest import bearer, claims_of, problem, register
from tests.helpers import PROJECT_ROOT, production_env, run_alembic, serve, service_env

OLD = "old-jwt-secret-" + "o" * 40
NEW = "new-jwt-secret-" + "n" * 40
AUDIENCE = ISSUER = "quart-auth-api"
JWKS = "/.well-known/jwks.json"
STARTUP_TIMEOUT = 60.0

# -- keys and apps -------------------------------------------------------------------


@cache
def private(label: str) -> Any:
    """A private key per label, generated once per run: `rsa`, `rsa-1024`, `ec`, `ec-p384`."""
    if label.startswith("rsa"):
        bits = int(label.partition("-")[2] or 2048)
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    curve = ec.SECP384R1() if label.endswith("p384") else ec.SECP256R1()
    return ec.generate_private_key(curve)


def private_pem(key: Any, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(key: Any) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def asymmetric_settings(
    database_url: str,
    tmp_path: Path,
    algorithm: str,
    label: str,
    *,
    retired: tuple[str, ...] = (),
    **overrides: Any,
) -> Settings:
    """Settings that sign with `label`'s key file and accept `retired` labels' public keys."""
    fallbacks = tuple(
        str(key_file(tmp_path, f"{name}.pub.pem", public_pem(private(name)))) for name in retired
    )
    return Settings.for_testing(
        database_url=database_url,
        jwt_algorithm=algorithm,
        jwt_private_key_file=key_file(tmp_path, f"{label}.pem", private_pem(private(label))),
        jwt_public_key_fallback_files=fallbacks,
        **overrides,
    )


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Quart, Client]]:
    app = create_app(settings)
    async with app.test_app():
        yield app, app.test_client()


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))


def hmac_kid(secret: str) -> str:
    return security.hmac_key(secret, "HS256").kid


async def me(client: Client, token: str) -> Any:
    return await client.get("/auth/me", headers=bearer(token))


async def refused(response: Any, code: str = "token_invalid") -> None:
    await problem(response, 401, code)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


ALGORITHMS = [pytest.param("RS256", "rsa", id="RS256"), pytest.param("ES256", "ec", id="ES256")]

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
    keys = token_keys(settings)

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

    key = security.public_key(pem)

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


# -- key files and secrets that must stop start-up -----------------------------------------


def bad_private_key_file(tmp_path: Path, case: str) -> tuple[str, Path]:
    """(algorithm, path) for one kind of unusable JWT_PRIVATE_KEY_FILE."""
    files: dict[str, tuple[str, bytes]] = {
        "not-pem": ("RS256", b"this is not a key\n"),
        "public-key": ("RS256", public_pem(private("rsa"))),
        "ec-p384": ("ES256", private_pem(private("ec-p384"))),
        "rsa-1024": ("RS256", private_pem(private("rsa-1024"))),
        "rsa-for-es256": ("ES256", private_pem(private("rsa"))),
        "ec-for-rs256": ("RS256", private_pem(private("ec"))),
        "encrypted": ("RS256", private_pem(private("rsa"), password=b"hunter2hunter2")),
    }
    algorithm, data = files[case]
    return algorithm, key_file(tmp_path, f"{case}.pem", data)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("not-pem", "not a PEM private key"),
        ("public-key", "not a PEM private key"),
        ("ec-p384", "ES256 needs P-256"),
        ("rsa-1024", "1024-bit RSA key is too weak"),
        ("rsa-for-es256", "ES256 needs an EC P-256 key"),
        ("ec-for-rs256", "RS256 needs an RSA key"),
        ("encrypted", "encrypted"),
    ],
)
def test_an_unusable_private_key_file_stops_start_up(tmp_path, case, reason):
    algorithm, path = bad_private_key_file(tmp_path, case)
    settings = Settings.for_testing(jwt_algorithm=algorithm, jwt_private_key_file=path)

    with pytest.raises(ConfigError) as raised:
        create_app(settings)

    message = str(raised.value)
    assert message.startswith(f"config error: JWT_PRIVATE_KEY_FILE: {path}: "), message
    assert reason in message and "\n" not in message


def test_a_key_file_gone_after_validation_stops_start_up(tmp_path):
    path = key_file(tmp_path, "key.pem", private_pem(private("ec")))
    settings = Settings.for_testing(jwt_algorithm="ES256", jwt_private_key_file=path)
    path.unlink()

    with pytest.raises(ConfigError, match=r"^config error: JWT_PRIVATE_KEY_FILE: .*cannot read"):
        token_keys(settings)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (private_pem(private("ec")), "give its public key only"),
        (public_pem(private("rsa-1024")), "too weak"),
        (public_pem(private("ec-p384")), "needs P-256"),
        (b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        (None, "cannot read"),
    ],
    ids=["private-key", "rsa-1024", "ec-p384", "garbage", "missing"],
)
def test_an_unusable_public_key_fallback_file_stops_start_up(tmp_path, data, reason):
    path = tmp_path / "old.pub.pem"
    if data is not None:
        path.write_bytes(data)
    settings = Settings.for_testing(jwt_public_key_fallback_files=(str(path),))  # HS256

    with pytest.raises(ConfigError) as raised:
        token_keys(settings)

    message = str(raised.value)
    assert message.startswith(f"config error: JWT_PUBLIC_KEY_FALLBACK_FILES: {path}: ")
    assert reason in message


def public_key_secrets() -> list[Any]:
    der = public_der(private("rsa"))
    return [
        pytest.param(public_pem(private("rsa")).decode(), id="pem"),
        pytest.param(base64.b64encode(der).decode(), id="der-base64"),
        pytest.param(base64.urlsafe_b64encode(der).decode().rstrip("="), id="der-base64url"),
        pytest.param(der.decode("latin-1"), id="der-raw"),
        pytest.param("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ " + "x" * 40, id="openssh"),
    ]


@pytest.mark.parametrize("secret", public_key_secrets())
@pytest.mark.parametrize("variable", ["JWT_SECRET_KEY", "JWT_SECRET_KEY_FALLBACKS"])
def test_a_public_key_as_an_hmac_secret_stops_start_up(secret, variable):
    field = variable.lower()
    value = (secret,) if variable.endswith("FALLBACKS") else secret
    settings = Settings.for_testing(**{field: value})

    with pytest.raises(ConfigError) as raised:
        token_keys(settings)

    message = str(raised.value)
    assert message.startswith(f"config error: {variable}: this looks like a key"), message
    assert secret not in message


@pytest.fixture(scope="module")
def migrated_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite database at the current schema, so that `run.py` gets as far as the keys."""
    url = f"sqlite:///{tmp_path_factory.mktemp('run') / 'app.db'}"
    run_alembic(url, "upgrade", "head")
    return url


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": "rsa-1024"}, "JWT_PRIVATE_KEY_FILE"),
        ({"JWT_ALGORITHM": "ES256", "JWT_PRIVATE_KEY_FILE": "ec-p384"}, "JWT_PRIVATE_KEY_FILE"),
        ({"JWT_PUBLIC_KEY_FALLBACK_FILES": "not-pem"}, "JWT_PUBLIC_KEY_FALLBACK_FILES"),
        ({"JWT_ALGORITHM": "RS256", "JWT_PRIVATE_KEY_FILE": "missing"}, None),
    ],
    ids=["rsa-1024", "ec-p384", "fallback-not-pem", "missing"],
)
def test_run_py_refuses_a_bad_key_file_with_one_line(
    tmp_path, migrated_database_url, variables, named
):
    """`python run.py` exits at once with one line and no traceback, naming the variable.

    A missing file is caught first by `settings.py`, whose line names the path only."""
    env = dict(variables)
    for name in ("JWT_PRIVATE_KEY_FILE", "JWT_PUBLIC_KEY_FALLBACK_FILES"):
        if env.get(name) == "missing":
            env[name] = str(tmp_path / "missing.pem")
        elif name in env:
            env[name] = str(bad_private_key_file(tmp_path, env[name])[1])
    result = subprocess.run(
        [sys.executable, "run.py"],
        cwd=PROJECT_ROOT,
        env=service_env(
            HOST="127.0.0.1",
            PORT="1",
            QUART_ENV="testing",
            DATABASE_URL=migrated_database_url,
            **env,
        ),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )

    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    if named is None:
        assert line.startswith("config error: ") and str(tmp_path / "missing.pem") in line, line
    else:
        assert line.startswith(f"config error: {named}: "), line


@pytest.mark.server
def test_two_workers_share_es256_keys_and_serve_the_jwks(tmp_path):
    """Real hypercorn, two workers: each loads the key file; tokens and JWKS agree."""
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    run_alembic(database_url, "upgrade", "head")
    path = key_file(tmp_path, "ec.pem", private_pem(private("ec")))
    env = production_env(database_url, JWT_ALGORITHM="ES256", JWT_PRIVATE_KEY_FILE=str(path))
    with (
        serve(env, tmp_path / "server.log") as server,
        httpx.Client(base_url=server.base_url, timeout=10) as http,
    ):
        jwks = http.get(JWKS)
        assert jwks.status_code == 200, jwks.text
        (jwk,) = jwks.json()["keys"]
        registration = {"email": "ada@example.com", "password": "correct horse", "name": "Ada"}
        tokens = http.post("/auth/register", json=registration).json()
        claims = jwt.decode(
            tokens["access_token"], jwk, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER
        )
        assert claims["type"] == "access"
        for _ in range(4):  # whichever worker answers
            assert http.get("/auth/me", headers=bearer(tokens["access_token"])).status_code == 200
