"""Serve the API with hypercorn.

Development: one worker on 127.0.0.1:5000. Production (`QUART_ENV=production`):
`WEB_CONCURRENCY` workers with uvloop. The same app, served without this script:

    hypercorn --workers 4 --worker-class uvloop --bind 0.0.0.0:5000 run:app
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

from hypercorn.asyncio.run import asyncio_worker, uvloop_worker
from hypercorn.config import Config
from sqlalchemy.exc import SQLAlchemyError

from quart_auth_api import create_app
from quart_auth_api.db import alembic_config, schema_problem
from settings import ConfigError, Settings


def require_current_schema(settings: Settings) -> None:
    """Stop with one line when the schema is behind the migrations.

    An unreachable database does not stop start-up: the service then answers 503 and
    `/readyz` says so until the database is back.
    """
    try:
        problem = asyncio.run(schema_problem(settings))
    except (SQLAlchemyError, OSError, TimeoutError):
        return
    if problem:
        sys.exit(
            f"schema error: {problem}; run `alembic upgrade head` "
            "(or set DB_AUTO_MIGRATE=true to apply migrations at start)"
        )


def share_metrics_directory(settings: Settings) -> None:
    """One empty prometheus-client directory for all workers (they inherit the variable)."""
    directory = settings.prometheus_multiproc_dir or Path(
        tempfile.mkdtemp(prefix="quart-auth-api-metrics-")
    )
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):  # samples of an earlier run
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def migrate(settings: Settings) -> None:
    """`alembic upgrade head`, once, in the parent process before any worker starts."""
    from alembic import command

    config = alembic_config(settings)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


try:
    settings = Settings.load()
    if __name__ == "__main__" and settings.db_auto_migrate:
        migrate(settings)
    require_current_schema(settings)  # in the parent and again in every worker
    app = create_app(settings)
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


def serve_workers(config: Config) -> int:
    """hypercorn's multi-worker `run()`, except that SIGTERM drains every worker.

    hypercorn 0.18 returns when the first worker exits and terminates the others, which
    cuts their in-flight requests; and its parent keeps the listening socket open, so new
    connections hang during shutdown. Here every worker gets `GRACEFUL_TIMEOUT` to
    finish, and the parent closes the sockets at once so new connections are refused.
    """
    worker = uvloop_worker if config.worker_class == "uvloop" else asyncio_worker
    sockets = config.create_sockets()
    context = multiprocessing.get_context("spawn")
    shutdown = context.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the workers: we decide
    processes = [
        context.Process(
            target=worker,
            kwargs={"config": config, "sockets": sockets, "shutdown_event": shutdown},
        )
        for _ in range(config.workers)
    ]
    for process in processes:
        process.start()
    listening = [*sockets.secure_sockets, *sockets.insecure_sockets]

    def stop(*_: object) -> None:
        shutdown.set()  # every worker stops accepting and drains its requests
        for sock in listening:
            sock.close()

    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), stop)
    wait([process.sentinel for process in processes])  # a signal, or a worker died
    stop()
    deadline = time.monotonic() + config.graceful_timeout + 5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    return next((process.exitcode for process in processes if process.exitcode), 0)


def main() -> int:
    if settings.secrets_generated and settings.web_concurrency > 1:
        sys.exit(
            "config error: JWT_SECRET_KEY: set it when WEB_CONCURRENCY > 1 "
            "(each worker would otherwise sign with its own random key)"
        )
    if settings.metrics_enabled and settings.web_concurrency > 1:
        share_metrics_directory(settings)
    mode = "production" if settings.is_production else settings.env
    print(
        f"Quart Auth API ({mode}) on http://{settings.host}:{settings.port} "
        f"with {settings.web_concurrency} worker(s); docs at /docs",
        flush=True,
    )
    return serve_workers(hypercorn_config(settings))


if __name__ == "__main__":
    sys.exit(main())
