"""Logging: one handler on the package logger, text in development, JSON in production.

Every line carries the worker pid and the request id. JSON lines (python-json-logger)
also carry the structured fields a line was logged with: the access log's method,
path, status and duration, a security event's name and its fields.

No field of a line holds a raw control character (or any other character that is not
printable: line and paragraph separators, bidi controls): `PlainFields` writes them as
`\\xNN` / `\\uNNNN` escapes, so that a request path such as `/x%0A2026-... WARNING ...`
cannot forge a line. A traceback keeps its lines, each one indented, so that it
cannot pass for a record either.
"""

from __future__ import annotations

import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from quart import g, has_request_context

from settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s pid=%(process)d [%(request_id)s] %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(request_id)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


#: The attributes every `LogRecord` has; the others are a line's own fields (`extra`).
STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "_plain",
}


def printable(text: str) -> str:
    """`text` with every character that is not printable written as an escape (and the
    backslash doubled, so that an escape cannot be told from the text `\\x0a`)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join("\\\\" if c == "\\" else c if c.isprintable() else _escape(c) for c in text)


def _plain(value: Any) -> Any:
    """A field's value with every string in it printable (lists and dicts too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(key)): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _escape(character: str) -> str:
    point = ord(character)
    return f"\\x{point:02x}" if point < 0x100 else f"\\u{point:04x}"


def plain_traceback(text: str, *, indent_first: bool = False) -> str:
    """A traceback's lines, escaped one by one and indented (the first one too, where it
    follows the record's own line)."""
    first, *rest = text.split("\n")
    lead = "    " if indent_first else ""
    return "\n".join([lead + printable(first), *(f"    {printable(line)}" for line in rest)])


class PlainFields(logging.Filter):
    """Escapes what is not printable in the message and in every field of a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_plain", False):  # another handler of ours did it already
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a bad format: logging's own handler reports it
            return True
        record.msg, record.args = printable(message), None
        for name, value in list(vars(record).items()):
            if name not in STANDARD_ATTRIBUTES:
                setattr(record, name, _plain(value))
        record._plain = True
        return True


class TextFormatter(logging.Formatter):
    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return plain_traceback(super().formatException(ei), indent_first=True)

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return plain_traceback(super().formatStack(stack_info), indent_first=True)


class PlainJsonFormatter(JsonFormatter):
    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]  # noqa: N802
        text = super().formatException(ei)
        if isinstance(text, str):
            return plain_traceback(text)
        return [printable(line) for line in text]


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
        handler.addFilter(PlainFields())
        handler._quart_auth_api = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    handler.setFormatter(_formatter(settings.log_format or "text"))


def _formatter(kind: str) -> logging.Formatter:
    if kind == "json":
        return PlainJsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp=False)
    return TextFormatter(TEXT_FORMAT)
