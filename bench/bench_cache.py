"""Cost of one response-cache operation -- a hit (1 KiB and 32 KiB bodies), a miss, a put,
a cache key, and a Redis hit -- each against a naive Python baseline (an OrderedDict LRU,
per process: what a straightforward gateway keeps, not shared by its workers).

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_cache.py
(from the repository root: the Redis benchmark starts tests/redis_server.py's redis-server).
The shared cache is called through its def wrappers (lookup/store), so each figure includes
one Python method call that the data plane's cdef calls do not pay.
"""
import time
from collections import OrderedDict

import pytest
import uvloop

from fastgate._core.cache import CacheKeySpec, SharedCache
from fastgate.phases.cache_redis import RedisCache
from tests.redis_server import RedisServer

HEADERS = b"Content-Type: application/json\r\nX-Upstream: pets\r\n"
KEY = CacheKeySpec(True, [("querystring", "page"), ("header", "Accept-Language")],
                   namespace=b"a1b2c3/prod/GET /pets/{id}")
REQ = (b"GET", b"/pets/42", b"page=3&sort=asc", [(b"Host", b"api.example.com"), (b"Accept-Language", b"en"),
                                                 (b"User-Agent", b"bench"), (b"Accept", b"*/*")])


class NaiveLRU:
    """OrderedDict + TTL + byte cap, the usual in-process Python cache."""

    def __init__(self, memory_bytes):
        self.d = OrderedDict()
        self.cap = memory_bytes
        self.used = 0

    def get(self, key, now_ms):
        e = self.d.get(key)
        if e is None or e[0] <= now_ms:
            return None
        self.d.move_to_end(key)
        return e[1], e[2], e[3]

    def put(self, key, expires_ms, status, headers, body):
        old = self.d.pop(key, None)
        if old is not None:
            self.used -= len(old[2]) + len(old[3])
        self.d[key] = (expires_ms, status, headers, body)
        self.used += len(headers) + len(body)
        while self.used > self.cap:
            _, e = self.d.popitem(last=False)
            self.used -= len(e[2]) + len(e[3])


def now_ms():
    return int(time.time() * 1000)


def filled(kind, body_bytes):
    keys = [KEY.key(b"GET", b"/pets/%d" % i, b"page=1", []) for i in range(1000)]
    exp = now_ms() + 3_600_000
    if kind == "shared":
        c = SharedCache.create(64 << 20, 1 << 20)
        for k in keys:
            c.store(k, exp, 200, HEADERS, b"x" * body_bytes)
        return c.lookup, c.store, keys
    c = NaiveLRU(64 << 20)
    for k in keys:
        c.put(k, exp, 200, HEADERS, b"x" * body_bytes)
    return c.get, c.put, keys


@pytest.mark.parametrize("kind", ["shared", "naive"])
@pytest.mark.parametrize("body_bytes", [1024, 32768])
def test_get_hit(benchmark, kind, body_bytes):
    get, _, keys = filled(kind, body_bytes)
    k, t = keys[500], now_ms()
    assert get(k, t) is not None
    benchmark(get, k, t)


@pytest.mark.parametrize("kind", ["shared", "naive"])
def test_get_miss(benchmark, kind):
    get, _, keys = filled(kind, 1024)
    k, t = KEY.key(b"GET", b"/pets/none", b"", []), now_ms()
    assert get(k, t) is None
    benchmark(get, k, t)


@pytest.mark.parametrize("kind", ["shared", "naive"])
def test_put(benchmark, kind):
    _, put, keys = filled(kind, 1024)
    body, exp = b"y" * 1024, now_ms() + 3_600_000
    benchmark(put, keys[7], exp, 200, HEADERS, body)


def naive_key(method, path, query, headers):
    params = dict(p.split(b"=", 1) for p in query.split(b"&") if b"=" in p)
    lang = next((v for n, v in headers if n.lower() == b"accept-language"), None)
    return repr((b"a1b2c3/prod/GET /pets/{id}", method, path, params.get(b"page"), lang)).encode()


@pytest.mark.parametrize("kind", ["compiled", "naive"])
def test_cache_key(benchmark, kind):
    fn = KEY.key if kind == "compiled" else naive_key
    benchmark(fn, *REQ)


@pytest.fixture(scope="module")
def redis_url():
    with RedisServer() as r:
        yield r.url


@pytest.mark.parametrize("kind", ["get_with_ttl", "bare_get"])
def test_redis_get_hit(benchmark, redis_url, kind):
    """One Redis round trip per hit; ROUNDS hits per benchmark round. get_with_ttl
    (what the CACHE phase calls: GET + PTTL pipelined) races a bare GET of the key."""
    ROUNDS = 200

    async def hits(c, k):
        if kind == "bare_get":
            rk = c.prefix + k
            for _ in range(ROUNDS):
                await c._redis.get(rk)
        else:
            for _ in range(ROUNDS):
                await c.get_with_ttl(k)

    async def go():
        c = RedisCache(redis_url)
        await c.put(b"bench", now_ms() + 60_000, 200, HEADERS, b"x" * 1024)
        assert await c.get(b"bench") is not None
        loop = __import__("asyncio").get_running_loop()
        return c, loop

    loop = uvloop.new_event_loop()
    c, _ = loop.run_until_complete(go())
    try:
        benchmark.pedantic(lambda: loop.run_until_complete(hits(c, b"bench")), rounds=20)
    finally:
        loop.run_until_complete(c.close())
        loop.close()
