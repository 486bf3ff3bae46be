"""Fixtures: an app on a fresh database per test, on SQLite and (when
`TEST_DATABASE_URL` is set) again on PostgreSQL.

`database_url` is parametrized over the backends, so every test that uses an app
runs once per database. SQLite gets a new file per test; PostgreSQL gets its
tables created once per run and emptied before each test. Fixtures only: what tests
import is in `tests/helpers/`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from quart_auth_api import create_app
from quart_auth_api.db import Base, create_engine
from settings import Settings, to_async_url
from tests.helpers.http import Account, Clock, register
from tests.helpers.mailbox import mail_settings
from tests.helpers.mfa import MfaClock
from tests.helpers.processes import (
    SERVER_WORKERS,
    TEST_DATABASE_URL,
    Server,
    production_env,
    run_alembic,
    serve,
)
from tests.helpers.smtp import SmtpServer

BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])


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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock the rate limits read; `clock.advance(60)` lets a minute pass."""
    import limits.aio.storage.memory

    from quart_auth_api import ratelimit

    clock = Clock()
    monkeypatch.setattr(limits.aio.storage.memory, "time", clock)
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


@pytest.fixture
def mfa_clock(monkeypatch: pytest.MonkeyPatch) -> MfaClock:
    """The clock second-factor codes, challenges and enrolments are checked against
    (`services/mfa.py`'s `utcnow`); `mfa_clock.advance(30)` is one time step later."""
    from quart_auth_api.services import mfa

    clock = MfaClock()
    monkeypatch.setattr(mfa, "utcnow", clock)
    return clock


@pytest.fixture
async def account(client: TestClientProtocol) -> Account:
    """One registered user, logged in."""
    return await register(client, email="ada@example.com")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server (aiosmtpd) on a free port; `smtp.received` is what arrived."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def mail_app(
    database_url: str, smtp: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Quart]:
    """An app that sends mail through `smtp`. Its background sender is held back (the
    test delivers with `tests.helpers.mailbox.deliver_all`, so it knows when mail is out)."""
    from quart_auth_api import cli

    monkeypatch.setattr(cli, "MAIL_POLL", 3600.0)
    app = create_app(mail_settings(database_url, smtp))
    async with app.test_app():
        yield app


@pytest.fixture
def mail_client(mail_app: Quart) -> TestClientProtocol:
    return mail_app.test_client()


@pytest.fixture
def migrated_url(scratch_database_url: str) -> str:
    """A brand-new database, migrated to the head revision by Alembic."""
    run_alembic(scratch_database_url, "upgrade", "head")
    return scratch_database_url


@pytest.fixture
def docs_server(tmp_path: Path) -> Iterator[Server]:
    """One production worker on a migrated SQLite database, for the browser tests of /docs."""
    database_url = f"sqlite:///{tmp_path / 'docs.db'}"
    run_alembic(database_url, "upgrade", "head")
    with serve(production_env(database_url, workers=1), tmp_path / "server.log") as server:
        yield server


@pytest.fixture
def two_workers(migrated_url: str, tmp_path: Path) -> Iterator[Server]:
    """`QUART_ENV=production python run.py`, 2 workers, rate limits off (one client
    address sends every request here; the limits are tested in test_rate_limits.py)."""
    env = production_env(migrated_url, workers=SERVER_WORKERS, RATE_LIMIT_ENABLED="false")
    with serve(env, tmp_path / "server.log") as server:
        yield server
