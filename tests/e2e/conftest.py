"""End-to-end fixtures: real fastgate processes and real upstream servers on
loopback ports chosen free at run time, stopped by PID after each test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
UPSTREAM = ROOT / "tests" / "upstream_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {out}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


class Proc:
    """A child process stopped with SIGTERM (then SIGKILL) at teardown."""

    def __init__(self, args, env=None, cwd=None):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def output(self) -> str:
        self.stop()
        return self.proc.stdout.read()

    def children(self) -> list[int]:
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []


class Upstream:
    def __init__(self, name: str = "up"):
        self.port = free_port()
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = Proc([PYTHON, str(UPSTREAM), str(self.port), name])
        wait_port(self.port, self.p.proc)

    def stop(self):
        self.p.stop()


class Gateway:
    """fastgate serve -c <yaml> with the listener and admin ports filled in."""

    def __init__(self, tmp_path: Path, config: str, workers: int = 1, admin: bool = True):
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.url = f"http://127.0.0.1:{self.port}"
        head = textwrap.dedent(f"""\
            workers: {workers}
            listeners:
              - address: 127.0.0.1:{self.port}
            admin:
              listen: {f'127.0.0.1:{self.admin_port}' if admin else 'off'}
            """)
        self.config_path = tmp_path / f"gateway-{self.port}.yaml"
        self.config_path.write_text(head + textwrap.dedent(config))
        self.p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c", str(self.config_path)],
                      cwd=str(tmp_path))
        wait_port(self.port, self.p.proc)

    @property
    def pid(self) -> int:
        return self.p.pid

    def workers(self) -> list[int]:
        return self.p.children()

    def stop(self) -> int:
        return self.p.stop()


@pytest.fixture
def upstream():
    u = Upstream("up1")
    yield u
    u.stop()


@pytest.fixture
def make_upstream():
    made = []

    def make(name="up"):
        u = Upstream(name)
        made.append(u)
        return u
    yield make
    for u in made:
        u.stop()


@pytest.fixture
def gateway(tmp_path):
    made = []

    def start(config: str, **kw) -> Gateway:
        g = Gateway(tmp_path, config, **kw)
        made.append(g)
        return g
    yield start
    for g in made:
        g.stop()


def raw_request(port: int, data: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes, return everything read until the server closes (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                c = s.recv(65536)
            except socket.timeout:
                break
            if not c:
                break
            chunks.append(c)
            if not read_until_close:
                break
        return b"".join(chunks)
