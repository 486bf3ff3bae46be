"""The sweeps after the main figures, interleaved as they are (`--sweep-duration` seconds
per figure): scaling (GET /auth/me and login at 1, 2 and 4 workers, and the ceiling's
GET /auth/me), and table growth (GET /auth/me as the table each side checks on every
request grows; PostgreSQL)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from bench.common import ALL_SIDES, SIDES
from bench.harness import Postgres
from bench.rounds import me_figures
from bench.suite import Bench, Step

GROWTH_TABLE = {"service": "auth_sessions", "flask": "token_blocklist"}
SCALING_KEYS = ("me_rps", "me_p50_ms", "me_p99_ms", "login_rps", "login_pct_of_bound")
GROWTH_KEYS = ("me_rps", "me_p50_ms", "me_p99_ms")


def scaling(bench: Bench) -> dict[str, Any]:
    """Per worker count: the three sides at once (16 seeded users each), then rounds of
    GET /auth/me on every side and POST /auth/login on the service and Flask."""
    plan = bench.plan
    backend = plan.scaling_backend
    table: dict[str, Any] = {"backend": backend, "duration": plan.sweep_duration, "workers": {}}
    for workers in plan.scaling_workers:
        bench.say(f"scaling on {backend}: {workers} worker(s), {plan.rounds} rounds")
        with ExitStack() as stack:
            servers = bench.start_sides(stack, backend, workers, f"{backend}-scaling", ALL_SIDES)
            files = bench.seed_sides(servers, max(16, plan.connections), f"scale{workers}")
            bench.warm_up(servers, files)
            me = {side: bench.me_load(files[side], plan.sweep_duration) for side in servers}
            connections = max(plan.login_connections, 4 * workers)
            logins = {
                side: bench.load(
                    "login",
                    connections=connections,
                    lines=files[side]["emails"],
                    duration=plan.sweep_duration,
                )
                for side in SIDES
            }
            steps = [
                Step("me", f"GET /auth/me, {workers}w", me),
                Step("login", f"POST /auth/login, {workers}w", logins),
            ]
            row: dict[str, Any] = {side: {"rounds": []} for side in servers}
            for number in range(1, plan.rounds + 1):
                for side, loads in bench.in_turn(number, servers, steps).items():
                    figures = me_figures(loads["me"])
                    if "login" in loads:  # login_pct_of_bound: report.conclude_results()
                        figures.update(
                            login_rps=round(loads["login"].rps, 2), login_pct_of_bound=0.0
                        )
                    row[side]["rounds"].append(figures)
        table["workers"][str(workers)] = row
    return table


def growth(bench: Bench) -> dict[str, Any]:
    """The service and Flask at once; per table size: both tables grown, then rounds of
    GET /auth/me on one and the other."""
    plan = bench.plan
    result: dict[str, Any] = {
        "backend": "postgresql",
        "duration": plan.sweep_duration,
        "tables": GROWTH_TABLE,
        "rows": {},
    }
    bench.say(f"table growth on postgresql: {plan.workers} worker(s), {plan.rounds} rounds")
    with ExitStack() as stack:
        servers = bench.start_sides(stack, "postgresql", plan.workers, "postgresql-growth", SIDES)
        files = bench.seed_sides(servers, max(16, plan.connections), "growth")
        me = {side: bench.me_load(files[side], plan.sweep_duration) for side in servers}
        for rows in plan.growth_rows:
            size: dict[str, Any] = {}
            for side, server in servers.items():
                started = time.monotonic()
                count = fill(bench.postgres, server.database_url, side, rows)
                bench.say(
                    f"  {side:7} {GROWTH_TABLE[side]} at {count} rows "
                    f"({time.monotonic() - started:.0f}s to fill)"
                )
                size[side] = {"table_rows": count, "rounds": []}
            bench.warm_up(servers, files)
            step = Step("me", f"GET /auth/me, {rows} rows", me)
            for number in range(1, plan.rounds + 1):
                for side, loads in bench.in_turn(number, servers, [step]).items():
                    size[side]["rounds"].append(me_figures(loads["me"]))
            result["rows"][str(rows)] = size
    return result


def fill(pg: Postgres, url: str, side: str, rows: int) -> int:
    """Grow the side's per-request table to `rows` rows; its row count."""
    table = GROWTH_TABLE[side]
    count = int(pg.psql(url, f"SELECT count(*) FROM {table}"))  # noqa: S608
    missing = rows - count
    if missing > 0 and side == "service":
        # other sessions of the seeded users, a quarter of them revoked, as in life
        pg.psql(
            url,
            "INSERT INTO auth_sessions (id, user_id, generation, created_at, last_used_at,"  # noqa: S608 (an int)
            " expires_at, revoked_at, revoked_reason)"
            " SELECT gen_random_uuid(), u.ids[1 + g % cardinality(u.ids)], 0, now(), now(),"
            " now() + interval '30 days',"
            " CASE WHEN g % 4 = 0 THEN now() END, CASE WHEN g % 4 = 0 THEN 'logout' END"
            f" FROM generate_series(1, {missing}) AS g,"
            " (SELECT array_agg(id) AS ids FROM users) AS u",
        )
    elif missing > 0:
        pg.psql(
            url,
            "INSERT INTO token_blocklist (jti, type, created_at)"  # noqa: S608 (an int)
            " SELECT gen_random_uuid()::text, 'access', now()"
            f" FROM generate_series(1, {missing})",
        )
    # vacuum and analyze now, so autovacuum does not wake up on the bulk insert
    # during the measurement
    pg.psql(url, f"VACUUM (ANALYZE) {table}")
    return int(pg.psql(url, f"SELECT count(*) FROM {table}"))  # noqa: S608
