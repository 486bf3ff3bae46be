"""Blueprint `wellknown` at `/.well-known`: the public keys that verify tokens."""

from __future__ import annotations

from quart import Blueprint, Quart
from quart_schema import tag_blueprint, validate_response

from .. import extensions
from ..docs import documented_if, documents_errors
from ..errors import NotFound
from ..schemas import JwksOut

bp = Blueprint("wellknown", __name__, url_prefix="/.well-known")
tag_blueprint(bp, ["keys"])

#: Public keys change only on a restart after a rotation; caches may keep them a while.
JWKS_CACHE_CONTROL = "public, max-age=300"


def _has_public_keys(app: Quart) -> bool:
    return bool(extensions.token_rules(app).public_jwks())


@bp.get("/jwks.json")
@documented_if(_has_public_keys)
@documents_errors(NotFound)
@validate_response(JwksOut)
async def jwks() -> tuple[JwksOut, int, dict[str, str]]:
    """The public keys that verify this service's tokens (JWK Set).

    RS256 and ES256 only: the active signing key first, then the retired keys still
    accepted, each named by the `kid` its tokens carry, so that other services can
    verify access tokens themselves. With HMAC keys (HS256, HS384, HS512) nothing is
    public and this is a 404 `not_found`. Cacheable for five minutes.
    """
    keys = extensions.token_rules().public_jwks()
    if not keys:
        raise NotFound("This service signs with an HMAC secret: it has no public keys.")
    return JwksOut.model_validate({"keys": keys}), 200, {"Cache-Control": JWKS_CACHE_CONTROL}
