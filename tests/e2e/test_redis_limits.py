"""Two fastgate processes sharing one real Redis: a limit is a limit for the whole
deployment (exact with rate 0; with a rate, what one bucket admits over the requests that
really happened: tests/bucket_bounds.py), and while Redis is down fail_open decides (fail
closed: tests/test_ratelimit_redis.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bucket_bounds import check_accuracy, hammer, statuses  # noqa: E402
from redis_server import RedisServer  # noqa: E402

from conftest import Gateway  # noqa: E402


@pytest.fixture
def redis_url():
    r = RedisServer().start()
    yield r
    r.stop()


def pair(tmp_path, redis, throttle: str, fail_open: str = "true"):
    # timeout_ms: a busy machine may take long over one script; a take answered by
    # fail_open instead would be miscounted as the bucket's
    cfg = f"""\
        access_log: {{path: 'off'}}
        redis: {{url: "{redis.url}", fail_open: {fail_open}, timeout_ms: 2000}}
        routes:
          - path: /x
            integration: {{type: mock, body: ok}}
            throttle: {throttle}
        """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return Gateway(tmp_path / "a", cfg), Gateway(tmp_path / "b", cfg)


def test_two_gateways_share_one_bucket(tmp_path, redis_url):
    a, b = pair(tmp_path, redis_url, "{rate: 0, burst: 30}")
    try:
        # at least 90 answers: the 30 the shared bucket holds, then 429s from both gateways
        got = statuses(hammer([f"{a.url}/x", f"{b.url}/x"], 1.5, at_least=90))
        assert got.get(200) == 30 and set(got) == {200, 429}, got
        r = httpx.get(f"{a.url}/x", timeout=5)
        assert r.status_code == 429 and r.json() == {"message": "Too Many Requests"}
    finally:
        a.stop()
        b.stop()


def test_two_gateways_accuracy(tmp_path, redis_url):
    """What one bucket admits over the requests sent (two buckets would admit about
    twice as many): tests/bucket_bounds.py derives the bounds from the algorithm."""
    rate, burst = 50, 10
    a, b = pair(tmp_path, redis_url, f"{{rate: {rate}, burst: {burst}}}")
    try:
        takes = hammer([f"{a.url}/x", f"{b.url}/x"], 2.5)
        check_accuracy(takes, rate, burst)
    finally:
        a.stop()
        b.stop()


def test_redis_down_fails_open_then_reconnects(tmp_path, redis_url):
    a, b = pair(tmp_path, redis_url, "{rate: 0, burst: 1}", fail_open="true")
    try:
        assert httpx.get(f"{a.url}/x", timeout=5).status_code == 200
        assert httpx.get(f"{a.url}/x", timeout=5).status_code == 429
        redis_url.stop()
        assert [httpx.get(f"{a.url}/x", timeout=5).status_code for _ in range(3)] == [200] * 3
        redis_url.start()
        # reconnects by itself (after its retry interval): the bucket is Redis's again
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            seen.append(httpx.get(f"{a.url}/x", timeout=5).status_code)
            if seen[-2:] == [200, 429]:
                break
            time.sleep(0.2)
        assert seen[-2:] == [200, 429], seen
    finally:
        a.stop()
        b.stop()


def test_api_key_plan_limits_in_redis(tmp_path, redis_url):
    """With redis: a key-only method leaves the compiled local path: the plan's throttle
    and quota are taken in Redis (KeyRequirement.check_redis), shared by two gateways."""
    import json
    (tmp_path / "api.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "k", "version": "1"},
        "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
        "paths": {"/k": {"get": {"security": [{"api_key": []}], "x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "responses": {"default": {"statusCode": "200"}}}}}}}))
    value = "redis-key-value-0123456789"
    cfg = f"""\
        access_log: {{path: 'off'}}
        redis: {{url: "{redis_url.url}", fail_open: false, timeout_ms: 500}}
        apis:
          - {{openapi: {tmp_path / 'api.json'}, id: kapi, stages: {{prod: {{}}}}}}
        api_keys:
          - {{id: rk, name: rk, value: {value}}}
        usage_plans:
          - {{id: rplan, name: rplan, api_stages: [{{api: kapi, stage: prod}}],
              throttle: {{rate_limit: 0.001, burst_limit: 3}}, keys: [rk]}}
        """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = Gateway(tmp_path / "a", cfg, admin=False), Gateway(tmp_path / "b", cfg, admin=False)
    try:
        with httpx.Client(timeout=5) as c:
            assert c.get(f"{a.url}/prod/k", headers={"x-api-key": "w" * 30}).status_code == 403
            codes = [c.get(f"{u}/prod/k", headers={"x-api-key": value}) for u in (a.url, b.url, a.url, b.url)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]     # one burst of 3 for both
        assert codes[3].json() == {"message": "Too Many Requests"}
        assert codes[3].headers["ratelimit-policy"].startswith('"usage-plan";q=3;')
    finally:
        a.stop()
        b.stop()
