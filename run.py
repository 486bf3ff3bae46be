"""Serve the API with hypercorn.

Development: one worker on 127.0.0.1:5000. Production (`QUART_ENV=production`):
`WEB_CONCURRENCY` workers with uvloop. The same app, served without this script:

    hypercorn --workers 4 --worker-class uvloop --bind 0.0.0.0:5000 run:app
"""

from __future__ import annotations

import sys

from hypercorn.config import Config
from hypercorn.run import run

from quart_auth_api import create_app
from settings import ConfigError, Settings

try:
    settings = Settings.load()
except ConfigError as error:  # one clear line, no traceback
    sys.exit(str(error))

app = create_app(settings)


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.application_path = "run:app"
    config.bind = [f"{settings.host}:{settings.port}"]
    config.workers = settings.web_concurrency or 1
    config.worker_class = "uvloop" if settings.is_production else "asyncio"
    config.accesslog = None  # the app writes one access line per request itself
    config.errorlog = "-"
    config.graceful_timeout = 10.0
    config.include_server_header = False
    return config


def main() -> int:
    if settings.secrets_generated and (settings.web_concurrency or 1) > 1:
        sys.exit(
            "config error: JWT_SECRET_KEY: set it when WEB_CONCURRENCY > 1 "
            "(each worker would otherwise sign with its own random key)"
        )
    mode = "production" if settings.is_production else settings.env
    print(
        f"Quart Auth API ({mode}) on http://{settings.host}:{settings.port} "
        f"with {settings.web_concurrency} worker(s); docs at /docs",
        flush=True,
    )
    return run(hypercorn_config(settings))


if __name__ == "__main__":
    sys.exit(main())
