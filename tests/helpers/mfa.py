"""A second factor through the front door: enrol TOTP, log in with a code, and the clock
the codes are computed against (`MfaClock`, patched into the one the service reads)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from quart import Quart
from quart.typing import TestClientProtocol
from sqlalchemy import func, select, update

from quart_auth_api.crypto import totp
from quart_auth_api.db import DATABASE
from quart_auth_api.models import AuthSession
from tests.helpers.http import PASSWORD, Account, bearer, claims_of


@dataclass
class MfaClock:
    """The time `services/mfa.py` reads; starts in the middle of a 30-second step."""

    now: datetime = field(
        default_factory=lambda: datetime.fromtimestamp(
            (int(datetime.now(UTC).timestamp()) // 30) * 30 + 15, UTC
        )
    )

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @property
    def step(self) -> int:
        return totp.time_step(self.now)


@dataclass
class Factor:
    """An enrolled TOTP factor: its secret, its recovery codes, and the aal2 tokens the
    confirmation answered."""

    secret: str
    recovery_codes: list[str]
    access_token: str
    refresh_token: str
    factor_id: str

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.access_token)


def code(secret: str, clock: MfaClock, steps: int = 0) -> str:
    """The code an authenticator shows `steps` steps from the clock's now."""
    return totp.code_at(secret, clock.step + steps)


async def start_enrolment(client: TestClientProtocol, auth: dict[str, str]) -> dict[str, Any]:
    response = await client.post("/auth/mfa/totp", headers=auth)
    assert response.status_code == 201, await response.get_data(as_text=True)
    return dict(await response.get_json())


async def enrol(client: TestClientProtocol, account: Account, clock: MfaClock) -> Factor:
    """Enrol and confirm a factor for `account`; the clock moves one step on, so that
    the next code is of a step not used yet."""
    started = await start_enrolment(client, account.auth)
    response = await client.post(
        "/auth/mfa/totp/verify",
        headers=account.auth,
        json={"factor_id": started["factor_id"], "code": code(started["secret"], clock)},
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    body = await response.get_json()
    clock.advance(30)
    return Factor(
        started["secret"],
        body["recovery_codes"],
        body["access_token"],
        body["refresh_token"],
        started["factor_id"],
    )


async def mfa_token(client: TestClientProtocol, email: str, password: str = PASSWORD) -> str:
    """Log in with the password of an account that has a factor: the `mfa_token`."""
    response = await client.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, await response.get_data(as_text=True)
    body = await response.get_json()
    assert body["mfa_required"] is True and "access_token" not in body, body
    return str(body["mfa_token"])


async def challenge(client: TestClientProtocol, token: str, **proof: str) -> Any:
    """POST /auth/mfa/challenge with `code=` or `recovery_code=`."""
    return await client.post("/auth/mfa/challenge", json={"mfa_token": token, **proof})


async def rows(app: Quart, model: Any) -> int:
    """How many rows the table of `model` holds."""
    async with DATABASE.get(app).sessionmaker() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


async def raced_login(app: Quart, access_token: str) -> str:
    """Bring back the session of `access_token`, a password-only login opened before the
    factor was confirmed, as a login racing the confirmation leaves it (its session row
    committed after the confirmation revoked the others): the one way a user with a factor
    holds an `aal1` session. The token, live again."""
    sid = uuid.UUID(claims_of(access_token)["sid"])
    async with DATABASE.get(app).sessionmaker() as db:
        await db.execute(
            update(AuthSession)
            .where(AuthSession.id == sid)
            .values(revoked_at=None, revoked_reason=None)
        )
        await db.commit()
    return access_token
