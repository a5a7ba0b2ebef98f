"""fastgate's own log: one line per event on stderr, prefixed with the process's role and
PID (``fastgate[1234]: ...``, ``fastgate-admin[1240]: ...``), so the lines of a supervisor,
its workers and its admin process can be told apart in one journal. Access logs and
execution logs are separate files (fastgate/_core/accesslog.pyx, execlog.pyx)."""

from __future__ import annotations

import os
import sys

_role = "fastgate"


def set_role(role: str) -> None:
    """Name this process in every later line (the admin process calls it once at start)."""
    global _role
    _role = role


def log(msg: str) -> None:
    print(f"{_role}[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)
