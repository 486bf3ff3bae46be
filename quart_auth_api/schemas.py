"""Wire models (pydantic): what the API accepts (`In`) and answers (`Out`).

Their docstrings and field descriptions feed the OpenAPI document.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    RootModel,
    WithJsonSchema,
)

from .crypto.passwords import BCRYPT_MAX_BYTES

MIN_PASSWORD_CHARS = 8
MAX_EMAIL_CHARS = 254
MAX_NAME_CHARS = 100


#: Documented in the OpenAPI document as well as checked, so clients see the rule.
NO_NUL = {"pattern": "^[^\\x00]*$"}
#: 72 characters is what JSON Schema can say; the 72-byte limit is checked, with its
#: own message, by `_password_bytes`.
PASSWORD_LIMITS = {**NO_NUL, "maxLength": BCRYPT_MAX_BYTES}


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _email(value: str) -> str:
    return value.lower()


def _password_bytes(value: str) -> str:
    if len(value.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise ValueError(
            f"must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8 (bcrypt's limit); "
            "use a shorter passphrase"
        )
    return value


def _category_class(categories: frozenset[str], extra: frozenset[int] = frozenset()) -> str:
    """The code points of `categories` as the inside of a regex class, in a form Python
    and ECMA-262 (with the `u` flag, as JSON Schema validators compile patterns) both
    read: BMP code points as `\\uXXXX`, the others as literal characters."""
    ranges: list[tuple[int, int]] = []
    for point in range(sys.maxunicode + 1):
        if unicodedata.category(chr(point)) in categories or point in extra:
            if ranges and ranges[-1][1] == point - 1:
                ranges[-1] = (ranges[-1][0], point)
            else:
                ranges.append((point, point))

    def one(point: int) -> str:
        return f"\\u{point:04x}" if point <= 0xFFFF else chr(point)

    return "".join(one(a) if a == b else f"{one(a)}-{one(b)}" for a, b in ranges)


#: No control characters but tab, and at least one visible character: one that is not a
#: control (Cc), format (Cf), separator (Zs, Zl, Zp), combining mark alone (Mn, Me) or
#: private-use (Co) character, nor a letter that shows nothing (the Hangul fillers, the
#: blank braille pattern), so that a name of only U+200B, U+202E or U+3164 is refused.
#: One regex for the OpenAPI document and for validation, from this Python's tables.
CONTROL = r"\x00-\x08\x0a-\x1f\x7f-\x9f"  # tab is allowed (and trimmed)
BLANK_LETTERS = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0, 0x2800})
INVISIBLE = _category_class(
    frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Co"}), BLANK_LETTERS
)
NAME_PATTERN = rf"^[^{CONTROL}]*[^{INVISIBLE}][^{CONTROL}]*$"
_NAME_RE = re.compile(NAME_PATTERN)


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError("must contain a visible character and no control characters")
    return value.strip()


Email = Annotated[
    str,
    Field(max_length=MAX_EMAIL_CHARS, examples=["ada@example.com"], json_schema_extra=NO_NUL),
    AfterValidator(_no_nul),
    AfterValidator(_email),
]


def _any_case(name: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


#: email-validator refuses addresses at special-use domain names (RFC 6761: `.test`,
#: `.invalid`, `.local`, `.localhost`, `.onion`, `.arpa`), which `format: email` alone
#: allows; the schema states the rule (built from the library's own list, so the two
#: cannot drift) so that clients and generators know it. Use `example.com` (RFC 2606).
SPECIAL_USE_PATTERN = (
    "^(?!.*[@.](" + "|".join(_any_case(name) for name in SPECIAL_USE_DOMAIN_NAMES) + ")$)"
)

ValidEmail = Annotated[
    EmailStr,
    Field(
        max_length=MAX_EMAIL_CHARS,
        examples=["ada@example.com"],
        json_schema_extra={"pattern": SPECIAL_USE_PATTERN},
    ),
    AfterValidator(_email),
]
NewPassword = Annotated[
    str,
    Field(
        min_length=MIN_PASSWORD_CHARS,
        examples=["correct horse battery"],
        json_schema_extra=PASSWORD_LIMITS,
    ),
    AfterValidator(_no_nul),
    AfterValidator(_password_bytes),
]
#: At login any length is accepted: a password over 72 bytes is simply wrong (401), as no
#: account can have one (the check still costs a bcrypt check: `PasswordHasher.verify`).
Password = Annotated[
    str,
    Field(min_length=1, examples=["correct horse battery"], json_schema_extra=NO_NUL),
    AfterValidator(_no_nul),
]
Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        examples=["Ada Lovelace"],
        json_schema_extra={"pattern": NAME_PATTERN},
    ),
    AfterValidator(_name),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RegisterIn(_In):
    """A new account: email (unique, case-insensitive), password and display name."""

    email: ValidEmail = Field(
        description="A valid address, at most 254 characters, not at a special-use domain "
        "name (RFC 6761: .test, .invalid, .local, .localhost, .onion, .arpa)."
    )
    password: NewPassword = Field(description="8 characters to 72 bytes in UTF-8.")
    name: Name = Field(
        description="1 to 100 characters, not only whitespace, no control characters; "
        "stored trimmed."
    )


class LoginIn(_In):
    """Credentials of an existing account."""

    email: Email
    password: Password


class PublicUser(Protocol):
    """What `UserOut` shows of a user: a `models.User` row or the guard's snapshot."""

    @property
    def public_id(self) -> UUID: ...
    @property
    def email(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def email_verified_at(self) -> datetime | None: ...


class UserOut(BaseModel):
    """A user as the API shows it: never a password hash, never an internal id."""

    id: UUID
    email: str
    name: str
    email_verified: bool = Field(description="Whether the address has been proved.")
    email_verified_at: datetime | None = Field(description="When it was proved, or null.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: PublicUser) -> UserOut:
        return cls(
            id=user.public_id,
            email=user.email,
            name=user.name,
            email_verified=user.email_verified_at is not None,
            email_verified_at=user.email_verified_at,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class PendingOut(BaseModel):
    """A new account that must prove its address before it can log in
    (`EMAIL_VERIFICATION=mandatory`): the user, and no tokens."""

    user: UserOut
    verification_required: Literal[True] = True


#: A token of the body: absent (never null) when cookies are the only transport.
BodyToken = Annotated[str | None, WithJsonSchema({"type": "string"})]


def _absent(value: object) -> bool:
    return value is None


def _no_default(schema: dict[str, Any]) -> None:
    """An absent token is left out, never `null`: the document shows no default."""
    schema.pop("default", None)


class TokenOut(BaseModel):
    """Tokens for a session, and the user they belong to.

    With `JWT_TOKEN_LOCATION=cookies` the body carries neither token: they are in
    HttpOnly cookies, where page script cannot read them.
    """

    user: UserOut
    access_token: BodyToken = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="JWT for `Authorization: Bearer` on API calls (absent with cookies only).",
    )
    refresh_token: BodyToken = Field(
        default=None,
        exclude_if=_absent,
        json_schema_extra=_no_default,
        description="JWT for `POST /auth/refresh` only (absent with cookies only).",
    )
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires.")


class LogoutIn(_In):
    """Which sessions to end: this one (`local`), every other one (`others`), or all
    of them (`global`)."""

    scope: Literal["local", "others", "global"] = "local"


class RegisterOut(RootModel[TokenOut | PendingOut]):
    """A new account: logged in (the token body), or, with `EMAIL_VERIFICATION=mandatory`,
    waiting for its address to be proved (the user, `verification_required`, no tokens)."""


class MessageOut(BaseModel):
    """A plain confirmation."""

    message: str


class StatusOut(BaseModel):
    """Health of the service."""

    status: Literal["ok"] = "ok"


class IndexOut(BaseModel):
    """What this service is and where its documentation lives."""

    name: str
    version: str
    docs_url: str
    openapi_url: str


class RsaJwkOut(BaseModel):
    """An RS256 public key (RFC 7517, RFC 7518 section 6.3)."""

    kty: Literal["RSA"]
    kid: str = Field(description="RFC 7638 thumbprint: the `kid` header of its tokens.")
    alg: Literal["RS256"]
    use: Literal["sig"]
    n: str = Field(description="Modulus, base64url.")
    e: str = Field(description="Public exponent, base64url.")


class EcJwkOut(BaseModel):
    """An ES256 public key on P-256 (RFC 7517, RFC 7518 section 6.2)."""

    kty: Literal["EC"]
    kid: str = Field(description="RFC 7638 thumbprint: the `kid` header of its tokens.")
    alg: Literal["ES256"]
    use: Literal["sig"]
    crv: Literal["P-256"]
    x: str = Field(description="X coordinate, base64url.")
    y: str = Field(description="Y coordinate, base64url.")


class JwksOut(BaseModel):
    """A JWK Set (RFC 7517): the public keys that verify this service's tokens."""

    keys: list[Annotated[RsaJwkOut | EcJwkOut, Field(discriminator="kty")]] = Field(
        description="The active signing key first, then retired keys still accepted."
    )


class FieldErrorOut(BaseModel):
    field: str
    message: str


class ProblemOut(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code.")
    request_id: str | None = Field(description="Also in the X-Request-ID header and the logs.")
    errors: list[FieldErrorOut] | None = Field(
        default=None, description="Per-field problems (validation_failed only)."
    )
