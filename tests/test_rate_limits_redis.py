"""Rate limits shared through Redis (REDIS_URL): several workers spend one budget.

Needs the Redis server at 127.0.0.1:6379 (database 5). Without it these tests skip,
unless QAA_REQUIRE_REDIS=1 (CI) makes that a failure. Each test-client test writes
under its own key prefix and deletes it afterwards; the real-server test uses an
email of its own and deletes the keys it made. Nothing else in Redis is touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import httpx
import pytest
import redis

from quart_auth_api import create_app, extensions, ratelimit
from quart_auth_api.crypto.digests import ACCOUNT_DIGEST, derive_key
from quart_auth_api.ratelimit import LIMITER, account_key
from settings import Settings
from tests.helpers import http
from tests.helpers.http import PASSWORD, problem, register
from tests.helpers.processes import (
    Server,
    new_request_id,
    production_env,
    run_alembic,
    serve,
)

REDIS_URL = "redis://127.0.0.1:6379/5"
PEER = {"client": ("192.0.2.20", 40000)}
SERVER_LIMIT = 3
MAX_ATTEMPTS = 150
HTTP_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def redis_client() -> Iterator[redis.Redis]:
    """A client of the local Redis; skips (or, with QAA_REQUIRE_REDIS=1, fails) without one."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        client.close()
        reason = f"no Redis at {REDIS_URL} ({type(error).__name__})"
        if os.environ.get("QAA_REQUIRE_REDIS") == "1":
            pytest.fail(f"{reason}, and QAA_REQUIRE_REDIS=1")
        pytest.skip(f"{reason}: start one, or set QAA_REQUIRE_REDIS=1 to make this a failure")
    yield client
    client.close()


@pytest.fixture
def key_prefix(redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A key prefix for this test alone, deleted afterwards."""
    prefix = f"qaa:rl:test-{uuid.uuid4().hex}"
    monkeypatch.setattr(ratelimit, "KEY_PREFIX", prefix)
    yield prefix
    for key in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(key)


@pytest.fixture
async def shared_apps(database_url: str, key_prefix: str) -> AsyncIterator[list]:
    """Two separate apps (as two workers would be) on one database and one Redis."""
    settings = Settings.for_testing(
        database_url=database_url, redis_url=REDIS_URL, rate_limit_login="3/minute"
    )
    async with AsyncExitStack() as stack:
        apps = [create_app(settings), create_app(settings)]
        for app in apps:
            await stack.enter_async_context(app.test_app())
        yield apps


login = partial(http.login, scope=PEER)


async def test_two_apps_spend_one_budget(shared_apps, redis_client, key_prefix):
    """Logins alternate between two apps: 3 get through in all, not 3 each."""
    clients = [app.test_client() for app in shared_apps]
    account = await register(clients[0])

    statuses = [(await login(clients[n % 2], account.email)).status_code for n in range(6)]

    assert statuses == [200, 200, 200, 429, 429, 429]
    response = await login(clients[1], account.email)
    await problem(response, 429, "rate_limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert all(LIMITER.get(app).shared is not None for app in shared_apps)


async def test_redis_keys_are_namespaced_and_never_hold_the_email(
    shared_apps, redis_client, key_prefix
):
    client = shared_apps[0].test_client()
    await login(client, "Secret.Person@example.com")

    keys = sorted(key.decode() for key in redis_client.scan_iter(match=f"{key_prefix}:*"))
    digest = account_key("secret.person@example.com", extensions.digest_key(shared_apps[0]))
    assert keys == [
        f"{key_prefix}:login:ip+account/192.0.2.20/{digest}/3/1/minute",
        f"{key_prefix}:login:ip/192.0.2.20/100/1/minute",
    ]
    assert 0 < redis_client.ttl(keys[0]) <= 60


# -- two real workers ----------------------------------------------------------------


@pytest.fixture
def redis_server(
    redis_client: redis.Redis, scratch_database_url: str, tmp_path: Path
) -> Iterator[Server]:
    """`QUART_ENV=production python run.py`, 2 workers, limits in Redis."""
    run_alembic(scratch_database_url, "upgrade", "head")
    env = production_env(
        scratch_database_url,
        workers=2,
        REDIS_URL=REDIS_URL,
        RATE_LIMIT_LOGIN=f"{SERVER_LIMIT}/minute",
        # only the per-account login budget is under test; per-client keys are shared
        # with other runs on this machine, so give them room and a short life
        RATE_LIMIT_LOGIN_IP="1000/minute",
        RATE_LIMIT_REGISTER_IP="1000/minute",
    )
    with serve(env, tmp_path / "server.log") as server:
        yield server


@pytest.mark.server
async def test_two_workers_share_one_budget(redis_server, redis_client):
    """Logins for one email on fresh connections until each of the two workers has
    answered at least the limit: per-worker counting would let 2 x 3 through, the
    shared budget lets exactly 3 through."""
    server = redis_server
    email = f"shared-{uuid.uuid4().hex[:12]}@example.com"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT) as client:
        body = {"email": email, "password": PASSWORD, "name": "Ada"}
        assert (await client.post("/auth/register", json=body)).status_code == 201

    answers: dict[int, list[int]] = {}
    try:
        for attempt in range(MAX_ATTEMPTS):
            request_id = new_request_id(f"rl{attempt}")
            async with httpx.AsyncClient(base_url=server.base_url, timeout=HTTP_TIMEOUT) as c:
                response = await c.post(
                    "/auth/login",
                    json={"email": email, "password": PASSWORD},
                    headers={"X-Request-ID": request_id},
                )
            answers.setdefault(await server.pid_of(request_id), []).append(response.status_code)
            if len(answers) == 2 and all(len(s) >= SERVER_LIMIT for s in answers.values()):
                break
    finally:
        digest = account_key(email, derive_key(server.env["SECRET_KEY"], ACCOUNT_DIGEST))
        for key in redis_client.scan_iter(match=f"qaa:rl:*/{digest}/*"):
            redis_client.delete(key)

    assert len(answers) == 2 and all(len(s) >= SERVER_LIMIT for s in answers.values()), (
        f"workers did not both answer {SERVER_LIMIT} times in {MAX_ATTEMPTS}: {answers}"
    )
    statuses = [status for per_worker in answers.values() for status in per_worker]
    assert set(statuses) <= {200, 429}, answers
    assert sum(status != 429 for status in statuses) == SERVER_LIMIT, answers
    log = server.log()
    assert log.count("event=rate_limited") == statuses.count(429)
    assert email not in log and PASSWORD not in log
