"""What the package's own log handler writes, captured in the format a test chooses."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from quart import Quart

from quart_auth_api import extensions
from quart_auth_api.logs import configure_logging
from settings import Settings

#: A line as the text format writes one, for a client to try to forge.
FORGED = "2026-12-02 12:00:00,000 WARNING quart_auth_api.security pid=1 [-] event=login_ok"
#: What a line must never hold: C0 and C1 controls, DEL, line and paragraph separators.
RAW_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: The start of every record in the text format.
TEXT_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ quart_auth_api")


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[str]:
        return self.text().split("\n")[:-1]  # only "\n" ends a line


@contextmanager
def captured_log(app: Quart, log_format: str) -> Iterator[Captured]:
    """Every line the package handler writes meanwhile, with its filters and formatter in
    `log_format`; the app's own logging is put back after."""
    configure_logging(Settings.for_testing(log_format=log_format))
    package = logging.getLogger("quart_auth_api")
    ours = next(h for h in package.handlers if getattr(h, "_quart_auth_api", False))
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.filters = ours.filters
    capture.setFormatter(ours.formatter)
    package.addHandler(capture)
    try:
        yield Captured(stream)
    finally:
        package.removeHandler(capture)
        configure_logging(extensions.settings(app))


def assert_no_forged_line(captured: Captured, log_format: str) -> list[str]:
    lines = captured.lines()
    assert lines
    for line in lines:
        assert not RAW_CONTROL.search(line), repr(line)
        if log_format == "json":
            record = json.loads(line)  # one record per line, whatever it holds
            for name, value in record.items():
                if isinstance(value, str) and name != "exc_info":
                    assert not RAW_CONTROL.search(value), (name, value)
        else:
            assert TEXT_RECORD.match(line) or line.startswith("    "), repr(line)
    return lines
