"""Run the project the way its users do: Alembic and `run.py` as child processes.

Alembic's `asyncio.run` cannot run inside a test's event loop and a real server
needs its own processes, so both run as subprocesses of the test, with an
environment that holds no service variable of the test runner's shell. Every
wait here is a bounded poll; every process is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: A PostgreSQL server the suite runs against too (`.ci/run` sets it); empty: SQLite only.
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
#: A developer's `.env`: pydantic-settings reads it for every variable the environment lacks.
DOTENV = PROJECT_ROOT / ".env"

ALEMBIC_TIMEOUT = 60.0
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
POLL_INTERVAL = 0.1
#: A worker's log line for a request is written within this after its response.
LOG_TIMEOUT = 5.0
#: Workers of the `two_workers` fixture's server.
SERVER_WORKERS = 2

#: Every variable `settings.py` reads (field names and aliases), upper-cased.
SERVICE_VARIABLES = frozenset(
    {name.upper() for name in Settings.model_fields} | {"QUART_ENV", "FLASK_ENV"}
)
#: One line the app logs per request: `... pid=<pid> [<request id>] <message>`.
LOG_LINE = re.compile(r"pid=(?P<pid>\d+) \[(?P<request_id>[^\]\s]+)\] (?P<message>.*)")


def service_env(**values: str) -> dict[str, str]:
    """The test runner's environment without any service variable, plus `values`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SERVICE_VARIABLES}
    env.update(values)
    return env


def production_env(database_url: str, *, workers: int = 2, **extra: str) -> dict[str, str]:
    """`QUART_ENV=production` on a free 127.0.0.1 port with fresh secrets and cheap bcrypt."""
    return service_env(
        QUART_ENV="production",
        WEB_CONCURRENCY=str(workers),
        HOST="127.0.0.1",
        PORT=str(free_port()),
        SECRET_KEY=secrets.token_urlsafe(48)[:48],
        JWT_SECRET_KEY=secrets.token_urlsafe(48)[:48],
        BCRYPT_ROUNDS="10",  # the least production accepts
        DATABASE_URL=database_url,
        **extra,
    )


def run_alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m alembic <args>` on `database_url`; asserts it succeeded."""
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=PROJECT_ROOT,
        env=service_env(DATABASE_URL=database_url, QUART_ENV="testing"),
        capture_output=True,
        text=True,
        timeout=ALEMBIC_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, (
        f"alembic {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def problem_code(response: httpx.Response) -> str:
    """The `code` of a problem answered over real HTTP (asserting it is one)."""
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.text
    assert "Traceback" not in response.text
    return str(response.json()["code"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_request_id(label: str) -> str:
    """A valid `X-Request-ID` (8-128 of [A-Za-z0-9._:-]) that is unique in a log."""
    return f"test-{label}-{uuid.uuid4().hex}"


@dataclass
class Server:
    """A running `python run.py` whose stdout and stderr go to `log_path`."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    #: The environment it was started with (its secrets, to compute what it computes).
    env: dict[str, str] = field(default_factory=dict, repr=False)
    killed: bool = field(default=False, init=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request_pids(self) -> dict[str, int]:
        """Request id -> pid of the worker that logged it, from the log so far
        (text lines in development, JSON lines in production)."""
        pids: dict[str, int] = {}
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "request_id" in record and "pid" in record:
                    pids.setdefault(str(record["request_id"]), int(record["pid"]))
            elif match := LOG_LINE.search(line):
                pids.setdefault(match["request_id"], int(match["pid"]))
        pids.pop("-", None)  # lines logged outside a request
        return pids

    async def pid_of(self, request_id: str) -> int:
        """The worker pid that logged `request_id` (its line may follow the response)."""
        deadline = time.monotonic() + LOG_TIMEOUT
        while (pid := self.request_pids().get(request_id)) is None:
            assert time.monotonic() < deadline, f"no log line for {request_id}:\n{self.log()}"
            await asyncio.sleep(POLL_INTERVAL)
        return pid

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll `GET /healthz` until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process.poll() is None, (
                    f"server exited {self.process.returncode} during start-up:\n{self.log()}"
                )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(POLL_INTERVAL)
        raise AssertionError(f"GET /healthz not 200 within {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, up to STOP_TIMEOUT seconds of grace, then SIGKILL; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        return self.process.returncode


def _alive(pid: int) -> bool:
    """True while `pid` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: set[int], timeout: float = 5.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while (alive := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    return alive


@contextmanager
def serve(env: dict[str, str], log_path: Path) -> Iterator[Server]:
    """Start `python run.py` with `env`, wait until it is healthy, always stop it.

    On leaving, asserts the server shut down on SIGTERM (no SIGKILL needed) with
    exit code 0, and that no worker it logged from outlives it.
    """
    with log_path.open("ab") as log:  # O_APPEND: workers' lines never overwrite each other
        process = subprocess.Popen(
            [sys.executable, "run.py"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(process, f"http://127.0.0.1:{env['PORT']}", log_path, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        workers = set(server.request_pids().values()) - {process.pid}
        leftover = _wait_gone(workers)
        for pid in leftover:  # our own grandchildren, by pid
            os.kill(pid, signal.SIGKILL)
    assert not server.killed, f"server ignored SIGTERM for {STOP_TIMEOUT}s:\n{server.log()}"
    assert process.returncode == 0, f"server exited {process.returncode}:\n{server.log()}"
    assert not leftover, f"workers {leftover} outlived the server:\n{server.log()}"
