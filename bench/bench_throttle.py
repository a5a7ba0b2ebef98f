"""Cost of one throttle check -- a static bucket take, a dynamic (per-key) take, a quota
take, a Redis take -- each against a naive Python baseline.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_throttle.py
(from the repository root: the Redis benchmarks start tests/redis_server.py's redis-server).
Local takes loop in C (take_n), TAKES_PER_ROUND per round: per-take cost = reported
time / TAKES_PER_ROUND. Targets: static and quota takes well under 0.1 µs, a dynamic
take (hash + probe + 128-bit CAS) about 0.1 µs; a Redis take is one round trip, tens of µs.
"""
import asyncio
import time

import pytest
import redis.asyncio as aioredis
import uvloop

from fastgate._core.throttle import BucketTable, QuotaSettings, QuotaTable, ThrottleSettings
from fastgate.phases.ratelimit_redis import RedisThrottle
from tests.redis_server import RedisServer

TAKES_PER_ROUND = 10_000
REDIS_TAKES_PER_ROUND = 200
# A limit that overloads: most takes are rejections, the 429 path under attack.
# (The allowed path costs the same plus one CAS.)
SETTINGS = ThrottleSettings(1000, 100)
CLIENT_IP = b"198.51.100.77"


class NaiveBucket:
    """What a straightforward Python gateway keeps per key: tokens + last refill,
    per process (so the limit is multiplied by the worker count)."""

    def __init__(self, rate, burst):
        self.rate, self.burst = rate, burst
        self.buckets = {}

    def take(self, key):
        now = time.monotonic()
        tokens, last = self.buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1
        self.buckets[key] = (tokens - 1 if allowed else tokens, now)
        return allowed


def naive_take_many(bucket, key, n):
    passed = 0
    for _ in range(n):
        passed += bucket.take(key)
    return passed


def test_take_static_slot(benchmark):
    t = BucketTable.create(64, 1024)
    slot = t.static_slot("stage:prod")
    benchmark(t.take_n, slot, SETTINGS, TAKES_PER_ROUND)


def test_take_dynamic_key(benchmark):
    # the key is hashed on every take, as the protocol hashes each request's IP
    t = BucketTable.create(64, 65536)
    for i in range(30_000):      # a table in use: other clients' buckets around
        t.take_key(b"10.%d.%d.1" % (i // 256, i % 256), SETTINGS)
    benchmark(t.take_n, 0, SETTINGS, TAKES_PER_ROUND, CLIENT_IP)


def test_take_naive_python(benchmark):
    benchmark(naive_take_many, NaiveBucket(1000, 100), CLIENT_IP, TAKES_PER_ROUND)


def test_quota_take(benchmark):
    q = QuotaTable.create(65536)
    plan = QuotaSettings(10**12, "MONTH")       # never exhausted: the counting path
    benchmark(q.take_n, b"api-key-0123456789abcdef", plan, TAKES_PER_ROUND)


def test_quota_take_naive_python(benchmark):
    counts = {}

    def take_many(key, limit, n):
        passed = 0
        for _ in range(n):
            period = time.strftime("%Y-%m", time.gmtime())
            used = counts.get((key, period), 0)
            if used < limit:
                counts[(key, period)] = used + 1
                passed += 1
        return passed

    benchmark(take_many, b"api-key-0123456789abcdef", 10**12, TAKES_PER_ROUND)


# --- Redis: one round trip per take, REDIS_TAKES_PER_ROUND sequential takes per round ---

@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as r:
        yield r.url


@pytest.fixture
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def bench_sequential(benchmark, loop, rt, take):
    """REDIS_TAKES_PER_ROUND awaits of take() one after another per round."""
    async def many(n):
        passed = 0
        for _ in range(n):
            got = await take()
            passed += got.allowed
        return passed

    benchmark(lambda: loop.run_until_complete(many(REDIS_TAKES_PER_ROUND)))
    assert rt.errors == 0
    loop.run_until_complete(rt.close())


def test_redis_take(benchmark, redis_url, loop):
    rt = RedisThrottle(redis_url, timeout_ms=1000)
    bench_sequential(benchmark, loop, rt, lambda: rt.take(CLIENT_IP, SETTINGS))


def test_redis_take_naive_python(benchmark, redis_url, loop):
    # GET the bucket, compute in Python, SET it back: two round trips, and not
    # atomic (two hosts can both spend the last token).
    client = aioredis.Redis.from_url(redis_url)
    rate, burst = 1000, 100

    async def many(n):
        passed = 0
        for _ in range(n):
            now = time.time()
            raw = await client.get(b"naive:" + CLIENT_IP)
            tokens, last = map(float, raw.split(b":")) if raw else (burst, now)
            tokens = min(burst, tokens + (now - last) * rate)
            allowed = tokens >= 1
            await client.set(b"naive:" + CLIENT_IP,
                             b"%r:%r" % (tokens - 1 if allowed else tokens, now), px=1000)
            passed += allowed
        return passed

    benchmark(lambda: loop.run_until_complete(many(REDIS_TAKES_PER_ROUND)))
    loop.run_until_complete(client.aclose())


def test_redis_quota_take(benchmark, redis_url, loop):
    rt = RedisThrottle(redis_url, timeout_ms=1000)
    plan = QuotaSettings(10**12, "MONTH")
    bench_sequential(benchmark, loop, rt, lambda: rt.take_quota(b"api-key-0123456789abcdef", plan))


def test_redis_take_concurrent(benchmark, redis_url, loop):
    # 32 requests in flight at once (a busy worker): throughput per take
    rt = RedisThrottle(redis_url, timeout_ms=1000)

    async def one(n):
        for _ in range(n):
            await rt.take(CLIENT_IP, SETTINGS)

    async def many(n):
        await asyncio.gather(*(one(n // 32) for _ in range(32)))

    benchmark(lambda: loop.run_until_complete(many(REDIS_TAKES_PER_ROUND)))
    assert rt.errors == 0
    loop.run_until_complete(rt.close())
