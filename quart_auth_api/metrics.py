"""Prometheus instruments (prometheus-client), observed unless METRICS_ENABLED is off.

The `/metrics` view is `blueprints/metrics.py`. With several workers, `run.py` gives
them one `PROMETHEUS_MULTIPROC_DIR` and `/metrics` aggregates every worker's samples.

- `http_requests_total{method,route,status}` and
  `http_request_duration_seconds{method,route}`: `route` is the URL rule
  (`/auth/me`), never the raw path, so labels stay few;
- `auth_events_total{event}`: security events (`login_ok`, `login_failed`,
  `rate_limited`, `refresh_token_reused`, ...), the login outcomes among them;
- `auth_active_sessions`: live sessions, counted when /metrics is scraped.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from quart import Quart, Response, g, request

from . import extensions

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
    if extensions.settings(app).metrics_enabled:
        app.after_request(_observe)


async def _observe(response: Response) -> Response:
    rule = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    REQUESTS.labels(request.method, rule, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        LATENCY.labels(request.method, rule).observe(time.perf_counter() - started)
    return response


def exposition() -> Response:
    """Every sample in Prometheus' text format (all workers' with a shared directory)."""
    response = Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def _registry() -> CollectorRegistry:
    if extensions.settings().prometheus_multiproc_dir is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
