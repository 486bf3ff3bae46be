"""Key files and secrets that must stop start-up, with one line naming the variable: in
`create_app`, and from `python run.py` (which also proves two workers share ES256 keys)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt

from quart_auth_api import create_app
from quart_auth_api.extensions import build_token_rules
from settings import ConfigError, Settings
from tests.helpers.http import bearer
from tests.helpers.keys import (
    AUDIENCE,
    ISSUER,
    key_file,
    private,
    private_pem,
    public_der,
    public_pem,
)
from tests.helpers.processes import PROJECT_ROOT, production_env, run_alembic, serve, service_env

JWKS = "/.well-known/jwks.json"
STARTUP_TIMEOUT = 60.0


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
        build_token_rules(settings)


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
        build_token_rules(settings)

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
        build_token_rules(settings)

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
