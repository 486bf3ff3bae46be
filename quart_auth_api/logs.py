"""Logging: one handler on the package logger, text in development, JSON in production.

Every line carries the worker pid and the request id. JSON lines (python-json-logger)
also carry the structured fields a line was logged with: the access log's method,
path, status and duration, a security event's name and its fields.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter
from quart import g, has_request_context

from settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(request_id)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record (`-` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def configure_logging(settings: Settings) -> None:
    """Install (or re-format) the package's handler; the package does not propagate."""
    logger = logging.getLogger("quart_auth_api")
    logger.setLevel(settings.log_level)
    handler = next((h for h in logger.handlers if getattr(h, "_quart_auth_api", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.addFilter(RequestIdFilter())
        handler._quart_auth_api = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    handler.setFormatter(_formatter(settings.log_format or "text"))


def _formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp=False)
    return logging.Formatter(TEXT_FORMAT)
