"""What a GCRA token bucket (rate r per s, burst b; fastgate/_core/throttle.pyx and the Lua
script in fastgate/phases/ratelimit_redis.py) may admit over takes that really happened, whatever
the machine's load: the oracle for the throttle accuracy tests.

A take is (sent_ns, answered_ns, allowed) on CLOCK_MONOTONIC, which every process of the host
shares; the bucket decided it at an unknown instant inside that window. With T = 1/r and
tau = b*T, the bucket's theoretical arrival time `tat` starts at the first decision t0, grows
by T per admitted take and jumps forward over any time the bucket sat full (tokens that
overflowed), and a decision at t leaves tat <= t + tau. So after A admitted takes

    tat = t0 + A*T + full     =>   A <= b + r*(tL - t0)                (any last decision tL)
    a rejection at e means tat > e + tau - T  =>  A >= b - 1 + r*(e - t0 - full)

`full` is only known from above: the bucket cannot be full within tau - T after a rejection
nor within T after an admission, and the rest of the span is counted as possibly full. So a
demand gap (the test's own clients descheduled on a busy machine) widens the lower bound by
exactly what it can cost; on a steady run it is a few ms.
"""
from __future__ import annotations

import math
import threading
import time

import httpx

S = 1_000_000_000


def bounds(takes, rate: float, burst: float) -> tuple[float, float, float]:
    """(low, high, full_s) for the number of admitted takes among `takes`
    [(sent_ns, answered_ns, allowed)]; at least one must have been rejected."""
    t_ns = S / rate
    tau_ns = burst * t_ns
    first_sent = min(t[0] for t in takes)
    first_answered = min(t[1] for t in takes)
    last_answered = max(t[1] for t in takes)
    rejected = [t for t in takes if not t[2]]
    assert rejected, "the bucket was never empty: nothing to measure"
    last_rejection_sent = max(t[0] for t in rejected)
    span_end = max(t[1] for t in rejected)
    # spans in which the bucket surely held tat > now, whenever inside its window the take ran
    sure = sorted((a, s + (tau_ns - t_ns if not ok else t_ns)) for s, a, ok in takes)
    full_ns, cursor = 0.0, float(first_sent)
    for start, end in sure:
        if start >= span_end:
            break
        if start > cursor:
            full_ns += start - cursor
        cursor = max(cursor, start, end)     # (an empty span: a take slower than its guarantee)
    full_ns += max(0.0, span_end - cursor)
    high = burst + rate * (last_answered - first_sent) / S
    low = burst - 1 + rate * (last_rejection_sent - first_answered - full_ns) / S
    return low, high, full_ns / S


class Replay:
    """One GCRA bucket replayed over takes made one after another, each decided at an unknown
    instant inside its (sent_ns, answered_ns) window: `take` asserts that what the bucket
    answered is something it could have answered then. On an idle machine the windows are
    a round trip wide and every answer is forced (the exact burst, `remaining` count and
    refill); on a busy one a late take may find more tokens, and only that is allowed.

    tat is known as an interval [lo, hi] (-inf: the bucket is full). A take at `now` admits
    iff tat - now <= tau - T (the GCRA of throttle.pyx and ratelimit_redis.TAKE_LUA);
    admitted, tat becomes max(tat, now) + T and remaining = floor((tau - T - max(tat - now,
    0)) / T); rejected, tat stays and retry_after = tat + T - tau - now. `slack_ns` widens
    each window for a bucket deciding on another clock (Redis's TIME is CLOCK_REALTIME)."""

    def __init__(self, rate: float, burst: float, slack_ns: int = 0):
        self.t_ns = S / rate
        self.tau_ns = burst * self.t_ns
        self.slack_ns = slack_ns
        self.lo = self.hi = -math.inf

    def take(self, sent_ns: int, answered_ns: int, take) -> None:
        """take: a fastgate._core.throttle.Take (allowed, limit, remaining, reset_ns,
        retry_after_ns, window_s)."""
        s, a = sent_ns - self.slack_ns, answered_ns + self.slack_ns
        t, tau = self.t_ns, self.tau_ns
        state = (take, self.lo, self.hi, s, a)
        if take.allowed:
            assert self.lo - a <= tau - t, ("admitted", state)
            # the admission bounds tat - now from above too
            d_high = min(max(self.hi - s, 0), tau - t)
            d_low = max(self.lo - a, 0)
            assert math.floor((tau - t - d_high) / t) <= take.remaining \
                <= math.floor((tau - t - d_low) / t), ("remaining", state)
            self.lo, self.hi = max(self.lo, s) + t, min(max(self.hi, a) + t, a + tau)
        else:
            assert self.hi - s > tau - t, ("rejected", state)
            self.lo = max(self.lo, s + tau - t)
            assert 0 < take.retry_after_ns <= self.hi + t - tau - s + 1000, ("retry", state)


def hammer(urls: list[str], seconds: float, threads_per_url: int = 4, at_least: int = 0,
           cap_s: float = 60.0) -> list:
    """Requests as fast as threads_per_url keep-alive clients per url can for `seconds`
    (and on until `at_least` requests were answered, for a count-bound check that a busy
    machine must not starve; never past cap_s): every one as (sent_ns, answered_ns, status)
    on the monotonic clock."""
    takes = []
    start = time.monotonic_ns()
    stop, cap = start + int(seconds * 1e9), start + int(cap_s * 1e9)

    def run(url):
        with httpx.Client(timeout=10) as c:
            while ((sent := time.monotonic_ns()) < stop or len(takes) < at_least) and sent < cap:
                status = c.get(url).status_code
                takes.append((sent, time.monotonic_ns(), status))   # list.append: atomic
    ts = [threading.Thread(target=run, args=(u,)) for u in urls for _ in range(threads_per_url)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return takes


def statuses(takes) -> dict[int, int]:
    """{status: count} of hammer's requests."""
    out: dict[int, int] = {}
    for _, _, status in takes:
        out[status] = out.get(status, 0) + 1
    return out


def check_accuracy(takes, rate: float, burst: float) -> dict[int, int]:
    """Assert that the 200s among hammer's requests are what one bucket admits over them
    (two buckets would admit about twice as many); returns statuses(takes)."""
    got = statuses(takes)
    assert set(got) == {200, 429} and got[429] > got[200] / 4, got   # really overloaded
    low, high, full_s = bounds([(s, r, status == 200) for s, r, status in takes], rate, burst)
    assert low <= got[200] <= high, (got, low, high, full_s)
    assert high - low < 0.5 * high, (low, high, full_s)   # the run measured something
    return got
