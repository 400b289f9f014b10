"""``gpupool demo`` refuses what it cannot do before it starts anything, with the exit
code of the table and what to change."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from demo.cli import demo
from governance import cli as gcli

pytestmark = pytest.mark.unit


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(demo, ["--store", "sqlite:///:memory:", *args])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        pytest.param(["--host", "0.0.0.0"], gcli.EXIT_USAGE, "loopback only", id="host"),
        pytest.param(["--host", "nowhere"], gcli.EXIT_USAGE, "not an IP address", id="host-name"),
        pytest.param(["--nodes", "3"], gcli.EXIT_USAGE, "--nodes 5 or more", id="nodes"),
        pytest.param(["--speed", "0.5"], gcli.EXIT_USAGE, "--speed", id="speed"),
        pytest.param(["--placement", "random"], gcli.EXIT_USAGE, "binpack", id="placement"),
    ],
)
def test_bad_options_are_refused(args: list[str], code: int, message: str) -> None:
    exit_code, output = run(*args)
    assert exit_code == code, output
    assert message in output


def test_a_missing_trace_says_where_it_looked(tmp_path: Path) -> None:
    free = ("--console-port", "0", "--webhook-port", "0", "--exporter-port", "0")
    exit_code, output = run("--trace", str(tmp_path), *free)
    assert exit_code == gcli.EXIT_USAGE, output
    assert str(tmp_path) in output and "--trace DIR" in output


def test_an_organisation_that_does_not_load_is_refused_with_its_error(tmp_path: Path) -> None:
    bad = tmp_path / "org.yaml"
    bad.write_text("apiVersion: gpupool.io/v1\nkind: Organisation\npools: 3\n")
    exit_code, output = run("--config", str(bad))
    assert exit_code == gcli.EXIT_USAGE, output
    assert str(bad) in output


def test_a_taken_port_stops_it_before_anything_starts(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        exit_code, output = run("--console-port", str(port), "--workdir", str(tmp_path / "run"))
    assert exit_code == gcli.EXIT_SERVE, output
    assert f"cannot listen on 127.0.0.1:{port}" in output
    assert not (tmp_path / "run").exists()  # nothing was started
