"""What a run measures and how: the figures, the plan, and `Bench`, which starts each side on
a fresh database, seeds it and drives wrk against it."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import bcrypt

from bench.common import PASSWORD, SIDES, BenchError
from bench.harness import Postgres, Server, Sides, fresh_database, service_pool_size, start_server
from bench.load import Load, LoadResult, MemorySampler, Wrk, cpu_seconds, tree_memory_mb, wait_idle
from bench.seed import Seed, check_contract, seed_users, write_lines

FIGURES: list[tuple[str, str, str, str]] = [
    ("me_rps", "GET /auth/me throughput", "req/s", "higher"),
    ("me_p50_ms", "GET /auth/me p50", "ms", "lower"),
    ("me_p99_ms", "GET /auth/me p99", "ms", "lower"),
    ("login_rps", "POST /auth/login throughput", "req/s", "higher"),
    ("login_pct_of_bound", "POST /auth/login, % of bcrypt bound", "%", "higher"),
    ("me_idle_p99_ms", "GET /auth/me p99, idle probe", "ms", "lower"),
    ("me_under_login_p99_ms", "GET /auth/me p99, logins saturating", "ms", "lower"),
    ("me_p99_under_login_ratio", "  /auth/me p99 under logins ÷ idle p99", "x", "lower"),
    ("register_rps", "POST /auth/register burst throughput", "req/s", "higher"),
    ("refresh_rps", "POST /auth/refresh throughput", "req/s", "higher"),
    ("mem_idle_mb", "memory (PSS), idle", "MiB", "lower"),
    ("mem_load_mb", "memory (PSS), peak under load", "MiB", "lower"),
]
FIGURE_KEYS = [key for key, *_ in FIGURES]
SIDE_LABEL = {"service": "this (Quart)", "flask": "Flask"}
GROWTH_TABLE = {"service": "auth_sessions", "flask": "token_blocklist"}


@dataclass(frozen=True)
class Plan:
    """Everything that shapes a run (recorded in the result)."""

    smoke: bool
    duration: float
    workers: int
    backends: tuple[str, ...]
    bcrypt_rounds: int
    seed_users: int
    connections: int
    login_connections: int
    probe_connections: int
    probe_delay_ms: int
    wrk_threads: int
    scaling_workers: tuple[int, ...]
    scaling_backend: str
    growth_rows: tuple[int, ...]
    reference_worker_class: str
    mfa_rounds: int  # bench/mfa.py: interleaved rounds of each figure
    mfa_samples: int  # bench/mfa.py: timed challenges (and as many timed logins)


# -- the run ----------------------------------------------------------------------------


class Bench:
    def __init__(self, plan: Plan, sides: Sides, wrk: Wrk, pg: Postgres | None, out: Path) -> None:
        self.plan = plan
        self.sides = sides
        self.wrk = wrk
        self.pg = pg
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.work = out / "work"
        self.work.mkdir(exist_ok=True)
        self.bound: dict[str, float] = {}

    def say(self, message: str) -> None:
        print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)

    def load(self, script: str, **options: Any) -> Load:
        options.setdefault("duration", self.plan.duration)
        options.setdefault("threads", self.plan.wrk_threads)
        return Load(script=script, **options)

    def drain(self, server: Server) -> None:
        """Let the server finish what the previous figure left queued before measuring."""
        waited = wait_idle(server.process.pid)
        if waited > 2:
            self.say(f"  {server.side:7} (waited {waited:.1f}s for the server to go idle)")

    def run_load(self, server: Server, load: Load, what: str, *, drain: bool = True) -> LoadResult:
        if drain:
            self.drain(server)
        workers = server.worker_pids()
        before = cpu_seconds(workers)
        result = self.wrk.run(server.base_url, load)
        after = cpu_seconds(workers)
        used = sorted((round(after[pid] - before[pid], 2) for pid in workers), reverse=True)
        result = replace(result, worker_cpu_s=tuple(used))
        self._report_load(server.side, what, result)
        return result

    def _report_load(self, side: str, what: str, result: LoadResult) -> None:
        errors = {k: v for k, v in result.errors.items() if v}
        extra = f" errors={errors}" if errors else ""
        if result.failed or result.starved:
            extra += f" failed={result.failed} starved={result.starved}"
        cpu = result.worker_cpu_s
        if len(cpu) > 1 and cpu[0] > 1 and cpu[-1] < cpu[0] / 4:
            extra += f" uneven: workers used {'/'.join(f'{c:.1f}' for c in cpu)} CPU-s"
        self.say(
            f"  {side:7} {what:28} {result.rps:9.1f} req/s  p50 {result.latency_ms['p50']:8.2f} ms"
            f"  p99 {result.latency_ms['p99']:8.2f} ms{extra}"
        )

    @property
    def warmup(self) -> float:
        return 1.0 if self.plan.smoke else min(3.0, self.plan.duration)

    # -- bcrypt bound ---------------------------------------------------------------

    def time_bcrypt(self) -> float:
        """Seconds per bcrypt check at the run's cost on one core (median of a few)."""
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(self.plan.bcrypt_rounds))
        samples = []
        repeats = 5 if self.plan.bcrypt_rounds >= 10 else 50
        for _ in range(repeats):
            started = time.perf_counter()
            bcrypt.checkpw(PASSWORD.encode(), hashed)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    def measure_bcrypt(self, *earlier: float) -> dict[str, Any]:
        """The bcrypt bound: cores / seconds per hash. Timed at the start and the end of
        the run; the faster timing counts (the machine's capacity, not a busy moment)."""
        timings = [*earlier, self.time_bcrypt()]
        seconds = min(timings)
        cores = os.cpu_count() or 1
        return {
            "rounds": self.plan.bcrypt_rounds,
            "seconds_per_hash": round(seconds, 6),
            "timings": [round(t, 6) for t in timings],
            "cores": cores,
            "bound_per_s": round(cores / seconds, 3),
        }

    # -- one side of one backend ----------------------------------------------------

    def seed(self, server: Server, count: int, tag: str) -> tuple[Seed, dict[str, Path]]:
        started = time.monotonic()
        seed = seed_users(
            server.base_url,
            count,
            prefix=f"{tag}-{uuid.uuid4().hex[:8]}",
            concurrency=min(16, 4 * server.workers),
        )
        self.say(f"  {server.side:7} seeded {count} users in {time.monotonic() - started:.1f}s")
        folder = self.work / f"{tag}-{server.side}-{uuid.uuid4().hex[:6]}"
        folder.mkdir()
        files = {
            "access": write_lines(folder / "access.txt", seed.access_tokens),
            "refresh": write_lines(folder / "refresh.txt", seed.refresh_tokens),
            "emails": write_lines(folder / "emails.txt", seed.emails),
        }
        return seed, files

    def measure_side(self, server: Server, backend: str) -> dict[str, Any]:
        plan = self.plan
        seed, files = self.seed(server, plan.seed_users, f"seed-{backend}")
        check_contract(server.base_url, seed)
        time.sleep(1.0)
        rss_idle, pss_idle = tree_memory_mb(server.process.pid)
        loads: dict[str, LoadResult] = {}
        me = self.load("me", connections=plan.connections, lines=files["access"])
        probe = replace(
            me, connections=plan.probe_connections, delay_ms=plan.probe_delay_ms, threads=1
        )
        logins = self.load("login", connections=plan.login_connections, lines=files["emails"])
        with MemorySampler(server.process.pid) as memory:
            self.wrk.run(server.base_url, replace(me, duration=self.warmup))
            loads["me"] = self.run_load(server, me, "GET /auth/me")
            loads["me_idle_probe"] = self.run_load(server, probe, "GET /auth/me probe, idle")
            loads["login"] = self.run_load(server, logins, "POST /auth/login")
            # 3: the probe while logins saturate the CPU (they start first, end last)
            background = replace(logins, duration=plan.duration + 3)
            self.drain(server)
            login_process = self.wrk.start(server.base_url, background)
            try:
                time.sleep(1.5)
                loads["me_under_login_probe"] = self.run_load(
                    server, probe, "GET /auth/me probe, logins", drain=False
                )
            finally:
                loads["login_background"] = self.wrk.finish(login_process, background)
            self._report_load(
                server.side, "POST /auth/login (background)", loads["login_background"]
            )
            loads["register"] = self.run_load(
                server,
                self.load(
                    "register",
                    connections=plan.login_connections,
                    run_id=f"reg-{uuid.uuid4().hex[:10]}",
                ),
                "POST /auth/register",
            )
            loads["refresh"] = self.run_load(
                server,
                self.load("refresh", connections=plan.connections, lines=files["refresh"]),
                "POST /auth/refresh",
            )
        idle_p99 = loads["me_idle_probe"].latency_ms["p99"]
        busy_p99 = loads["me_under_login_probe"].latency_ms["p99"]
        figures = {
            "me_rps": loads["me"].rps,
            "me_p50_ms": loads["me"].latency_ms["p50"],
            "me_p99_ms": loads["me"].latency_ms["p99"],
            "login_rps": loads["login"].rps,
            "login_pct_of_bound": 0.0,  # apply_bound(), once the bound is final
            "me_idle_p99_ms": idle_p99,
            "me_under_login_p99_ms": busy_p99,
            "me_p99_under_login_ratio": busy_p99 / idle_p99 if idle_p99 else 0.0,
            "register_rps": loads["register"].rps,
            "refresh_rps": loads["refresh"].rps,
            "mem_idle_mb": pss_idle,
            "mem_load_mb": memory.peak_pss,
        }
        return {
            "figures": {key: round(value, 3) for key, value in figures.items()},
            # RSS counts every page the workers share with their parent once per process
            "rss_mb": {"idle": round(rss_idle, 1), "load": round(memory.peak_rss, 1)},
            "processes": len(server.worker_pids()) + 1,
            "loads": {name: result.as_dict() for name, result in loads.items()},
        }

    def main_figures(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for backend in self.plan.backends:
            self.say(f"{backend}: {self.plan.workers} worker(s) each")
            results[backend] = {}
            for side in SIDES:
                with (
                    fresh_database(backend, side, self.work, self.pg) as url,
                    self.server(side, url, self.plan.workers, f"{backend}-main") as server,
                ):
                    results[backend][side] = self.measure_side(server, backend)
        return results

    def server(self, side: str, url: str, workers: int, tag: str) -> Any:
        log = self.logs / f"{tag}-{side}-w{workers}.log"
        pool = service_pool_size(self.plan.connections, workers)
        return start_server(self.sides, side, url, workers, log, pool_size=pool)

    # -- scaling ----------------------------------------------------------------------

    def scaling(self) -> dict[str, Any]:
        plan = self.plan
        backend = plan.scaling_backend
        table: dict[str, Any] = {"backend": backend, "workers": {}}
        for workers in plan.scaling_workers:
            self.say(f"scaling on {backend}: {workers} worker(s)")
            row: dict[str, Any] = {}
            for side in SIDES:
                with (
                    fresh_database(backend, side, self.work, self.pg) as url,
                    self.server(side, url, workers, f"{backend}-scaling") as server,
                ):
                    _, files = self.seed(server, max(16, plan.connections), f"scale{workers}")
                    me = self.load("me", connections=plan.connections, lines=files["access"])
                    self.wrk.run(server.base_url, replace(me, duration=self.warmup))
                    me_result = self.run_load(server, me, f"GET /auth/me, {workers}w")
                    login = self.run_load(
                        server,
                        self.load(
                            "login",
                            connections=max(plan.login_connections, 4 * workers),
                            lines=files["emails"],
                        ),
                        f"POST /auth/login, {workers}w",
                    )
                row[side] = {
                    "me_rps": round(me_result.rps, 2),
                    "me_p99_ms": me_result.latency_ms["p99"],
                    "login_rps": round(login.rps, 2),
                    "login_pct_of_bound": 0.0,  # apply_bound()
                }
            table["workers"][str(workers)] = row
        return table

    # -- growth of the per-request table ------------------------------------------------

    @property
    def postgres(self) -> Postgres:
        if self.pg is None:
            raise BenchError("this figure needs PostgreSQL (--backends ...,postgresql)")
        return self.pg

    def growth(self) -> dict[str, Any]:
        plan = self.plan
        result: dict[str, Any] = {"backend": "postgresql", "tables": GROWTH_TABLE, "rows": {}}
        for side in SIDES:
            with (
                fresh_database("postgresql", side, self.work, self.pg) as url,
                self.server(side, url, plan.workers, "postgresql-growth") as server,
            ):
                _, files = self.seed(server, max(16, plan.connections), "growth")
                me = self.load("me", connections=plan.connections, lines=files["access"])
                for rows in plan.growth_rows:
                    started = time.monotonic()
                    count = self.fill(url, side, rows)
                    self.say(
                        f"  {side:7} {GROWTH_TABLE[side]} at {count} rows "
                        f"({time.monotonic() - started:.0f}s to fill)"
                    )
                    self.wrk.run(server.base_url, replace(me, duration=self.warmup))
                    measured = self.run_load(server, me, f"GET /auth/me, {rows} rows")
                    result["rows"].setdefault(str(rows), {})[side] = {
                        "table_rows": count,
                        "me_rps": round(measured.rps, 2),
                        "me_p50_ms": measured.latency_ms["p50"],
                        "me_p99_ms": measured.latency_ms["p99"],
                    }
        return result

    def fill(self, url: str, side: str, rows: int) -> int:
        """Grow the side's per-request table to `rows` rows; its row count."""
        pg = self.postgres
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
