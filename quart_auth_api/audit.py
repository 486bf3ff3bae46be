"""Security events: one structured line each, on the `quart_auth_api.security` logger.

`event=login_failed ip=203.0.113.9 account=acct_3f1c…` — the request id is added by
the log filter. Never a token, a password, a hash or a raw email: accounts that may not
exist are named by a keyed one-way digest of their email, known users by their public id.
"""

from __future__ import annotations

import logging

from quart import has_request_context

from . import extensions
from .client import client_ip
from .crypto.digests import email_digest
from .metrics import count_event

log = logging.getLogger("quart_auth_api.security")

#: Events that mean something was refused, logged at WARNING.
REFUSALS = frozenset(
    {
        "login_failed",
        "refresh_token_reused",
        "rate_limited",
        "csrf_failed",
        "token_refused",
        "link_token_refused",
        "password_check_failed",
        "login_unverified",
        "mail_failed",
        "mfa_challenge_failed",
        "mfa_token_refused",
        "mfa_code_refused",
        "aal2_refused",
    }
)


def audit(event: str, **fields: object) -> None:
    """Log one security event with the client address and `fields` (None values dropped)."""
    values = {"ip": (client_ip() if has_request_context() else None) or "-"} | {
        name: _clean(value) for name, value in fields.items() if value is not None
    }
    message = " ".join([f"event={event}", *(f"{name}={value}" for name, value in values.items())])
    level = logging.WARNING if event in REFUSALS else logging.INFO
    log.log(level, message, extra={"event": event, **values})
    count_event(event)


def account_ref(email: str) -> str:
    """A stable, one-way name for an email address, for correlating log lines (a keyed
    digest: see `crypto/digests.py`)."""
    return "acct_" + email_digest(email, extensions.digest_key())[:16]


def _clean(value: object) -> str:
    """One token of the line: no spaces or line breaks a client could inject."""
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in str(value))[:80]
