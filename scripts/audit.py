"""`make audit`: pip-audit on the pinned runtime dependencies, which passes only when every
dependency was audited.

pip-audit exits 0 when the advisory service cannot be reached: each dependency is
"skipped" and "No known vulnerabilities found" is printed, though nothing was checked.
Here that is not a pass. Exit codes:

- 0: every dependency audited, none with a known advisory;
- 1: a known advisory, or pip-audit failed without a report;
- 3: NOT RUN: pip-audit ran, but some or all dependencies could not be audited (the count
  says how many): the advisory service was out of reach.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NOT_RUN = 3
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "audit.json"
        result = subprocess.run(  # noqa: S603 (a fixed command)
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                str(PROJECT_ROOT / "requirements.txt"),
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(report),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = json.loads(report.read_text()) if report.exists() else None
    if found is None:  # pip-audit itself failed: missing, crashed, a bad requirement
        print(result.stdout + result.stderr, end="", file=sys.stderr)
        print(
            f"audit FAILED: pip-audit exited {result.returncode} without a report", file=sys.stderr
        )
        return 1
    code, message = verdict(found)
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def verdict(found: dict[str, Any]) -> tuple[int, str]:
    """The exit code and the report of a pip-audit JSON report."""
    dependencies = found.get("dependencies", [])
    skipped = [dep for dep in dependencies if "skip_reason" in dep]
    vulnerable = [dep for dep in dependencies if dep.get("vulns")]
    audited = len(dependencies) - len(skipped)
    if vulnerable:
        lines = [
            f"{dep['name']} {dep['version']}: {', '.join(v['id'] for v in dep['vulns'])}"
            for dep in vulnerable
        ]
        total = f"{len(vulnerable)} of {len(dependencies)}"
        return 1, "\n".join([*lines, f"audit FAILED: {total} dependencies have advisories"])
    if skipped or not dependencies:
        first = skipped[0]["skip_reason"] if skipped else "no dependency was listed"
        return NOT_RUN, (
            f"audit NOT RUN: {audited} of {len(dependencies)} dependencies audited; the rest "
            f"could not be checked (first: {first}). Is the advisory service (pypi.org's "
            "JSON API) reachable?"
        )
    return 0, f"audit passed: {audited} of {len(dependencies)} dependencies, no known advisory"


if __name__ == "__main__":
    sys.exit(main())
