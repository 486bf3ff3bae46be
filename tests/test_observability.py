"""Structured logs and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from quart import Quart

from quart_auth_api import create_app
from quart_auth_api.logs import configure_logging
from settings import Settings
from tests.helpers.http import PASSWORD, bearer, problem, register
from tests.helpers.logs import captured_log
from tests.helpers.processes import PROJECT_ROOT, production_env, run_alembic, serve


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") or line.startswith(f"{name} "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()) or not wanted:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
async def metrics_app(database_url: str) -> AsyncIterator[Quart]:
    app = create_app(
        Settings.for_testing(
            database_url=database_url, metrics_enabled=True, metrics_token="m" * 32
        )
    )
    async with app.test_app():
        yield app


METRICS_AUTH = {"Authorization": "Bearer " + "m" * 32}
#: A token production accepts (the one above is for testing only).
PRODUCTION_METRICS_TOKEN = "mT4kQ9vX2pL7wR3nB8cY5hD1sF6gJ0aZ"


async def test_metrics_are_off_by_default(client):
    await problem(await client.get("/metrics"), 404, "not_found")


async def test_metrics_need_the_token(metrics_app):
    client = metrics_app.test_client()
    await problem(await client.get("/metrics"), 401, "token_missing")
    await problem(
        await client.get("/metrics", headers={"Authorization": "Bearer wrong"}),
        401,
        "token_invalid",
    )
    assert (await client.get("/metrics", headers=METRICS_AUTH)).status_code == 200


async def test_metrics_count_requests_logins_and_sessions(metrics_app):
    client = metrics_app.test_client()
    before = await (await client.get("/metrics", headers=METRICS_AUTH)).get_data(as_text=True)
    account = await register(client)
    await client.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    await client.post("/auth/login", json={"email": account.email, "password": "wrong pass"})
    await client.get("/auth/me", headers=account.auth)
    await client.get("/auth/me", headers=bearer("not.a.token"))
    await client.get("/no/such/path")
    text = await (await client.get("/metrics", headers=METRICS_AUTH)).get_data(as_text=True)

    def grew(name: str, **labels: str) -> float:
        return sample(text, name, **labels) - sample(before, name, **labels)

    assert grew("http_requests_total", method="GET", route="/auth/me", status="200") == 1
    assert grew("http_requests_total", method="GET", route="/auth/me", status="401") == 1
    assert grew("http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert grew("auth_events_total", event="login_ok") == 1
    assert grew("auth_events_total", event="login_failed") == 1
    assert grew("auth_events_total", event="register") == 1
    assert sample(text, "auth_active_sessions") == 2  # registration + login
    assert grew("http_request_duration_seconds_count", method="GET", route="/auth/me") == 2
    assert "/no/such/path" not in text  # raw paths never become labels


async def test_json_logs_one_access_line_per_request(app, client):
    with captured_log(app, "json") as captured:
        account = await register(client)
        await client.get("/auth/me", headers=account.auth)
    lines = [json.loads(line) for line in captured.lines()]
    access = [line for line in lines if line["logger"] == "quart_auth_api.access"]
    assert [(line["method"], line["path"], line["status"]) for line in access] == [
        ("POST", "/auth/register", 201),
        ("GET", "/auth/me", 200),
    ]
    for line in access:
        assert line["duration_ms"] >= 0 and line["pid"] > 0
        assert re.fullmatch(r"[0-9a-f]{32}", line["request_id"])
        assert line["level"] == "INFO"
    event = next(line for line in lines if line.get("event") == "register")
    assert event["user"] == account.user["id"]
    text = captured.text()
    assert account.access_token not in text and PASSWORD not in text


@pytest.mark.server
def test_two_workers_report_one_set_of_metrics(tmp_path: Path) -> None:
    """Every request is counted once, whichever worker answered it."""
    database_url = f"sqlite:///{tmp_path / 'metrics.db'}"
    run_alembic(database_url, "upgrade", "head")
    env = production_env(
        database_url, workers=2, METRICS_ENABLED="true", METRICS_TOKEN=PRODUCTION_METRICS_TOKEN
    )
    requests = 40
    auth = {"Authorization": f"Bearer {PRODUCTION_METRICS_TOKEN}"}
    with serve(env, tmp_path / "server.log") as server:
        before = httpx.get(f"{server.base_url}/metrics", headers=auth, timeout=5).text
        for _ in range(requests):  # a fresh connection each: the kernel picks the worker
            assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
        after = httpx.get(f"{server.base_url}/metrics", headers=auth, timeout=5).text
        log = server.log()
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    served = sample(after, "http_requests_total", **labels)
    assert served - sample(before, "http_requests_total", **labels) == requests
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "quart_auth_api.access"]
    assert len({line["pid"] for line in access if line["path"] == "/healthz"}) == 2, (
        "both workers should have answered some requests"
    )


def test_log_level_is_applied():
    configure_logging(Settings.for_testing(log_level="WARNING"))
    try:
        assert logging.getLogger("quart_auth_api").level == logging.WARNING
    finally:
        configure_logging(Settings.for_testing())


@pytest.mark.parametrize(
    "header",
    ["Basic " + "m" * 32, "Bearer", "Bearer a b", "Bearer" + "m" * 32],
    ids=["basic", "no-token", "two-tokens", "no-space"],
)
async def test_metrics_read_the_token_with_the_guards_one_parser(metrics_app, header):
    """A malformed Authorization header is what the guards answer: 401 token_invalid."""
    client = metrics_app.test_client()
    response = await client.get("/metrics", headers={"Authorization": header})
    await problem(response, 401, "token_invalid")


async def test_metrics_accept_the_bearer_scheme_in_any_case(metrics_app):
    client = metrics_app.test_client()
    response = await client.get("/metrics", headers={"Authorization": "bearer " + "m" * 32})
    assert response.status_code == 200


@pytest.mark.server
def test_a_metrics_directory_with_other_files_stops_start_up_and_keeps_them(tmp_path: Path):
    """PROMETHEUS_MULTIPROC_DIR pointed at instance/ used to delete app.db (`*.db`)."""
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    run_alembic(database_url, "upgrade", "head")
    before = (tmp_path / "app.db").read_bytes()
    env = production_env(
        database_url,
        workers=2,
        METRICS_ENABLED="true",
        METRICS_TOKEN=PRODUCTION_METRICS_TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    result = subprocess.run(
        [sys.executable, "run.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"config error: PROMETHEUS_MULTIPROC_DIR: {tmp_path} is not empty and is not this "
        "service's metrics directory; give it an empty directory of its own"
    )
    assert (tmp_path / "app.db").read_bytes() == before


@pytest.mark.server
def test_only_prometheus_samples_are_removed_from_the_services_own_directory(tmp_path: Path):
    metrics = tmp_path / "metrics"
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    run_alembic(database_url, "upgrade", "head")
    env = production_env(
        database_url,
        workers=2,
        METRICS_ENABLED="true",
        METRICS_TOKEN=PRODUCTION_METRICS_TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(metrics),
    )
    with serve(env, tmp_path / "first.log"):
        assert (metrics / ".quart-auth-api-metrics").is_file()
    stale = ["counter_4242.db", "gauge_livesum_4242.db", "histogram_4242.db"]
    kept = ["notes.txt", "app.db", "counter_backup.db"]
    for name in stale + kept:
        (metrics / name).write_text("x")
    with serve(env, tmp_path / "second.log"):
        present = {path.name for path in metrics.iterdir()}
    assert not present & set(stale)
    assert set(kept) <= present


def test_production_logs_one_warning_line_per_deliberate_choice(tmp_path: Path):
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    package = logging.getLogger("quart_auth_api")
    package.addHandler(handler)
    try:
        create_app(
            Settings.for_testing(
                env="production",
                secret_key="Qm7vK2pXz9LwR4tNc8bY3hDs6FjA1gEu",
                jwt_secret_key="Zt5nH8qLx2VcW9rMb4kJ7pYd3sGf6aTe",
                database_url=f"sqlite:///{tmp_path / 'app.db'}",
                bcrypt_rounds=10,
                rate_limit_enabled=False,
            )
        )
    finally:
        package.removeHandler(handler)
        configure_logging(Settings.for_testing())
    assert [line for line in lines if line.startswith("production: ")] == [
        "production: RATE_LIMIT_ENABLED=false: logins and registrations are not limited",
        "production: MAIL_BACKEND=none: no mail is sent (set MAIL_BACKEND=smtp)",
    ]
