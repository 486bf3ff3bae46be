"""The parts of the benchmark that touch the outside: databases, servers, seeding, wrk.

Every wait is bounded, every server listens on a free 127.0.0.1 port and is stopped
by its own pid (SIGTERM, then SIGKILL for anything left of its process tree), and
every PostgreSQL database it creates is named `qaa_bench_*` and dropped again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_ROOT / "bench"
REFERENCE_DIR = BENCH_DIR / "flask_reference"
WRK_DIR = BENCH_DIR / "wrk"

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
SETUP_TIMEOUT = 120.0
PSQL_TIMEOUT = 600.0
HTTP_TIMEOUT = 60.0
WRK_GRACE = 60.0
#: wrk's per-request timeout: a queued request counts, however slow, instead of vanishing.
WRK_REQUEST_TIMEOUT = "30s"
APT_TIMEOUT = 600.0

PASSWORD = "correct horse battery staple"  # noqa: S105 (the seeded accounts' password)
TOKEN_KEYS = {"user", "access_token", "refresh_token", "token_type", "expires_in"}
USER_KEYS = {"id", "email", "name", "created_at", "updated_at"}
DB_NAME_RE = re.compile(r"qaa_bench_[a-z0-9_]{1,40}")
SIDES = ("service", "flask")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


class WrkMissing(BenchError):
    """wrk is not installed and cannot be installed here."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_checked(args: list[str], *, timeout: float, **kwargs: Any) -> str:
    """Run a command to completion within `timeout`; its stdout, or BenchError with its output."""
    try:
        result = subprocess.run(  # noqa: S603 (argument lists built here)
            args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(args[:4])} ...: no answer within {timeout:.0f}s") from None
    if result.returncode != 0:
        raise BenchError(
            f"{' '.join(args[:4])} ... exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
    return result.stdout


# -- wrk ------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """The path of wrk; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise WrkMissing(
            "wrk is not installed: install Debian's package as root (apt-get install wrk); "
            "the benchmark installs it itself when run as root"
        )
    print("bench: installing wrk from Debian's packages (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-qq"], timeout=APT_TIMEOUT, env=env)
    run_checked(["apt-get", "install", "-y", "-qq", "wrk"], timeout=APT_TIMEOUT, env=env)
    found = shutil.which("wrk")
    if not found:
        raise WrkMissing("apt-get install wrk succeeded but wrk is not on PATH")
    return found


@dataclass(frozen=True)
class Load:
    """One wrk run: a scenario script against a server."""

    script: str  # me, login, register or refresh (bench/wrk/<script>.lua)
    duration: float
    connections: int
    threads: int = 1
    lines: Path | None = None  # tokens or emails, one per line, split across wrk threads
    delay_ms: int = 0  # pause between a connection's requests (latency probe)
    run_id: str = ""  # register: unique email prefix


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    ok: int  # successful requests of the scenario's kind
    errors: dict[str, int]
    latency_ms: dict[str, float]
    starved: int = 0
    failed: int = 0
    #: CPU seconds each worker process used during the load, busiest first (a keep-alive
    #: connection stays with the worker that accepted it, so the split can be uneven).
    worker_cpu_s: tuple[float, ...] = ()

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 2),
            "errors": self.errors,
            "failed": self.failed,
            "starved": self.starved,
            "latency_ms": self.latency_ms,
            "worker_cpu_s": list(self.worker_cpu_s),
        }


class Wrk:
    """Runs wrk with bench/wrk/common.lua in front of a scenario script."""

    def __init__(self, wrk: str, work_dir: Path) -> None:
        self.wrk = wrk
        self.scripts = work_dir / "wrk"
        self.scripts.mkdir(parents=True, exist_ok=True)
        common = (WRK_DIR / "common.lua").read_text()
        for scenario in ("me", "login", "register", "refresh"):
            body = (WRK_DIR / f"{scenario}.lua").read_text()
            (self.scripts / f"{scenario}.lua").write_text(common + "\n" + body)

    def start(self, base_url: str, load: Load) -> subprocess.Popen[str]:
        threads = max(1, min(load.threads, load.connections))
        env = {
            **os.environ,
            "BENCH_THREADS": str(threads),
            "BENCH_PASSWORD": PASSWORD,
            "BENCH_DELAY_MS": str(load.delay_ms),
            "BENCH_RUN": load.run_id or uuid.uuid4().hex[:12],
            "BENCH_LINES": str(load.lines or ""),
        }
        args = [
            self.wrk,
            f"-t{threads}",
            f"-c{load.connections}",
            f"-d{max(1, round(load.duration))}s",
            f"--timeout={WRK_REQUEST_TIMEOUT}",
            "-s",
            str(self.scripts / f"{load.script}.lua"),
            base_url,
        ]
        return subprocess.Popen(  # noqa: S603
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def finish(self, process: subprocess.Popen[str], load: Load) -> LoadResult:
        try:
            output, _ = process.communicate(timeout=load.duration + WRK_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise BenchError(f"wrk {load.script} did not finish in time") from None
        except BaseException:  # interrupted: never leave a wrk behind
            process.kill()
            process.wait()
            raise
        match = re.search(r"^BENCH_RESULT (\{.*\})$", output, re.MULTILINE)
        if process.returncode != 0 or match is None:
            raise BenchError(f"wrk {load.script} failed ({process.returncode}):\n{output}")
        raw = json.loads(match.group(1))
        errors = raw["errors"]
        seconds = raw["duration_us"] / 1e6
        if load.script == "refresh":
            ok = raw["ok"]  # counted in response(): a 200 carrying a rotated refresh token
        else:
            ok = raw["requests"] - errors["status"]
        latency = {key: round(value / 1000, 3) for key, value in raw["latency_us"].items()}
        return LoadResult(
            requests=raw["requests"],
            seconds=seconds,
            ok=ok,
            errors=errors,
            latency_ms=latency,
            starved=raw["starved"],
            failed=raw["failed"],
        )

    def run(self, base_url: str, load: Load) -> LoadResult:
        return self.finish(self.start(base_url, load), load)


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


def tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (those still alive)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory_mb(pid: int) -> tuple[float, float]:
    """Summed RSS and PSS (MiB) of a process tree."""
    rss = pss = 0
    for process in tree(pid):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process tree."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """CPU time (user + system) used so far by each of `pids` (0 for a process gone)."""
    result = {}
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            result[pid] = times.user + times.system
        except psutil.NoSuchProcess:
            result[pid] = 0.0
    return result


def wait_idle(pid: int, *, cores: float = 0.1, window: float = 0.5, timeout: float = 60.0) -> float:
    """Wait until a server's processes use less than `cores` of CPU over `window` seconds
    (requests left over from the previous figure, e.g. bcrypt hashes whose clients are
    gone, are finished); the seconds waited, at most `timeout`."""
    started = time.monotonic()
    last = tree_cpu_seconds(pid)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = tree_cpu_seconds(pid)
        if (now - last) / window < cores:
            break
        last = now
    return time.monotonic() - started


class MemorySampler:
    """Samples the summed RSS of a server's processes in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_rss = self.peak_pss = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory_mb(self.pid)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._stop.wait(self.interval)


@dataclass
class Server:
    """A running server (the service under hypercorn or the reference under gunicorn)."""

    side: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    workers: int
    database_url: str
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
) -> Iterator[Server]:
    """Migrate/create the schema, start one side and wait until every worker is up.

    The Flask reference's sync workers serve one request at a time (one connection
    each, from Flask-SQLAlchemy's default pool of 5); the service gets `pool_size`."""
    port = free_port()
    secret = secrets.token_urlsafe(48)
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
        python = str(sides.service_python)
        run_checked(
            [python, "-m", "alembic", "upgrade", "head"],
            timeout=SETUP_TIMEOUT,
            cwd=PROJECT_ROOT,
            env=env,
        )
        args, cwd = [python, "run.py"], PROJECT_ROOT
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
    server = Server(side, process, f"http://127.0.0.1:{port}", log_path, workers, database_url)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


# -- seeding through the API -----------------------------------------------------------


def call(
    base_url: str, method: str, path: str, *, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    """One HTTP request; (status, decoded JSON or None)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        base_url + path, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


@dataclass
class Seed:
    emails: list[str]
    access_tokens: list[str]
    refresh_tokens: list[str]
    user_ids: list[str]


def seed_users(base_url: str, count: int, *, prefix: str, concurrency: int) -> Seed:
    """Register `count` users through the API (concurrently); their tokens."""

    def register(index: int) -> tuple[str, dict[str, Any]]:
        email = f"{prefix}-{index}@bench.example.com"
        status, body = call(
            base_url,
            "POST",
            "/auth/register",
            body={"email": email, "password": PASSWORD, "name": f"Seed {index}"},
        )
        if status != 201 or not isinstance(body, dict) or set(body) != TOKEN_KEYS:
            raise BenchError(f"register {email}: {status} {body}")
        return email, body

    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        results = list(pool.map(register, range(count)))
    return Seed(
        emails=[email for email, _ in results],
        access_tokens=[body["access_token"] for _, body in results],
        refresh_tokens=[body["refresh_token"] for _, body in results],
        user_ids=[body["user"]["id"] for _, body in results],
    )


def check_contract(base_url: str, seed: Seed) -> None:
    """The same API on both sides: shapes of every endpoint the load uses, and logout."""

    def expect(what: str, status: int, body: Any, want: int, keys: set[str] | None) -> None:
        # a refused token: 401 (Flask-JWT-Extended answers 422 for a token of the wrong type)
        wanted = {401, 422} if want == 401 else {want}
        shape_ok = keys is None or (isinstance(body, dict) and set(body) == keys)
        if status not in wanted or not shape_ok:
            raise BenchError(f"contract: {what}: {status} {body}")

    email = seed.emails[0]
    status, body = call(base_url, "GET", "/auth/me", token=seed.access_tokens[0])
    expect("GET /auth/me", status, body, 200, USER_KEYS)
    status, body = call(
        base_url, "POST", "/auth/login", body={"email": email, "password": PASSWORD}
    )
    expect("POST /auth/login", status, body, 200, TOKEN_KEYS)
    expect("login user", 200, body["user"], 200, USER_KEYS)
    status, body = call(base_url, "POST", "/auth/refresh", token=body["refresh_token"])
    expect("POST /auth/refresh", status, body, 200, TOKEN_KEYS)
    access, refresh = body["access_token"], body["refresh_token"]
    status, _ = call(base_url, "GET", "/auth/me", token=refresh)
    expect("GET /auth/me with a refresh token", status, None, 401, None)
    status, body = call(base_url, "POST", "/auth/logout", token=access)
    expect("POST /auth/logout", status, body, 200, {"message"})
    status, _ = call(base_url, "GET", "/auth/me", token=access)
    expect("GET /auth/me after logout", status, None, 401, None)
    status, _ = call(base_url, "POST", "/auth/refresh", token=refresh)
    expect("POST /auth/refresh after logout", status, None, 401, None)
    status, _ = call(
        base_url, "POST", "/auth/login", body={"email": email, "password": "wrong password!"}
    )
    expect("POST /auth/login, wrong password", status, None, 401, None)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path
