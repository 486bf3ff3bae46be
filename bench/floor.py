"""Where the floor of three figures is: the bcrypt bound, a login's share of it, the CPU
of a token check.

    python -m bench.floor                 # `make bench-floor`: SQLite and PostgreSQL
    python -m bench.floor --rounds 3 --seconds 10 --backends sqlite
    python -m bench.floor --backends sqlite --workers 1 --bcrypt-threads 2

1. **bcrypt flat out, with no server at all** (bench/hashing.py): one process per core
   hashing for `--seconds`, the hashes completed inside that window counted as wrk counts
   logins, against the benchmark's bound (cores ÷ the time of one hash alone). What the
   machine can hash when nothing else runs: login throughput cannot exceed it.
2. **Where a login's CPU goes**, per backend: the service under wrk's logins at 8
   connections for `--seconds`, as a share of the bound and of figure 1 (of the round),
   then every core's time split into the hashes that completed
   (at the cost of one hash of figure 1), the hashing threads' other time (hashes cut off
   at the window's edges, hashes slower than figure 1's), the workers' other threads
   (HTTP, validation, the database, tokens: per login), and everything outside the
   workers (wrk, the database server, the kernel, other tenants: the steal time).
3. **CPU per `GET /auth/me`**, per backend: the service (production settings, 16 seeded
   users, `--workers` workers (2) hashing on `--bcrypt-threads` threads each) under wrk at
   16 connections for `--seconds`, the CPU seconds its workers (and of them, in the
   kernel) and, on PostgreSQL, the server's backends used, divided by the answers.
4. **One PostgreSQL read, in-process**: the worker's CPU for the guard's read
   (`statements_postgres.PostgresStatements.one`), and for its parts: asyncpg's `fetch`
   on a held connection and the pool's checkout and check-in, each averaged over 3,000
   calls; and per read when 8 start at once (they go out together:
   `statements_postgres.Batcher`).

Each figure is measured `--rounds` times (interleaved across the backends) and printed
per round and as the median. A benchmark, never a test: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.util import greenlet_spawn

from bench import hashing
from bench.common import PROJECT_ROOT
from bench.harness import Postgres, Sides, fresh_database, service_variables, start_server
from bench.load import Load, Wrk, cpu_seconds, cpu_times, ensure_wrk, machine_cpu
from bench.seed import seed_users, write_lines
from quart_auth_api.crypto.passwords import HASHING_NICENESS
from quart_auth_api.db import open_database
from quart_auth_api.models import utcnow
from quart_auth_api.services.sessions import LIVE_SESSION
from settings import Settings

CALLS = 3000
TOGETHER = 8  # reads started at once: what one worker of 2 holds under 16 connections
COST = 12  # bcrypt's, as in production


def thread_cpu(pids: list[int]) -> dict[tuple[int, int], tuple[bool, float]]:
    """CPU seconds so far per thread of `pids`: (a hashing thread?, seconds). The
    hashing threads are the ones at the hasher's lower priority (Linux, per thread)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # the thread ended
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            # fields 14, 15 (utime, stime) and 19 (nice) of proc(5), counted from 1
            seconds = (int(fields[11]) + int(fields[12])) / tick
            found[(pid, int(task.name))] = (int(fields[16]) >= HASHING_NICENESS, seconds)
    return found


def login_budget(
    server: Any, wrk: Wrk, lines: Path, seconds: float, one_hash: float, bound: float
) -> tuple[str, dict[str, float]]:
    """Figure 2: logins as % of the bound, then every core-second of a login load as
    shares of the cores' time (%); `one_hash` is figure 1's core-seconds per hash."""
    load = Load(script="login", connections=8, duration=seconds, threads=1, lines=lines)
    wrk.run(server.base_url, replace(load, duration=3))  # warm: pools, caches, the WAL
    workers = server.worker_pids()
    before, (busy0, steal0), started = thread_cpu(workers), machine_cpu(), time.monotonic()
    result = wrk.run(server.base_url, load)
    after, (busy1, steal1), wall = thread_cpu(workers), machine_cpu(), time.monotonic() - started
    hashing = sum(s - before.get(k, (h, 0.0))[1] for k, (h, s) in after.items() if h)
    rest = sum(s - before.get(k, (h, 0.0))[1] for k, (h, s) in after.items() if not h)
    logins = result.ok
    capacity = (os.cpu_count() or 1) * wall
    shares = {
        "of the bound": result.rps / bound * 100,
        "of flat out": result.rps * one_hash / (os.cpu_count() or 1) * 100,
        "hashes": logins * one_hash / capacity * 100,
        "hashing rest": (hashing - logins * one_hash) / capacity * 100,
        "workers rest": rest / capacity * 100,
        "outside": (busy1 - busy0 - (steal1 - steal0) - hashing - rest) / capacity * 100,
        "steal": (steal1 - steal0) / capacity * 100,
        "idle": (capacity - (busy1 - busy0)) / capacity * 100,
    }
    hashers = sum(1 for h, _ in after.values() if h)
    line = (
        f"{result.rps:5.2f} logins/s; "
        + ", ".join(f"{k} {v:.1f}%" for k, v in shares.items())
        + f"; the workers' other threads {rest / max(logins, 1) * 1e3:.1f} ms per login"
        + f"; {hashers} hashing threads in {len(workers)} workers"
    )
    return line, shares


def postgres_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "") == "postgres"]


def cpu_per_request(
    server: Any, wrk: Wrk, lines: Path, seconds: float, backend: str
) -> tuple[str, float, float]:
    """The line to print, and the CPU µs per request of the workers, of PostgreSQL, and
    of the workers' in the kernel."""
    load = Load(script="me", connections=16, duration=seconds, threads=1, lines=lines)
    # first a short load: every pooled connection (and its server backend) is open
    wrk.run(server.base_url, Load(script="me", connections=16, duration=3, threads=1, lines=lines))
    workers = server.worker_pids()
    database = postgres_pids() if backend == "postgresql" else []
    before, before_db = cpu_times(workers), cpu_seconds(database)
    result = wrk.run(server.base_url, load)
    after, after_db = cpu_times(workers), cpu_seconds(database)
    answers = result.rps * seconds
    user, system = (sum(after[p][i] - before[p][i] for p in workers) for i in (0, 1))
    used_db = sum(after_db[p] - before_db[p] for p in database if p in after_db)
    mine, theirs = (user + system) / answers * 1e6, used_db / answers * 1e6
    kernel = system / answers * 1e6
    line = f"{result.rps:6.0f} req/s; per request the workers {mine:5.0f} µs CPU"
    line += f" (in the kernel {kernel:.0f})"
    if backend == "postgresql":
        line += f", PostgreSQL's backends {theirs:4.0f} µs"
    return line, mine, theirs, kernel


async def postgres_read_parts(url: str) -> dict[str, float]:
    database = open_database(Settings.for_testing(database_url=url))
    statements: Any = database.statements
    values = {"session_id": uuid.uuid4(), "user_public_id": uuid.uuid4(), "now": utcnow()}
    compiled = statements.compiled(LIVE_SESSION)
    parameters = compiled.parameters(values)
    held = await statements.checkout()

    async def checkout_and_check_in() -> None:
        await greenlet_spawn((await statements.checkout()).close)

    async def fetch() -> None:
        await held.driver_connection.fetch(compiled.sql, *parameters)

    async def read() -> None:
        await statements.one(LIVE_SESSION, values)

    async def together() -> None:
        await asyncio.gather(*(statements.one(LIVE_SESSION, values) for _ in range(TOGETHER)))

    parts = {}
    calls = (
        ("fetch", fetch, 1),
        ("checkout", checkout_and_check_in, 1),
        ("read", read, 1),
        (f"read, {TOGETHER} at once (per read)", together, TOGETHER),
    )
    for name, call, reads in calls:
        for _ in range(200 // reads):
            await call()
        started = time.process_time()
        for _ in range(CALLS // reads):
            await call()
        parts[name] = (time.process_time() - started) / (CALLS // reads * reads) * 1e6
    await greenlet_spawn(held.close)
    await database.close()
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.floor", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=2, help="the service's workers (2)")
    parser.add_argument(
        "--bcrypt-threads", type=int, help="the service's BCRYPT_THREADS (its default)"
    )
    args = parser.parse_args()
    backends = args.backends.split(",")
    python = PROJECT_ROOT / ".venv" / "bin" / "python"
    sides = Sides(python, python, "sync", COST, service_variables(python))
    pg = Postgres(args.pg_url) if "postgresql" in backends else None
    threads = {} if args.bcrypt_threads is None else {"BCRYPT_THREADS": str(args.bcrypt_threads)}
    print(
        f"floor: {args.rounds} rounds, {args.seconds:g} s per load, {os.cpu_count()} cores; "
        f"the service with {args.workers} worker(s), BCRYPT_THREADS "
        f"{args.bcrypt_threads or 'at its default'}"
    )
    rows: dict[str, list[Any]] = {"bcrypt": [], "reads": []}
    with tempfile.TemporaryDirectory(prefix="qaa-floor-") as folder, ExitStack() as stack:
        work = Path(folder)
        wrk = Wrk(ensure_wrk(), work)
        servers = {}
        for backend in backends:
            url = stack.enter_context(fresh_database(backend, "service", work, pg))
            log = work / f"{backend}.log"
            server = stack.enter_context(
                start_server(
                    sides, "service", url, args.workers, log, pool_size=8, extra_env=threads
                )
            )
            seed = seed_users(
                server.base_url, 16, prefix=f"floor-{uuid.uuid4().hex[:6]}", concurrency=8
            )
            servers[backend] = (
                server,
                write_lines(work / f"{backend}.txt", seed.access_tokens),
                url,
                write_lines(work / f"{backend}-emails.txt", seed.emails),
            )
        for number in range(1, args.rounds + 1):
            print(f"round {number}")
            bound = hashing.bound(COST)["bound_per_s"]
            hashed = hashing.flat_out(COST, args.seconds)
            cores = os.cpu_count() or 1
            share = 100 * hashed / bound
            rows["bcrypt"].append(share)
            print(
                f"  bcrypt flat out, a process per core: {hashed:.2f}/s = {share:.1f}% "
                f"of {bound:.2f}/s"
            )
            for backend, (server, lines, url, emails) in servers.items():
                measured, shares = login_budget(
                    server, wrk, emails, args.seconds, cores / hashed, bound
                )
                rows.setdefault(f"{backend} login", []).append(shares)
                print(f"  {backend:10} POST /auth/login: {measured}")
                measured, *cpu = cpu_per_request(server, wrk, lines, args.seconds, backend)
                rows.setdefault(backend, []).append(cpu)
                print(f"  {backend:10} GET /auth/me: {measured}")
                if backend == "postgresql":
                    parts = asyncio.run(postgres_read_parts(url))
                    rows["reads"].append(parts)
                    print(
                        "  postgresql one read in-process: "
                        + ", ".join(f"{k} {v:.0f} µs" for k, v in parts.items())
                    )
    for backend in backends:
        mine, theirs, kernel = (statistics.median(r[i] for r in rows[backend]) for i in range(3))
        print(
            f"median: {backend} CPU per GET /auth/me: workers {mine:.0f} µs (in the kernel "
            f"{kernel:.0f} µs), db {theirs:.0f} µs"
        )
        logins = rows[f"{backend} login"]
        print(
            f"median: {backend} a login load's cores: "
            + ", ".join(f"{k} {statistics.median(r[k] for r in logins):.1f}%" for k in logins[0])
        )
    share = statistics.median(rows["bcrypt"])
    print(f"median: bcrypt flat out, a process per core, {share:.1f}% of the bound")
    if rows["reads"]:
        print(
            "median: one PostgreSQL read "
            + ", ".join(
                f"{k} {statistics.median(r[k] for r in rows['reads']):.0f} µs"
                for k in rows["reads"][0]
            )
        )


if __name__ == "__main__":
    main()
