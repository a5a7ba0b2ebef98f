"""fastgate.phases.cache_redis against a real redis-server (tests/redis_server.py)."""
import time

import pytest
import redis
import uvloop

from fastgate.phases.cache_redis import RedisCache
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def server():
    with RedisServer() as r:
        yield r


@pytest.fixture
def own_server():
    """A server this test may stop and restart."""
    with RedisServer() as r:
        yield r


def run(coro_fn, *args):
    return uvloop.run(coro_fn(*args))


def now_ms():
    return int(time.time() * 1000)


def test_round_trip_between_two_hosts(server):
    async def go():
        a, b = RedisCache(server.url), RedisCache(server.url)       # two hosts, one Redis
        try:
            assert await b.get(b"rt/GET /pets") is None
            assert await a.put(b"rt/GET /pets", now_ms() + 60_000, 203, b"Content-Type: a/b\r\n", b"\x00body\xff")
            assert await b.get(b"rt/GET /pets") == (203, b"Content-Type: a/b\r\n", b"\x00body\xff")
            assert await a.put(b"rt/empty", now_ms() + 60_000, 204, b"", b"")
            assert await b.get(b"rt/empty") == (204, b"", b"")
            assert b.stats()["hits"] == 2 and b.stats()["misses"] == 1
        finally:
            await a.close()
            await b.close()
    run(go)


def test_ttl_is_set_in_redis(server):
    async def go():
        c = RedisCache(server.url)
        try:
            assert await c.put(b"ttl/k", now_ms() + 150, 200, b"", b"x")
            pttl = redis.Redis.from_url(server.url).pttl(b"fastgate:c:ttl/k")
            assert 0 < pttl <= 150
            assert await c.get(b"ttl/k") is not None
            time.sleep(0.25)
            assert await c.get(b"ttl/k") is None
            assert not await c.put(b"ttl/old", now_ms() - 1, 200, b"", b"x")   # already expired
        finally:
            await c.close()
    run(go)


def test_entry_cap_and_bad_values(server):
    async def go():
        c = RedisCache(server.url, max_entry_bytes=100)
        try:
            assert not await c.put(b"cap/big", now_ms() + 60_000, 200, b"", b"x" * 100)
            assert c.stats()["too_large"] == 1
            assert await c.put(b"cap/ok", now_ms() + 60_000, 200, b"", b"x" * 94)
            raw = redis.Redis.from_url(server.url)
            raw.set(b"fastgate:c:cap/junk", b"not an entry")
            raw.set(b"fastgate:c:cap/short", b"FGc2\x00\xc8\x00\x00\x10\x00" + (2**62).to_bytes(8, "big"))   # header block past the end
            assert await c.get(b"cap/junk") is None
            assert await c.get(b"cap/short") is None
        finally:
            await c.close()
    run(go)


def test_flush_by_prefix_and_delete(server):
    async def go():
        c = RedisCache(server.url, prefix="fl:")
        try:
            exp = now_ms() + 60_000
            for stage in (b"api/pr*d/", b"api/dev/"):          # a glob character in the prefix
                for i in range(700):
                    await c.put(stage + b"%d" % i, exp, 200, b"", b"x")
            await c.put(b"api/prXd/1", exp, 200, b"", b"x")    # would match an unescaped pr*d
            assert await c.delete(b"api/dev/0") and not await c.delete(b"api/dev/0")
            assert await c.flush(b"api/pr*d/") == 700
            assert await c.get(b"api/prXd/1") is not None and await c.get(b"api/dev/1") is not None
            assert await c.flush() == 700
        finally:
            await c.close()
    run(go)


def test_redis_down_is_a_fast_miss_then_recovers(own_server):
    async def go():
        c = RedisCache(own_server.url, timeout_ms=50, retry_interval_ms=200)
        try:
            assert await c.put(b"down/k", now_ms() + 60_000, 200, b"", b"v")
            own_server.stop()
            t0 = time.monotonic()
            assert await c.get(b"down/k") is None                 # the failure itself
            assert not await c.put(b"down/k2", now_ms() + 60_000, 200, b"", b"v")
            for _ in range(100):                                 # then answered without Redis
                assert await c.get(b"down/k") is None
            # Redis is tried at most once per retry interval (asking it each time: ~100)
            tries_allowed = 1 + (time.monotonic() - t0) / c.retry_interval_s
            assert 1 <= c.stats()["errors"] <= tries_allowed + 1, (c.stats(), tries_allowed)
            own_server.start()                                   # empty data, same port
            deadline = time.monotonic() + 10
            while c.down and time.monotonic() < deadline:       # the retry interval passes
                time.sleep(0.05)
            assert await c.put(b"down/k", now_ms() + 60_000, 200, b"", b"again")
            assert await c.get(b"down/k") == (200, b"", b"again")
        finally:
            await c.close()
    run(go)


def test_unreachable_redis_answers_within_the_timeout():
    from tests.redis_server import free_port

    async def go():
        c = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout_ms=50)   # nothing listens
        try:
            t0 = time.monotonic()
            assert await c.get(b"k") is None
            assert time.monotonic() - t0 < 0.5
        finally:
            await c.close()
    run(go)


def test_get_with_ttl_reports_what_redis_has_left(server):
    async def go():
        c = RedisCache(server.url)
        try:
            assert await c.get_with_ttl(b"gwt/none") is None
            assert await c.put(b"gwt/k", now_ms() + 5_000, 200, b"A: b\r\n", b"body")
            entry, ttl_ms = await c.get_with_ttl(b"gwt/k")
            assert entry == (200, b"A: b\r\n", b"body") and 4_000 < ttl_ms <= 5_000
            # an expiry in the past (a host with a clock ahead stored it): a miss
            redis.Redis.from_url(server.url).set(b"fastgate:c:gwt/past", b"FGc2" + bytes(14))
            assert await c.get_with_ttl(b"gwt/past") is None
            # the layout before the expiry was in the value: a miss, never a wrong answer
            redis.Redis.from_url(server.url).set(b"fastgate:c:gwt/v1", b"FGc1" + bytes(6) + b"body")
            assert await c.get_with_ttl(b"gwt/v1") is None
        finally:
            await c.close()
    run(go)


def test_cache_flusher_tells_every_host(server):
    from fastgate.phases.cache_redis import CacheFlusher
    from fastgate.compile.config import RedisConfig

    async def go():
        import asyncio
        seen_a, seen_b = [], []
        cfg = RedisConfig(url=server.url, prefix="fl")
        a, b = CacheFlusher(cfg, seen_a.append), CacheFlusher(cfg, seen_b.append)
        loop = asyncio.get_running_loop()
        a.start(loop)
        b.start(loop)
        writer = RedisCache(server.url, prefix=b"fl:c:")
        try:
            await asyncio.wait_for(asyncio.gather(a.subscribed.wait(), b.subscribed.wait()), 5)
            await writer.put(b"fgk2api/prod/GET /x\0k", now_ms() + 60_000, 200, b"", b"x")
            await writer.put(b"fgk2api/dev/GET /x\0k", now_ms() + 60_000, 200, b"", b"x")
            assert await a.flush(b"fgk2api/prod/") == 1
            for _ in range(100):
                if seen_a and seen_b:
                    break
                await asyncio.sleep(0.02)
            assert seen_a == seen_b == [b"fgk2api/prod/"]
            assert await writer.get(b"fgk2api/prod/GET /x\0k") is None
            assert await writer.get(b"fgk2api/dev/GET /x\0k") is not None
        finally:
            await a.close()
            await b.close()
            await writer.close()
    run(go)
