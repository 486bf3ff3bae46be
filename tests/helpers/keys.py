"""Keys for the tests: generated once per run, written to files, and the apps that use them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from quart import Quart
from quart.typing import TestClientProtocol as Client

from quart_auth_api import create_app
from quart_auth_api.crypto import keys as jwt_keys
from settings import Settings
from tests.helpers.http import bearer, problem

AUDIENCE = ISSUER = "quart-auth-api"
#: The HS256 secret `mixed_key_set`-style tests keep as a retired key.
RETIRED_SECRET = "retired-" + "h" * 40


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
    return jwt_keys.hmac_key(secret, "HS256").kid


async def me(client: Client, token: str) -> Any:
    return await client.get("/auth/me", headers=bearer(token))


async def refused(response: Any, code: str = "token_invalid") -> None:
    await problem(response, 401, code)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


ALGORITHMS = [pytest.param("RS256", "rsa", id="RS256"), pytest.param("ES256", "ec", id="ES256")]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token signed with any bytes (jose itself refuses a PEM as a secret)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def signing_material(algorithm: str) -> str:
    """What signs for the `mixed_key_set` key of `algorithm` (PEM or the secret)."""
    if algorithm == "HS256":
        return RETIRED_SECRET
    return private_pem(private("ec" if algorithm == "ES256" else "rsa")).decode()
