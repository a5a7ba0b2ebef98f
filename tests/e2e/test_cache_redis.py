"""The response cache across hosts: two fastgate processes sharing one real Redis in
front of one upstream that counts its requests. A response cached through host A is
served by host B without reaching the upstream; entries expire with the TTL;
FlushStageCache through A's control API empties both hosts and Redis; with Redis
stopped or hung both hosts still answer within the timeout; a restarted Redis is
shared again."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_server import RedisServer  # noqa: E402

from conftest import FRESH, Gateway, wait_until  # noqa: E402

KEY, SECRET = "AKIAEXAMPLEKEY0001", "cache-redis-secret"
TIMEOUT_MS = 200
TTL_S = 3


@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    r.stop()


def doc(port: int) -> dict:
    return {
        "swagger": "2.0", "info": {"title": "Shared", "version": "1"},
        "paths": {"/pets": {"get": {
            "parameters": [{"name": "kind", "in": "query", "type": "string"}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{port}/conn",
                "cacheKeyParameters": ["method.request.querystring.kind"]}}}},
    }


def hosts(tmp_path, redis, upstream, monkeypatch):
    monkeypatch.setenv("FASTGATE_ADMIN_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("FASTGATE_ADMIN_SECRET_ACCESS_KEY", SECRET)
    out = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "api.json").write_text(json.dumps(doc(upstream.port)))
        monkeypatch.setenv("FASTGATE_DATA_DIR", str(d / "data"))
        out.append(Gateway(d, f"""\
            access_log: {{path: {d / 'access.log'}, format: '$context.path $context.cacheStatus'}}
            redis: {{url: "{redis.url}", timeout_ms: {TIMEOUT_MS}}}
            apis:
              - {{openapi: api.json, id: shared, stages: {{prod: {{cache_ttl_s: {TTL_S}}}}}}}
            """, workers=2))
    return out


def upstream_count(up) -> int:
    """Requests the upstream served, not counting the calls to /stats itself."""
    up.stats_calls = getattr(up, "stats_calls", 0) + 1
    return httpx.get(f"{up.url}/stats", timeout=5).json()["requests"] - up.stats_calls


def get(g, kind):
    t = time.monotonic()
    r = FRESH.get(f"{g.url}/prod/pets?kind={kind}")   # (httpx.get: ~0.1 s a call on a busy machine)
    assert r.status_code == 200, r.text
    return r.headers.get("x-cache"), r.content, time.monotonic() - t


def metric(g, result) -> int:
    text = httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).text
    needle = f'fastgate_cache_requests_total{{api="shared",stage="prod",result="{result}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return int(line[len(needle):])
    return 0


def control(g):
    return boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                        region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def test_hosts_share_entries_through_redis(tmp_path, redis, upstream, monkeypatch):
    a, b = hosts(tmp_path, redis, upstream, monkeypatch)
    try:
        n0 = upstream_count(upstream)
        status, body, _ = get(a, "cat")
        assert status == "Miss"
        assert upstream_count(upstream) == n0 + 1
        # B never saw it: its local miss is answered from Redis (the put is a task: poll)
        status, body_b, _ = wait_until(lambda: (r := get(b, "cat"))[0] == "Hit" and r, timeout=3)
        assert body_b == body and upstream_count(upstream) == n0 + 1
        assert metric(b, "redis_hit") == 1 and metric(b, "miss") == 0
        # ... and copied into B's own cache: the next ones are local hits
        for _ in range(4):
            assert get(b, "cat")[0] == "Hit"
        assert metric(b, "redis_hit") == 1 and metric(b, "hit") == 4
        assert upstream_count(upstream) == n0 + 1
        log = wait_until(lambda: (t := (tmp_path / "b" / "access.log").read_text()).count("\n") >= 5 and t)
        # two workers, each flushing its own log buffer: lines are not in request order
        assert sorted(log.splitlines()) == ["/prod/pets hit"] * 4 + ["/prod/pets redis_hit"], log
        assert "/prod/pets miss" in wait_until(lambda: (tmp_path / "a" / "access.log").read_text())

        # the TTL: Redis drops it, and B's copy ends with Redis's entry, not TTL_S after the copy
        time.sleep(TTL_S + 0.3)
        assert get(b, "cat")[0] == "Miss"
        assert upstream_count(upstream) == n0 + 2
        assert wait_until(lambda: get(a, "cat")[0] == "Hit", timeout=3)   # A: from B's put, via Redis
        assert upstream_count(upstream) == n0 + 2

        # FlushStageCache on A: A's cache, Redis and (told through Redis) B's cache
        resp = control(a).flush_stage_cache(restApiId="shared", stageName="prod")
        assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert wait_until(lambda: get(b, "cat")[0] == "Miss", timeout=3)
        assert upstream_count(upstream) == n0 + 3
        with pytest.raises(control(a).exceptions.NotFoundException):
            control(a).flush_stage_cache(restApiId="shared", stageName="nope")
    finally:
        a.stop()
        b.stop()


def test_redis_down_hung_and_back(tmp_path, redis, upstream, monkeypatch):
    a, b = hosts(tmp_path, redis, upstream, monkeypatch)
    try:
        assert get(a, "local")[0] == "Miss"
        assert wait_until(lambda: get(b, "local")[0] == "Hit", timeout=3)
        redis.stop()
        n0 = upstream_count(upstream)
        for g in (a, b):
            # local entries still answer; new keys go to the upstream, never an error
            status, _, took = get(g, "local")
            assert status == "Hit" and took < 1.0
            key = uuid.uuid4().hex
            status, _, took = get(g, key)
            assert status == "Miss" and took < TIMEOUT_MS / 1000 + 1.0, took
            assert get(g, key)[0] == "Hit"          # stored locally all the same
        assert upstream_count(upstream) == n0 + 2

        # a Redis that accepts connections but never answers: a lookup waits timeout_ms at most
        redis.start()
        time.sleep(1.2)                              # the clients' retry interval after the failure
        os.kill(redis.proc.pid, signal.SIGSTOP)
        try:
            for g in (a, b):
                for _ in range(3):
                    status, _, took = get(g, uuid.uuid4().hex)
                    assert status == "Miss" and took < 2 * TIMEOUT_MS / 1000 + 1.0, took
        finally:
            os.kill(redis.proc.pid, signal.SIGCONT)

        # back: after the retry interval, entries are shared again
        def shared():
            key = uuid.uuid4().hex
            if get(a, key)[0] != "Miss":
                return False
            before = upstream_count(upstream)
            time.sleep(0.1)
            return get(b, key)[0] == "Hit" and upstream_count(upstream) == before
        assert wait_until(shared, timeout=10, step=0.3)
        assert metric(b, "redis_hit") >= 2
    finally:
        a.stop()
        b.stop()
