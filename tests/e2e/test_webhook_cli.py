"""`gpupool webhook` as an operator starts it: caller authentication is a choice it
refuses to start without, --self-signed serves a trial certificate whose CA it writes
next to the store, bad flags and a taken port exit with the documented codes."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from admission.cli import SELF_SIGNED_CA_NAME, webhook
from governance.cli import EXIT_SERVE as EXIT_CANNOT_SERVE
from governance.storage.store import Store
from tests.support import admission as A

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "org.yaml"
START_S = 30.0
"""Longest wait for the process to start (a bound for a broken start)."""


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(webhook, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--self-signed"],
            "refusing to start without caller authentication: give --client-ca FILE",
            id="neither-client-ca-nor-allow-unauthenticated",
        ),
        pytest.param(
            ["--allow-unauthenticated"],
            "--tls-cert FILE and --tls-key FILE",
            id="no-certificate",
        ),
        pytest.param(
            ["--self-signed", "--allow-unauthenticated", "--tls-cert", str(EXAMPLE)],
            "--self-signed makes its own certificate",
            id="self-signed-and-a-certificate",
        ),
        pytest.param(
            ["--self-signed", "--allow-unauthenticated", "--client-ca", str(EXAMPLE)],
            "contradict each other",
            id="both-authentication-choices",
        ),
        pytest.param(
            ["--self-signed", "--allow-unauthenticated", "--denial-retention", "1w"],
            "such as 30d, 12h, 90m or 3600s",
            id="bad-retention",
        ),
    ],
)
def test_bad_choices_exit_2_with_what_to_do(args: list[str], message: str) -> None:
    code, output = invoke(*args)
    assert code == 2, output
    assert message in " ".join(output.split())


def _start(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    store = tmp_path / "store" / "gpupool.db"
    store.parent.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from admission.cli import webhook; webhook()",
            "--store",
            str(store),
            "--config",
            str(EXAMPLE),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_self_signed_serves_a_certificate_that_its_ca_file_verifies(tmp_path: Path) -> None:
    port = A.free_port()
    proc = _start(tmp_path, port, "--self-signed", "--allow-unauthenticated", "--log-level", "INFO")
    ca_file = tmp_path / "store" / SELF_SIGNED_CA_NAME
    try:
        deadline = time.monotonic() + START_S
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            if ca_file.exists():
                try:
                    ctx = ssl.create_default_context(cafile=str(ca_file))
                    with httpx.Client(verify=ctx, timeout=2) as client:
                        status = client.get(f"https://localhost:{port}/healthz").status_code
                        body = A.review(A.pod(A.container(), namespace="ml"))
                        answer = client.post(f"https://127.0.0.1:{port}/mutate", json=body)
                    break
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "no answer"
        assert answer.status_code == 200 and answer.json()["response"]["allowed"]
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert f"clients trust its CA: {ca_file}" in stderr
    assert "--allow-unauthenticated: /mutate answers any caller" in stderr
    # the trial's key went with the process; the CA file stays for the next start
    assert not any(p.name == "tls.key" for p in tmp_path.rglob("*"))


def test_a_port_in_use_exits_4(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _start(tmp_path, port, "--self-signed", "--allow-unauthenticated")
        try:
            code = proc.wait(timeout=START_S)
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate(timeout=30)
    assert code == EXIT_CANNOT_SERVE, stderr
    assert "address already in use" in stderr.lower()
    Store(str(tmp_path / "store" / "gpupool.db")).close()  # the store is left usable
