"""The `gpupool` CLI end to end on a real SQLite store and the example organisation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from governance import cli, ledger, placement, quotas
from governance.config import current_org
from governance.store import Store

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "org.yaml"


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    return str(tmp_path / "gpupool.db")


def run(store: str, *args: str) -> Result:
    return CliRunner().invoke(cli.cli, ["--store", store, *args], catch_exceptions=False)


def test_apply_is_idempotent_and_dry_run_records_nothing(store_path: str) -> None:
    dry = run(store_path, "apply", "-f", str(EXAMPLE), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "+ department ml" in dry.output
    assert "dry run, nothing recorded" in dry.output
    assert current_org(Store(store_path)) is None

    first = run(store_path, "apply", "-f", str(EXAMPLE))
    assert first.exit_code == 0 and "applied as revision 1" in first.output
    again = run(store_path, "apply", "-f", str(EXAMPLE))
    assert again.exit_code == 0 and "unchanged" in again.output


def test_get_commands_show_the_applied_organisation(store_path: str) -> None:
    run(store_path, "apply", "-f", str(EXAMPLE))
    skus = json.loads(run(store_path, "-o", "json", "get", "skus").output)
    assert {"a100-half", "h100-1g.10gb", "ascend-910b-half"} <= {s["name"] for s in skus}
    pools = run(store_path, "get", "pools")
    assert "a100-hami" in pools.output and "7200%" in pools.output  # 1.5x compute sold
    queues = json.loads(run(store_path, "-o", "json", "get", "queues", "-d", "ml").output)
    assert {q["name"] for q in queues} == {"train", "finetune", "notebooks"}
    departments = run(store_path, "-o", "yaml", "get", "departments")
    assert "default_queue: train" in departments.output


def test_quotas_show_used_limit_and_borrowing(store_path: str) -> None:
    run(store_path, "apply", "-f", str(EXAMPLE))
    store = Store(store_path)
    org = current_org(store)
    assert org is not None
    target = placement.resolve_target(org, namespace="ml", queue="finetune")
    grant = placement.grant(org, target, placement.SliceRequest(count=26, sku="a100-half"))
    demand = quotas.Demand(
        department="ml",
        queue="finetune",
        sku="a100-half",
        pool="a100-hami",
        amount=placement.grant_amount(grant),
    )
    assert ledger.reserve(
        store, org, demand=demand, request_uid="u1", namespace="ml", grants={"main": grant}
    ).allowed
    lines = json.loads(run(store_path, "-o", "json", "get", "quotas", "-d", "ml").output)
    finetune = {ln["resource"]: ln for ln in lines if ln["queue"] == "finetune"}
    assert finetune["slices"] == {
        "department": "ml",
        "queue": "finetune",
        "resource": "slices",
        "used": 26,
        "limit": 24,
        "borrowed": 2,
        "ceiling": 32,
    }
    table = run(store_path, "get", "quotas", "-d", "ml").output
    assert "finetune" in table and "1040Gi" in table
    listed = run(store_path, "ledger", "list", "--state", "reserved")
    assert "finetune" in listed.output and "a100-half" in listed.output
    unknown = run(store_path, "get", "quotas", "-d", "nope")
    assert unknown.exit_code == 2 and "unknown department 'nope'" in unknown.output


@pytest.mark.parametrize(
    ("args", "exit_code", "reason"),
    [
        pytest.param(["-n", "ml", "--sku", "a100-half", "--count", "2"], 0, "Admitted", id="fits"),
        pytest.param(
            ["-n", "ml", "-q", "finetune", "--sku", "a100-half", "--count", "33"],
            1,
            "BorrowingLimitExceeded",
            id="over-borrowing-limit",
        ),
        pytest.param(["-n", "ml", "--sku", "a100-halfs"], 1, "UnknownSKU", id="unknown-sku"),
        pytest.param(["-n", "nowhere"], 1, "NamespaceNotOwned", id="namespace-not-owned"),
        pytest.param(
            ["-n", "ml", "--sku", "a100-half", "--as", "mallory"], 1, "Forbidden", id="rbac-denied"
        ),
    ],
)
def test_check_prints_the_decision_and_exits_by_it(
    store_path: str, args: list[str], exit_code: int, reason: str
) -> None:
    run(store_path, "apply", "-f", str(EXAMPLE))
    result = run(store_path, "-o", "json", "check", *args)
    assert result.exit_code == exit_code, result.output
    decision = json.loads(result.output)
    assert decision["reason"] == reason
    assert decision["message"]
    # a check records nothing
    assert ledger.list_allocations(Store(store_path)) == []


def test_bad_input_is_a_clear_message_not_a_traceback(store_path: str, tmp_path: Path) -> None:
    missing = run(store_path, "apply", "-f", str(tmp_path / "absent.yaml"))
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("default_sku: a100-half", "default_sku: a1"))
    result = run(store_path, "apply", "-f", str(bad))
    assert result.exit_code == 2
    assert "bad.yaml" in result.output and "a1" in result.output
    no_config = run(store_path, "get", "skus")
    assert no_config.exit_code == 2 and "gpupool apply" in no_config.output


def test_an_unreachable_store_exits_3_with_the_url_and_no_password() -> None:
    result = run("postgresql://admin:hunter2@127.0.0.1:1/gpupool", "get", "skus")
    assert result.exit_code == 3
    assert "cannot be reached" in result.output
    assert "hunter2" not in result.output


def test_the_console_script_lists_component_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "governance.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("apply", "check", "get", "ledger"):
        assert command in result.stdout
    from importlib import metadata

    installed = {ep.name for ep in metadata.entry_points(group="gpupool.commands")}
    for component in installed:
        assert component in result.stdout
