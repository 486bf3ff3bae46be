"""Wire models of the `account` and `sessions` blueprints (the account lifecycle), split
from `schemas.py` by blueprint; the field types are the ones registration uses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, Field

from .schemas import NO_NUL, Email, Name, NewPassword, Password, ValidEmail, _In, _no_nul

#: A one-time link token as the link carries it (URL-safe base64 of 32 bytes); any other
#: string up to 200 characters without NUL is refused as `invalid_link_token`, never as a
#: validation failure, so a client learns nothing from the shape of its guess (longer, or
#: with NUL, is a 422 that echoes nothing).
LinkToken = Annotated[
    str,
    Field(min_length=1, max_length=200, examples=["q3YVxk0..."], json_schema_extra=NO_NUL),
    AfterValidator(_no_nul),
]


class EmailIn(_In):
    """An address to send a link to (the same answer whether or not it has an account)."""

    email: Email


class LinkTokenIn(_In):
    """The token from a link's `#token=` fragment."""

    token: LinkToken


class ResetPasswordIn(_In):
    """A password-reset link's token and the new password."""

    token: LinkToken
    password: NewPassword = Field(description="8 characters to 72 bytes in UTF-8.")


class ChangePasswordIn(_In):
    """The current password, checked again, and the new one (it must differ)."""

    current_password: Password
    new_password: NewPassword = Field(description="8 characters to 72 bytes in UTF-8.")


class ChangeEmailIn(_In):
    """The password, checked again, and the address to move to (it must be proved)."""

    password: Password
    new_email: ValidEmail = Field(description="A valid address, as at registration.")


class UpdateMeIn(_In):
    """What a user may change about themselves directly."""

    name: Name = Field(description="1 to 100 characters, as at registration.")


class SessionOut(BaseModel):
    """One live login of the user."""

    id: UUID
    created_at: datetime
    last_used_at: datetime = Field(description="The login or the last refresh.")
    expires_at: datetime
    user_agent: str | None
    ip: str | None
    current: bool = Field(description="Whether the token of this request belongs to it.")


class SessionsOut(BaseModel):
    """The user's live sessions, newest first."""

    sessions: list[SessionOut]
