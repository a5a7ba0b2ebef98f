"""Token buckets and usage-plan quotas in Redis, shared by every fastgate host.

One atomic Lua script per take (EVALSHA): the same GCRA as
fastgate/_core/throttle.pyx, run inside Redis on Redis's own clock (TIME), so
hosts with skewed clocks still share one exact bucket. Why a script per take
and not local buckets with periodic sync: docs/throttling.md (accuracy and
cost measured there).

While Redis is unreachable or slower than `timeout_ms`, a take answers
`fail_open` (True: allow, False: reject) without waiting: after a failure the
client stays "down" for `retry_interval_ms`, answering at once, then the next
take tries Redis again (redis-py reconnects; a script missing after a Redis
restart is loaded again by EVALSHA's NOSCRIPT fallback).

Results are fastgate._core.throttle.Take tuples, the same numbers as a local
take, so fastgate._core.throttle.header_block formats both.
"""
import time

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from fastgate._core.throttle import QuotaSettings, Take, ThrottleSettings, quota_period

US = 1_000_000     # µs per s
NS_PER_US = 1000

# KEYS[1] bucket. ARGV[1] T: µs per token, 0 = no refill (rate 0).
# ARGV[2] tau: burst * T in µs; with T = 0, the burst itself.
# Returns {allowed, remaining, reset_us, retry_after_us}; -1 = never.
# Lua numbers are doubles: µs since the epoch (~2^51) are exact, ns would not be.
# The key expires when the bucket is full again (a full bucket == no key).
TAKE_LUA = """
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if T == 0 then
  if tat >= tau then return {0, 0, -1, -1} end
  redis.call('SET', KEYS[1], string.format('%.0f', tat + 1))
  return {1, tau - tat - 1, -1, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
if tat < now then tat = now elseif tat - now > tau then tat = now + tau end
local nt = tat + T
if nt - now <= tau then
  redis.call('SET', KEYS[1], string.format('%.0f', nt), 'PX', math.ceil((nt - now) / 1000))
  return {1, math.floor((tau - (nt - now)) / T), nt - now, 0}
end
return {0, 0, tat - now, nt - tau - now}
"""

# KEYS[1] the counter of one period. ARGV[1] limit, ARGV[2] period end (epoch s).
# Returns {allowed, remaining}. A rejected request is not counted.
QUOTA_LUA = """
local lim = tonumber(ARGV[1])
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if c >= lim then return {0, 0} end
c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
return {1, lim - c}
"""

QUOTA_EXPIRY_SLACK_S = 3600   # s a period's counter outlives it: host clocks disagree a little


class RedisThrottle:
    """Buckets and quotas in one Redis, for every host of a deployment. One
    instance per worker process (connections do not survive fork)."""

    def __init__(self, url="redis://127.0.0.1:6379/0", *, prefix="fastgate", fail_open=True,
                 timeout_ms=50, retry_interval_ms=1000, max_connections=32):
        timeout_s = timeout_ms / 1000
        # A blocking pool: concurrent requests wait (at most timeout_s) for one
        # of max_connections instead of opening a connection each.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            # one retry on a dropped connection (Redis restarted): the retry
            # reconnects. Never on a timeout: the take may have run.
            retry=Retry(NoBackoff(), 1, (RedisConnectionError,)))
        self._redis = aioredis.Redis(connection_pool=pool)
        self._take = self._redis.register_script(TAKE_LUA)
        self._quota = self._redis.register_script(QUOTA_LUA)
        self._bucket_prefix = f"{prefix}:b:".encode()
        self._quota_prefix = f"{prefix}:q:".encode()
        self.fail_open = fail_open
        self.retry_interval_s = retry_interval_ms / 1000
        self._down_until = 0.0     # monotonic s; Redis is not tried before it
        self.errors = 0            # takes answered by fail_open instead of Redis

    @property
    def down(self):
        """True while takes answer fail_open without asking Redis."""
        return time.monotonic() < self._down_until

    def _failed(self, limit, window_s):
        self.errors += 1
        if self.fail_open:
            return Take(True, limit, limit, -1, 0, window_s)
        return Take(False, limit, 0, -1, int(self.retry_interval_s * 1e9), window_s)

    async def take(self, key: bytes, settings: ThrottleSettings):
        """One take from the bucket of `key` (bytes, e.g. b"ip:198.51.100.7")."""
        burst, rate, limit, window_s = settings.burst, settings.rate, settings.limit, settings.window_s
        if limit < 1:
            return Take(False, 0, 0, -1, -1, window_s)
        if rate == 0:
            t_us, tau = 0, limit
        else:
            t_us = max(round(US / rate), 1)
            tau = int(burst * t_us)
        if time.monotonic() < self._down_until:
            return self._failed(limit, window_s)
        try:
            allowed, remaining, reset_us, retry_us = await self._take(
                keys=(self._bucket_prefix + key,), args=(t_us, tau))
        except (RedisError, OSError):
            self._down_until = time.monotonic() + self.retry_interval_s
            return self._failed(limit, window_s)
        return Take(allowed == 1, limit, remaining,
                    reset_us * NS_PER_US if reset_us >= 0 else -1,
                    retry_us * NS_PER_US if retry_us >= 0 else -1, window_s)

    async def take_quota(self, key: bytes, settings: QuotaSettings, now_s=None):
        """One request against the usage-plan quota of `key`. Periods are UTC
        calendar periods from this host's clock (keep hosts on NTP)."""
        now = int(time.time()) if now_s is None else now_s
        ordinal, start, end = quota_period(settings.period, now)
        limit = settings.first_limit if ordinal == settings.initial_ordinal else settings.limit
        reset_ns = (end - now) * 1_000_000_000
        window_s = end - start
        if limit <= 0:
            return Take(False, limit, 0, reset_ns, reset_ns, window_s)
        if time.monotonic() < self._down_until:
            return self._failed(limit, window_s)
        try:
            allowed, remaining = await self._quota(
                keys=(b"%s%s:%d" % (self._quota_prefix, key, ordinal),),
                args=(limit, end + QUOTA_EXPIRY_SLACK_S))
        except (RedisError, OSError):
            self._down_until = time.monotonic() + self.retry_interval_s
            return self._failed(limit, window_s)
        return Take(allowed == 1, limit, remaining, reset_ns, 0 if allowed == 1 else reset_ns, window_s)

    async def close(self):
        await self._redis.aclose()
