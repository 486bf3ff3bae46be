"""Prometheus metrics at /metrics (prometheus-client), off unless METRICS_ENABLED.

With several workers, `run.py` gives them one `PROMETHEUS_MULTIPROC_DIR` and /metrics
aggregates every worker's samples. With METRICS_TOKEN set, /metrics needs
`Authorization: Bearer <METRICS_TOKEN>`.

- `http_requests_total{method,route,status}` and
  `http_request_duration_seconds{method,route}`: `route` is the URL rule
  (`/auth/me`), never the raw path, so labels stay few;
- `auth_events_total{event}`: security events (`login_ok`, `login_failed`,
  `rate_limited`, `refresh_token_reused`, ...), the login outcomes among them;
- `auth_active_sessions`: live sessions, counted when /metrics is scraped.
"""

from __future__ import annotations

import hmac
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from quart import Quart, Response, current_app, g, request
from quart_schema import hide

from .db import get_db
from .errors import TokenInvalid, TokenMissing

REQUESTS = Counter("http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS = Counter("auth_events_total", "Security events, by name.", ["event"])
ACTIVE_SESSIONS = Gauge(
    "auth_active_sessions",
    "Sessions neither revoked nor expired (counted at scrape time).",
    multiprocess_mode="mostrecent",
)


def count_event(event: str) -> None:
    EVENTS.labels(event=event).inc()


def init_app(app: Quart) -> None:
    settings = app.extensions["settings"]
    if not settings.metrics_enabled:
        return
    app.after_request(_observe)
    app.add_url_rule("/metrics", "metrics", hide(_metrics), methods=["GET"])


async def _observe(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    REQUESTS.labels(request.method, rule, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        LATENCY.labels(request.method, rule).observe(time.perf_counter() - started)
    return response


async def _metrics() -> Response:
    token = current_app.extensions["settings"].metrics_token
    if token is not None:
        sent = request.headers.get("Authorization", "")
        if not sent.startswith("Bearer "):
            raise TokenMissing()
        if not hmac.compare_digest(sent[7:].encode(), token.get_secret_value().encode()):
            raise TokenInvalid()
    from .services import count_live_sessions  # services -> audit -> this module

    ACTIVE_SESSIONS.set(await count_live_sessions(get_db()))
    response = Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def _registry() -> CollectorRegistry:
    if current_app.extensions["settings"].prometheus_multiproc_dir is None:
        from prometheus_client import REGISTRY

        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
