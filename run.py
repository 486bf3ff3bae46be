"""Serve the API with hypercorn.

Development: one worker on 127.0.0.1:5000. Production (`QUART_ENV=production`):
`WEB_CONCURRENCY` workers with uvloop, forked from this process once it has built the
app, so that they share the memory of the code and the app (as gunicorn's `--preload`
does). The same app, served without this script (each worker then builds its own):

    hypercorn --workers 4 --worker-class uvloop --bind 0.0.0.0:5000 run:app
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import multiprocessing
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hypercorn.asyncio.run import asyncio_worker, uvloop_worker
from hypercorn.config import Config, Sockets
from sqlalchemy.exc import SQLAlchemyError

import supervise
from settings import ConfigError, Settings

if TYPE_CHECKING:
    from quart import Quart


def require_current_schema(settings: Settings) -> None:
    """Stop with one line when the schema is behind the migrations.

    An unreachable database does not stop start-up: the service then answers 503 and
    `/readyz` says so until the database is back.
    """
    from quart_auth_api.migrate import schema_problem  # Alembic: never in a server process

    try:
        problem = asyncio.run(schema_problem(settings))
    except (SQLAlchemyError, OSError, TimeoutError):
        return
    if problem:
        sys.exit(
            f"schema error: {problem}; run `alembic upgrade head` "
            "(or set DB_AUTO_MIGRATE=true to apply migrations at start)"
        )


#: The file that marks a directory as this service's own metrics directory.
METRICS_MARKER = ".quart-auth-api-metrics"
#: What prometheus-client's multiprocess mode writes: `<kind>_<pid>.db`.
METRICS_SAMPLE_RE = re.compile(
    r"(counter|histogram|summary|gauge_(live)?(all|min|max|sum|mostrecent))_\d+\.db"
)


def share_metrics_directory(settings: Settings) -> Settings:
    """One prometheus-client directory for all workers: in the environment, read when
    prometheus-client is imported, and in the settings the app is built with.

    The samples of an earlier run are removed, and nothing else: only files named as
    prometheus-client names them, and only in a directory this service marked as its own
    when it found it empty (PROMETHEUS_MULTIPROC_DIR pointed at a folder with other
    files in it stops start-up instead)."""
    directory = settings.prometheus_multiproc_dir or Path(
        tempfile.mkdtemp(prefix="quart-auth-api-metrics-")
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = directory.lstat()
    if state.st_uid != os.geteuid() or state.st_mode & 0o022:
        sys.exit(
            f"config error: PROMETHEUS_MULTIPROC_DIR: {directory} must be this user's and "
            "writable by nobody else (others could plant links among the sample files)"
        )
    marker = directory / METRICS_MARKER
    if not marker.exists():
        if any(directory.iterdir()):
            sys.exit(
                f"config error: PROMETHEUS_MULTIPROC_DIR: {directory} is not empty and is "
                "not this service's metrics directory; give it an empty directory of its own"
            )
        marker.write_text("prometheus-client samples of quart-auth-api, removed at each start\n")
    for stale in directory.iterdir():  # samples of an earlier run
        if METRICS_SAMPLE_RE.fullmatch(stale.name) and stale.is_file():
            stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return settings.model_copy(update={"prometheus_multiproc_dir": directory})


def build_app(settings: Settings) -> Quart:
    """The app, once the schema is known to be current."""
    from quart_auth_api import create_app

    require_current_schema(settings)
    return create_app(settings)


def prepare_database(settings: Settings) -> None:
    """With DB_AUTO_MIGRATE apply the migrations, then check the schema, in a short-lived
    child process: Alembic (about 11 MiB) then never weighs on the server's processes.
    A failure stops start-up with the child's one line."""
    child = multiprocessing.get_context("fork").Process(target=_prepare, args=(settings,))
    child.start()
    child.join()
    if child.exitcode:
        sys.exit(1)  # the child has printed why


def _prepare(settings: Settings) -> None:
    if settings.db_auto_migrate:
        from quart_auth_api.migrate import upgrade  # Alembic: only in this child

        upgrade(settings)
    require_current_schema(settings)


try:
    settings = Settings.load()
    if __name__ != "__main__":  # `hypercorn run:app`: each worker imports this module
        app = build_app(settings)
except ConfigError as error:  # one clear line, no traceback
    sys.exit(str(error))


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.application_path = "run:app"
    config.bind = [f"{settings.host}:{settings.port}"]
    config.workers = settings.web_concurrency
    config.worker_class = "uvloop" if settings.is_production else "asyncio"
    config.accesslog = None  # the app writes one access line per request itself
    config.errorlog = "-"
    config.graceful_timeout = settings.graceful_timeout.total_seconds()
    config.include_server_header = False
    return config


def serve_workers(config: Config) -> NoReturn:
    """Fork `config.workers` hypercorn workers from this process, then become their
    supervisor (`supervise.py`, stdlib only); this returns only if that exec fails.

    hypercorn 0.18's own multi-worker `run()` returns when the first worker exits and
    terminates the others, which cuts their in-flight requests, and its parent keeps the
    listening sockets open, so new connections hang during shutdown. Here SIGTERM reaches
    every worker, which stops accepting at once (its socket closes: new connections are
    refused) and drains its requests within `GRACEFUL_TIMEOUT`; the parent holds no
    socket. And the parent does not keep the app it built: once the workers are forked it
    execs the supervisor, a small program of its own, so the pages of the app that both
    workers had copied are no longer kept a third time.

    On Linux each worker listens on its own socket (hypercorn sets SO_REUSEPORT when
    there are several workers) and the kernel spreads new connections over them. On one
    shared socket, whichever worker wakes first accepts a whole burst (asyncio takes up
    to 100 connections at once) and keeps them for as long as they stay open, so a few
    keep-alive clients, or a proxy's pool, could load one worker and leave the others idle.
    """
    worker = uvloop_worker if config.worker_class == "uvloop" else asyncio_worker
    if config.workers > 1 and sys.platform == "linux":
        sockets = [config.create_sockets() for _ in range(config.workers)]
    else:
        sockets = [config.create_sockets()] * config.workers
    # blocked until the supervisor waits for them (the mask survives exec); each worker
    # unblocks them once hypercorn's handlers are in place (`unblock_signals`)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # exits must be seen, not reaped unseen
    signal.pthread_sigmask(signal.SIG_BLOCK, SUPERVISED_SIGNALS)
    context = multiprocessing.get_context("fork")
    parent = os.getpid()
    processes = [
        context.Process(target=_worker, args=(worker, config, own, sockets, parent))
        for own in sockets
    ]
    gc.freeze()  # the collector leaves the parent's objects alone: their pages stay shared
    try:
        for process in processes:
            process.start()
        for sock in {sock for own in sockets for sock in _listening(own)}:
            sock.close()  # the parent serves nothing: only the workers listen
        sys.stdout.flush()
        sys.stderr.flush()
        supervisor = str(Path(__file__).with_name("supervise.py"))
        pids = [str(process.pid) for process in processes]
        os.execv(sys.executable, [sys.executable, supervisor, str(config.graceful_timeout), *pids])  # noqa: S606
    except BaseException:
        for process in processes:  # no worker outlives a parent that could not supervise
            if process.pid is not None:
                process.kill()
        raise


#: What the supervisor waits for: blocked from before the fork until it waits for them.
SUPERVISED_SIGNALS = supervise.WATCHED
#: Linux's prctl option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


async def unblock_signals() -> None:
    """In a worker, once hypercorn has installed its SIGTERM and SIGINT handlers (they
    come before the app's start-up): what arrived meanwhile is delivered now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SUPERVISED_SIGNALS)


def _listening(sockets: Sockets) -> list[Any]:
    return [*sockets.secure_sockets, *sockets.insecure_sockets]


def _worker(
    worker: Callable[..., None],
    config: Config,
    own: Sockets,
    everyone: list[Sockets],
    parent: int,
) -> None:
    """A forked worker: it closes its copies of the other workers' sockets (so that a
    socket whose worker has stopped is closed and refuses connections), then serves
    until SIGTERM or SIGINT (hypercorn's handlers: stop accepting, drain, shut down).
    Should its parent, the supervisor, die, the kernel sends it SIGTERM (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before that: no one would stop this worker
            os._exit(1)
    for sockets in everyone:
        if sockets is not own:
            for sock in _listening(sockets):
                sock.close()
    gc.enable()  # off in the parent since start-up (see main)
    worker(config=config, sockets=own)


def main() -> int:
    global app, settings  # noqa: PLW0603  (`run:app`, for the forked workers)
    # No collection in the parent: it would leave holes in pages the workers share, which
    # they would fill (copying the pages); the workers collect (Python's gc.freeze docs).
    gc.disable()
    if settings.secrets_generated and settings.web_concurrency > 1:
        sys.exit(
            "config error: JWT_SECRET_KEY, SECRET_KEY: set both when WEB_CONCURRENCY > 1 "
            "(a random key would log everyone out at every restart, and workers started "
            "by `hypercorn run:app` would each sign, and name accounts, with their own)"
        )
    if settings.metrics_enabled and settings.web_concurrency > 1:
        settings = share_metrics_directory(settings)  # before prometheus-client is imported
    prepare_database(settings)
    from quart_auth_api import create_app

    try:
        app = create_app(settings)
    except ConfigError as error:
        sys.exit(str(error))
    app.before_serving(unblock_signals)  # in each worker, after hypercorn's handlers
    sys.modules["run"] = sys.modules[__name__]  # hypercorn loads "run:app": this module
    mode = "production" if settings.is_production else settings.env
    print(
        f"Quart Auth API ({mode}) on http://{settings.host}:{settings.port} "
        f"with {settings.web_concurrency} worker(s); docs at /docs",
        flush=True,
    )
    return serve_workers(hypercorn_config(settings))


if __name__ == "__main__":
    sys.exit(main())
