"""Dependency audit of the locked set (requirements.lock) with pip-audit; `make audit`, run by `make test`.

pip-audit looks every locked version up in the PyPI vulnerability service. It reports a version it
could not look up as skipped and still says "No known vulnerabilities found", so this wrapper reads
its JSON and says what was really checked:

- a known vulnerability in any locked package: the advisories are printed and the exit status is 1;
- every package looked up, none vulnerable: exit 0;
- some or all packages could not be looked up (the service is not reachable from this machine): the
  count is printed as NOT AUDITED and the exit status is 0, or 2 with ``HERALD_AUDIT_STRICT=1`` (set it
  where the service is reachable, so that an outage cannot pass for a clean audit).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        command = [
            str(Path(sys.executable).with_name("pip-audit")),
            "--requirement", str(LOCK), "--no-deps", "--disable-pip", "--progress-spinner", "off",
            "--format", "json", "--output", str(report),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if not report.exists():
            print(done.stderr.strip() or done.stdout.strip(), file=sys.stderr)
            print("audit: pip-audit failed before it produced a report", file=sys.stderr)
            return 2
        dependencies = json.loads(report.read_text())["dependencies"]
    skipped = [d for d in dependencies if "skip_reason" in d]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dep in vulnerable:
        for vuln in dep["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version"
            print(f"audit: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed})")
    checked = len(dependencies) - len(skipped)
    print(
        f"audit: {len(dependencies)} locked packages, {checked} looked up, {len(vulnerable)} vulnerable"
        + (
            f", {len(skipped)} NOT AUDITED (the vulnerability service did not answer for them)"
            if skipped
            else ""
        )
    )
    if vulnerable:
        return 1
    if skipped and os.environ.get("HERALD_AUDIT_STRICT") == "1":
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
