"""Every failure as an RFC 9457 problem document (`application/problem+json`).

Code raises an `ApiError` subclass where the failure happens; the handlers here
are the only place that turns an exception into a response. Titles and details
are fixed strings: nothing from the framework, the database or a traceback
reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from pydantic import ValidationError
from quart import Quart, Response, g, json, request
from quart_schema import RequestSchemaValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .audit import audit

log = logging.getLogger("quart_auth_api.errors")

PROBLEM_MIMETYPE = "application/problem+json"


class ApiError(Exception):
    """Base of every error the API answers with; subclasses set the class attributes."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    code: ClassVar[str] = "internal_error"
    detail: ClassVar[str] = "An unexpected error occurred."

    #: The security event this failure is logged as (see audit.py), if any.
    audit_event: ClassVar[str | None] = None

    def __init__(self, detail: str | None = None, **audit_fields: object) -> None:
        super().__init__(detail or self.detail)
        self.message = detail or self.detail
        self.audit_fields = audit_fields

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, Any]:
        return {}


# -- 4xx -------------------------------------------------------------------------


class InvalidJson(ApiError):
    status, title, code = 400, "Bad Request", "invalid_json"
    detail = "The request body is not valid JSON."


class BadRequest(ApiError):
    status, title, code = 400, "Bad Request", "bad_request"
    detail = "The request could not be understood."


class InvalidLinkToken(ApiError):
    """An unknown, expired, used or wrong-purpose link token: one answer for all four."""

    status, title, code = 400, "Bad Request", "invalid_link_token"
    audit_event = "link_token_refused"
    detail = "This link is invalid or has expired; ask for a new one."


class Unauthorized(ApiError):
    """401 with `WWW-Authenticate: Bearer` per RFC 6750."""

    status, title = 401, "Unauthorized"
    #: RFC 6750 `error` attribute; None when no token was given at all.
    bearer_error: ClassVar[str | None] = "invalid_token"

    def headers(self) -> dict[str, str]:
        if self.bearer_error is None:
            return {"WWW-Authenticate": 'Bearer realm="quart-auth-api"'}
        description = self.message.replace('"', "'")
        return {
            "WWW-Authenticate": (
                f'Bearer realm="quart-auth-api", error="{self.bearer_error}", '
                f'error_description="{description}"'
            )
        }


class InvalidCredentials(Unauthorized):
    code, detail, bearer_error = "invalid_credentials", "Invalid email or password.", None
    audit_event = "login_failed"


class TokenMissing(Unauthorized):
    code, detail, bearer_error = "token_missing", "A bearer token is required.", None


class TokenInvalid(Unauthorized):
    code, detail = "token_invalid", "The token is invalid."


class TokenExpired(Unauthorized):
    code, detail = "token_expired", "The token has expired."


class TokenRevoked(Unauthorized):
    code, detail = "token_revoked", "The token has been revoked."


class WrongTokenType(Unauthorized):
    code = "wrong_token_type"
    detail = "This endpoint needs a different token type."


class RefreshTokenReused(Unauthorized):
    code = audit_event = "refresh_token_reused"
    detail = "This refresh token was already used; the session has been revoked."


class FreshTokenRequired(Unauthorized):
    code = "fresh_token_required"
    detail = "This endpoint needs a fresh access token: log in again."


class CsrfFailed(Unauthorized):
    code, bearer_error = "csrf_failed", None
    audit_event = "csrf_failed"
    detail = "The X-CSRF-TOKEN header is missing or does not match the token."


class MfaInvalidCode(Unauthorized):
    """A login's second factor was refused: a wrong code, one of a time step already
    used, or an unknown or used recovery code (one answer for all)."""

    code, bearer_error = "mfa_invalid_code", None
    audit_event = "mfa_challenge_failed"
    detail = "The code is wrong or was already used."


class MfaTokenInvalid(Unauthorized):
    """An unknown, expired, used or exhausted `mfa_token`: one answer for all four."""

    code, bearer_error = "mfa_token_invalid", None
    audit_event = "mfa_token_refused"
    detail = "This login has expired or had too many tries: log in again."


class Forbidden(ApiError):
    status, title = 403, "Forbidden"


class WrongMfaCode(Forbidden):
    """A code checked for a logged-in user (confirming an enrolment) was wrong (403, as
    `WrongPassword`: the token is fine)."""

    code, audit_event = "mfa_invalid_code", "mfa_code_refused"
    detail = "The code is wrong or was already used."


class Aal2Required(Forbidden):
    """The user has a second factor and this session has not passed it."""

    code, audit_event = "aal2_required", "aal2_refused"
    detail = "This needs a session that passed the second factor: log in with your code."


class MfaRequired(Forbidden):
    """The route needs a second factor and the user has none."""

    code, audit_event = "mfa_required", "aal2_refused"
    detail = "This needs a second factor: enrol one first (POST /auth/mfa/totp)."


class WrongPassword(Forbidden):
    """The password of a logged-in user, asked again before a change, was wrong (403:
    the token is fine, so this is not a 401 that would make a client log out)."""

    code, audit_event = "invalid_credentials", "password_check_failed"
    detail = "The password is wrong."


class EmailNotVerified(Forbidden):
    code, audit_event = "email_not_verified", "login_unverified"
    detail = "Prove your address first: open the link we mailed you (or ask for a new one)."


class NotFound(ApiError):
    status, title, code = 404, "Not Found", "not_found"
    detail = "The requested resource was not found."


class MethodNotAllowedError(ApiError):
    status, title, code = 405, "Method Not Allowed", "method_not_allowed"
    detail = "The method is not allowed for this resource."

    def __init__(self, allowed: list[str] | None = None) -> None:
        super().__init__()
        self.allowed = sorted(allowed or [])

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)} if self.allowed else {}


class EmailTaken(ApiError):
    status, title, code = 409, "Conflict", "email_taken"
    detail = "An account with this email already exists."


class MfaAlreadyEnrolled(ApiError):
    status, title, code = 409, "Conflict", "mfa_already_enrolled"
    detail = "A TOTP factor is already enrolled: remove it first."


class PayloadTooLarge(ApiError):
    status, title, code = 413, "Content Too Large", "payload_too_large"
    detail = "The request body is too large."


class UnsupportedMediaType(ApiError):
    status, title, code = 415, "Unsupported Media Type", "unsupported_media_type"
    detail = "The request body must be JSON (Content-Type: application/json)."


class ValidationFailed(ApiError):
    status, title, code = 422, "Unprocessable Content", "validation_failed"
    detail = "The request body failed validation."

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__()
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class RateLimited(ApiError):
    """429 with `Retry-After`: whole seconds until the limit lets a request through."""

    status, title, code = 429, "Too Many Requests", "rate_limited"
    audit_event = "rate_limited"
    detail = "Too many attempts; try again after the number of seconds in Retry-After."

    def __init__(self, retry_after: int, *, scope: str | None = None) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(scope=scope, retry_after=self.retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


# -- 5xx -------------------------------------------------------------------------


class InternalError(ApiError):
    pass


class ServiceUnavailable(ApiError):
    status, title, code = 503, "Service Unavailable", "service_unavailable"
    detail = "The service is temporarily unavailable; try again shortly."

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class MailUnavailable(ApiError):
    status, title, code = 503, "Service Unavailable", "mail_unavailable"
    detail = "This service sends no mail (MAIL_BACKEND=none), so this flow is not available."


#: Every code the API can answer with, for the README and the OpenAPI document.
def all_error_classes() -> list[type[ApiError]]:
    found: list[type[ApiError]] = []
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        if "code" in cls.__dict__:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: (c.status, c.code))


# -- rendering ---------------------------------------------------------------------


def problem_response(error: ApiError) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.message,
        "code": error.code,
        "request_id": g.get("request_id"),
    }
    body.update(error.body())
    response = Response(json.dumps(body), status=error.status, mimetype=PROBLEM_MIMETYPE)
    response.headers.update(error.headers())
    return response


_HTTP_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: TokenMissing,
    404: NotFound,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def from_http_exception(error: HTTPException) -> ApiError:
    if isinstance(error, MethodNotAllowed):
        return MethodNotAllowedError(list(error.valid_methods or []))
    cls = _HTTP_ERRORS.get(error.code or 500)
    if cls is not None:
        return cls()
    if error.code and 400 <= error.code < 500:
        return BadRequest()
    return InternalError()


def validation_errors(error: RequestSchemaValidationError) -> ApiError:
    cause = error.validation_error
    if not isinstance(cause, ValidationError):
        # quart-schema wraps a body that is not an object (a list, a number) as a TypeError
        return ValidationFailed([{"field": "body", "message": "Expected a JSON object."}])
    return ValidationFailed(
        [
            {
                "field": ".".join(str(part) for part in item["loc"]) or "body",
                "message": item["msg"].removeprefix("Value error, "),
            }
            for item in cause.errors(include_url=False, include_input=False)
        ]
    )


#: SQLSTATE prefixes that mean "the database cannot serve now", not "this request is
#: wrong": connection exceptions (08), operator intervention such as a shutdown or
#: `cannot_connect_now` (57P), too many connections (53300), a database that does not
#: accept connections (55000) or does not exist (3D000).
UNAVAILABLE_SQLSTATES = ("08", "57P", "53300", "55000", "3D000")


def database_unavailable(error: DBAPIError) -> bool:
    """True when a database error means an outage (503), not a bug (500)."""
    if error.connection_invalidated or isinstance(error, OperationalError | InterfaceError):
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)


def init_app(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def _api_error(error: ApiError) -> Response:
        if error.audit_event is not None:
            audit(error.audit_event, route=request.endpoint, **error.audit_fields)
        if error.status >= 500:
            log.error("request failed: %s", error.code)
        return problem_response(error)

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(error: RequestSchemaValidationError) -> Response:
        return problem_response(validation_errors(error))

    @app.errorhandler(HTTPException)
    async def _http_error(error: HTTPException) -> Response:
        return await _api_error(from_http_exception(error))

    @app.errorhandler(DBAPIError)
    async def _database_error(error: DBAPIError) -> Response:
        if database_unavailable(error):
            return await _database_down(error)
        return await _unexpected(error)

    @app.errorhandler(PoolTimeoutError)
    @app.errorhandler(OSError)  # connection refused or reset, a name that does not resolve
    @app.errorhandler(TimeoutError)
    async def _database_down(error: Exception) -> Response:
        log.error("database unavailable: %s", type(error).__name__)
        return problem_response(ServiceUnavailable())

    @app.errorhandler(Exception)
    async def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error: %s", type(error).__name__)
        return problem_response(InternalError())
