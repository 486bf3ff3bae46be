"""`make audit` (scripts/audit.py) passes only when pip-audit audited every dependency."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from tests.helpers.processes import PROJECT_ROOT

spec = importlib.util.spec_from_file_location("audit", PROJECT_ROOT / "scripts" / "audit.py")
assert spec is not None and spec.loader is not None
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)


def dependency(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": "1.0", "vulns": [], **extra}


UNREACHABLE = "Dependency not found on PyPI and could not be audited: quart (0.22.0)"


@pytest.mark.parametrize(
    ("report", "code", "start"),
    [
        pytest.param(
            {"dependencies": [{"name": n, "skip_reason": UNREACHABLE} for n in "abc"]},
            3,
            "audit NOT RUN: 0 of 3 dependencies audited",
            id="service-unreachable",
        ),
        pytest.param(
            {"dependencies": [dependency("a"), {"name": "b", "skip_reason": UNREACHABLE}]},
            3,
            "audit NOT RUN: 1 of 2 dependencies audited",
            id="partly-audited",
        ),
        pytest.param({"dependencies": []}, 3, "audit NOT RUN: 0 of 0", id="nothing-listed"),
        pytest.param(
            {"dependencies": [dependency("a"), dependency("b", vulns=[{"id": "GHSA-x"}])]},
            1,
            "b 1.0: GHSA-x\naudit FAILED: 1 of 2",
            id="advisory",
        ),
        pytest.param(
            {"dependencies": [dependency("a"), dependency("b")]},
            0,
            "audit passed: 2 of 2 dependencies",
            id="all-audited",
        ),
    ],
)
def test_only_a_complete_audit_passes(report, code, start):
    got_code, message = audit.verdict(report)
    assert got_code == code
    assert message.startswith(start), message
