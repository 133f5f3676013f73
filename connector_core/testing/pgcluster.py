"""A throwaway PostgreSQL cluster for the tests and the benchmarks: Debian's binaries, a
temporary directory, a free loopback port, stopped (and its files removed) at the end.

initdb refuses to run as root, and CI runs as root: the cluster then runs as the ``postgres``
user the Debian package creates, or, without it, as a system user made for the purpose.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NOT_INSTALLED = "PostgreSQL is not installed: apt-get install postgresql"
THROWAWAY_USER = "connector-pg-test"
SUPERUSER = "postgres"  # the database role initdb makes


def bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian's newest, else ``pg_config --bindir``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major, reverse=True)
    if found:
        return Path(found[0]).parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    return None


def _major(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


def _os_user() -> str | None:
    """The OS user to run the server as: ``None`` when not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", THROWAWAY_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", THROWAWAY_USER],
        check=True,
        capture_output=True,
    )
    return THROWAWAY_USER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    root: Path  # data directory, socket and log
    port: int
    user: str | None  # the OS user the server runs as

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{tail}"
            )
        return done

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser on the ``postgres`` database."""
        self._run(
            "psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
            "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", statement,
        )  # fmt: skip

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template``; returns its URL."""
        copy = f' TEMPLATE "{template}"' if template else ""
        self.sql(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start(*, fsync: bool = False) -> PgCluster:
    """Make and start a cluster; raises ``FileNotFoundError(NOT_INSTALLED)`` without the
    binaries.

    ``fsync`` off (the tests): a cluster that does not survive a power cut is fine there, and
    much faster. A benchmark turns it on, so a commit costs what it costs in production.
    """
    where = bindir()
    if where is None:
        raise FileNotFoundError(NOT_INSTALLED)
    user = _os_user()
    # Not under pytest's tmp_path: the server's user must be able to reach its directory.
    root = Path(tempfile.mkdtemp(prefix="connector-pg-"))
    if user is not None:
        shutil.chown(root, user)
    cluster = PgCluster(where, root, _free_port(), user)
    try:
        cluster._run(
            "initdb", "-D", str(cluster.data), "-A", "trust", "-U", SUPERUSER,
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        options = (
            f"-k {root} -p {cluster.port} -c listen_addresses=127.0.0.1"
            f" -c fsync={'on' if fsync else 'off'} -c max_connections=200"
        )
        cluster._run(
            "pg_ctl", "-D", str(cluster.data), "-l", str(root / "log"), "-w", "-t", "60",
            "-o", options, "start",
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster
