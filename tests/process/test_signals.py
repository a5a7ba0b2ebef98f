"""fastgate/process/signals.py: a child's loop signal handlers, with real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import uvloop

from fastgate.process.signals import Coalesced, add_loop_signal_handlers


@pytest.fixture
def loop():
    """A uvloop loop for SIGHUP; the test process's own SIGHUP disposition comes back after."""
    before = signal.getsignal(signal.SIGHUP)
    loop = uvloop.new_event_loop()
    yield loop
    loop.remove_signal_handler(signal.SIGHUP)
    loop.close()
    signal.signal(signal.SIGHUP, before)


def run_for(loop, seconds: float) -> None:
    loop.call_later(seconds, loop.stop)
    loop.run_forever()


def test_a_burst_of_signals_taken_while_the_loop_is_busy_runs_the_callback_once(loop):
    handled, runs = [], []
    coalesced = Coalesced(loop, lambda: runs.append(time.monotonic()))

    def on_hup():
        handled.append(time.monotonic())
        coalesced()
    add_loop_signal_handlers(loop, {signal.SIGHUP: on_hup})

    def busy():
        # what a snapshot build is to a worker's loop: five SIGHUPs, apart, arrive meanwhile
        subprocess.run(["sh", "-c", f"for i in 1 2 3 4 5; do kill -HUP {os.getpid()}; "
                                    "sleep 0.05; done"], check=True)
    loop.call_soon(busy)
    run_for(loop, 0.5)
    # each signal was handled (the kernel may merge some, not all five at 50 ms apart)...
    assert len(handled) >= 2, handled
    # ... after the busy turn, and the callback ran once for them all, after them
    assert len(runs) == 1 and runs[0] > handled[-1]


def test_a_signal_taken_while_the_callback_runs_gets_a_run_of_its_own(loop):
    runs = []

    def reload():
        runs.append(time.monotonic())
        if len(runs) == 1:
            # a change made while this build reads the state: the build may have missed it
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.05)
    add_loop_signal_handlers(loop, {signal.SIGHUP: Coalesced(loop, reload)})
    loop.call_soon(os.kill, os.getpid(), signal.SIGHUP)
    run_for(loop, 0.5)
    assert len(runs) == 2
