"""fastgate.phases.ratelimit_redis against a real redis-server (tests/redis_server.py)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
import uvloop

from fastgate._core.throttle import QuotaSettings, Take, ThrottleSettings, header_block, quota_period
from fastgate.phases.ratelimit_redis import QUOTA_EXPIRY_SLACK_S, RedisThrottle
from tests.bucket_bounds import Replay, bounds
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
S = 1_000_000_000


@pytest.fixture(scope="module")
def server():
    with RedisServer() as r:
        yield r


@pytest.fixture
def own_server():
    """A server this test may stop, freeze and restart."""
    with RedisServer() as r:
        yield r


def run(coro_fn, *args):
    return uvloop.run(coro_fn(*args))


def test_bucket_burst_then_rate(server):
    """Burst, then rate: every answer is one the GCRA bucket could give at the time the take
    really ran (tests/bucket_bounds.Replay). On an idle machine that is exactly five admitted
    (remaining 4..0), two rejected, and two tokens back after 250 ms; a busy machine that
    delays a take may see it find a token more, never an answer the bucket cannot give."""
    async def go():
        rt = RedisThrottle(server.url, fail_open=False)
        s = ThrottleSettings(10, 5)                     # T = 100 ms
        replay = Replay(10, 5, slack_ns=S // 1000)      # Redis decides on CLOCK_REALTIME

        async def take():
            sent = time.monotonic_ns()
            got = await rt.take(b"basic", s)
            replay.take(sent, time.monotonic_ns(), got)
            return got
        try:
            takes = [await take() for _ in range(7)]
            assert [t.allowed for t in takes[:5]] == [True] * 5   # a fresh bucket holds the burst
            assert takes[0].limit == 5 and takes[0].window_s == 1
            rejected = next((t for t in takes if not t.allowed), None)
            for _ in range(100):                        # only if the takes above were slow
                if rejected is not None:
                    break
                if not (got := await take()).allowed:
                    rejected = got
            assert rejected is not None, "the bucket never ran out"
            assert 0 < rejected.retry_after_ns <= S // 10
            block = header_block("key", rejected)
            assert block.startswith(b'RateLimit-Policy: "key";q=5;w=1\r\nRateLimit: "key";r=0;t=1\r\n')
            assert block.endswith(b"Retry-After: 1\r\n")
            time.sleep(0.25)                            # two tokens come back (more if slept longer)
            assert sum([(await take()).allowed for _ in range(5)]) >= 2
            assert rt.errors == 0
        finally:
            await rt.close()
    run(go)


def test_bucket_key_expires_when_full(server):
    async def go():
        rt = RedisThrottle(server.url, prefix="exp")
        try:
            await rt.take(b"k", ThrottleSettings(2, 3))       # 500 ms of debt
        finally:
            await rt.close()
    run(go)
    r = redis.Redis.from_url(server.url)
    assert 0 < r.pttl("exp:b:k") <= 500        # (a loaded machine may take a while to get here)
    time.sleep(0.6)
    assert r.exists("exp:b:k") == 0                     # a full bucket is no key at all


def test_burst_zero_and_rate_zero(server):
    async def go():
        rt = RedisThrottle(server.url, fail_open=False)
        try:
            assert await rt.take(b"closed", ThrottleSettings(100, 0)) == Take(False, 0, 0, -1, -1, 0)
            trial = ThrottleSettings(0, 3)
            takes = [await rt.take(b"trial", trial) for _ in range(5)]
            assert [t.allowed for t in takes] == [True, True, True, False, False]
            assert takes[4] == Take(False, 3, 0, -1, -1, 0)
        finally:
            await rt.close()
    run(go)


def test_quota_counts_and_expires_at_period_end(server):
    async def go():
        rt = RedisThrottle(server.url, fail_open=False, prefix="quota")
        now = int(time.time())
        plan = QuotaSettings(3, "DAY", offset=1, start_s=now - 5 * 86400)   # offset long gone
        first = QuotaSettings(3, "DAY", offset=1, start_s=now)              # offset applies today
        try:
            got = [await rt.take_quota(b"key1", plan) for _ in range(5)]
            assert [t.allowed for t in got] == [True, True, True, False, False]
            assert [t.remaining for t in got] == [2, 1, 0, 0, 0]
            assert got[3].retry_after_ns == got[3].reset_ns > 0
            assert sum([(await rt.take_quota(b"key2", first)).allowed for _ in range(5)]) == 2
        finally:
            await rt.close()
        return now
    now = run(go)
    ordinal, _, end = quota_period("DAY", now)
    r = redis.Redis.from_url(server.url)
    key = b"quota:q:key1:%d" % ordinal
    assert int(r.get(key)) == 3                        # the rejected two were not counted
    assert abs(r.expiretime(key) - (end + QUOTA_EXPIRY_SLACK_S)) <= 1


# --- accuracy: two fastgate processes, one Redis ---

HAMMER = r"""
import asyncio, json, sys, time, uvloop
from fastgate._core.throttle import ThrottleSettings
from fastgate.phases.ratelimit_redis import RedisThrottle

url, key, rate, burst, duration_s, start_ns = sys.argv[1:7]
async def main():
    rt = RedisThrottle(url, fail_open=False, timeout_ms=2000)
    settings = ThrottleSettings(float(rate), float(burst))
    await rt._redis.ping()                       # connected before the start line
    while time.monotonic_ns() < int(start_ns):
        await asyncio.sleep(0.001)
    takes = []                                   # (sent_ns, answered_ns, allowed) of every take
    end = time.monotonic_ns() + int(float(duration_s) * 1e9)
    async def loop():
        while (sent := time.monotonic_ns()) < end:
            got = await rt.take(key.encode(), settings)
            takes.append((sent, time.monotonic_ns(), got.allowed))
    await asyncio.gather(*(loop() for _ in range(4)))
    print(json.dumps({"takes": takes, "errors": rt.errors}))
    await rt.close()
uvloop.run(main())
"""


def test_accuracy_two_processes_share_one_redis_bucket(server):
    """Two processes, one bucket: the admitted takes are what one GCRA bucket admits over
    the takes that really happened (tests/bucket_bounds.py), not twice that."""
    rate, burst, duration_s = 200, 50, 2.0
    start_ns = time.monotonic_ns() + 3 * S          # both are connected and waiting by then
    procs = [subprocess.Popen([sys.executable, "-c", HAMMER, server.url, "shared", str(rate), str(burst),
                               str(duration_s), str(start_ns)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        results.append(json.loads(out))
    assert all(r["errors"] == 0 for r in results)      # no take fell back to fail_open
    assert all(any(ok for _, _, ok in r["takes"]) for r in results)   # both drew from the one bucket
    takes = [t for r in results for t in r["takes"]]
    accepted = sum(ok for _, _, ok in takes)
    assert len(takes) > 2 * accepted, len(takes)        # demand well over what the bucket gives
    low, high, full_s = bounds(takes, rate, burst)
    # two buckets would admit about 2 * (burst + rate * duration_s): far above `high`
    assert low <= accepted <= high, (accepted, low, high, full_s)
    assert high - low < 0.5 * high, (low, high, full_s)  # the run measured something


# --- Redis restarts, goes down, hangs ---

def test_reconnects_after_redis_restart(own_server):
    async def go():
        rt = RedisThrottle(own_server.url, fail_open=False)
        s = ThrottleSettings(1000, 1000)
        try:
            assert (await rt.take(b"r", s)).allowed
            own_server.restart()                        # drops connections and the script cache
            got = await rt.take(b"r", s)
            assert got.allowed and got.remaining == 999 # a fresh bucket: Redis answered, not a fallback
            assert rt.errors == 0 and not rt.down
        finally:
            await rt.close()
    run(go)


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_answers_fail_open_then_recovers(own_server, fail_open):
    async def go():
        rt = RedisThrottle(own_server.url, fail_open=fail_open, retry_interval_ms=200)
        s = ThrottleSettings(1, 2)
        try:
            assert (await rt.take(b"d", s)).remaining == 1
            own_server.stop()
            got = await rt.take(b"d", s)
            assert got.allowed is fail_open
            if not fail_open:
                assert got.retry_after_ns == 200_000_000
            assert rt.down and rt.errors == 1
            # while down, answered without trying Redis
            assert (await rt.take(b"d", s)).allowed is fail_open and rt.errors == 2
            q = await rt.take_quota(b"d", QuotaSettings(5, "DAY", start_s=0))
            assert q.allowed is fail_open
            own_server.start()
            deadline = time.monotonic() + 10
            while rt.down and time.monotonic() < deadline:
                time.sleep(0.05)
            got = await rt.take(b"d", s)               # fresh server, fresh bucket
            assert got.allowed and got.remaining == 1, got
            assert rt.errors == 3
        finally:
            await rt.close()
    run(go)


def test_a_hung_redis_costs_one_timeout_then_nothing(own_server):
    async def go():
        rt = RedisThrottle(own_server.url, fail_open=True, timeout_ms=100, retry_interval_ms=5000)
        s = ThrottleSettings(100, 100)
        try:
            assert (await rt.take(b"h", s)).allowed
            os.kill(own_server.proc.pid, signal.SIGSTOP)   # accepts nothing, answers nothing
            try:
                t0 = time.monotonic()
                got = await rt.take(b"h", s)
                first_s = time.monotonic() - t0
                t0 = time.monotonic()
                again = await rt.take(b"h", s)
                second_s = time.monotonic() - t0
            finally:
                os.kill(own_server.proc.pid, signal.SIGCONT)
            assert got.allowed and again.allowed and rt.errors == 2
            # bounded by the 100 ms timeout, not by the frozen Redis (the bound
            # is generous for a loaded machine)
            assert first_s < 1.5, first_s
            assert second_s < first_s                   # the breaker answered without waiting
        finally:
            await rt.close()
    run(go)
