"""Real services for the cluster tests and benchmark, on this machine: a PostgreSQL server on
127.0.0.1 in a temporary directory (Debian's ``postgresql`` binaries, which ``make test``
installs where they are missing, run as the ``postgres`` user when started by root, since
``initdb`` refuses root), and a Ray cluster head (``ray start --head``)."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
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
        assert self.bin is not None
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


class RayHead:
    """``ray start --head --block`` on a free port with ``cpus`` CPUs; :attr:`address` is what
    ``--address`` takes. :meth:`stop` stops this head only (``ray stop`` would stop every Ray
    on the machine)."""

    def __init__(self, cpus: int, timeout_s: float = 90.0) -> None:
        self.address = f"127.0.0.1:{_free_port()}"
        ray = str(Path(sys.executable).parent / "ray")
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.proc = subprocess.Popen(
            [ray, "start", "--head", "--block", f"--port={self.address.split(':')[1]}",
             f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped with everything it started
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        status = [ray, "status", f"--address={self.address}"]
        while subprocess.run(status, env=self.env, capture_output=True, check=False).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("could not start a Ray cluster head")
            time.sleep(1)

    def stop(self) -> None:
        """SIGTERM to the head's process group (raylet, GCS, workers), SIGKILL after 10 s."""
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue
