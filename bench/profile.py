"""Where this service spends its time on GET /auth/me, POST /auth/refresh and POST
/auth/login (py-spy; for the login, the work besides bcrypt, whose threads drop the GIL).

`python -m bench.run --profile` (`make bench-profile`) starts the service with one
worker (so one process takes all the load) on each backend, seeds users, and while wrk
drives one endpoint, `py-spy record --gil` samples that worker: only the thread that
holds the GIL, i.e. the Python work that one worker serializes (waits on the database or
the socket are not counted). It writes the raw collapsed stacks (open them in speedscope
or flamegraph.pl) and a text summary: the share per library, the hottest functions by
self and by inclusive time, and the package's own functions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench import hashing
from bench.common import BenchError
from bench.harness import fresh_database

if TYPE_CHECKING:
    from bench.suite import Bench

RATE = 200  # samples per second
#: Top-level module paths (as py-spy prints them, relative to sys.path) -> library.
LIBRARIES = [
    ("quart_auth_api/", "quart_auth_api (the package)"),
    ("jose/", "python-jose"),
    ("cryptography/", "cryptography"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("greenlet/", "SQLAlchemy"),
    ("aiosqlite/", "aiosqlite"),
    ("asyncpg/", "asyncpg"),
    ("pydantic/", "pydantic"),
    ("pydantic_core/", "pydantic"),
    ("quart_schema/", "quart-schema"),
    ("quart/", "Quart"),
    ("werkzeug/", "Werkzeug"),
    ("flask/", "Flask (Quart's base)"),
    ("blinker/", "Flask (Quart's base)"),
    ("hypercorn/", "Hypercorn"),
    ("h11/", "h11"),
    ("prometheus_client/", "prometheus-client"),
    ("limits/", "limits"),
    ("uvloop/", "uvloop"),
]
LOOP_MARKERS = ("uvloop_worker", "asyncio_worker")
#: wrk script -> what it drives, and the seed's file of lines it rotates over.
SCRIPTS = {
    "me": ("GET /auth/me", "access"),
    "refresh": ("POST /auth/refresh", "refresh"),
    "login": ("POST /auth/login", "emails"),
}


def _path(frame: str) -> str:
    return frame.rpartition(" (")[2].rstrip(")").rpartition(":")[0]


def library(frames: list[str]) -> str:
    """The library whose code is running: the deepest frame outside the standard library
    (so `uuid4` called by the package counts for the package). `Runner.run` at the top
    of the stack is uvloop's C loop itself (polling, callbacks, transports)."""
    if frames[-1].startswith("Runner.run "):
        return "uvloop's C event loop"
    for frame in reversed(frames):
        path = _path(frame)
        for prefix, name in LIBRARIES:
            if path.startswith(prefix) or f"/{prefix}" in path:
                return name
    return "standard library / interpreter"


def function(frame: str) -> str:
    """`name (/path/site-packages/pkg/mod.py:12)` -> `name (pkg/mod.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def summarize(raw: Path, title: str, seconds: float) -> str:
    """A text summary of py-spy's raw (collapsed) stacks, recorded with `--gil`."""
    samples: list[tuple[str, list[str], int]] = []
    loop_threads: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = [f for f in stack.split(";") if f and not f.startswith("process ")]
        thread = parts[0] if parts and parts[0].startswith("thread ") else "?"
        frames = [f for f in parts if not f.startswith("thread ")]
        if frames:
            samples.append((thread, frames, int(count)))
            if any(marker in frame for frame in frames for marker in LOOP_MARKERS):
                loop_threads[thread] += int(count)
    # the event loop's thread (its greenlets' stacks do not reach the loop's frames)
    loop_thread = loop_threads.most_common(1)[0][0] if loop_threads else "?"
    loop = [(frames, count) for thread, frames, count in samples if thread == loop_thread]
    other = [(frames, count) for thread, frames, count in samples if thread != loop_thread]
    loop_total = sum(count for _, count in loop) or 1
    other_total = sum(count for _, count in other)
    by_library: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    package: Counter[str] = Counter()
    for frames, count in loop:
        by_library[library(frames)] += count
        self_time[function(frames[-1])] += count
        for name in {function(frame) for frame in frames}:
            inclusive[name] += count
        for name in {function(f) for f in frames if "quart_auth_api/" in f}:
            package[name] += count
    other_self: Counter[str] = Counter()
    for frames, count in other:
        other_self[function(frames[-1])] += count

    def table(counter: Counter[str], limit: int, total: int) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(limit)]

    possible = seconds * RATE
    lines = [
        f"== {title} ==",
        f"py-spy --gil at {RATE} Hz for {seconds:g}s: the event-loop thread held the GIL in "
        f"{loop_total} samples ({100 * loop_total / possible:.0f}% of the time); other threads "
        f"(aiosqlite, bcrypt pool) in {other_total} ({100 * other_total / possible:.0f}%).",
        "Percentages below are of the event-loop thread's samples.",
        "",
        "by library (deepest frame outside the standard library):",
        *table(by_library, 20, loop_total),
        "",
        "self time (leaf function):",
        *table(self_time, 25, loop_total),
        "",
        "inclusive time (function anywhere on the stack):",
        *table(inclusive, 60, loop_total),
        "",
        "the package's own functions, inclusive:",
        *table(package, 25, loop_total),
        "",
        f"other threads, self time (% of their {other_total} samples):",
        *table(other_self, 8, other_total or 1),
    ]
    return "\n".join(lines) + "\n"


def profile(bench: Bench, out: Path) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("bench: py-spy is not installed (pip install -r requirements-bench.txt)")
        return 1
    plan = bench.plan
    workers = 1
    duration = max(plan.duration, 5.0)
    bench.bound = hashing.bound(plan.bcrypt_rounds)
    summaries = []
    try:
        for backend in plan.backends:
            with (
                fresh_database(backend, "service", bench.work, bench.pg) as url,
                bench.server("service", url, workers, f"{backend}-profile") as server,
            ):
                (worker,) = server.worker_pids()[:1]
                _, files = bench.seed(server, plan.seed_users, f"profile-{backend}")
                for script, (title, kind) in SCRIPTS.items():
                    lines = files[kind]
                    connections = plan.login_connections if script == "login" else plan.connections
                    load = bench.load(script, connections=connections, lines=lines)
                    # warm up on /auth/me: a refresh token is good for one use only
                    warmup = bench.load("me", connections=plan.connections, lines=files["access"])
                    bench.wrk.run(server.base_url, replace(warmup, duration=bench.warmup))
                    driven = replace(load, duration=duration + 3)
                    bench.drain(server)
                    process = bench.wrk.start(server.base_url, driven)
                    time.sleep(1.5)
                    raw = out / f"profile-{backend}-{script}.txt"
                    subprocess.run(  # noqa: S603
                        [
                            py_spy,
                            "record",
                            "--pid",
                            str(worker),
                            "--duration",
                            str(int(duration)),
                            "--rate",
                            str(RATE),
                            "--gil",
                            "--threads",
                            "--format",
                            "raw",
                            "--output",
                            str(raw),
                        ],
                        check=True,
                        capture_output=True,
                        timeout=duration + 60,
                    )
                    result = bench.wrk.finish(process, driven)
                    bench.say(
                        f"  profiled {backend} {script}: {result.rps:.0f} req/s under py-spy "
                        f"(errors {result.errors}, failed {result.failed})"
                    )
                    summary = summarize(
                        raw, f"{backend} {title}, {result.rps:.0f} req/s, 1 worker", int(duration)
                    )
                    (out / f"profile-{backend}-{script}-summary.txt").write_text(summary)
                    summaries.append(summary)
    except (BenchError, subprocess.SubprocessError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)
    print("\n".join(summaries))
    print(f"raw stacks and summaries in {out}")
    return 0
