"""Users seeded through the API, and the checks that both sides answer the same API (and
the ceiling the service's tokens)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import HTTP_TIMEOUT, PASSWORD, TOKEN_KEYS, USER_KEYS, BenchError

# -- seeding through the API -----------------------------------------------------------


def call(
    base_url: str, method: str, path: str, *, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON or None)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        base_url + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


@dataclass
class Seed:
    emails: list[str]
    access_tokens: list[str]
    refresh_tokens: list[str]
    user_ids: list[str]


def seed_users(base_url: str, count: int, *, prefix: str, concurrency: int) -> Seed:
    """Register `count` users through the API (concurrently); their tokens."""

    def register(index: int) -> tuple[str, dict[str, Any]]:
        email = f"{prefix}-{index}@bench.example.com"
        status, body = call(
            base_url,
            "POST",
            "/auth/register",
            body={"email": email, "password": PASSWORD, "name": f"Seed {index}"},
        )
        if status != 201 or not isinstance(body, dict) or set(body) != TOKEN_KEYS:
            raise BenchError(f"register {email}: {status} {body}")
        return email, body

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        results = list(pool.map(register, range(count)))
    return Seed(
        emails=[email for email, _ in results],
        access_tokens=[body["access_token"] for _, body in results],
        refresh_tokens=[body["refresh_token"] for _, body in results],
        user_ids=[body["user"]["id"] for _, body in results],
    )


def log_in(base_url: str, emails: list[str], *, concurrency: int) -> list[str]:
    """A new session for each of `emails` (a password login each, concurrently): their
    refresh tokens."""

    def login(email: str) -> str:
        body = {"email": email, "password": PASSWORD}
        status, answer = call(base_url, "POST", "/auth/login", body=body)
        _expect(f"POST /auth/login {email}", status, answer, 200, TOKEN_KEYS)
        return str(answer["refresh_token"])

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        return list(pool.map(login, emails))


def _expect(what: str, status: int, body: Any, want: int, keys: set[str] | None) -> None:
    # a refused token: 401 (Flask-JWT-Extended answers 422 for a token of the wrong type)
    wanted = {401, 422} if want == 401 else {want}
    shape_ok = keys is None or (isinstance(body, dict) and set(body) >= keys)
    if status not in wanted or not shape_ok:
        raise BenchError(f"contract: {what}: {status} {body}")


def check_contract(base_url: str, seed: Seed) -> None:
    """The same API on both sides: shapes of every endpoint the load uses, and logout."""
    email = seed.emails[0]
    status, body = call(base_url, "GET", "/auth/me", token=seed.access_tokens[0])
    _expect("GET /auth/me", status, body, 200, USER_KEYS)
    status, body = call(
        base_url, "POST", "/auth/login", body={"email": email, "password": PASSWORD}
    )
    _expect("POST /auth/login", status, body, 200, TOKEN_KEYS)
    _expect("login user", 200, body["user"], 200, USER_KEYS)
    status, body = call(base_url, "POST", "/auth/refresh", token=body["refresh_token"])
    _expect("POST /auth/refresh", status, body, 200, TOKEN_KEYS)
    access, refresh = body["access_token"], body["refresh_token"]
    status, _ = call(base_url, "GET", "/auth/me", token=refresh)
    _expect("GET /auth/me with a refresh token", status, None, 401, None)
    status, body = call(base_url, "POST", "/auth/logout", token=access)
    _expect("POST /auth/logout", status, body, 200, {"message"})
    status, _ = call(base_url, "GET", "/auth/me", token=access)
    _expect("GET /auth/me after logout", status, None, 401, None)
    status, _ = call(base_url, "POST", "/auth/refresh", token=refresh)
    _expect("POST /auth/refresh after logout", status, None, 401, None)
    status, _ = call(
        base_url, "POST", "/auth/login", body={"email": email, "password": "wrong password!"}
    )
    _expect("POST /auth/login, wrong password", status, None, 401, None)


def check_ceiling(base_url: str, seed: Seed) -> None:
    """The ceiling answers the service's access tokens with the `User` shape, and
    refuses its refresh tokens and a token whose signature is not its own; its login
    answers the seeded password with tokens and refuses a wrong one."""
    access, refresh = seed.access_tokens[0], seed.refresh_tokens[0]
    status, body = call(base_url, "GET", "/auth/me", token=access)
    _expect("ceiling: GET /auth/me", status, body, 200, USER_KEYS)
    status, _ = call(base_url, "GET", "/auth/me", token=refresh)
    _expect("ceiling: GET /auth/me with a refresh token", status, None, 401, None)
    forged = ".".join([*access.split(".")[:2], refresh.split(".")[2]])
    status, _ = call(base_url, "GET", "/auth/me", token=forged)
    _expect("ceiling: GET /auth/me, another token's signature", status, None, 401, None)
    body = {"email": seed.emails[0], "password": PASSWORD}
    status, found = call(base_url, "POST", "/auth/login", body=body)
    _expect("ceiling: POST /auth/login", status, found, 200, TOKEN_KEYS - {"user"})
    body["password"] = "wrong password!"  # noqa: S105
    status, _ = call(base_url, "POST", "/auth/login", body=body)
    _expect("ceiling: POST /auth/login, wrong password", status, None, 401, None)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
