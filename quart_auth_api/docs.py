"""The OpenAPI document: quart-schema's set-up and a provider that adds every problem.

Views declare what the document cannot see (`documents_errors`, `documents_response`,
`documented_if`); their guards and bodies imply the rest. The `/docs` page is
`blueprints/docs.py`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from quart import Quart
from quart_schema import QuartSchema
from quart_schema.openapi import HttpSecurityScheme, Info, OpenAPIProvider, Tag
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from werkzeug.routing import Rule

from . import extensions
from ._version import __version__
from .errors import (
    Aal2Required,
    ApiError,
    FreshTokenRequired,
    InternalError,
    InvalidJson,
    MfaRequired,
    PayloadTooLarge,
    ServiceUnavailable,
    TokenExpired,
    TokenInvalid,
    TokenMissing,
    TokenRevoked,
    UnsupportedMediaType,
    ValidationFailed,
    WrongTokenType,
    all_error_classes,
)
from .guards import BEARER_SECURITY, JWT_REQUIRED_ATTRIBUTE, STEP_UP_ATTRIBUTE
from .hooks import OPTIONAL_BODY_ATTRIBUTE
from .schemas import ProblemOut

F = TypeVar("F", bound=Callable[..., Any])

API_ERRORS_ATTRIBUTE = "_quart_auth_api_errors"
EXTRA_RESPONSES_ATTRIBUTE = "_quart_auth_api_responses"
DOCUMENTED_IF_ATTRIBUTE = "_quart_auth_api_documented_if"
PROBLEM_REF = "#/components/schemas/ProblemOut"
BODY_ERRORS = (InvalidJson, PayloadTooLarge, UnsupportedMediaType, ValidationFailed)
TOKEN_ERRORS = (TokenInvalid, TokenExpired, TokenRevoked, WrongTokenType)


def documents_errors(*errors: type[ApiError]) -> Callable[[F], F]:
    """Declare the problems a view can answer with (beyond those its guards imply)."""

    def decorator(view: F) -> F:
        known = getattr(view, API_ERRORS_ATTRIBUTE, ())
        setattr(view, API_ERRORS_ATTRIBUTE, (*known, *errors))
        return view

    return decorator


def documents_response(status: int, description: str) -> Callable[[F], F]:
    """Declare a bodiless response (a redirect, say) for the OpenAPI document."""

    def decorator(view: F) -> F:
        known = dict(getattr(view, EXTRA_RESPONSES_ATTRIBUTE, {}))
        known[status] = description
        setattr(view, EXTRA_RESPONSES_ATTRIBUTE, known)
        return view

    return decorator


def documented_if(condition: Callable[[Quart], bool]) -> Callable[[F], F]:
    """List a route in the OpenAPI document only when `condition(app)` holds: a route
    that answers nothing but 404 in this configuration is left out."""

    def decorator(view: F) -> F:
        setattr(view, DOCUMENTED_IF_ATTRIBUTE, condition)
        return view

    return decorator


def route_errors(view: Callable[..., Any]) -> list[type[ApiError]]:
    """Every problem a view can answer with: declared, implied by its body and its guard."""
    errors: list[type[ApiError]] = list(getattr(view, API_ERRORS_ATTRIBUTE, ()))
    if hasattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE):
        errors.extend(BODY_ERRORS)
    guard = getattr(view, JWT_REQUIRED_ATTRIBUTE, None)
    if guard is not None:
        errors.extend(TOKEN_ERRORS)
        if not guard["optional"]:
            errors.append(TokenMissing)
        if guard["fresh"]:
            errors.append(FreshTokenRequired)
        if guard["aal2"]:
            errors.extend((Aal2Required, MfaRequired))
        if getattr(view, STEP_UP_ATTRIBUTE, False):
            errors.append(Aal2Required)
        errors.append(ServiceUnavailable)
    errors.append(InternalError)
    return list(dict.fromkeys(errors))


def problem_responses(errors: Iterable[type[ApiError]]) -> dict[str, Any]:
    """OpenAPI responses for problems, one per status, listing that status's codes."""
    by_status: dict[int, list[type[ApiError]]] = defaultdict(list)
    for error in errors:
        by_status[error.status].append(error)
    responses: dict[str, Any] = {}
    for status, group in sorted(by_status.items()):
        codes = sorted({error.code for error in group})
        schema = {
            "allOf": [
                {"$ref": PROBLEM_REF},
                {"type": "object", "properties": {"code": {"enum": codes}}},
            ]
        }
        responses[str(status)] = {
            "description": f"{group[0].title}: " + ", ".join(f"`{code}`" for code in codes),
            "content": {"application/problem+json": {"schema": schema}},
        }
    return responses


class ApiOpenAPIProvider(OpenAPIProvider):
    """quart-schema's provider, plus every problem response and explicit public routes."""

    def generate_rules(self) -> Iterable[Rule]:
        for rule in super().generate_rules():
            view = self._app.view_functions[rule.endpoint]
            condition = getattr(view, DOCUMENTED_IF_ATTRIBUTE, None)
            if condition is None or condition(self._app):
                yield rule

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        errors = problem_responses(route_errors(view))
        extra = {
            str(status): {"description": description}
            for status, description in getattr(view, EXTRA_RESPONSES_ATTRIBUTE, {}).items()
        }
        for operation in (op for path in paths.values() for op in path.values()):
            operation["responses"] = {
                **{str(k): v for k, v in operation["responses"].items()},
                **extra,
                **errors,
            }
            operation.setdefault("security", [])  # public unless a guard says otherwise
            if "requestBody" in operation:
                operation["requestBody"]["required"] = not hasattr(view, OPTIONAL_BODY_ATTRIBUTE)
            operation["description"] = operation.get("description", "").strip()
        components.update(problem_schemas())
        return paths, components


def problem_schemas() -> dict[str, Any]:
    """`ProblemOut` (and what it refers to), its `code` listing every code the service can
    answer, with its status: also those no single operation names (`not_found` for an
    unknown path, `method_not_allowed` for another method on a known one)."""
    problem = ProblemOut.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = problem.pop("$defs", {})
    errors = all_error_classes()
    code = problem["properties"]["code"]
    code["enum"] = sorted({error.code for error in errors})
    code["description"] += " Every code the service answers with, by status: " + "; ".join(
        f"{error.status} `{error.code}`" for error in errors
    )
    schemas["ProblemOut"] = problem
    return schemas


class ApiQuartSchema(QuartSchema):
    openapi_provider_class = ApiOpenAPIProvider


def init_app(app: Quart) -> None:
    enabled = extensions.settings(app).docs_enabled
    ApiQuartSchema(
        app,
        openapi_path="/openapi.json" if enabled else None,
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        info=Info(
            title="Quart Auth API",
            version=__version__,
            description=(
                "JWT authentication: register, log in, refresh with rotation, log out with "
                "immediate revocation. Errors are RFC 9457 problem documents."
            ),
        ),
        tags=[
            Tag(name="auth", description="Accounts, tokens and sessions."),
            Tag(
                name="account",
                description="The account lifecycle: password reset and change, address "
                "verification and change, deletion.",
            ),
            Tag(name="main", description="Service information and health."),
            Tag(name="keys", description="Public keys that verify tokens (RS256, ES256)."),
        ],
        security_schemes={"bearer": HttpSecurityScheme(scheme="bearer", bearer_format="JWT")},
        security=BEARER_SECURITY,
    )
