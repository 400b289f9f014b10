"""`gpupool reconciler`: flags and the errors it gives before it starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from admission.reconciler_cli import reconciler

pytestmark = pytest.mark.unit

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: "t"}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("GPUPOOL_STORE", raising=False)


def test_help_lists_the_flags() -> None:
    out = CliRunner().invoke(reconciler, ["--help"]).output
    for flag in (
        "--store",
        "--kubeconfig",
        "--namespace",
        "--lease-name",
        "--lease-namespace",
        "--expire-interval",
        "--lease-duration",
        "--metrics-port",
    ):
        assert flag in out


def test_an_unreachable_store_is_a_clear_error(env: None) -> None:
    result = CliRunner().invoke(
        reconciler, ["--store", "postgresql://nobody@127.0.0.1:1/none", "--metrics-port", "0"]
    )
    assert result.exit_code == 1
    assert "cannot be reached" in result.output


def test_missing_kubernetes_configuration_says_what_to_do(env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        reconciler,
        [
            "--store",
            str(tmp_path / "g.db"),
            "--kubeconfig",
            str(tmp_path / "missing"),
            "--metrics-port",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert "no Kubernetes configuration" in result.output
    assert "--kubeconfig" in result.output


def test_inconsistent_election_timings_are_refused(env: None, tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    result = CliRunner().invoke(
        reconciler,
        [
            "--store",
            str(tmp_path / "g.db"),
            "--kubeconfig",
            str(config),
            "--lease-duration",
            "5",
            "--renew-deadline",
            "10",
            "--metrics-port",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert "renew deadline < lease duration" in result.output
