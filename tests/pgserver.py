"""A real PostgreSQL server for the cluster tests, on 127.0.0.1 in a temporary directory:
Debian's ``postgresql`` binaries (``make test`` installs the package where it is missing), run
as the ``postgres`` user when the tests run as root (``initdb`` refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl in ``root``; :attr:`url` is what ``--storage`` takes."""

    def __init__(self, root: Path) -> None:
        self.bin = _binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
        self.as_user: list[str] = []
        self.own: Path | None = None
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user,
            if shutil.which("runuser") is None:  # in a folder it can reach
                raise RuntimeError("running as root without runuser: cannot start PostgreSQL")
            root = self.own = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
            root.chmod(0o755)
            subprocess.run(["chown", "-R", "postgres", str(root)], check=True)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = root / "pgdata", _free_port()
        self.log = root / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bin / tool), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            raise RuntimeError(f"{tool} failed: {(res.stderr or res.stdout).strip()[-300:]}")

    def _ctl(self, action: str) -> None:
        self._run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.log), "-w", "-m", "fast",
            "-o", f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off",
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """Stop and start again (drivers see their connections drop meanwhile)."""
        self._ctl("stop")
        time.sleep(1.0)
        self.start()

    def stop(self) -> None:
        try:
            self._ctl("stop")
        except RuntimeError:
            pass
        if self.own is not None:
            shutil.rmtree(self.own, ignore_errors=True)


def start_or_skip(root: Path) -> PostgresServer:
    """A running server, or a one-line pytest skip saying why there is none."""
    import pytest

    try:
        return PostgresServer(root)
    except (RuntimeError, OSError) as e:
        pytest.skip(f"no PostgreSQL server here: {e}")
        raise  # unreachable: skip raises
