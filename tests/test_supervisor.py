"""The workers' parent: once `run.py` has forked the workers it becomes `supervise.py`.

- the parent is the supervisor program, holds no listening socket, and its children are
  the workers;
- a worker that dies takes the service down with it: the other worker drains and exits,
  and the supervisor exits with the dead worker's code (128 + the signal);
- a worker that ignores SIGTERM is killed `GRACEFUL_TIMEOUT` + 5 s later (supervise.py
  driven directly, with real child processes that ignore the signal).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers.processes import PROJECT_ROOT, production_env, run_alembic, serve

pytestmark = pytest.mark.server

EXIT_TIMEOUT = 30.0


def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'supervised.db'}"
    run_alembic(url, "upgrade", "head")
    return url


def test_the_parent_becomes_a_supervisor_that_holds_no_socket(tmp_path):
    with serve(production_env(database(tmp_path)), tmp_path / "server.log") as server:
        parent = psutil.Process(server.process.pid)
        assert parent.cmdline()[1:2] == [str(PROJECT_ROOT / "supervise.py")], parent.cmdline()
        assert not [c for c in parent.net_connections() if c.status == psutil.CONN_LISTEN]
        workers = parent.children()
        assert len(workers) == 2
        port = int(server.env["PORT"])
        for worker in workers:
            listening = [c for c in worker.net_connections() if c.status == psutil.CONN_LISTEN]
            assert [c.laddr.port for c in listening] == [port]  # its own socket only


def test_a_worker_that_dies_ends_the_service(tmp_path):
    log_path = tmp_path / "server.log"
    env = production_env(database(tmp_path))
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "run.py"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + EXIT_TIMEOUT
        while len(psutil.Process(process.pid).children()) < 2:
            assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
            time.sleep(0.1)
        dead, survivor = psutil.Process(process.pid).children()
        dead.kill()
        assert process.wait(EXIT_TIMEOUT) == 128 + signal.SIGKILL, log_path.read_text()
        assert not survivor.is_running() or survivor.status() == psutil.STATUS_ZOMBIE
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children():
                child.kill()
            process.kill()
            process.wait(EXIT_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


STUBBORN_PARENT = textwrap.dedent(
    r"""
    import os, signal, sys, time
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # a worker that will not stop on SIGTERM
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            os.write(1, b"ready\n")  # one write: the two lines never interleave
            time.sleep(120)
            os._exit(0)
        pids.append(str(pid))
    os.execv(sys.executable, [sys.executable, sys.argv[1], "0", *pids])
    """
)


def test_workers_that_ignore_sigterm_are_killed_after_the_grace(tmp_path):
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", STUBBORN_PARENT, str(PROJECT_ROOT / "supervise.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert [process.stdout.readline() for _ in range(2)] == ["ready\n", "ready\n"]
        children = psutil.Process(process.pid).children()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT) == 128 + signal.SIGKILL
        waited = time.monotonic() - started
        assert waited >= 5.0  # GRACEFUL_TIMEOUT 0, then the margin: never before it
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    finally:
        if process.poll() is None:
            for child in psutil.Process(process.pid).children():
                child.kill()
            process.kill()
            process.wait(EXIT_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()
