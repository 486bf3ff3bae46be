"""Wire models of the `mfa` blueprint and of a login that asks for a second factor, split
from `schemas.py` by blueprint."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .crypto.tokens import MAX_TOKEN_LENGTH
from .schemas import NO_NUL, TokenOut, _In, _no_default, _no_nul

#: An `mfa_token` as login gave it; any other string up to the length of the longest
#: token (a JWT sent by mistake included) is an unknown token (`mfa_token_invalid`), never
#: a validation failure.
MfaToken = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TOKEN_LENGTH, json_schema_extra=NO_NUL),
    AfterValidator(_no_nul),
]
TOTP_CODE_SCHEMA = {
    "type": "string",
    "pattern": "^[0-9]{6}$",
    "examples": ["123456"],
    "description": "6 digits.",
}
RECOVERY_CODE_SCHEMA = {
    "type": "string",
    "pattern": "^[A-Za-z0-9 -]{16,40}$",
    "examples": ["k7qm-2xwd-9fhp-e4ta"],
    "description": "One of the ten recovery codes; each works once (case, spaces and "
    "hyphens are ignored).",
}
#: A TOTP code as an authenticator app shows it.
TotpCode = Annotated[
    str, Field(pattern=TOTP_CODE_SCHEMA["pattern"]), WithJsonSchema(TOTP_CODE_SCHEMA)
]
#: A recovery code as it was shown (`xxxx-xxxx-xxxx-xxxx`).
RecoveryCode = Annotated[
    str, Field(pattern=RECOVERY_CODE_SCHEMA["pattern"]), WithJsonSchema(RECOVERY_CODE_SCHEMA)
]


class TotpEnrolOut(BaseModel):
    """A pending TOTP factor: add it to an authenticator app (scan `qr_svg` or type
    `secret`), then confirm it with a code within 10 minutes."""

    factor_id: UUID
    secret: str = Field(description="The shared secret, base32 (160 bits): shown only now.")
    otpauth_uri: str = Field(description="The `otpauth://totp/...` URI the QR code holds.")
    qr_svg: str = Field(description="The URI as a QR code, an SVG document.")


class TotpVerifyIn(_In):
    """The pending factor, and a code it shows now."""

    factor_id: UUID
    code: TotpCode


class RecoveryCodesOut(BaseModel):
    """Ten single-use recovery codes: shown once, keep them somewhere safe."""

    recovery_codes: list[str]


class EnrolledOut(TokenOut):
    """The factor is on: tokens of this session, now at `aal2`, and the recovery codes
    (shown once)."""

    recovery_codes: list[str]


class MfaRequiredOut(BaseModel):
    """The password checked out; the second factor is next: send `mfa_token` with a code
    (or a recovery code) to `POST /auth/mfa/challenge`. No session is open yet."""

    mfa_required: Literal[True] = True
    mfa_token: str = Field(description="Good for 5 tries within `expires_in` seconds.")
    expires_in: int


class LoginOut(RootModel[TokenOut | MfaRequiredOut]):
    """Logged in (the token body), or, for an account with a second factor, the
    `mfa_token` of the challenge that finishes the login."""


class MfaChallengeIn(_In):
    """The login's `mfa_token` and either a TOTP `code` or a `recovery_code` (one of the
    two, never both; neither may be null)."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"oneOf": [{"required": ["code"]}, {"required": ["recovery_code"]}]},
    )

    mfa_token: MfaToken
    code: Annotated[TotpCode | None, WithJsonSchema(TOTP_CODE_SCHEMA)] = Field(
        default=None, json_schema_extra=_no_default
    )
    recovery_code: Annotated[RecoveryCode | None, WithJsonSchema(RECOVERY_CODE_SCHEMA)] = Field(
        default=None, json_schema_extra=_no_default
    )

    @field_validator("code", "recovery_code", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave the field out rather than null")
        return value

    @model_validator(mode="after")
    def _one_proof(self) -> MfaChallengeIn:
        if (self.code is None) == (self.recovery_code is None):
            raise ValueError("give either code or recovery_code")
        return self
