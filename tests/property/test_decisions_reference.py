"""The same decisions before and after the governance engine's restructuring (issue 15).

``tests/data/decisions_reference.jsonl`` holds what gpupool answered, at the commit
before the restructuring, to generated organisations and request sequences
(:mod:`tests.support.reference`): every admission's verdict, reason code, message,
warnings, the patched pod's gpupool labels, slices annotation and container limits,
and what the queue borrowed; ``gpupool check`` and ``gpupool set quota --dry-run``
outcomes; and the final ``gpupool get quotas``. Each organisation is replayed here
against the code as it is, and must give exactly the recorded lines.

A deliberate change of behaviour records the fixture again::

    python -m tests.property.test_decisions_reference

and the diff of the fixture is then part of the change, for review.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.support import reference

pytestmark = pytest.mark.property

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "decisions_reference.jsonl"


def _recorded() -> dict[int, list[dict[str, Any]]]:
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with FIXTURE.open(encoding="utf-8") as fixture:
        for line in fixture:
            record = json.loads(line)
            lines[record["org"]].append(record)
    return lines


_RECORDED = _recorded() if FIXTURE.exists() else {}


def test_the_fixture_covers_every_outcome() -> None:
    """The generated cases reach admissions, borrowing, retries and every kind of denial
    (else the comparison below would prove little)."""
    records = [r for lines in _RECORDED.values() for r in lines]
    reasons = {r["reason"] for r in records if "step" in r}
    assert {
        "Admitted",
        "NotGPU",
        "Forbidden",
        "QueueQuotaExceeded",
        "DepartmentQuotaExceeded",
        "NamespaceNotOwned",
        "InvalidRequest",
        "UnknownSKU",
        "UnknownQueue",
        "SKUNotOffered",
    } <= reasons, reasons
    assert any(r.get("borrowed") and any(r["borrowed"].values()) for r in records)
    assert {r["exit"] for r in records if "check" in r} >= {0, 1}
    assert {r["exit"] for r in records if "set_quota" in r} >= {0, 1, 2}
    assert len(_RECORDED) == len(reference.SEEDS)


@pytest.mark.parametrize("seed", reference.SEEDS)
def test_decisions_match_the_recorded_ones(seed: int, tmp_path: Path) -> None:
    expected = _RECORDED[seed]
    got = list(reference.run_org(seed, tmp_path))
    assert len(got) == len(expected)
    for want, have in zip(expected, got, strict=True):
        assert have == want


def record(path: Path = FIXTURE) -> None:
    """Write the fixture from the code as it is."""
    with tempfile.TemporaryDirectory() as tmp, path.open("w", encoding="utf-8") as out:
        for seed in reference.SEEDS:
            for line in reference.run_org(seed, Path(tmp)):
                out.write(json.dumps(line, sort_keys=True) + "\n")


if __name__ == "__main__":
    record(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE)
