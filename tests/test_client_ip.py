"""The client address for sessions and rate limits: X-Forwarded-For only when trusted."""

from __future__ import annotations

import pytest
from quart import Quart

from quart_auth_api import create_app
from quart_auth_api.client import client_ip
from settings import Settings


def app_with(proxies: int) -> Quart:
    app = create_app(Settings.for_testing(forwarded_proxy_count=proxies))

    @app.get("/ip")
    async def ip() -> dict:
        return {"ip": client_ip()}

    return app


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, None, "10.0.0.7"),
        (0, "203.0.113.9", "10.0.0.7"),  # not trusted: a client can write anything
        (1, "203.0.113.9", "203.0.113.9"),
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the spoofed first hop is ignored
        (2, "198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (2, "203.0.113.9", "10.0.0.7"),  # fewer hops than proxies: the peer
        (1, "x" * 300, "10.0.0.7"),  # not an address: the peer
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
async def test_client_ip(proxies, forwarded, expected):
    app = app_with(proxies)
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with app.test_app():
        response = await app.test_client().get(
            "/ip", headers=headers, scope_base={"client": ("10.0.0.7", 40000)}
        )
    assert (await response.get_json())["ip"] == expected
