"""What the supervisor's children do about signals: die with their parent, and take
the signals the supervisor sends them without losing one that arrives early."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1            # prctl(2)


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies (even by SIGKILL), so workers
    never outlive it holding the listeners; they drain as on a normal stop."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        # the supervisor died between fork() and prctl(): no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def add_loop_signal_handlers(loop, handlers: dict) -> None:
    """loop.add_signal_handler(sig, callback) for each of a child's signals, without losing
    one that arrives before the loop runs. uvloop reads its signal pipe only while running:
    a signal taken in between is noted and acted on only when another signal comes, so a
    worker orphaned there (the parent-death SIGTERM) served on forever. The signals stay
    blocked, pending in the kernel, until the loop's first turn unblocks them."""
    sigs = set(handlers)
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    for sig, callback in handlers.items():
        loop.add_signal_handler(sig, callback)
    loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, sigs)


class Coalesced:
    """A loop signal handler that runs `callback` once, on the loop's next turn, for however
    many times it was called before that. uvloop calls a handler once per signal taken, so
    SIGHUPs that arrive while the loop is busy (a worker building its snapshot) would each
    cost a whole build after it, every build reading the same, latest state. A build that
    starts after the last signal reads every change that signal announced."""

    def __init__(self, loop, callback):
        self.loop = loop
        self.callback = callback
        self.queued = False

    def __call__(self) -> None:
        if not self.queued:
            self.queued = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        self.queued = False
        self.callback()
