"""A PostgreSQL server of the test's own, to stop and resume (SIGSTOP/SIGCONT) without
touching the shared one: initdb in a temporary directory, a free loopback port, run as
the postgres user when the tests run as root (Debian's PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.admission import free_port


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Server:
    url: str
    """postgresql+psycopg URL of its ``postgres`` database."""
    data: Path

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        found = [postmaster]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == postmaster:
                found.append(int(stat.split("/")[2]))
        return found

    def stop(self) -> None:
        """SIGSTOP every process of the server: connections stay open, nothing answers."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        admin = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def throwaway_postgres() -> Iterator[Server]:
    """Start a server for the duration; skip the test when PostgreSQL is not installed."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    as_postgres: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="gpupool-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    port = free_port()
    ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "log")]
    try:
        subprocess.run(
            [
                *as_postgres,
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
            check=True,
            capture_output=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run([*ctl, "-w", "-o", options, "start"], check=True, capture_output=True)
        server = Server(url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", data=data)
        try:
            yield server
        finally:
            server.resume()
            subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
