"""A real PostgreSQL server for tests: initdb and pg_ctl into a temporary directory, on a
free loopback port, stopped by its PID.

    with PostgresServer() as pg:      # pg.url == "postgresql://fastgate@127.0.0.1:PORT/postgres"
        url = pg.new_database()       # a fresh, empty database of its own
        pg.stop()                     # PostgreSQL down (data kept) until pg.start()

PostgreSQL refuses to run as root, and the tests run as root: the server then runs as the
`postgres` system user that Debian's package creates (runuser), in a directory that user
owns. A missing server is an error, not a skip: build.sh installs Debian's `postgresql`.
Durability is off (fsync, synchronous_commit, full_page_writes): a crash of the test
machine loses a throwaway cluster, and one server starts in about a second.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
SUPERUSER = "fastgate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> str:
    """The directory of initdb and pg_ctl: Debian keeps them out of PATH, in
    /usr/lib/postgresql/<major>/bin (the newest one installed wins)."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not dirs:
        raise RuntimeError("PostgreSQL is not installed (./build.sh test installs Debian's "
                           "postgresql package with apt-get)")
    return os.path.dirname(dirs[-1])


class PostgresServer:
    def __init__(self, port: int | None = None):
        self.bindir = postgres_bindir()
        self.port = port or free_port()
        self.root = tempfile.mkdtemp(prefix="fastgate-pg-")
        self.data = os.path.join(self.root, "data")
        self.user = None            # run as this system user (when we are root)
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run "
                                   "PostgreSQL as (Debian's postgresql package creates it)") from None
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            os.chmod(self.root, 0o700)
        self.pid = 0
        self.databases = 0

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False, cwd=self.root, timeout=STARTUP_TIMEOUT_S)

    def start(self) -> "PostgresServer":
        assert not self.pid, "already running"
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            r = self._run("initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust",
                          "-E", "UTF8", "--locale=C", "--no-sync")
            if r.returncode:
                raise RuntimeError(f"initdb failed ({r.returncode}): {r.stdout[-2000:]}")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                f"-c unix_socket_directories={self.root} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
                "-c shared_buffers=16MB")
        # pg_ctl start -w: returns once the server accepts connections
        r = self._run("pg_ctl", "start", "-w", "-t", str(int(STARTUP_TIMEOUT_S)), "-D", self.data,
                      "-l", os.path.join(self.root, "server.log"), "-o", opts)
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed ({r.returncode}): {r.stdout[-1000:]} "
                               f"{self.log()}")
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: sessions are ended, data is kept)."""
        if not self.pid:
            return
        pid, self.pid = self.pid, 0
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + STOP_TIMEOUT_S
            time.sleep(0.02)

    def new_database(self) -> str:
        """A fresh database's URL (created empty from template0)."""
        import psycopg
        self.databases += 1
        name = f"t{os.getpid()}_{self.databases}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.database_url(name)

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "server.log"), "rb") as f:
                return f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone: the postmaster is not our child once
    pg_ctl started it, so init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
