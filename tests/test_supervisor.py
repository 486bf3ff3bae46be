"""The workers' parent: once `run.py` has forked the workers it becomes `supervise.py`.

- the parent is the supervisor program, holds no listening socket, and its children are
  the workers;
- a worker that dies takes the service down with it: the other worker drains and exits,
  and the supervisor exits with the dead worker's code (128 + the signal); one that ends
  unasked with code 0 still fails the service (exit 1);
- the supervisor killed outright (SIGKILL) leaves no worker behind (their parent-death
  signal);
- a worker that ignores SIGTERM is killed `GRACEFUL_TIMEOUT` + 5 s later.

The last one and the unasked exit drive supervise.py directly, from a parent made as
run.py makes one, with real child processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.helpers.processes import PROJECT_ROOT, production_env, run_alembic, serve

pytestmark = pytest.mark.server

EXIT_TIMEOUT = 30.0


def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'supervised.db'}"
    run_alembic(url, "upgrade", "head")
    return url


@contextmanager
def reaped(process: subprocess.Popen[Any], *workers: psutil.Process) -> Iterator[None]:
    """On the way out, whatever the test left running is killed, by pid: the process,
    its children and `workers` (which may have lost their parent)."""
    try:
        yield
    finally:
        left = [*workers]
        if process.poll() is None:
            left += psutil.Process(process.pid).children()
            process.kill()
            process.wait(EXIT_TIMEOUT)
        for worker in left:
            if worker.is_running():
                worker.kill()
        if process.stdout is not None:
            process.stdout.close()


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


def start_workers(tmp_path: Path) -> tuple[subprocess.Popen[bytes], list[psutil.Process]]:
    """`python run.py` with two workers; the process and its workers once both are up."""
    log_path = tmp_path / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            [sys.executable, "run.py"],
            cwd=PROJECT_ROOT,
            env=production_env(database(tmp_path)),
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + EXIT_TIMEOUT
    while len(workers := psutil.Process(process.pid).children()) < 2:
        assert time.monotonic() < deadline and process.poll() is None, log_path.read_text()
        time.sleep(0.1)
    return process, workers


def test_a_worker_that_dies_ends_the_service(tmp_path):
    process, (dead, survivor) = start_workers(tmp_path)
    with reaped(process):
        dead.kill()
        assert process.wait(EXIT_TIMEOUT) == 128 + signal.SIGKILL
        assert gone([survivor])


def test_workers_stop_when_their_supervisor_is_killed(tmp_path):
    """SIGKILL to the supervisor (nothing can forward it) still stops the workers: the
    kernel sends them SIGTERM as their parent dies, and they drain and exit."""
    process, workers = start_workers(tmp_path)
    with reaped(process, *workers):
        process.kill()
        process.wait(EXIT_TIMEOUT)
        _, alive = psutil.wait_procs(workers, timeout=EXIT_TIMEOUT)
        assert not alive


#: A parent as run.py makes one: it blocks the signals, forks two workers and execs
#: supervise.py (argv[1]) with a graceful timeout of 0. `stubborn` workers ignore
#: SIGTERM; with `quitter`, the first worker exits 0 at once, unasked.
PARENT = textwrap.dedent(
    r"""
    import os, signal, sys, time
    mode = sys.argv[2]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})
    pids = []
    for number in range(2):
        pid = os.fork()
        if pid == 0:
            if mode == "stubborn":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
            os.write(1, b"ready\n")  # one write: the two lines never interleave
            if mode == "quitter" and number == 0:
                time.sleep(0.5)
                os._exit(0)
            time.sleep(120)
            os._exit(0)
        pids.append(str(pid))
    os.execv(sys.executable, [sys.executable, sys.argv[1], "0", *pids])
    """
)


def start_parent(mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", PARENT, str(PROJECT_ROOT / "supervise.py"), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert [process.stdout.readline() for _ in range(2)] == ["ready\n", "ready\n"]
    return process


def gone(processes: list[psutil.Process]) -> bool:
    return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)


def test_workers_that_ignore_sigterm_are_killed_after_the_grace():
    process = start_parent("stubborn")
    with reaped(process):
        children = psutil.Process(process.pid).children()
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT) == 128 + signal.SIGKILL
        assert time.monotonic() - started >= 5.0  # GRACEFUL_TIMEOUT 0, then the margin
        assert gone(children)


def test_a_worker_that_ends_unasked_fails_the_service_even_with_code_0():
    """A worker that exits 0 on its own still failed (a restart policy "on failure" must
    see it): the other worker is stopped and the supervisor exits 1."""
    process = start_parent("quitter")
    with reaped(process):
        children = psutil.Process(process.pid).children()
        assert process.wait(EXIT_TIMEOUT) == 1
        assert gone(children)
