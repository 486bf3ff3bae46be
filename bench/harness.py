"""The parts of the benchmark that touch the outside: databases and servers.

Every wait is bounded, every server listens on a free 127.0.0.1 port and is stopped
by its own pid (SIGTERM, then SIGKILL for anything left of its process tree), and
every PostgreSQL database it creates is named `qaa_bench_*` and dropped again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import (
    CEILING,
    CEILING_DIR,
    DB_NAME_RE,
    PROJECT_ROOT,
    PSQL_TIMEOUT,
    READY_TIMEOUT,
    REFERENCE_DIR,
    SETUP_TIMEOUT,
    STOP_TIMEOUT,
    BenchError,
    free_port,
    run_checked,
)
from bench.load import tree

# -- databases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server reached with psql; creates and drops `qaa_bench_*` databases."""

    admin_url: str  # postgresql://user@host:port/postgres

    def url(self, name: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{name}"

    def psql(self, url: str, sql: str, *, timeout: float = PSQL_TIMEOUT) -> str:
        return run_checked(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
            timeout=timeout,
        ).strip()

    def check(self) -> str:
        if shutil.which("psql") is None:
            raise BenchError("psql is not installed (Debian: postgresql-client)")
        return self.psql(self.admin_url, "SHOW server_version", timeout=15)

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        if not DB_NAME_RE.fullmatch(name):
            raise ValueError(f"refusing database name {name!r}")
        self.psql(self.admin_url, f'CREATE DATABASE "{name}"', timeout=60)
        try:
            yield self.url(name)
        finally:
            self.psql(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=60)


_counter = iter(range(1, 1_000_000))


@contextmanager
def fresh_database(backend: str, side: str, work_dir: Path, pg: Postgres | None) -> Iterator[str]:
    """A new, empty database for one side of one scenario: a sync-style URL."""
    number = next(_counter)
    if backend == "sqlite":
        folder = work_dir / f"db-{number}-{side}"
        folder.mkdir(parents=True)
        try:
            yield f"sqlite:///{folder / 'bench.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if pg is None:
        raise BenchError("PostgreSQL scenario without a PostgreSQL server")
    with pg.database(f"qaa_bench_{os.getpid()}_{number}_{side}") as url:
        yield url


# -- servers --------------------------------------------------------------------------


@dataclass
class Server:
    """A running server: the service or the ceiling under hypercorn, the reference under
    gunicorn."""

    side: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    workers: int
    database_url: str  # "" for the ceiling
    jwt_secret: str = field(default="", repr=False)
    descendants: set[int] = field(default_factory=set)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (not the master, not a resource tracker)."""
        pids = []
        for process in tree(self.process.pid)[1:]:
            try:
                cmdline = " ".join(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "resource_tracker" not in cmdline:
                pids.append(process.pid)
        return pids

    def gone(self) -> str:
        """What is wrong when the server has exited or lost workers ("" when it has not)."""
        if self.process.poll() is None and len(self.worker_pids()) >= self.workers:
            return ""
        state = f"exited {self.process.returncode}" if self.process.poll() is not None else ""
        lost = f"{len(self.worker_pids())} of {self.workers} workers left"
        return f"\n{self.side} server: {state or lost}; its log ends:\n{self.log_tail(15)}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.side} exited {self.process.returncode} during start-up:\n"
                    + self.log_tail()
                )
            if len(self.worker_pids()) >= self.workers and _healthy(self.base_url):
                self.descendants = {p.pid for p in tree(self.process.pid)[1:]}
                time.sleep(1.0)  # let the last worker finish importing
                return
            time.sleep(0.2)
        raise BenchError(f"{self.side} not ready within {READY_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the server, up to STOP_TIMEOUT of grace, then SIGKILL what is left."""
        self.descendants |= {p.pid for p in tree(self.process.pid)[1:]}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in self.descendants):
            time.sleep(0.1)
        for pid in self.descendants:  # our own grandchildren, by pid
            try:
                process = psutil.Process(pid)
                if process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
            except psutil.NoSuchProcess:
                pass


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class Sides:
    """How to start each side."""

    service_python: Path
    reference_python: Path
    reference_worker_class: str
    bcrypt_rounds: int
    service_variables: frozenset[str]

    def clean_env(self) -> dict[str, str]:
        drop = self.service_variables | {"DATABASE_URL", "JWT_SECRET_KEY", "SECRET_KEY"}
        return {k: v for k, v in os.environ.items() if k.upper() not in drop}


def service_variables(python: Path) -> frozenset[str]:
    """Every variable the service's settings read (asked of the service's own Python)."""
    code = (
        "import json; from settings import Settings; "
        "print(json.dumps(sorted({n.upper() for n in Settings.model_fields})))"
    )
    out = run_checked([str(python), "-c", code], timeout=60, cwd=PROJECT_ROOT)
    return frozenset(json.loads(out.strip().splitlines()[-1])) | {"QUART_ENV", "FLASK_ENV"}


def service_pool_size(connections: int, workers: int) -> int:
    """The service's DB_POOL_SIZE for a load of `connections` over `workers`: every
    request in flight in a worker holds a connection, and connections above the pool
    size are closed on return (one new connection per request under steady load)."""
    return max(5, -(-connections // workers))


@contextmanager
def start_server(
    sides: Sides,
    side: str,
    database_url: str,
    workers: int,
    log_path: Path,
    *,
    pool_size: int = 5,
    root: Path = PROJECT_ROOT,
    extra_env: dict[str, str] | None = None,
    secret: str | None = None,
) -> Iterator[Server]:
    """Migrate/create the schema, start one side and wait until every worker is up.

    The Flask reference's sync workers serve one request at a time (one connection
    each, from Flask-SQLAlchemy's default pool of 5); the service gets `pool_size`.
    The service runs from `root`: this checkout, or another revision's files. The
    ceiling (bench/ceiling/, no database: `database_url` is ignored) runs with the
    service's Python; give it the service's `secret` (JWT_SECRET_KEY, a fresh one when
    None) to drive it with the service's tokens."""
    port = free_port()
    secret = secret or secrets.token_urlsafe(48)
    env = sides.clean_env()
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY=secrets.token_urlsafe(48),
        JWT_SECRET_KEY=secret,
        BCRYPT_ROUNDS=str(sides.bcrypt_rounds),
    )
    if side == "service":
        env.update(
            QUART_ENV="production",
            WEB_CONCURRENCY=str(workers),
            HOST="127.0.0.1",
            PORT=str(port),
            RATE_LIMIT_ENABLED="false",
            LOG_LEVEL="WARNING",
        )
        if "DB_POOL_SIZE" in sides.service_variables:
            env["DB_POOL_SIZE"] = str(pool_size)
        env.update(extra_env or {})
        python = str(sides.service_python)
        run_checked(
            [python, "-m", "alembic", "upgrade", "head"],
            timeout=SETUP_TIMEOUT,
            cwd=root,
            env=env,
        )
        args, cwd = [python, "run.py"], root
    elif side == CEILING:
        database_url = ""
        env.update(WEB_CONCURRENCY=str(workers), HOST="127.0.0.1", PORT=str(port))
        args, cwd = [str(sides.service_python), "serve.py"], CEILING_DIR
    else:
        python = str(sides.reference_python)
        run_checked(
            [python, "-m", "flask", "--app", "app:create_app", "init-db"],
            timeout=SETUP_TIMEOUT,
            cwd=REFERENCE_DIR,
            env=env,
        )
        args = [
            python,
            "-m",
            "gunicorn",
            f"--workers={workers}",
            f"--worker-class={sides.reference_worker_class}",
            f"--bind=127.0.0.1:{port}",
            "--graceful-timeout=10",
            "--timeout=120",
            "--log-level=warning",
            "app:create_app()",
        ]
        if sides.reference_worker_class == "gthread":
            args.insert(-1, "--threads=4")
        cwd = REFERENCE_DIR
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    server = Server(
        side, process, f"http://127.0.0.1:{port}", log_path, workers, database_url, secret
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
