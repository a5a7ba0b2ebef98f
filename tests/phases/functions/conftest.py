import os
from pathlib import Path

import pytest
import uvloop

HANDLERS = str(Path(__file__).parent / "handlers")


def run(coro):
    """Run a coroutine on uvloop, the loop the gateway's workers run."""
    return uvloop.run(coro)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes (reaped by its parent later)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def handlers_dir():
    return HANDLERS
