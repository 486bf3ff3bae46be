"""Serve the ceiling app (app.py) as run.py serves the service: WEB_CONCURRENCY uvloop
workers forked from this process once it has built the app, each listening on a socket
of its own (SO_REUSEPORT: the kernel spreads new connections over them), so that a few
keep-alive clients do not pile onto one worker. A standalone copy of run.py's
`serve_workers` (importing run.py would build the service). SIGTERM stops the workers.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait
from typing import Any

import app  # noqa: F401  (built here, before the fork: the workers share its pages)
from hypercorn.asyncio.run import uvloop_worker
from hypercorn.config import Config, Sockets


def _worker(config: Config, own: Sockets, everyone: list[Sockets], shutdown: Any) -> None:
    for sockets in everyone:  # a worker listens on its own socket only
        if sockets is not own:
            for sock in sockets.insecure_sockets:
                sock.close()
    uvloop_worker(config=config, sockets=own, shutdown_event=shutdown)


def main() -> int:
    config = Config()
    config.application_path = "app:app"
    config.bind = [f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ['PORT']}"]
    config.workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
    config.worker_class = "uvloop"
    config.accesslog = None
    config.errorlog = "-"
    config.include_server_header = False
    sockets = [config.create_sockets() for _ in range(config.workers)]  # SO_REUSEPORT if > 1
    context = multiprocessing.get_context("fork")
    shutdown = context.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    processes = [
        context.Process(target=_worker, args=(config, own, sockets, shutdown)) for own in sockets
    ]
    for process in processes:
        process.start()

    def stop(*_: object) -> None:
        shutdown.set()
        for own in sockets:
            for sock in own.insecure_sockets:
                sock.close()

    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), stop)
    wait([process.sentinel for process in processes])
    stop()
    for process in processes:
        process.join(config.graceful_timeout + 5)
        if process.is_alive():
            process.kill()
            process.join()
    return next((process.exitcode for process in processes if process.exitcode), 0)


if __name__ == "__main__":
    sys.exit(main())
