"""A network partition from PostgreSQL (connections held open, nothing answered): with
the default settings every request answers within `PARTITION_BOUND` seconds, and when
the network heals, the same app serves right answers at once.

A partition differs from an outage: nothing fails, nothing closes, the database just
never answers. Before the token check had its own deadline, `GET /auth/me` waited for
the 10 s statement timeout and a graceful close on the dead link: 12 s. Here a proxy
(`tests/helpers/partition.py`) stands between the app and PostgreSQL and stops
forwarding on command. A bound against hanging, not a performance figure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from sqlalchemy.engine import make_url

from quart_auth_api import create_app
from settings import Settings, to_async_url
from tests.helpers.http import PASSWORD, bearer, credentials, problem, register
from tests.helpers.partition import Partition, partition_proxy
from tests.helpers.processes import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL"
)

#: Every request answers within this while the database is partitioned away.
PARTITION_BOUND = 5.0
#: Requests in flight at once: more than the pool holds (5 + 10 overflow).
IN_FLIGHT = 24


@pytest.fixture
async def partitioned(postgres_url: str) -> AsyncIterator[tuple[Quart, Partition]]:
    """An app with default settings whose PostgreSQL connections all go through a proxy."""
    url = make_url(to_async_url(postgres_url))
    with partition_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port)
        app = create_app(
            Settings.for_testing(database_url=through.render_as_string(hide_password=False))
        )
        async with app.test_app():
            yield app, proxy


async def timed(request: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


async def test_every_request_answers_503_within_the_bound_and_recovers(partitioned):
    app, proxy = partitioned
    client = app.test_client()
    accounts = [await register(client) for _ in range(3)]
    for account in accounts:  # the pool holds live connections now
        assert (await client.get("/auth/me", headers=account.auth)).status_code == 200

    proxy.cut()
    requests = [
        *(client.get("/auth/me", headers=accounts[n % 3].auth) for n in range(IN_FLIGHT // 2)),
        *(client.post("/auth/login", json=credentials(a.email)) for a in accounts),
        *(client.post("/auth/refresh", headers=a.refresh_auth) for a in accounts),
        client.get("/readyz"),
        client.post(
            "/auth/register",
            json={"email": "late@example.com", "password": PASSWORD, "name": "Late"},
        ),
    ]
    answers = await asyncio.gather(*(timed(request) for request in requests))
    slowest = max(seconds for _, seconds in answers)

    assert slowest < PARTITION_BOUND, f"a request took {slowest:.1f}s during the partition"
    for response, _ in answers:
        await problem(response, 503, "service_unavailable")
    proxy.heal()
    for account in accounts:  # right answers at once: no connection that timed out reused
        me = await client.get("/auth/me", headers=account.auth)
        assert me.status_code == 200
        assert (await me.get_json())["email"] == account.email
    fresh = await client.post("/auth/login", json=credentials(accounts[0].email))
    assert fresh.status_code == 200
    tokens = await fresh.get_json()
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 200
