"""The cyclic garbage collector paused while a batch of long-lived objects is built.

PERF: building a snapshot, or reading a state, allocates hundreds of thousands of objects
that all live on; each allocation threshold crossed runs a collection that walks the
whole heap (the state alone is ~380,000 objects for 1,000 APIs). On a host serving 1,000
APIs, build_snapshot took 1.4 s with the collector running and 0.53 s paused; reading the
local copy 0.33 s and 0.18 s (bench/fleet_propagation.py --part reload, bench/RESULTS.md).
The cycles made meanwhile are collected once the collector runs again.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
