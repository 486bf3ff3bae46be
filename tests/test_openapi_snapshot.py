"""The OpenAPI document is exactly the committed one (`tests/data/openapi*.json`).

A change to a route, a schema or an error code shows up here as a diff to review.
After an intended change, write the new documents and commit them with it:

    QAA_WRITE_OPENAPI=1 .venv/bin/pytest tests/test_openapi_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from quart_auth_api import create_app
from settings import Settings

DATA = Path(__file__).parent / "data"


def es256_key(tmp_path: Path) -> Path:
    path = tmp_path / "signing.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("variant", ["hmac", "es256"])
async def test_openapi_document_is_the_committed_one(variant, tmp_path):
    extra = (
        {}
        if variant == "hmac"
        else {
            "jwt_algorithm": "ES256",
            "jwt_private_key_file": es256_key(tmp_path),
        }
    )
    settings = Settings.for_testing(database_url=f"sqlite:///{tmp_path / 'x.db'}", **extra)
    app = create_app(settings)
    async with app.test_app():
        response = await app.test_client().get("/openapi.json")
        document = await response.get_json()
    path = DATA / f"openapi-{variant}.json"
    rendered = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if os.environ.get("QAA_WRITE_OPENAPI") == "1":
        path.write_text(rendered)
    assert document == json.loads(path.read_text()), f"the OpenAPI document is not {path.name}"
