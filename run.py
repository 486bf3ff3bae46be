"""Serve the API with hypercorn.

Development: one worker on 127.0.0.1:5000. Production (`QUART_ENV=production`):
`WEB_CONCURRENCY` workers with uvloop. The same app, served without this script:

    hypercorn --workers 4 --worker-class uvloop --bind 0.0.0.0:5000 run:app
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from hypercorn.config import Config
from hypercorn.run import run
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
    return run(hypercorn_config(settings))


if __name__ == "__main__":
    sys.exit(main())
