"""Rate limits on login, register, refresh, the account flows and second-factor codes,
counted by the `limits` library.

Each route has two limits (see `LIMITS`): a narrow one (the account, or the client and
the account, or the session) and a wide one (the client address). Views call
`rate_limit()` with the scopes to spend; every attempt that gets through counts,
whatever its outcome, and the first spent limit answers 429 `rate_limited` with
`Retry-After` (logged as a security event). A refused attempt spends nothing, so a
client that waits gets back in. The strategy is a moving window: no limit lets twice
its amount through around a window boundary, as fixed windows do.

Counters live in this process (`MemoryStorage`), or in Redis when `REDIS_URL` is set so
that every worker and instance spends one budget. If Redis does not answer, counting
goes on in this process, with an ERROR line each time, rather than failing logins: the
limits then hold per worker instead of across them until Redis answers again.

Keys never hold an email or a token: an account is a keyed digest (HMAC-SHA256 under a
key derived from SECRET_KEY) of its lower-cased
email, a session is its id, a client is its address (an IPv6 client by its /64).
In Redis: `qaa:rl:<route>:<scope>/<identifiers>/<amount>/<multiples>/<granularity>`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from quart import Quart

from settings import ConfigError

from . import extensions
from .client import client_ip, client_key
from .crypto.digests import email_digest
from .errors import RateLimited
from .extensions import Slot

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("quart_auth_api.ratelimit")

#: route -> scope -> the setting that holds its limit.
LIMITS: dict[str, dict[str, str]] = {
    "login": {"ip+account": "rate_limit_login", "ip": "rate_limit_login_ip"},
    "register": {"account": "rate_limit_register", "ip": "rate_limit_register_ip"},
    "refresh": {"session": "rate_limit_refresh", "ip": "rate_limit_refresh_ip"},
    "forgot": {"account": "rate_limit_forgot", "ip": "rate_limit_forgot_ip"},
    "verification": {"account": "rate_limit_verification", "ip": "rate_limit_verification_ip"},
    # a password asked again (password or e-mail change): the login's limits, per account
    "reauth": {"account": "rate_limit_login", "ip": "rate_limit_login_ip"},
    # using a link token: 256 random bits need no narrower limit than the client's
    "link": {"ip": "rate_limit_login_ip"},
    # second-factor codes (login challenge, enrolment): per account across mfa_tokens
    "mfa": {"account": "rate_limit_mfa", "ip": "rate_limit_mfa_ip"},
}
#: Every Redis key starts with this (tests give each run its own).
KEY_PREFIX = "qaa:rl"
#: Seconds a Redis connect or command may take: the limiter must not hold up a login.
REDIS_TIMEOUT = 0.5
LOCAL_ERRORS: tuple[type[Exception], ...] = (StorageError, OSError)
REDIS_SCHEMES = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}


@dataclass
class RateLimiter:
    """The parsed limits and, while serving, where they are counted."""

    items: dict[tuple[str, str], RateLimitItem]
    redis_url: str | None
    local: MovingWindowRateLimiter | None = None
    shared: MovingWindowRateLimiter | None = None
    pool: ConnectionPool | None = field(default=None, repr=False)
    storage_errors: tuple[type[Exception], ...] = LOCAL_ERRORS

    async def open(self) -> None:
        self.local = MovingWindowRateLimiter(MemoryStorage())
        if self.redis_url is None:
            return
        # imported here: without REDIS_URL no worker carries the Redis client (~6 MiB)
        from redis.asyncio import ConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self.storage_errors = (RedisError, *LOCAL_ERRORS)
        self.pool = ConnectionPool.from_url(
            self.redis_url,
            socket_connect_timeout=REDIS_TIMEOUT,
            socket_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), retries=1),  # one retry: a pooled connection gone stale
        )
        storage = RedisStorage(
            _async_uri(self.redis_url),
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            connection_pool=self.pool,  # type: ignore[arg-type]  # documented option
        )
        self.shared = MovingWindowRateLimiter(storage)
        if not await storage.check():
            log.error("rate limit storage: Redis does not answer; counting per process for now")

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        self.local = self.shared = self.pool = None

    async def spend(self, checks: list[tuple[str, tuple[str, ...]]], route: str) -> None:
        """Hit each (scope, identifiers) in order; raise `RateLimited` at the first spent."""
        if self.local is None:
            raise RuntimeError("the rate limiter is not open (run the app with its serving hooks)")
        strategy = self.shared or self.local
        for scope, identifiers in checks:
            item = self.items[route, scope]
            try:
                allowed = await strategy.hit(item, *identifiers)
                stats = None if allowed else await strategy.get_window_stats(item, *identifiers)
            except self.storage_errors as error:
                log.error(
                    "rate limit storage unavailable (%s): counting in this process",
                    type(error).__name__,
                )
                strategy = self.local
                allowed = await strategy.hit(item, *identifiers)
                stats = None if allowed else await strategy.get_window_stats(item, *identifiers)
            if stats is not None:
                # strictly after the reset: at the reset itself the oldest hit still counts
                retry_after = max(1, math.floor(stats.reset_time - time.time()) + 1)
                raise RateLimited(retry_after, scope=scope)  # logged as a security event


#: The limiter, when rate limits are on.
LIMITER: Slot[RateLimiter] = Slot("rate limiter")


def init_app(app: Quart) -> None:
    settings = extensions.settings(app)
    if not settings.rate_limit_enabled:
        return
    if settings.redis_url is not None:
        _async_uri(settings.redis_url)  # a bad URL stops start-up, not the first login
    limiter = RateLimiter(
        items={
            (route, scope): _item(route, scope, getattr(settings, name))
            for route, scopes in LIMITS.items()
            for scope, name in scopes.items()
        },
        redis_url=settings.redis_url,
    )
    LIMITER.put(app, limiter)
    app.before_serving(limiter.open)
    app.after_serving(limiter.close)


async def rate_limit(
    route: str, *scopes: str, account: str | None = None, session: str | None = None
) -> None:
    """Count this request against `route`'s limits for `scopes`, in order.

    `account` is the email the request names (for `account` and `ip+account`),
    `session` the session id (for `session`). Raises `RateLimited` (429) when a
    limit is spent; does nothing when rate limits are turned off.
    """
    limiter = LIMITER.find()
    if limiter is None:
        return
    checks = [(scope, _identifiers(scope, account=account, session=session)) for scope in scopes]
    await limiter.spend(checks, route)


def limit_by_ip(route: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Spend `route`'s per-client limit before the view and its guards run."""

    def decorator(view: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(view)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            await rate_limit(route, "ip")
            return await view(*args, **kwargs)

        return wrapper

    return decorator


def account_key(email: str, key: bytes | None = None) -> str:
    """A one-way name for an email address in rate-limit keys: its keyed digest under
    `key` (default: this app's, derived from SECRET_KEY)."""
    return email_digest(email, extensions.digest_key() if key is None else key)[:32]


def _identifiers(scope: str, *, account: str | None, session: str | None) -> tuple[str, ...]:
    if scope == "ip":
        return (client_key(client_ip()),)
    if scope == "account" and account is not None:
        return (account_key(account),)
    if scope == "ip+account" and account is not None:
        return (client_key(client_ip()), account_key(account))
    if scope == "session" and session is not None:
        return (session,)
    raise ValueError(f"rate limit scope {scope!r} is missing its subject")


def _item(route: str, scope: str, limit: str) -> RateLimitItem:
    """`10/minute` as a `limits` item whose keys start with `<route>:<scope>`."""
    parsed = parse(limit)
    return type(parsed)(parsed.amount, parsed.multiples, namespace=f"{route}:{scope}")


def _async_uri(redis_url: str) -> str:
    """`redis://…` as the `async+redis://…` URI that `limits` expects."""
    scheme, separator, rest = redis_url.partition("://")
    if not separator or scheme not in REDIS_SCHEMES:
        raise ConfigError("config error: REDIS_URL: expected redis://, rediss:// or unix://")
    return f"{REDIS_SCHEMES[scheme]}://{rest}"
