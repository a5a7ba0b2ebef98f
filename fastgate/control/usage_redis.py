"""API key usage across hosts: each host's SQLite usage rows, copied to one Redis.

Every host keeps counting in its own shared memory and SQLite (fastgate.control.usage); the
admin process's flusher then pushes the rows that changed to Redis. What Redis
holds per host is that host's *totals*, not increments:

  {prefix}:usage:hosts              SET of host ids (UsageStore.host_id(), kept in SQLite)
  {prefix}:usage:days:{host}        SET of the days the host has rows for
  {prefix}:usage:{host}:{day}       HASH  "key_id US api_id US stage" ->
                                          "version,requests,throttled,4xx,5xx,bytes_in,bytes_out,quota_used"

Each day's hash expires `usage_retention_days` (config `redis:`) after its day ends
(EXPIREAT, the same instant from every push and every host), and the days set loses
days older than that; a host's days set expires that long after its latest day.

A field is written only by a newer version than the one it holds (SET_IF_NEWER, a
script), and one push is one MULTI/EXEC. So a retried push, a push that Redis
applied but whose reply was lost, or two pushers of one host racing (the admin's
flusher and the supervisor's final flush) can never count a request twice or move a
total backwards: writing a total is idempotent where HINCRBY is not. While Redis is
down the rows wait in SQLite (the push cursor, usage_meta 'redis_pushed', does not
move) and the next push that gets through sends them all. A Redis that comes back
empty (no persistence) is noticed by the host missing from the hosts set: every
host then pushes all its rows again.

Reading (GetUsage, `fastgate usage export`): this host's rows from SQLite (the
freshest) plus every other host's from Redis, summed.
"""

from __future__ import annotations

import datetime as dt
import time

import redis

from fastgate.compile.shared import COUNTERS, SEP
from fastgate.control.usage import UsageStore, merge_rows, utc_day

DAY_S = 86400

# KEYS[1] hash of (host, day). ARGV: field, version, counters joined by ",".
SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)'))
  if v >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. ARGV[3])
return 1
"""


class RedisUsage:
    """The usage keys of one deployment (config `redis:`) in one Redis. Synchronous:
    it runs in the flusher's thread and in the CLI."""

    def __init__(self, cfg):
        self.cfg = cfg
        timeout_s = max(cfg.timeout_ms / 1000, 1.0)    # a push is bigger than a take
        self.r = redis.Redis.from_url(cfg.url, socket_timeout=timeout_s,
                                      socket_connect_timeout=timeout_s)
        self.prefix = f"{cfg.prefix}:usage"
        self.retention_s = cfg.usage_retention_days * DAY_S
        self._set_if_newer = self.r.register_script(SET_IF_NEWER)
        self._pruned_on = None      # the UTC day of this pusher's last days-set pruning

    def close(self) -> None:
        self.r.close()

    def _day_key(self, host: str, day: str) -> str:
        return f"{self.prefix}:{host}:{day}"

    def expires_at(self, day: str) -> int:
        """Epoch s at which `day`'s usage leaves Redis: the retention after the day's end."""
        start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
        return int(start.timestamp()) + DAY_S + self.retention_s

    def _prune_days(self, host: str, now_s: float) -> None:
        """Drop the days past retention from the host's days set, once a day per pusher."""
        today = utc_day(int(now_s))
        if self._pruned_on == today:
            return
        days_key = f"{self.prefix}:days:{host}"
        old = [d for d in self.r.smembers(days_key) if self.expires_at(d.decode()) <= now_s]
        if old:
            self.r.srem(days_key, *old)
        self._pruned_on = today

    def push(self, store: UsageStore) -> int:
        """Send the rows changed since the last push; returns how many. Raises
        redis.RedisError when Redis is unreachable (nothing is marked pushed then)."""
        host = store.host_id()
        pushed = int(store.meta("redis_pushed", "0"))
        if not self.r.sismember(f"{self.prefix}:hosts", host):
            pushed = 0      # a Redis that lost its data (restarted without persistence): all again
        latest, rows = store.changed_since(pushed)
        if latest <= pushed:
            return 0
        now_s = time.time()
        self._prune_days(host, now_s)
        pipe = self.r.pipeline(transaction=True)
        pipe.sadd(f"{self.prefix}:hosts", host)
        days = set()
        for key, day, api, stage, *counts in rows:
            if self.expires_at(day) <= now_s:
                continue        # past retention (a backlog, or all rows again): not kept here
            pipe.sadd(f"{self.prefix}:days:{host}", day)
            self._set_if_newer(keys=[self._day_key(host, day)],
                               args=[SEP.join((key, api, stage)), latest,
                                     ",".join(map(str, counts))], client=pipe)
            days.add(day)
        for day in days:
            pipe.expireat(self._day_key(host, day), self.expires_at(day))
        # a host that stops pushing leaves nothing behind after the retention either
        pipe.expireat(f"{self.prefix}:days:{host}", self.expires_at(max(days | {utc_day(now_s)})))
        pipe.execute()
        store._set_meta("redis_pushed", latest)
        return len(rows)

    def host_rows(self, start: str | None, end: str | None, key_ids=None,
                  exclude_host: str | None = None) -> list[tuple]:
        """ROW_COLUMNS rows of every host but `exclude_host`, summed; days inclusive."""
        hosts = sorted(h.decode() for h in self.r.smembers(f"{self.prefix}:hosts"))
        wanted = None if key_ids is None else set(key_ids)
        pairs = []
        for host in hosts:
            if host == exclude_host:
                continue
            for d in sorted(x.decode() for x in self.r.smembers(f"{self.prefix}:days:{host}")):
                if (start is None or d >= start) and (end is None or d <= end):
                    pairs.append((host, d))
        pipe = self.r.pipeline(transaction=False)
        for host, d in pairs:
            pipe.hgetall(self._day_key(host, d))
        lists = []
        for (host, d), fields in zip(pairs, pipe.execute()):
            rows = []
            for field, value in fields.items():
                key, api, stage = field.decode().split(SEP)
                if wanted is not None and key not in wanted:
                    continue
                counts = tuple(int(x) for x in value.decode().split(",")[1:])
                if len(counts) == len(COUNTERS):
                    rows.append((key, d, api, stage) + counts)
            lists.append(rows)
        return merge_rows(*lists)


def all_hosts_rows(store: UsageStore, redis_cfg, start: str | None = None, end: str | None = None,
                   key_ids=None, warn=None) -> list[tuple]:
    """This host's rows plus, with `redis:` configured, every other host's. With Redis
    unreachable: this host's only, after warn(message)."""
    local = store.rows(start, end, key_ids)
    if redis_cfg is None:
        return local
    ru = RedisUsage(redis_cfg)
    try:
        others = ru.host_rows(start, end, key_ids, exclude_host=store.host_id())
    except redis.RedisError as e:
        if warn is not None:
            warn(f"Redis unreachable, usage of this host only: {e}")
        return local
    finally:
        ru.close()
    return merge_rows(local, others)
