"""Benchmark this service against the Flask reference, in one run, on the same machine.

    python -m bench.run              # the full run (`make bench`): several minutes
    python -m bench.run --smoke      # a second per figure, SQLite, 1 worker (`make bench-smoke`)
    python -m bench.run --profile    # py-spy profiles of GET /auth/me and POST /auth/refresh

For each backend (SQLite, PostgreSQL) and each side (this service under hypercorn
with uvloop and production settings; the Flask reference under gunicorn), with the
same number of workers, the same bcrypt cost and a fresh database: seed users through
the API, check both sides answer the same API, then measure with wrk:

1. GET /auth/me throughput and p50/p99 latency;
2. POST /auth/login throughput, as a percentage of the bcrypt bound (cores / seconds
   per hash, measured in this run);
3. GET /auth/me p99 (a paced probe) while logins saturate the CPU, as a ratio to its
   idle p99;
4. POST /auth/register burst throughput (a new email per request);
5. POST /auth/refresh throughput, every refresh token used exactly once (each answer's
   rotated token is queued for a later request);
6. resident memory of the server's processes, idle and at the peak under load.

Then the scaling figures: /auth/me and login at 1, 2 and 4 workers, and /auth/me with
10 thousand vs 1 million rows in the table each side checks per request (sessions here,
the blocklist there) on PostgreSQL. Prints every figure for both sides with the ratio
this/Flask, writes result.json and chart.png (and bench/latest.* for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import psutil

from bench.harness import (
    BENCH_DIR,
    PASSWORD,
    PROJECT_ROOT,
    SIDES,
    BenchError,
    Load,
    LoadResult,
    MemorySampler,
    Postgres,
    Seed,
    Server,
    Sides,
    Wrk,
    WrkMissing,
    check_contract,
    cpu_seconds,
    ensure_wrk,
    fresh_database,
    run_checked,
    seed_users,
    service_pool_size,
    service_variables,
    start_server,
    tree_memory_mb,
    wait_idle,
    write_lines,
)

#: (key, label, unit, which way is better)
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
SERVICE_PACKAGES = [
    "Quart",
    "Hypercorn",
    "uvloop",
    "SQLAlchemy",
    "aiosqlite",
    "asyncpg",
    "python-jose",
    "bcrypt",
    "pydantic",
]
REFERENCE_PACKAGES = [
    "Flask",
    "Flask-JWT-Extended",
    "PyJWT",
    "Flask-SQLAlchemy",
    "SQLAlchemy",
    "gunicorn",
    "bcrypt",
    "psycopg",
    "psycopg-binary",
]
LATEST_JSON = BENCH_DIR / "latest.json"
LATEST_PNG = BENCH_DIR / "latest.png"
EXIT_WRK_MISSING = 3


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


# -- set-up and report --------------------------------------------------------------------


def package_versions(python: Path, names: list[str]) -> dict[str, str]:
    code = (
        "import json, sys, sqlite3, importlib.metadata as m\n"
        "out = {}\n"
        f"for name in {names!r}:\n"
        "    try: out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError: out[name] = None\n"
        "out['python'] = sys.version.split()[0]\n"
        "out['sqlite'] = sqlite3.sqlite_version\n"
        "print(json.dumps(out))\n"
    )
    return json.loads(run_checked([str(python), "-c", code], timeout=60).strip().splitlines()[-1])


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": os_name,
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def service_revision() -> dict[str, Any]:
    """The service's git commit, and whether the work tree had uncommitted changes."""
    try:
        commit = subprocess_output(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"]).strip()
        status = subprocess_output(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain"])
    except OSError:
        return {"commit": None, "dirty": None}
    return {"commit": commit[:12] or None, "dirty": bool(status.strip())}


def wrk_version(wrk: str) -> str:
    try:
        result = subprocess_output([wrk, "-v"])
    except OSError:
        return "unknown"
    first = result.splitlines()[0] if result else "unknown"
    return first.split(" [")[0]


def subprocess_output(args: list[str]) -> str:
    result = subprocess.run(  # noqa: S603
        args, capture_output=True, text=True, timeout=30, check=False
    )
    return result.stdout + result.stderr


def ratio(this: float, flask: float) -> float | None:
    return round(this / flask, 3) if flask else None


def apply_bound(
    results: dict[str, Any], scaling: dict[str, Any] | None, bound: dict[str, Any]
) -> None:
    """Login throughput as a percentage of the bcrypt bound (known at the end of the run)."""
    per_s = bound["bound_per_s"]
    for sides in results.values():
        for side in SIDES:
            figures = sides[side]["figures"]
            figures["login_pct_of_bound"] = round(100 * figures["login_rps"] / per_s, 3)
    for row in (scaling or {}).get("workers", {}).values():
        for side in SIDES:
            row[side]["login_pct_of_bound"] = round(100 * row[side]["login_rps"] / per_s, 2)


def add_ratios(results: dict[str, Any]) -> None:
    for sides in results.values():
        sides["ratio"] = {
            key: ratio(sides["service"]["figures"][key], sides["flask"]["figures"][key])
            for key in FIGURE_KEYS
        }


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def print_report(result: dict[str, Any]) -> None:
    meta = result["meta"]
    machine = meta["machine"]
    print()
    print("=" * 78)
    print(f"Quart Auth API vs Flask reference — {meta['date']}")
    print(f"command: {meta['command']}")
    revision = meta.get("service_revision") or {}
    if revision.get("commit"):
        dirty = " with uncommitted changes" if revision.get("dirty") else ""
        print(f"service: commit {revision['commit']}{dirty}")
    print(
        f"machine: {machine['cores']} cores, {machine['cpu']}, {machine['ram_gib']} GiB, "
        f"{machine['os']}; load average at start {machine['load_average_at_start']}"
    )
    versions = meta["versions"]
    print(
        "this: "
        + ", ".join(f"{k} {v}" for k, v in versions["service"].items() if v)
        + "\nFlask: "
        + ", ".join(f"{k} {v}" for k, v in versions["reference"].items() if v)
        + f"\n{versions['wrk']}"
        + (f", PostgreSQL {versions['postgresql']}" if versions.get("postgresql") else "")
    )
    bound = result["bcrypt"]
    print(
        f"bcrypt cost {bound['rounds']}: {bound['seconds_per_hash'] * 1000:.1f} ms per hash, "
        f"bound {bound['bound_per_s']:.2f}/s on {bound['cores']} cores"
    )
    plan = meta["plan"]
    print(
        f"{plan['workers']} worker(s) each (Flask: gunicorn {plan['reference_worker_class']}), "
        f"{plan['duration']:g}s per figure, {plan['connections']} connections "
        f"({plan['login_connections']} for login/register; probe {plan['probe_connections']} "
        f"connections, {plan['probe_delay_ms']} ms apart); this service's DB_POOL_SIZE "
        f"{service_pool_size(plan['connections'], plan['workers'])} per worker"
    )
    for backend, sides in result["results"].items():
        print()
        print(f"{backend:46} {'this':>11} {'Flask':>11} {'this/Flask':>11}")
        for key, label, unit, better in FIGURES:
            this = sides["service"]["figures"][key]
            flask = sides["flask"]["figures"][key]
            r = sides["ratio"][key]
            print(
                f"{label + ' (' + unit + ')':46} {fmt(this):>11} {fmt(flask):>11} "
                f"{(fmt(r) + 'x') if r is not None else '-':>11}  ({better} is better)"
            )
    scaling = result.get("scaling")
    if scaling and scaling["workers"]:
        print()
        print(f"scaling on {scaling['backend']}")
        head = ("workers", "me req/s this", "Flask", "login req/s this", "Flask")
        print(f"{head[0]:>7} {head[1]:>14} {head[2]:>9} {head[3]:>17} {head[4]:>9}")
        for workers, row in scaling["workers"].items():
            print(
                f"{workers:>7} {fmt(row['service']['me_rps']):>14} {fmt(row['flask']['me_rps']):>9}"
                f" {fmt(row['service']['login_rps']):>17} {fmt(row['flask']['login_rps']):>9}"
            )
    growth = result.get("growth")
    if growth and growth["rows"]:
        print()
        print("GET /auth/me as the per-request table grows (PostgreSQL)")
        for rows, sides in growth["rows"].items():
            for side, row in sides.items():
                print(
                    f"{int(rows):>9} rows {SIDE_LABEL[side]:13} ({GROWTH_TABLE[side]}): "
                    f"{fmt(row['me_rps'])} req/s, p50 {fmt(row['me_p50_ms'])} ms, "
                    f"p99 {fmt(row['me_p99_ms'])} ms"
                )
    print("=" * 78)


README = BENCH_DIR / "README.md"
README_START = "<!-- latest result: written by bench/run.py -->"
README_END = "<!-- end of latest result -->"


def markdown(result: dict[str, Any]) -> str:
    """The latest result for bench/README.md: what ran where and when, then the figures."""
    meta = result["meta"]
    machine = meta["machine"]
    revision = meta.get("service_revision") or {}
    dirty = " (with uncommitted changes)" if revision.get("dirty") else ""
    bound = result["bcrypt"]
    plan = meta["plan"]
    lines = [
        f"`{meta['command']}`, {meta['date']}, on {machine['cores']} cores "
        f"({machine['cpu']}), {machine['ram_gib']} GiB, {machine['os']}; load average "
        f"{machine['load_average_at_start']} at the start, "
        f"{machine.get('load_average_at_end', '?')} at the end. Service commit "
        f"{revision.get('commit') or '?'}{dirty}; {plan['workers']} worker(s) per side, "
        f"{plan['duration']:g} s per figure, bcrypt cost {bound['rounds']} "
        f"({bound['seconds_per_hash'] * 1000:.0f} ms per hash, bound "
        f"{bound['bound_per_s']:.2f}/s).",
        "",
    ]
    backends = list(result["results"])
    head = "| figure | " + " | ".join(f"{b}: this | Flask | this/Flask" for b in backends) + " |"
    lines += [head, "|---|" + "---:|---:|---:|" * len(backends)]
    for key, label, unit, _better in FIGURES:
        cells = []
        for backend in backends:
            sides = result["results"][backend]
            r = sides["ratio"][key]
            cells += [
                fmt(sides["service"]["figures"][key]),
                fmt(sides["flask"]["figures"][key]),
                f"{fmt(r)}×" if r is not None else "-",
            ]
        lines.append(f"| {label.strip()} ({unit}) | " + " | ".join(cells) + " |")
    scaling = result.get("scaling")
    if scaling and scaling["workers"]:
        lines += [
            "",
            f"Scaling ({scaling['backend']}), req/s:",
            "",
            "| workers | /auth/me this | Flask | login this | Flask |",
            "|---:|---:|---:|---:|---:|",
        ]
        for workers, row in scaling["workers"].items():
            lines.append(
                f"| {workers} | {fmt(row['service']['me_rps'])} | {fmt(row['flask']['me_rps'])}"
                f" | {fmt(row['service']['login_rps'])} | {fmt(row['flask']['login_rps'])} |"
            )
    growth = result.get("growth")
    if growth and growth["rows"]:
        lines += [
            "",
            "GET /auth/me as the table checked per request grows (PostgreSQL), p50 / p99 ms:",
            "",
            "| rows | this (auth_sessions) | Flask (token_blocklist) |",
            "|---:|---:|---:|",
        ]
        for rows, sides in growth["rows"].items():
            this, flask = sides["service"], sides["flask"]
            lines.append(
                f"| {int(rows):,} | {fmt(this['me_p50_ms'])} / {fmt(this['me_p99_ms'])} "
                f"| {fmt(flask['me_p50_ms'])} / {fmt(flask['me_p99_ms'])} |"
            )
    return "\n".join(lines) + "\n"


def publish_readme(result: dict[str, Any]) -> None:
    """Replace the latest-result block of bench/README.md (between its two markers)."""
    text = README.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return
    block = f"{README_START}\n{markdown(result)}{README_END}"
    README.write_text(text[:start] + block + text[end + len(README_END) :])


def build_plan(args: argparse.Namespace) -> Plan:
    smoke = args.smoke
    cores = os.cpu_count() or 1

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if smoke else full)

    backends = tuple(pick(args.backends, "sqlite,postgresql", "sqlite").split(","))
    for backend in backends:
        if backend not in ("sqlite", "postgresql"):
            raise SystemExit(f"unknown backend {backend!r}")
    scaling = pick(args.scaling_workers, "1,2,4", "")
    growth = pick(args.growth_rows, "10000,1000000", "")
    return Plan(
        smoke=smoke,
        duration=float(pick(args.duration, 10.0, 1.0)),
        workers=int(pick(args.workers, cores, 1)),
        backends=backends,
        bcrypt_rounds=int(pick(args.bcrypt_rounds, 12, 4)),
        seed_users=int(pick(args.seed_users, 64, 8)),
        connections=int(pick(args.connections, 16, 4)),
        login_connections=int(pick(args.login_connections, 8, 2)),
        probe_connections=int(pick(args.probe_connections, 4, 2)),
        probe_delay_ms=int(pick(args.probe_delay_ms, 20, 20)),
        wrk_threads=int(pick(args.wrk_threads, 1, 1)),
        scaling_workers=tuple(int(w) for w in scaling.split(",") if w.strip()),
        scaling_backend="postgresql" if "postgresql" in backends else backends[0],
        growth_rows=tuple(int(r) for r in growth.split(",") if r.strip())
        if "postgresql" in backends
        else (),
        reference_worker_class=args.reference_worker_class,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="a second per figure, SQLite, 1 worker"
    )
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of this service")
    parser.add_argument("--duration", type=float, help="seconds per figure (10; smoke 1)")
    parser.add_argument("--workers", type=int, help="workers per side (CPU count; smoke 1)")
    parser.add_argument("--backends", help="sqlite,postgresql (smoke: sqlite)")
    parser.add_argument("--bcrypt-rounds", type=int, help="bcrypt cost on both sides (12; smoke 4)")
    parser.add_argument("--seed-users", type=int, help="users seeded through the API (64)")
    parser.add_argument("--connections", type=int, help="wrk connections for me/refresh (16)")
    parser.add_argument("--login-connections", type=int, help="for login/register (8)")
    parser.add_argument("--probe-connections", type=int, help="latency probe connections (4)")
    parser.add_argument("--probe-delay-ms", type=int, help="pause between probe requests (20)")
    parser.add_argument("--wrk-threads", type=int, help="wrk threads (1)")
    parser.add_argument("--scaling-workers", help="1,2,4 ('' to skip)")
    parser.add_argument("--growth-rows", help="10000,1000000 on PostgreSQL ('' to skip)")
    parser.add_argument("--reference-worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL maintenance database; qaa_bench_* databases are created beside it",
    )
    venv_python = PROJECT_ROOT / ".venv" / "bin" / "python"
    parser.add_argument(
        "--service-python",
        type=Path,
        default=venv_python if venv_python.exists() else Path(sys.executable),
    )
    parser.add_argument("--reference-python", type=Path, default=Path(sys.executable))
    parser.add_argument("--out", type=Path, help="result folder (bench/results/<date>)")
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="copy result.json and chart.png to bench/latest.* (default: full runs only)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on SIGTERM
    plan = build_plan(args)
    started = datetime.now(UTC)
    out = args.out or BENCH_DIR / "results" / started.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    try:
        wrk_path = ensure_wrk()
    except WrkMissing as error:
        print(f"bench: {error}", file=sys.stderr)
        return EXIT_WRK_MISSING
    pg = None
    pg_version = None
    if "postgresql" in plan.backends:
        pg = Postgres(args.pg_url)
        try:
            pg_version = pg.check()
        except BenchError as error:
            print(f"bench: PostgreSQL at {args.pg_url} unreachable: {error}", file=sys.stderr)
            return 1
    sides = Sides(
        service_python=args.service_python,
        reference_python=args.reference_python,
        reference_worker_class=plan.reference_worker_class,
        bcrypt_rounds=plan.bcrypt_rounds,
        service_variables=service_variables(args.service_python),
    )
    if (PROJECT_ROOT / ".env").exists():
        print("bench: note: .env exists; the service reads it for every setting not set here")
    bench = Bench(plan, sides, Wrk(wrk_path, out / "work"), pg, out)
    if args.profile:
        from bench.profile import profile

        return profile(bench, out)

    command = os.environ.get("BENCH_COMMAND") or "python -m bench.run " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    meta = {
        "command": command.strip(),
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_info(),
        "plan": asdict(plan),
        "versions": {
            "service": package_versions(sides.service_python, SERVICE_PACKAGES),
            "reference": package_versions(sides.reference_python, REFERENCE_PACKAGES),
            "wrk": wrk_version(wrk_path),
            "postgresql": pg_version,
        },
        "service_revision": service_revision(),
    }
    try:
        bench.bound = bench.measure_bcrypt()
        bench.say(
            f"bcrypt cost {plan.bcrypt_rounds}: {bench.bound['seconds_per_hash'] * 1000:.1f} ms "
            f"per hash; bound {bench.bound['bound_per_s']:.2f} hashes/s"
        )
        results = bench.main_figures()
        scaling = bench.scaling() if plan.scaling_workers else None
        growth = bench.growth() if plan.growth_rows and pg else None
        bench.bound = bench.measure_bcrypt(*bench.bound["timings"])
        apply_bound(results, scaling, bench.bound)
        add_ratios(results)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(out / "work", ignore_errors=True)
    meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    meta["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    result = {
        "meta": meta,
        "bcrypt": bench.bound,
        "figures": {
            key: {"label": label, "unit": unit, "better": better}
            for key, label, unit, better in FIGURES
        },
        "results": results,
        "scaling": scaling,
        "growth": growth,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    if not args.no_chart:
        from bench.chart import draw

        draw(result, out / "chart.png")
    publish = args.publish if args.publish is not None else not plan.smoke
    if publish:
        shutil.copyfile(out / "result.json", LATEST_JSON)
        if not args.no_chart:
            shutil.copyfile(out / "chart.png", LATEST_PNG)
        publish_readme(result)
    print(
        f"result: {out / 'result.json'}"
        + ("" if args.no_chart else f", chart: {out / 'chart.png'}")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
