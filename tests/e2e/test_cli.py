"""The `gpupool` CLI end to end on a real SQLite store and the example organisation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from governance import cli, placement, quotas
from governance.resources import Resources
from governance.storage import ledger
from governance.storage.revisions import current_org
from governance.storage.store import Store

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
        amount=Resources.of_grant(grant),
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


# -- one convention for every command --------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.cli, list(args), catch_exceptions=False, env=env)


def test_store_and_output_are_accepted_after_the_subcommand_too(store_path: str) -> None:
    applied = invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    assert applied.exit_code == 0, applied.output
    after = invoke("get", "quotas", "-d", "ml", "-o", "json", "--store", store_path)
    before = invoke("--store", store_path, "-o", "json", "get", "quotas", "-d", "ml")
    assert after.exit_code == 0, after.output
    assert json.loads(after.output) == json.loads(before.output)
    # on a nested group too, and in any order with the subcommand's own options
    assert json.loads(
        invoke("get", "-o", "yaml", "skus", "-o", "json", "--store", store_path).output
    )


def test_the_value_after_the_subcommand_wins_over_before_and_the_environment(
    store_path: str, tmp_path: Path
) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    empty = str(tmp_path / "other.db")
    env = {"GPUPOOL_STORE": empty}
    assert invoke("-o", "json", "get", "skus", "--store", store_path, env=env).exit_code == 0
    assert invoke("--store", store_path, "get", "skus", env=env).exit_code == 0
    # the environment alone: the other (empty) store, which has no configuration
    assert invoke("get", "skus", env=env).exit_code == 2
    out = invoke(
        "--store", empty, "-o", "table", "get", "skus", "-o", "json", "--store", store_path
    )
    assert {"a100-half"} <= {s["name"] for s in json.loads(out.output)}


def test_a_component_takes_the_store_given_before_its_name(tmp_path: Path) -> None:
    """`gpupool --store URL reconciler` reaches the reconciler as its own --store."""
    down = "postgresql://nobody@127.0.0.1:1/none"
    for args in (("--store", down, "reconciler"), ("reconciler", "--store", down)):
        result = invoke(*args, "--health-port", "0")
        assert result.exit_code == 3, result.output
        assert "127.0.0.1:1" in result.output and "cannot be reached" in result.output
    help_text = invoke("exporter", "--help").output
    assert "--store" in help_text and "--output" in help_text and "--host" in help_text


def test_an_empty_document_is_refused_and_removing_everything_is_explicit(
    store_path: str, tmp_path: Path
) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    for name, text in (("empty.yaml", ""), ("kind.yaml", "apiVersion: gpupool.io/v1\n")):
        path = tmp_path / name
        path.write_text(text)
        refused = invoke("apply", "-f", str(path), "--store", store_path)
        assert refused.exit_code == 2, refused.output
        assert "declares nothing" in refused.output and "--prune-all" in refused.output
        org = current_org(Store(store_path))
        assert org is not None and "ml" in org.departments  # nothing was removed
    pruned = invoke(
        "apply", "-f", str(tmp_path / "empty.yaml"), "--prune-all", "--store", store_path
    )
    assert pruned.exit_code == 0, pruned.output
    assert "- department ml" in pruned.output
    org = current_org(Store(store_path))
    assert org is not None and not org.departments


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            b"pools:\n  - name: caf\xe9\n", "byte 0xe9 at offset 20 (line 2)", id="latin-1"
        ),
        pytest.param(b"\xff\xfep\x00o\x00", "byte 0xff at offset 0", id="utf-16"),
    ],
)
def test_a_file_that_is_not_utf8_is_a_clear_error(
    store_path: str, tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "org.yaml"
    path.write_bytes(content)
    result = invoke("apply", "-f", str(path), "--store", store_path)
    assert result.exit_code == 2
    assert expected in result.output and "UTF-8" in result.output
    assert "Traceback" not in result.output


def test_an_unsupported_store_scheme_names_the_supported_ones() -> None:
    result = invoke("--store", "mysql://root@127.0.0.1/gpupool", "get", "skus")
    assert result.exit_code == 2
    assert "unsupported store URL scheme 'mysql'" in result.output
    assert "postgresql://" in result.output and "sqlite:///" in result.output


def test_a_dry_run_creates_no_database_and_no_lock_file(tmp_path: Path) -> None:
    store = tmp_path / "fresh.db"
    result = invoke("apply", "-f", str(EXAMPLE), "--dry-run", "--store", str(store))
    assert result.exit_code == 0, result.output
    assert "+ department ml" in result.output
    assert list(tmp_path.iterdir()) == []
    assert invoke("apply", "-f", str(EXAMPLE), "--store", str(store)).exit_code == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith("migrate-lock")]


def test_empty_results_say_so_instead_of_a_broken_table(store_path: str) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    listed = invoke("ledger", "list", "--store", store_path)
    assert listed.exit_code == 0
    assert listed.output.startswith("No allocations")
    assert "/" not in listed.output.split(":")[0]  # not "Allo/cati/ons/ID"
    filtered = invoke("ledger", "list", "--state", "bound", "-d", "ml", "--store", store_path)
    assert "No allocations match --state bound -d ml." in filtered.output
    assert json.loads(invoke("ledger", "list", "-o", "json", "--store", store_path).output) == []


@pytest.mark.parametrize("name", ["skus", "pools", "departments", "queues", "quotas", "revisions"])
def test_every_get_subcommand_explains_itself(name: str) -> None:
    listing = invoke("get", "--help").output
    line = next(ln for ln in listing.splitlines() if ln.strip().startswith(name))
    assert len(line.split(None, 1)) == 2, f"`get {name}` has no help text: {line!r}"


def test_revisions_record_who_applied_them(store_path: str) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--as", "alice@northwind.example", "--store", store_path)
    rows = json.loads(invoke("get", "revisions", "-o", "json", "--store", store_path).output)
    assert [(r["revision"], r["applied_by"]) for r in rows] == [(1, "user:alice@northwind.example")]


def test_starting_a_server_logs_no_alembic_plugin_lines(tmp_path: Path) -> None:
    code = (
        "import sys; from governance import cli; cli.configure_logging('info'); "
        "from governance.storage.store import Store; Store(sys.argv[1]).close(); "
        "import logging; logging.getLogger('gpupool').info('started')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "g.db")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "started" in result.stderr  # INFO is on
    assert "alembic" not in result.stderr.lower(), result.stderr


def test_a_port_in_use_exits_4_and_says_so(tmp_path: Path) -> None:
    import socket

    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        result = invoke(
            "exporter", "--backend", "simulated", "--host", "127.0.0.1", "--port", str(port)
        )
        assert result.exit_code == 4, result.output
        assert f"cannot listen on 127.0.0.1:{port}" in result.output
        assert "in use" in result.output
    finally:
        taken.close()


# -- department admins split their department's quota -----------------------------------

DEPT_ADMIN = "chen@northwind.example"  # dept-admin of ml in examples/org.yaml
PLATFORM_ADMIN = "alice@northwind.example"


def set_quota(store: str, *args: str) -> Result:
    return invoke("set", "quota", *args, "--store", store)


def test_a_dept_admin_sets_a_queue_quota_of_their_department_recorded_as_theirs(
    store_path: str,
) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    result = set_quota(
        store_path, "-d", "ml", "-q", "finetune", "--slices", "20", "--memory", "600Gi",
        "--as", DEPT_ADMIN,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "~ queue ml/finetune nominal slices 24 -> 20" in result.output
    assert "~ queue ml/finetune nominal memory 640Gi -> 600Gi" in result.output
    org = current_org(Store(store_path))
    assert org is not None
    nominal = org.queues[("ml", "finetune")].nominal.total
    assert (nominal.slices.value, nominal.memory_mib.value) == (20, 600 * 1024)
    latest = Store(store_path).config_history(limit=1)[0]
    assert latest.applied_by == f"user:{DEPT_ADMIN}" and latest.revision == 2
    assert "queue ml/finetune" in latest.source


def test_as_names_a_user_with_or_without_the_prefix_the_bindings_write(
    store_path: str,
) -> None:
    """``--as user:NAME`` is the user NAME, as the role bindings write it, for every
    command that takes ``--as`` (set quota read it as the user ``user:NAME`` and denied
    a dept-admin; check read it as NAME)."""
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path, "--as", f"user:{PLATFORM_ADMIN}")
    assert Store(store_path).config_history(limit=1)[0].applied_by == f"user:{PLATFORM_ADMIN}"
    result = set_quota(
        store_path, "-d", "ml", "-q", "finetune", "--slices", "20", "--as", f"user:{DEPT_ADMIN}"
    )
    assert result.exit_code == 0, result.output
    assert f"user:user:{DEPT_ADMIN}" not in result.output
    latest = Store(store_path).config_history(limit=1)[0]
    assert latest.applied_by == f"user:{DEPT_ADMIN}" and latest.revision == 2


@pytest.mark.parametrize(
    ("args", "why"),
    [
        pytest.param(["-d", "ml", "--slices", "200"], "own quota is set by a platform-admin",
                     id="department-total"),
        pytest.param(["-d", "research", "-q", "pretrain", "--compute", "100%"],
                     "may not change the quotas of department research", id="other-department"),
        pytest.param(["-d", "ml", "-q", "finetune", "--memory", "4Ti"],
                     "above department ml's own memory quota of 3Ti", id="above-department"),
        pytest.param(["-d", "ml", "-q", "finetune", "--memory", "unlimited"],
                     "above department ml's own memory quota", id="unlimited-queue"),
    ],
)  # fmt: skip
def test_a_dept_admin_may_not_raise_or_reach_beyond_their_department(
    store_path: str, args: list[str], why: str
) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    result = set_quota(store_path, *args, "--as", DEPT_ADMIN)
    assert result.exit_code == 1, result.output  # denied
    assert why in result.output and f"user:{DEPT_ADMIN}" in result.output
    assert "Ask" in result.output or "ask" in result.output
    assert [r.revision for r in Store(store_path).config_history()] == [1]


def test_members_and_strangers_may_not_change_quotas(store_path: str) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    for who, groups in (("ana", ["--as-group", "ml-engineers"]), ("mallory", [])):
        result = set_quota(
            store_path, "-d", "ml", "-q", "train", "--slices", "1", "--as", who, *groups
        )
        assert result.exit_code == 1, result.output
        assert f"user:{who}" in result.output


def test_a_platform_admin_sets_a_department_quota_and_usage_still_bounds_it(
    store_path: str,
) -> None:
    invoke("apply", "-f", str(EXAMPLE), "--store", store_path)
    raised = set_quota(store_path, "-d", "ml", "--memory", "4Ti", "--as", PLATFORM_ADMIN)
    assert raised.exit_code == 0, raised.output
    assert "~ department ml quota memory 3Ti -> 4Ti" in raised.output
    by_group = set_quota(
        store_path, "-d", "ml", "--slices", "90", "--as", "zed", "--as-group", "platform-team"
    )
    assert by_group.exit_code == 0, by_group.output
    store = Store(store_path)
    org = current_org(store)
    assert org is not None
    target = placement.resolve_target(org, namespace="ml", queue="finetune")
    grant = placement.grant(org, target, placement.SliceRequest(count=10, sku="a100-half"))
    demand = quotas.Demand(
        department="ml", queue="finetune", sku="a100-half", pool="a100-hami",
        amount=Resources.of_grant(grant),
    )  # fmt: skip
    assert ledger.reserve(
        store, org, demand=demand, request_uid="u1", namespace="ml", grants={"main": grant}
    ).allowed
    # 1 nominal + 8 borrowing limit is below the 10 slices in use
    below = set_quota(store_path, "-d", "ml", "-q", "finetune", "--slices", "1", "--as", DEPT_ADMIN)
    assert below.exit_code == 2, below.output  # bad input: below what is in use
    assert "would be 9 but 10 is in use" in below.output
    dry = set_quota(store_path, "-d", "ml", "-q", "finetune", "--slices", "12", "--dry-run",
                    "--as", DEPT_ADMIN)  # fmt: skip
    assert dry.exit_code == 0 and "dry run, nothing recorded" in dry.output
    assert [r.applied_by for r in store.config_history()] == [
        "user:zed",
        f"user:{PLATFORM_ADMIN}",
        store.config_history()[-1].applied_by,
    ]


def test_the_webhook_follows_the_exit_code_table_and_logs_no_alembic_lines(
    tmp_path: Path,
) -> None:
    import os
    import socket

    from tests.support.admission import self_signed

    cert, key = self_signed(tmp_path)
    root = Path(__file__).resolve().parents[2]
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("default_sku: a100-half", "default_sku: a1"))

    def webhook(*args: str) -> subprocess.CompletedProcess[str]:
        code = "from admission.cli import webhook; webhook()"
        return subprocess.run(
            [sys.executable, "-c", code, "--store", str(tmp_path / "g.db"), *args,
             "--tls-cert", str(cert), "--tls-key", str(key), "--host", "127.0.0.1",
             "--allow-unauthenticated"],
            cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = str(taken.getsockname()[1])
        in_use = webhook("--port", port, "--log-level", "INFO")  # any case
        typo = webhook("--port", port, "--config", str(bad))
    finally:
        taken.close()
    assert in_use.returncode == 4, in_use.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in in_use.stderr
    assert "alembic" not in in_use.stderr.lower()  # the store was migrated, quietly
    assert (tmp_path / "g.db").exists()
    assert typo.returncode == 2, typo.stderr  # a configuration error, as in `apply`
    assert "bad.yaml" in typo.stderr and "Traceback" not in typo.stderr


def test_apply_prints_every_error_of_a_file_one_per_line(store_path: str, tmp_path: Path) -> None:
    path = tmp_path / "org.yaml"
    path.write_text(
        "pools:\n"
        "  - {name: a100, vendor: nvidia, model: A100, backend: hami, gpus: 8,"
        " memory_per_gpu: 80Gi}\n"
        "skus:\n"
        "  - {name: a100-1g, memory: 10Gi, compute: 15%, pools: [h100]}\n"
        "departments:\n"
        "  - {name: ml, default_queue: nope, queues: [{name: train, pool: v100}]}\n"
    )
    result = run(store_path, "apply", "-f", str(path))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: skus[0].pools[0]: unknown pool 'h100' for SKU a100-1g; pools: a100 "
        "(line 4)",
        f"error: {path}: departments[0].queues[0].pool: unknown pool 'v100' for queue ml/train;"
        " pools: a100 (line 6)",
        f"error: {path}: departments[0].default_queue: default queue 'nope' is not a queue of "
        "department ml; its queues: train (line 6)",
    ]
