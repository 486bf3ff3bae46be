"""python-jose 3.5.0's open weaknesses cannot reach the service.

- `jwt.decode` takes the algorithm from the token when no list is given: every decode
  passes one algorithm, pinned to the key the `kid` names (read from the source and
  watched at run time).
- A public key (PEM or DER) is accepted by jose as an HMAC secret: a token signed so
  is refused, whatever its header says (algorithm confusion).
- JWE and keys carried in the header are refused before jose reads the token.
- `ecdsa` (an unfixed timing CVE) never signs or verifies: jose's cryptography
  backend does, and the `ecdsa` package is not even imported.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jose import jwt
from jose.backends.cryptography_backend import (
    CryptographyECKey,
    CryptographyHMACKey,
    CryptographyRSAKey,
)

import quart_auth_api
from quart_auth_api.crypto import tokens as jwt_tokens
from quart_auth_api.extensions import build_token_rules
from tests.helpers.keys import (
    RETIRED_SECRET,
    asymmetric_settings,
    key_file,
    private,
    private_pem,
    signing_material,
)
from tests.helpers.processes import PROJECT_ROOT, service_env

PACKAGE = Path(quart_auth_api.__file__).parent
SECURITY_TREE = ast.parse(Path(jwt_tokens.__file__).read_text())
#: Everything the package takes from jose, and from where.
ALLOWED_JOSE_IMPORTS = {
    "jose": {"ExpiredSignatureError", "JWTError", "jwt"},
    "jose.backends.cryptography_backend": {
        "CryptographyECKey",
        "CryptographyHMACKey",
        "CryptographyRSAKey",
    },
    "jose.exceptions": {"JWKError"},
}
SUB = "6a0c5ed6-7d5e-4a53-9c43-3f1f0a7c2a11"
SID = "0f5b1c1e-2f9e-4d0b-8a49-0c2f4c1b9e77"


# -- read from the source ------------------------------------------------------------------


def jose_imports() -> dict[str, set[str]]:
    """`{relative path: names imported from jose}` over the whole package."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                if module == "jose" or module.startswith("jose."):
                    names = {f"{module}:{alias.name}" for alias in node.names}
                    found.setdefault(path.relative_to(PACKAGE).as_posix(), set()).update(names)
    return found


def test_only_crypto_tokens_py_imports_jose_and_only_what_it_pins():
    imports = jose_imports()

    assert set(imports) == {"crypto/tokens.py"}
    allowed = {
        f"{module}:{name}" for module, names in ALLOWED_JOSE_IMPORTS.items() for name in names
    }
    assert imports["crypto/tokens.py"] == allowed


def jose_calls(function: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(SECURITY_TREE)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == function
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "jwt"
    ]


def key_attribute(node: ast.expr, attribute: str) -> str:
    """`key.<attribute>` -> `key`; anything else fails the test."""
    assert isinstance(node, ast.Attribute) and node.attr == attribute, ast.dump(node)
    assert isinstance(node.value, ast.Name), ast.dump(node)
    return node.value.id


def test_every_jwt_decode_passes_one_algorithm_bound_to_the_key_that_verifies():
    calls = jose_calls("decode")
    assert calls, "crypto/tokens.py decodes tokens with jwt.decode"
    for call in calls:
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        assert None not in keywords, "no **kwargs around jwt.decode"
        assert len(call.args) == 2, "jwt.decode(token, key.verifier, ...)"
        key = key_attribute(call.args[1], "verifier")
        algorithms = keywords["algorithms"]
        assert isinstance(algorithms, ast.List) and len(algorithms.elts) == 1
        assert key_attribute(algorithms.elts[0], "algorithm") == key


def test_every_jwt_encode_signs_with_the_algorithm_of_its_key():
    calls = jose_calls("encode")
    assert calls
    for call in calls:
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        key = key_attribute(call.args[1], "signer")
        assert key_attribute(keywords["algorithm"], "algorithm") == key


def test_the_regex_view_agrees_every_decode_has_a_pinned_algorithm_list():
    source = Path(jwt_tokens.__file__).read_text()
    decodes = [match.start() for match in re.finditer(r"\bjwt\.decode\(", source)]
    assert len(decodes) == len(jose_calls("decode"))
    for start in decodes:
        call = call_text(source, start)
        assert re.search(r"\bjwt\.decode\(\s*token,\s*key\.verifier,", call), call
        assert re.findall(r"algorithms=([^,]+),", call) == ["[key.algorithm]"], call


def call_text(source: str, start: int) -> str:
    """The text of the call that starts at `start`, up to its closing parenthesis."""
    depth = 0
    for index in range(source.index("(", start), len(source)):
        depth += {"(": 1, ")": -1}.get(source[index], 0)
        if depth == 0:
            return source[start : index + 1]
    raise AssertionError("unbalanced call")


def test_crypto_tokens_py_never_touches_jwe_jws_jwk_or_unverified_claims():
    names = {
        node.attr if isinstance(node, ast.Attribute) else node.id
        for node in ast.walk(SECURITY_TREE)
        if isinstance(node, ast.Attribute | ast.Name)
    }
    assert not names & {"jwe", "jws", "jwk", "construct", "get_unverified_claims", "decrypt"}


# -- watched at run time ---------------------------------------------------------------------


def mixed_key_set(tmp_path: Path) -> jwt_tokens.TokenRules:
    """RS256 active, an ES256 and an HS256 key retired: every kind in one set."""
    settings = asymmetric_settings(
        "sqlite:///unused.db",
        tmp_path,
        "RS256",
        "rsa",
        retired=("ec",),
        jwt_secret_key_fallbacks=(RETIRED_SECRET,),
    )
    return build_token_rules(settings)


def valid_claims(keys: jwt_tokens.TokenRules) -> dict[str, Any]:
    now = int(datetime.now(UTC).timestamp())
    return {
        **{"sub": SUB, "sid": SID, "jti": "j", "type": "access", "fresh": False},
        **{"iat": now, "nbf": now, "exp": now + 60, "iss": keys.issuer, "aud": keys.audience},
    }


def test_each_decode_gets_exactly_the_algorithm_of_the_key_its_kid_names(tmp_path, monkeypatch):
    keys = mixed_key_set(tmp_path)
    every_key = (keys.signing_key, *keys.verification_keys)
    assert sorted(key.algorithm for key in every_key) == ["ES256", "HS256", "RS256"]
    calls: list[tuple[Any, Any]] = []
    original = jwt_tokens.jwt.decode

    def spy(token: str, key: Any, **kwargs: Any) -> Any:
        calls.append((key, kwargs.get("algorithms")))
        return original(token, key, **kwargs)

    monkeypatch.setattr(jwt_tokens.jwt, "decode", spy)
    for key in every_key:
        claims = valid_claims(keys)
        token = jwt.encode(
            claims,
            signing_material(key.algorithm),
            algorithm=key.algorithm,
            headers={"kid": key.kid},
        )
        assert jwt_tokens.decode_token(keys, token)["sub"] == SUB
        assert calls[-1] == (key.verifier, [key.algorithm])
        for other in {"HS256", "RS256", "ES256"} - {key.algorithm}:  # this kid, another alg
            forged = jwt.encode(
                claims, signing_material(other), algorithm=other, headers={"kid": key.kid}
            )
            with pytest.raises(jwt_tokens.TokenError):
                jwt_tokens.decode_token(keys, forged)
    assert all(len(algorithms) == 1 for _, algorithms in calls)


def test_keys_are_jose_cryptography_backend_objects(tmp_path):
    keys = mixed_key_set(tmp_path)
    kinds = {
        key.algorithm: (type(key.verifier), type(key.signer))
        for key in (keys.signing_key, *keys.verification_keys)
    }

    assert kinds == {
        "RS256": (CryptographyRSAKey, CryptographyRSAKey),
        "ES256": (CryptographyECKey, type(None)),
        "HS256": (CryptographyHMACKey, type(None)),
    }


def calls_into(packages: list[str], action: Callable[[], object]) -> set[str]:
    """Python functions of `packages` that run while `action()` runs (a profiler)."""
    roots = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, package
        roots.append(str(Path(spec.origin).parent) + "/")
    seen: set[str] = set()

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(tuple(roots)):
            seen.add(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(previous)
    return seen


def sign_and_verify(keys: jwt_tokens.TokenRules) -> None:
    now = datetime.now(UTC)
    for token_type in ("access", "refresh"):
        minted = jwt_tokens.mint_token(
            keys, token_type=token_type, subject=SUB, session_id=SID, now=now, generation=0
        )
        assert jwt_tokens.decode_token(keys, minted.token)["sub"] == SUB


def test_the_profiler_sees_ecdsa_when_ecdsa_signs():
    """Control: the watch below would catch the `ecdsa` package at work."""
    import ecdsa

    def sign() -> None:
        ecdsa.SigningKey.generate(curve=ecdsa.NIST256p).sign(b"message")

    assert calls_into(["ecdsa"], sign)


@pytest.mark.parametrize(("algorithm", "label"), [("ES256", "ec"), ("RS256", "rsa")])
def test_es256_and_rs256_never_run_ecdsa_or_pure_python_rsa(tmp_path, algorithm, label):
    settings = asymmetric_settings("sqlite:///unused.db", tmp_path, algorithm, label)
    keys = build_token_rules(settings)

    assert calls_into(["ecdsa", "rsa"], lambda: sign_and_verify(keys)) == set()
    assert calls_into(["jose"], lambda: sign_and_verify(keys))  # control: jose did run


def test_a_fresh_interpreter_never_imports_ecdsa_rsa_or_jwe(tmp_path):
    """The whole app, signing and verifying ES256, RS256 and HS256 and refusing a JWE."""
    ec_file = key_file(tmp_path, "ec.pem", private_pem(private("ec")))
    rsa_file = key_file(tmp_path, "rsa.pem", private_pem(private("rsa")))
    script = f"""
import json, sys
from datetime import UTC, datetime
from quart_auth_api import create_app, extensions
from quart_auth_api.crypto import tokens as jwt_tokens
from settings import Settings

for algorithm, path in [("ES256", {str(ec_file)!r}), ("RS256", {str(rsa_file)!r}), ("HS256", None)]:
    app = create_app(Settings.for_testing(jwt_algorithm=algorithm, jwt_private_key_file=path))
    keys = extensions.token_rules(app)
    token = jwt_tokens.mint_token(keys, token_type="access", subject={SUB!r}, session_id={SID!r},
                                now=datetime.now(UTC)).token
    assert jwt_tokens.decode_token(keys, token)["sub"] == {SUB!r}
    try:
        jwt_tokens.decode_token(keys, "a.b.c.d.e")
    except jwt_tokens.TokenError:
        pass
loaded = [name for name in sys.modules
          if name.split(".")[0] in ("ecdsa", "rsa", "pyasn1")
          or name in ("jose.jwe", "jose.backends.ecdsa_backend", "jose.backends.rsa_backend")]
print(json.dumps(loaded))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
