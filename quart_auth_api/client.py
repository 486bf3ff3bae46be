"""Who is calling: the one place that reads the client's address and user agent.

`client_ip()` is the address every log line, session row and rate limit uses;
`client_key()` is that address as a rate-limit key; `Client` is what a new session
records about the caller (never used for authorisation).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from quart import request

from . import extensions


@dataclass(frozen=True)
class Client:
    """Who opened a session (for the session row, never for authorisation)."""

    user_agent: str | None
    ip: str | None

    @classmethod
    def of_request(cls) -> Client:
        return cls(user_agent=request.headers.get("User-Agent"), ip=client_ip())


def client_ip() -> str | None:
    """The client's address: the peer, or, behind `FORWARDED_PROXY_COUNT` trusted proxies
    that each append to X-Forwarded-For, the address the outermost of them saw."""
    proxies = extensions.settings().forwarded_proxy_count
    if proxies:
        forwarded = [
            hop.strip()
            for header in request.headers.getlist("X-Forwarded-For")
            for hop in header.split(",")
            if hop.strip()
        ]
        if len(forwarded) >= proxies and _is_ip(forwarded[-proxies]):
            return forwarded[-proxies]
    return request.remote_addr


def client_key(address: str | None) -> str:
    """The client address as a key: an IPv6 client by its /64, the block one subscriber
    gets, so that walking through its own addresses does not reset its budget."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Network((ip, 64), strict=False).network_address}/64"
    return str(ip)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
