"""The response cache in Redis, shared by every fastgate host.

The same get/put as fastgate._core.cache.SharedCache, over redis.asyncio:
  - get: one GET; the value is status + header block + body, so a hit is one
    round trip. A value that does not parse is a miss.
  - put: one SET ... PX <ttl ms>: Redis expires the entry itself, so hosts
    need no sweep and agree on the expiry up to their clock skew (the TTL is
    computed from this host's clock when it stores).
  - The Redis key is prefix + the cache key bytes themselves (binary-safe in
    Redis): no hash, so no collision to rule out.

Redis down or slower than timeout_ms: every call answers a miss (get -> None,
put -> False) without waiting; after a failure the client stays "down" for
retry_interval_ms, answering at once, then tries Redis again. The cache is
an optimisation, so an outage costs integration calls, never errors.

One instance per worker process (connections do not survive fork). A host
with Redis may still keep a SharedCache in front of it (check it first,
fill it from Redis hits with the Redis entry's remaining TTL -- see
docs/cache.md); the two are independent.
"""
import asyncio
import struct
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from fastgate.observability.log import log

MAGIC = b"FGc2"                       # value layout version
# magic, status, header block length, expiry (epoch ms, the storing host's clock); then
# headers, body. The expiry in the value spares a PTTL: a pipelined GET + PTTL measured
# twice the time of a bare GET through redis-py (bench/bench_cache.py::test_redis_get_hit)
_HEAD = struct.Struct("!4sHIq")
MAX_ENTRY_DEFAULT = 1048576           # bytes: API Gateway's largest cacheable response
_GLOB_SPECIAL = frozenset(b"*?[]\\")


def _glob_escape(prefix):
    out = bytearray()
    for ch in prefix:
        if ch in _GLOB_SPECIAL:
            out.append(0x5C)          # backslash
        out.append(ch)
    return bytes(out)


class RedisCache:
    """Cache entries in one Redis for every host of a deployment."""

    def __init__(self, url="redis://127.0.0.1:6379/0", *, prefix="fastgate:c:", timeout_ms=50,
                 retry_interval_ms=1000, max_connections=32, max_entry_bytes=MAX_ENTRY_DEFAULT):
        timeout_s = timeout_ms / 1000
        # A blocking pool: concurrent requests wait (at most timeout_s) for one
        # of max_connections instead of opening a connection each.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            # one retry on a dropped connection (Redis restarted): the retry reconnects
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))
        self._redis = aioredis.Redis(connection_pool=pool)
        self.prefix = prefix.encode() if isinstance(prefix, str) else bytes(prefix)
        self.max_entry_bytes = max_entry_bytes
        self.retry_interval_s = retry_interval_ms / 1000
        self._down_until = 0.0        # monotonic s; Redis is not tried before it
        self.hits = 0
        self.misses = 0
        self.errors = 0               # calls answered as a miss because Redis failed
        self.too_large = 0

    @property
    def down(self):
        """True while calls answer a miss without asking Redis."""
        return time.monotonic() < self._down_until

    def _failed(self):
        self.errors += 1
        self._down_until = time.monotonic() + self.retry_interval_s

    async def get(self, key, now_ms=None):
        """None or (status, headers_block, body). now_ms is accepted for the
        SharedCache signature; Redis itself decides expiry."""
        found = await self.get_with_ttl(key)
        return None if found is None else found[0]

    async def get_with_ttl(self, key, now_ms=None):
        """None or ((status, headers_block, body), ttl_ms): the entry and how long it
        has left (its expiry as stored, against this host's clock), so a host that
        copies it into its own cache drops it when Redis does, up to clock skew."""
        if time.monotonic() < self._down_until:
            self.misses += 1
            return None
        try:
            value = await self._redis.get(self.prefix + key)
        except (RedisError, OSError):
            self._failed()
            self.misses += 1
            return None
        if value is None or len(value) < _HEAD.size:
            self.misses += 1
            return None
        magic, status, hlen, expires_ms = _HEAD.unpack_from(value)
        ttl_ms = expires_ms - (int(time.time() * 1000) if now_ms is None else now_ms)
        if magic != MAGIC or _HEAD.size + hlen > len(value) or ttl_ms <= 0:
            self.misses += 1
            return None
        self.hits += 1
        start = _HEAD.size
        return (status, value[start:start + hlen], value[start + hlen:]), ttl_ms

    async def put(self, key, expires_ms, status, headers, body, now_ms=None):
        """Store until expires_ms (epoch ms). False when not stored (expired
        already, too large, Redis down)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        ttl_ms = expires_ms - now
        if ttl_ms <= 0:
            return False
        if len(key) + len(headers) + len(body) > self.max_entry_bytes:
            self.too_large += 1
            return False
        if time.monotonic() < self._down_until:
            return False
        value = b"".join((_HEAD.pack(MAGIC, status, len(headers), expires_ms), headers, body))
        try:
            await self._redis.set(self.prefix + key, value, px=ttl_ms)
        except (RedisError, OSError):
            self._failed()
            return False
        return True

    async def delete(self, key):
        """Drop one entry; True if it existed (False too when Redis is down)."""
        try:
            return bool(await self._redis.unlink(self.prefix + key))
        except (RedisError, OSError):
            self._failed()
            return False

    async def flush(self, prefix=b""):
        """Drop every entry whose key starts with prefix (b"" = all of this
        cache's prefix), e.g. one stage for FlushStageCache. SCAN, not KEYS:
        Redis keeps serving while it runs. Returns the entries dropped; raises
        RedisError when Redis fails (an admin call should say so)."""
        pattern = _glob_escape(self.prefix + prefix) + b"*"
        dropped = 0
        batch = []
        async for k in self._redis.scan_iter(match=pattern, count=500):
            batch.append(k)
            if len(batch) >= 500:
                dropped += await self._redis.unlink(*batch)
                batch.clear()
        if batch:
            dropped += await self._redis.unlink(*batch)
        return dropped

    async def publish(self, channel, message):
        """PUBLISH (the flush notice to every host); raises RedisError when Redis fails."""
        return await self._redis.publish(channel, message)

    def stats(self):
        return {"hits": self.hits, "misses": self.misses, "errors": self.errors,
                "too_large": self.too_large, "down": self.down}

    async def close(self):
        await self._redis.aclose()


FLUSH_CHANNEL = b"flush"    # after the prefix: FlushStageCache's key prefix, published to every host


class CacheSharing:
    """The CACHE phase's side of Redis in one worker: a local miss looks in Redis
    (lookup: a task that resumes the request with conn.cache_done), and a response
    stored locally is also written to Redis (store: a task; the response never waits
    for it). Built from the config's `redis:` section; kept across reloads while it
    is unchanged (fastgate.phases.access.Services)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.cache = RedisCache(cfg.url, prefix=cache_prefix(cfg.prefix), timeout_ms=cfg.timeout_ms)
        self.tasks = set()

    def _spawn(self, coro):
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def lookup(self, conn, ctx, key):
        self._spawn(self._lookup(conn, ctx, key))

    async def _lookup(self, conn, ctx, key):
        found = None
        try:
            found = await self.cache.get_with_ttl(key)
        except asyncio.CancelledError:
            raise
        except Exception as e:       # never leave a request hanging on a bug here
            log(f"redis cache lookup failed: {e!r}")
        if found is None:
            conn.cache_done(ctx)
        else:
            conn.cache_done(ctx, found[0], int(time.time() * 1000) + found[1])

    def store(self, key, expires_ms, status, headers, body):
        if not self.cache.down:
            self._spawn(self.cache.put(key, expires_ms, status, headers, body))

    async def close(self):
        await self.cache.close()


def cache_prefix(prefix):
    """The Redis key prefix of cache entries under the config's redis.prefix."""
    return f"{prefix}:c:".encode()


def flush_channel(prefix):
    return cache_prefix(prefix) + FLUSH_CHANNEL


class CacheFlusher:
    """FlushStageCache across hosts, in the admin process of each host: flush() drops a
    stage's entries in Redis and publishes the key prefix on the flush channel; every
    host's flusher (follow(), a task) drops them from its own shared-memory cache when
    the message arrives. A host cut off from Redis at that moment misses the message:
    its local entries then live out their TTL (docs/cache.md)."""

    def __init__(self, cfg, on_flush, *, retry_interval_ms=1000):
        self.cfg = cfg
        self.cache = RedisCache(cfg.url, prefix=cache_prefix(cfg.prefix), timeout_ms=cfg.timeout_ms)
        self.channel = flush_channel(cfg.prefix)
        self.on_flush = on_flush          # called with the key prefix another host flushed
        self.retry_interval_s = retry_interval_ms / 1000
        self.task = None
        self.subscribed = asyncio.Event()

    def start(self, loop):
        self.task = loop.create_task(self.follow())

    async def follow(self):
        while True:
            # no socket timeout: a subscriber waits for messages as long as it takes
            r = aioredis.Redis.from_url(self.cfg.url, socket_connect_timeout=self.cfg.timeout_ms / 1000)
            try:
                async with r.pubsub() as ps:
                    await ps.subscribe(self.channel)
                    self.subscribed.set()
                    async for msg in ps.listen():
                        if msg.get("type") == "message":
                            self.on_flush(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception:       # Redis down or restarted: subscribe again
                pass
            finally:
                self.subscribed.clear()
                await r.aclose()
            await asyncio.sleep(self.retry_interval_s)

    async def flush(self, prefix):
        """Drop the entries under prefix in Redis and tell every host; the entries
        dropped. Raises RedisError when Redis fails."""
        dropped = await self.cache.flush(prefix)
        await self.cache.publish(self.channel, prefix)
        return dropped

    async def close(self):
        if self.task is not None:
            self.task.cancel()
        await self.cache.close()
