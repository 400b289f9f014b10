"""checkov (the security scanner, from PyPI) on every rendered combination of the chart.

No check may fail except those the chart's README lists, each with the resources it
applies to and the reason. A listed exception that no rendering needs any more fails
too, so the list stays exactly what the chart needs. checkov runs with
``--skip-download``: nothing is fetched from its vendor's servers.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import chart

pytest.importorskip("helm_python", reason="helm-python-sdk is not installed")

pytestmark = pytest.mark.integration

README = chart.CHART / "README.md"
_ROW = re.compile(r"^\| `(CKV2?_K8S_\d+)` \| `([^`]+)` \| (.+) \|$")


def _checkov() -> str:
    beside = Path(sys.executable).with_name("checkov")
    found = str(beside) if beside.exists() else shutil.which("checkov")
    if found is None:
        pytest.skip("checkov is not installed (pip install checkov)")
    return found


def listed_exceptions() -> list[tuple[str, str, str]]:
    """(check id, Kind/name glob, reason) from the README's table."""
    rows = []
    for line in README.read_text().splitlines():
        match = _ROW.match(line.strip())
        if match:
            rows.append((match[1], match[2], match[3]))
    return rows


def test_readme_gives_a_reason_for_every_exception() -> None:
    rows = listed_exceptions()
    assert len(rows) >= 5
    for check, resource, reason in rows:
        assert "/" in resource, (check, resource)
        assert len(reason) > 40, (check, reason)


def test_checkov_finds_nothing_but_the_listed_exceptions(tmp_path: Path) -> None:
    for name, values in chart.COMBINATIONS.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(chart.manifests(values)))
    result = subprocess.run(
        [
            _checkov(),
            "--directory",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            "--compact",
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout, result.stderr
    reports = json.loads(result.stdout)
    if isinstance(reports, dict):
        reports = [reports]
    (report,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    summary = report["summary"]
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 1000
    rows = listed_exceptions()
    used: set[tuple[str, str]] = set()
    unexplained = []
    for failure in report["results"]["failed_checks"]:
        kind, _namespace, name = failure["resource"].split(".")[:3]
        resource = f"{kind}/{name}"
        matches = [
            (check, glob)
            for check, glob, _ in rows
            if check == failure["check_id"] and fnmatch.fnmatch(resource, glob)
        ]
        if not matches:
            unexplained.append(f"{failure['check_id']} {failure['check_name']}: {resource}")
        used.update(matches)
    assert unexplained == [], "\n".join(sorted(set(unexplained)))
    stale = [(check, glob) for check, glob, _ in rows if (check, glob) not in used]
    assert stale == [], f"listed in README.md but no rendering needs them: {stale}"
