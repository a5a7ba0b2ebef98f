"""fastgate/control/usage_redis.py against a real redis-server: per-day usage expires after the
configured retention, so a long-running deployment's Redis does not grow forever."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis as redis_py

from fastgate.compile.config import RedisConfig
from fastgate.control.usage import UsageStore, utc_day
from fastgate.control.usage_redis import DAY_S, RedisUsage
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_url():
    r = RedisServer().start()
    yield r.url
    r.stop()


def day_before(days: int) -> str:
    return (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=days)).isoformat()


def test_day_hashes_and_the_days_set_expire_after_the_retention(tmp_path, redis_url):
    cfg = RedisConfig(url=redis_url, prefix="ttl", usage_retention_days=30)
    store = UsageStore.in_dir(tmp_path)
    ru = RedisUsage(cfg)
    r = redis_py.Redis.from_url(redis_url)
    try:
        host = store.host_id()
        today, recent, old = utc_day(time.time()), day_before(10), day_before(40)
        # a day already past retention that some earlier push left in the days set
        r.sadd(f"ttl:usage:days:{host}", day_before(45))
        for day in (today, recent, old):
            store.add("k1", day, "api1", "prod", requests=3, quota_used=3)
        assert ru.push(store) == 3
        now = time.time()
        for day, days_ago in ((today, 0), (recent, 10)):
            ttl = r.ttl(f"ttl:usage:{host}:{day}")
            # the end of that day, plus 30 days
            want = (31 - days_ago) * DAY_S - (now % DAY_S)
            assert abs(ttl - want) <= 5, (day, ttl, want)
        # past retention: not written at all, and the stale day left the days set
        assert not r.exists(f"ttl:usage:{host}:{old}")
        days = {d.decode() for d in r.smembers(f"ttl:usage:days:{host}")}
        assert days == {today, recent}
        assert abs(r.ttl(f"ttl:usage:days:{host}") - (31 * DAY_S - now % DAY_S)) <= 5
        # what is kept still reads back
        rows = ru.host_rows(recent, today)
        assert [(row[0], row[1], row[4]) for row in rows] == [("k1", recent, 3), ("k1", today, 3)]
    finally:
        r.close()
        ru.close()
        store.close()


def test_the_default_retention_is_400_days():
    assert RedisConfig().usage_retention_days == 400
    ru = RedisUsage(RedisConfig(url="redis://127.0.0.1:1/0"))
    try:
        start = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp())
        assert ru.expires_at("2026-01-01") == start + DAY_S + 400 * DAY_S
    finally:
        ru.close()
