"""`gpupool webhook`'s options reach the admitter's settings (the chart passes them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from admission import cli
from admission.admitter import DEFAULT_TRUSTED_CONTROLLERS, Settings

pytestmark = pytest.mark.unit


class _Built(Exception):
    """Raised by the stand-in for `build`: the command parsed and wired its settings."""


def _settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> Settings:
    seen: dict[str, Any] = {}

    def build(_store: object, *, settings: Settings, **_kw: object) -> None:
        seen["settings"] = settings
        raise _Built

    monkeypatch.setattr(cli, "build", build)
    store = f"sqlite:///{tmp_path / 'gpupool.db'}"
    result = CliRunner().invoke(
        cli.webhook,
        ["--store", store, "--self-signed", "--allow-unauthenticated", *args],
    )
    assert isinstance(result.exception, _Built), result.output
    settings: Settings = seen["settings"]
    return settings


def test_trusted_controllers_default_to_kubernetes_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _settings(monkeypatch, tmp_path)
    assert settings.trusted_controllers == DEFAULT_TRUSTED_CONTROLLERS


def test_trusted_controller_flags_replace_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = _settings(
        monkeypatch,
        tmp_path,
        "--trusted-controller",
        "system:serviceaccount:kube-system:*",
        "--trusted-controller",
        "system:serviceaccount:kubeflow:*",
        "--request-budget",
        "5",
        "--max-gpu-containers",
        "4",
    )
    assert settings.trusted_controllers == (
        "system:serviceaccount:kube-system:*",
        "system:serviceaccount:kubeflow:*",
    )
    assert (settings.request_budget_s, settings.max_gpu_containers) == (5.0, 4)
