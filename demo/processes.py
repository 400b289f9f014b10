"""The components as processes: started with their own ``gpupool`` subcommands, watched,
and stopped.

Each runs ``python -m governance.cli <subcommand> ...`` with the demo's own interpreter
(the same as ``gpupool <subcommand> ...`` from that environment), its output in a log
file of the run directory. A component that exits while the demo runs stops the demo,
with the end of its log. Stopping sends SIGTERM to each, newest first (the console
before the exporters, the webhook last), waits, and kills what is left.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from governance import cli as gcli

STOP_TIMEOUT_S = 30.0
"""Seconds the components have to stop on SIGTERM (thirty of them stopping at once on
two cores take several) before they are killed."""


class ComponentFailed(Exception):
    """A component exited, or did not become ready in time."""

    def __init__(self, child: Child, what: str) -> None:
        self.exit_code = child.proc.poll()
        super().__init__(f"{child.name} {what}; the end of its log ({child.log}):\n{child.tail()}")


@dataclass
class Child:
    name: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


class Supervisor:
    """Starts components, checks on them, stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, args: Sequence[str]) -> Child:
        log = self.log_dir / f"{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log.open("ab") as out:
            out.write(f"$ gpupool {shlex.join(args)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "governance.cli", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        child = Child(name=name, args=list(args), proc=proc, log=log)
        self.children.append(child)
        return child

    def check(self) -> None:
        """Raise :class:`ComponentFailed` for the first component that has exited."""
        for child in self.children:
            if child.proc.poll() is not None:
                raise ComponentFailed(child, f"exited with code {child.proc.returncode}")

    def wait_ready(
        self, child: Child, ready: Callable[[], bool], *, timeout_s: float = 90.0
    ) -> None:
        """Wait until ``ready()`` (a probe of the child's health endpoint) is true."""
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            if child.proc.poll() is not None:
                raise ComponentFailed(child, f"exited with code {child.proc.returncode}")
            try:
                if ready():
                    return
            except Exception:  # not listening yet: connection refused, reset, TLS not up
                pass
            if time.monotonic() > deadline:
                raise ComponentFailed(child, f"was not ready within {timeout_s:g} s")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.5)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop every child, newest first; returns the names of those that had to be
        killed."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        killed = []
        for child in reversed(self.children):
            try:
                child.proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
                killed.append(child.name)
        return killed


def exit_code(exc: ComponentFailed) -> int:
    """The demo's exit code when a component failed: the component's own when it is one
    of the table's (bad input, store unavailable, cannot serve), else cannot serve."""
    code = exc.exit_code
    if code in (gcli.EXIT_USAGE, gcli.EXIT_STORE, gcli.EXIT_SERVE):
        return code
    return gcli.EXIT_SERVE
