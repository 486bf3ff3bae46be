"""Fixtures: an app on a fresh database per test, on SQLite and (when
`TEST_DATABASE_URL` is set) again on PostgreSQL.

`database_url` is parametrized over the backends, so every test that uses an app
runs once per database. SQLite gets a new file per test; PostgreSQL gets its
tables created once per run and emptied before each test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from quart_auth_api import create_app
from quart_auth_api.db import Base, create_engine
from settings import Settings, to_async_url

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])
PASSWORD = "correct horse battery"
TOKEN_BODY_KEYS = {"user", "access_token", "refresh_token", "token_type", "expires_in"}


async def _reset_schema(url: str, *, drop: bool) -> None:
    engine = create_engine(Settings.for_testing(database_url=url), poolclass=NullPool)
    async with engine.begin() as connection:
        if drop:
            await connection.run_sync(Base.metadata.drop_all)
            await connection.run_sync(Base.metadata.create_all)
        else:
            names = ", ".join(table.name for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """TEST_DATABASE_URL with this suite's tables; unreachable is an error, never a skip."""
    # in a thread: this may be set up from inside a running test loop
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _reset_schema(TEST_DATABASE_URL, drop=True)).result()
    yield TEST_DATABASE_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database with the current schema."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        await _reset_schema(url, drop=True)
        return url
    url = request.getfixturevalue("postgres_url")
    await _reset_schema(url, drop=False)
    return url


@pytest.fixture
async def scratch_database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A brand-new database with no tables at all (for migrations and servers)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    import asyncpg

    base = make_url(to_async_url(TEST_DATABASE_URL))
    name = f"qaa_scratch_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    yield base.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings.for_testing(database_url=database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


class Clock:
    """Stands in for the `time` module where rate limits read the time (no sleeping)."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock the rate limits read; `clock.advance(60)` lets a minute pass."""
    import limits.aio.storage.memory

    from quart_auth_api import ratelimit

    clock = Clock()
    monkeypatch.setattr(limits.aio.storage.memory, "time", clock)
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


@dataclass
class Account:
    """A registered user and the tokens of its first session."""

    email: str
    password: str
    name: str
    user: dict[str, Any]
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def refresh_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.refresh_token}"}


async def register(
    client: TestClientProtocol,
    email: str | None = None,
    password: str = PASSWORD,
    name: str = "Ada Lovelace",
) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post(
        "/auth/register", json={"email": email, "password": password, "name": name}
    )
    assert response.status_code == 201, await response.get_data(as_text=True)
    body = await response.get_json()
    return Account(email, password, name, body["user"], body["access_token"], body["refresh_token"])


@pytest.fixture
async def account(client: TestClientProtocol) -> Account:
    """One registered user, logged in."""
    return await register(client, email="ada@example.com")


def claims_of(token: str) -> dict[str, Any]:
    """The JWT payload, read without verification (what any client can see)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert `response` is the problem document for `status` / `code`; return it."""
    text_body = await response.get_data(as_text=True)
    assert response.status_code == status, text_body
    assert response.mimetype == "application/problem+json", response.mimetype
    body = await response.get_json(force=True)
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in text_body
    return dict(body)
