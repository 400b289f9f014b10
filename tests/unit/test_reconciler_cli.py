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
        "--host",
        "--health-port",
        "--log-level",
    ):
        assert flag in out
    assert "--metrics-port" not in out  # the old spelling still works, unlisted


def test_an_unreachable_store_is_a_clear_error(env: None) -> None:
    result = CliRunner().invoke(
        reconciler, ["--store", "postgresql://nobody@127.0.0.1:1/none", "--health-port", "0"]
    )
    assert result.exit_code == 3  # the exit-code table: store unavailable
    assert "cannot be reached" in result.output


def test_missing_kubernetes_configuration_says_what_to_do(env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        reconciler,
        [
            "--store",
            str(tmp_path / "g.db"),
            "--kubeconfig",
            str(tmp_path / "missing"),
            "--metrics-port",  # the old spelling of --health-port
            "0",
        ],
    )
    assert result.exit_code == 2  # bad input
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
            "--health-port",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert "renew deadline < lease duration" in result.output


def test_health_server_answers_liveness_readiness_and_metrics(env: None, tmp_path: Path) -> None:
    import httpx
    from prometheus_client import CollectorRegistry, Counter

    from admission.reconciler_cli import health_app, serve_health
    from governance.storage.store import Store
    from tests.support.exporter import free_port

    registry = CollectorRegistry()
    Counter("gpupool_reconciler_test_events", "test", registry=registry).inc()
    store = Store(str(tmp_path / "g.db"))
    port = free_port()
    server = serve_health(health_app(registry, store), "127.0.0.1", port)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert "gpupool_reconciler_test_events_total 1.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/other").status_code == 404
        store.engine.dispose()
        (tmp_path / "g.db").unlink()
        (tmp_path / "g.db").mkdir()  # the store's file is gone: not ready, still alive
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503 and "not ready" in ready.text
        assert httpx.get(f"{base}/healthz").status_code == 200
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        taken = CliRunner().invoke(
            reconciler,
            [
                *("--store", str(tmp_path / "h.db"), "--kubeconfig", str(kubeconfig)),
                *("--host", "127.0.0.1", "--health-port", str(port)),
            ],
        )
        assert taken.exit_code == 4, taken.output  # cannot serve: the port is in use
        assert f"cannot listen on 127.0.0.1:{port}" in taken.output
    finally:
        server.shutdown()
        server.server_close()
        store.close()
