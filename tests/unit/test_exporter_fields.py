"""The exporter's DCGM fields against dcgm-exporter's counters file (names, types, help)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter import fields
from governance import contract

pytestmark = pytest.mark.unit

COUNTERS = Path(__file__).resolve().parents[1] / "data" / "exporter_dcgm_counters.csv"


def _rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in COUNTERS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, help_text = (part.strip() for part in line.split(",", 2))
        rows[name] = (kind, help_text)
    return rows


def test_every_field_matches_dcgm_exporter_name_type_and_help() -> None:
    rows = _rows()
    assert {field.name for field in fields.FIELDS} == set(rows)
    for field in fields.FIELDS:
        kind, help_text = rows[field.name]
        assert field.dcgm_type == kind, field.name
        if help_text != "-":
            assert field.help == help_text, field.name


def test_counters_keep_their_name_by_going_out_untyped() -> None:
    for field in fields.FIELDS:
        expected = "unknown" if field.dcgm_type == "counter" else "gauge"
        assert field.exposition_type == expected, field.name


def test_every_contract_dcgm_name_is_written() -> None:
    names = {value for key, value in vars(contract).items() if key.startswith("DCGM_FI_")}
    assert names <= set(fields.BY_NAME)
