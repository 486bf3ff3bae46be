"""Mail in tests: settings that send through the test SMTP server, delivering what the
outbox holds (as each worker's sender does), and reading links out of what arrived."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

from quart import Quart

from quart_auth_api import cli, extensions
from quart_auth_api.db import DATABASE
from quart_auth_api.mail import sender_for
from quart_auth_api.services.outbox import deliver_due
from settings import Settings
from tests.helpers.smtp import SmtpServer

TOKEN_RE = re.compile(r"#token=([A-Za-z0-9_-]+)")


def mail_settings(database_url: str, smtp: SmtpServer, **overrides: Any) -> Settings:
    """Testing settings with MAIL_BACKEND=smtp to `smtp` (no TLS, short timeout)."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "mail_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "smtp_timeout": 2,
    }
    return Settings.for_testing(**(values | overrides))


async def deliver_all(app: Quart) -> tuple[int, int]:
    """Deliver everything due, as the background sender would, until nothing is left:
    (sent, failed)."""
    settings = extensions.settings(app)
    sender = sender_for(settings)
    assert sender is not None, "MAIL_BACKEND=none sends nothing"
    sent = failed = 0
    while True:
        batch = await deliver_due(
            DATABASE.get(app).sessionmaker,
            sender,
            max_attempts=settings.mail_max_attempts,
            compose=cli.composer(settings),
        )
        if batch == (0, 0):
            return sent, failed
        sent, failed = sent + batch[0], failed + batch[1]


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def to(smtp: SmtpServer, address: str) -> list[EmailMessage]:
    """What arrived for `address`, oldest first."""
    return [message for message in smtp.received if message["To"] == address]


def link_token(message: EmailMessage) -> str:
    """The one-time token of the link in `message` (from its `#token=` fragment)."""
    found = TOKEN_RE.findall(text_of(message))
    assert len(found) == 1, text_of(message)
    return str(found[0])


def link_of(message: EmailMessage) -> str:
    """The whole link in `message`."""
    found = re.findall(r"https?://\S+#token=[A-Za-z0-9_-]+", text_of(message))
    assert len(found) == 1, text_of(message)
    return str(found[0])
