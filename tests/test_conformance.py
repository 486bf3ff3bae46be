"""The service follows its own OpenAPI document (schemathesis, property-based).

Schemathesis runs against a real server (hypercorn, production settings, SQLite)
with every check it has: no 5xx, documented status codes, content types, headers
and body schemas, schema-valid input accepted and schema-invalid input refused,
auth that is not ignored. Protected operations get a real token of a fresh account
(`tests/schemathesis_hooks.py`); `schemathesis.toml` holds the one documented
exception. `make test` runs a bounded, seeded number of examples per operation;
`make fuzz` runs many more with a random seed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import PROJECT_ROOT, production_env, run_alembic, serve
from tests.helpers.smtp import SmtpServer

pytestmark = pytest.mark.server

EXAMPLES = os.environ.get("QAA_FUZZ_EXAMPLES", "40")
SEED = os.environ.get("QAA_FUZZ_SEED", "20261125")
OPERATIONS = 24
ST_TIMEOUT = float(os.environ.get("QAA_FUZZ_TIMEOUT", "600"))


def test_every_operation_conforms_to_the_schema(tmp_path: Path, smtp: SmtpServer) -> None:
    database_url = f"sqlite:///{tmp_path / 'app.db'}"
    run_alembic(database_url, "upgrade", "head")
    # every example comes from one client: far more registrations than its rate limit;
    # mail goes to a real SMTP server, so the flows that need it run
    env = production_env(
        database_url,
        workers=1,
        LOG_LEVEL="WARNING",
        RATE_LIMIT_ENABLED="false",
        MAIL_BACKEND="smtp",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_SECURITY="none",
        FRONTEND_URL="https://app.example.com",
    )
    with serve(env, tmp_path / "server.log") as server:
        command = [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{server.base_url}/openapi.json",
            "--checks",
            "all",
            # "a resource a POST created is found through its link" cannot hold: every
            # request gets a brand-new account (tests/schemathesis_hooks.py), so the one
            # such link (POST /auth/mfa/totp -> /auth/mfa/totp/verify) carries another
            # account's factor, a 404 by design
            "--exclude-checks",
            "ensure_resource_availability",
            "--max-examples",
            EXAMPLES,
            "--no-color",
            "--request-timeout",
            "10",
        ]
        if SEED != "random":
            command += ["--seed", SEED]
        result = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            env={**os.environ, "QAA_BASE_URL": server.base_url},
            capture_output=True,
            text=True,
            timeout=ST_TIMEOUT,
            check=False,
        )
    report = result.stdout + result.stderr
    print(report[-3000:])  # the summary, for `pytest -s` and `make fuzz`
    assert result.returncode == 0, report
    assert f"Tested: {OPERATIONS}" in report, report
    final = report.strip().splitlines()[-1]
    assert re.search(r"(No issues found|\d+ warnings?) in", final), final
    assert not re.search(r"failure|error", final), final
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated and generated[1] == generated[2] and int(generated[1]) >= OPERATIONS, report
    assert " 500 " not in server.log() and "Traceback" not in server.log()
