"""Mail: a message rendered from the package's templates, and the senders that deliver it.

Nothing here is called inside a request: a flow writes its message to the outbox in
the transaction of its token (`services/outbox.py`), and the sender in each worker
delivers it later. `SmtpSender` speaks SMTP with aiosmtplib (never the blocking
smtplib on the loop); `ConsoleSender` prints the whole message to standard output,
outside the logging system, so that a developer can follow the link. Neither ever logs
a body, a link or an address.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Protocol

import aiosmtplib
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from settings import Settings

TEMPLATES = Path(__file__).parent / "templates" / "mail"
PRODUCT = "Quart Auth API"

_environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,  # a missing value is a bug, never an empty link
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Message:
    """One mail, rendered: the address it goes to, its subject, its text and HTML parts."""

    to: str
    subject: str
    text: str
    html: str


def render(template: str, *, to: str, subject: str, **context: Any) -> Message:
    """`templates/mail/<template>.txt` and `.html` with `context` (and the product's name)."""
    values = {"product": PRODUCT, "subject": subject, **context}
    return Message(
        to=to,
        subject=subject,
        text=_environment.get_template(f"{template}.txt").render(values),
        html=_environment.get_template(f"{template}.html").render(values),
    )


#: Every mail the service sends: kind -> (subject, what happened). The three link kinds
#: carry a one-time link to their page (`LINK_PAGES`); the others are notices.
NOTICES: dict[str, tuple[str, str]] = {
    "password_reset": (
        "Reset your password",
        "Someone asked to reset the password of the account with this address. "
        "To choose a new password, open this link:",
    ),
    "email_verify": (
        "Confirm your address",
        "To confirm that this address belongs to your account, open this link:",
    ),
    "email_change": (
        "Confirm your new address",
        "Someone asked to move an account to this address. To confirm it, open this link:",
    ),
    "password_changed": (
        "Your password was changed",
        "The password of your account was changed, and every other session was ended. "
        "If this wasn't you, reset your password now and check your account.",
    ),
    "email_change_requested": (
        "A new address was requested for your account",
        "Someone asked to move your account to another address. Nothing changes until "
        "the new address is confirmed. If this wasn't you, change your password now.",
    ),
    "mfa_enabled": (
        "Two-step login is on",
        "A TOTP authenticator was added to your account: logging in now needs a code from "
        "it (or a recovery code). If this wasn't you, reset your password now.",
    ),
    "mfa_removed": (
        "Two-step login is off",
        "The TOTP authenticator of your account was removed, and every other session was "
        "ended. If this wasn't you, reset your password now and turn it on again.",
    ),
    "mfa_recovery_codes_regenerated": (
        "New recovery codes were made",
        "Ten new recovery codes were made for your account; the old ones no longer work. "
        "If this wasn't you, reset your password now.",
    ),
    "mfa_recovery_code_used": (
        "A recovery code was used",
        "Someone logged in to your account with one of its recovery codes; that code no "
        "longer works. If this wasn't you, reset your password now.",
    ),
}
#: The page each link kind opens, under FRONTEND_URL; the token rides in the fragment.
LINK_PAGES = {
    "password_reset": "/reset-password",
    "email_verify": "/verify-email",
    "email_change": "/confirm-email-change",
}


def notice(
    kind: str, *, to: str, link: str | None = None, lifetime: timedelta | None = None
) -> Message:
    """The mail of `kind` to `to`, with its link and how long the link lasts."""
    subject, what = NOTICES[kind]
    expires = f"in {_duration(lifetime)}" if lifetime is not None else None
    return render("notice", to=to, subject=subject, what=what, link=link, expires=expires)


def link_url(frontend_url: str, kind: str, token: str) -> str:
    """`FRONTEND_URL` + the kind's page + `#token=<token>`."""
    return f"{frontend_url}{LINK_PAGES[kind]}#token={token}"


def _duration(lifetime: timedelta) -> str:
    seconds = int(lifetime.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


class Sender(Protocol):
    async def send(self, message: Message) -> None: ...


class MailError(Exception):
    """A delivery that failed; the message says why in a form safe to log. `permanent`:
    trying again cannot help (a malformed address or header)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


class SmtpSender:
    """Delivers through `SMTP_HOST` with the security, credentials and timeout settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: Message) -> None:
        settings = self.settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        try:
            mail = email_message(message, settings.mail_from)
        except ValueError:  # a line break in a header, not exactly one address
            raise MailError("invalid message", permanent=True) from None
        try:
            await aiosmtplib.send(
                mail,
                sender=parseaddr(settings.mail_from)[1],
                recipients=[str(mail["To"])],  # the one address email_message checked
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password,
                use_tls=settings.smtp_security == "tls",
                start_tls=settings.smtp_security == "starttls",
                timeout=settings.smtp_timeout.total_seconds(),
            )
        except ValueError:  # aiosmtplib refused the addresses themselves
            raise MailError("invalid address", permanent=True) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            raise MailError(type(error).__name__) from None


class ConsoleSender:
    """Prints every message to standard output as a reader wants it (headers and the text
    part, not MIME-encoded, so the link can be followed): development only."""

    def __init__(self, mail_from: str) -> None:
        self.mail_from = mail_from

    async def send(self, message: Message) -> None:
        sys.stdout.write(
            "----- mail (MAIL_BACKEND=console) -----\n"
            f"From: {self.mail_from}\nTo: {message.to}\nSubject: {message.subject}\n\n"
            f"{message.text}\n----- end of mail -----\n"
        )
        sys.stdout.flush()


def one_address(to: str) -> str:
    """The one address of `to`; ValueError for none, several, or a line break in it."""
    found = getaddresses([to])
    if len(found) != 1 or "@" not in found[0][1] or any(c in to for c in "\r\n,;"):
        raise ValueError("not exactly one address")
    return found[0][1]


def email_message(message: Message, sender: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = one_address(message.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Subject"] = message.subject
    mail["Message-ID"] = make_msgid(domain="quart-auth-api")
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    return mail


def sender_for(settings: Settings) -> Sender | None:
    """The sender MAIL_BACKEND names; None for `none`."""
    if settings.mail_backend == "smtp":
        return SmtpSender(settings)
    if settings.mail_backend == "console":
        return ConsoleSender(settings.mail_from)
    return None
