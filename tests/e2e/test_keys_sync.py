"""API keys and usage plans across hosts: two fastgate processes, each with its own data
dir, sharing one real Redis. A key and a plan made through host A's control API work on
host B; disabling the key on B refuses it on A; with Redis down both keep serving what
they had; after Redis comes back (empty) changes flow again. Redis never holds a key value."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_server import RedisServer  # noqa: E402

from conftest import Gateway, wait_until  # noqa: E402
from test_api_keys import api_doc  # noqa: E402 (the keyed API: /paid needs a key, /free not)

KEY, SECRET = "AKIAFASTGATETEST09", "key-sync-test-secret"
API_ID = "keyedapi"
PROPAGATION_DEADLINE_S = 10     # generous: the machine is shared; docs/api-keys.md gives the usual figure


@pytest.fixture
def redis_server():
    r = RedisServer().start()
    yield r
    r.stop()


@pytest.fixture
def hosts(tmp_path, redis_server):
    made = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        (d / "api.json").write_bytes(api_doc())
        made.append(Gateway(d, f"""\
            access_log: {{path: 'off'}}
            data_dir: {d / 'state'}
            redis: {{url: "{redis_server.url}", key_sync_interval_ms: 200}}
            apis:
              - openapi: api.json
                id: {API_ID}
                stages: {{prod: {{}}}}
            """, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}))
    yield made
    for g in made:
        g.stop()


def control(gw):
    return boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)


def status(gw, value) -> int:
    headers = {"x-api-key": value} if value else {}
    return httpx.get(f"{gw.url}/prod/paid", headers=headers, timeout=5).status_code


def becomes(gw, value, code) -> float:
    """Seconds until a request with `value` gets `code` on `gw` (AssertionError past the deadline)."""
    t0 = time.monotonic()
    wait_until(lambda: status(gw, value) == code, timeout=PROPAGATION_DEADLINE_S, step=0.02)
    return time.monotonic() - t0


def test_keys_and_plans_follow_redis_across_hosts(hosts, redis_server):
    a, b = hosts
    ca, cb = control(a), control(b)
    wait_until(lambda: httpx.get(f"{a.url}/prod/free", timeout=5).status_code == 200, timeout=10)
    key = ca.create_api_key(name="partner", enabled=True)
    plan = ca.create_usage_plan(name="gold", apiStages=[{"apiId": API_ID, "stage": "prod"}],
                                throttle={"rateLimit": 100, "burstLimit": 100})
    ca.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    became = becomes(b, key["value"], 200)
    print(f"\nkey made on A served on B after {became:.3f} s")
    becomes(a, key["value"], 200)       # (A's own reload is not ordered with B's)
    r = httpx.get(f"{b.url}/prod/paid", timeout=5)
    assert (r.status_code, r.json()) == (403, {"message": "Forbidden"})

    # B's control API knows them (without the value: it never left A)
    got = cb.get_api_key(apiKey=key["id"], includeValue=True)
    assert got["name"] == "partner" and got["enabled"] is True and "value" not in got
    assert [p["id"] for p in cb.get_usage_plans(keyId=key["id"])["items"]] == [plan["id"]]
    assert ca.get_api_key(apiKey=key["id"], includeValue=True)["value"] == key["value"]

    # Redis holds digests only
    r = redis.Redis.from_url(redis_server.url)
    stored = r.hgetall("fastgate:keys:docs")
    assert any(f.startswith(b"apikey//") for f in stored)
    blob = b"".join(stored.values())
    assert key["value"].encode() not in blob and b"_sealed" not in blob and b"_hash" in blob
    r.close()

    # disabled on B -> refused on A
    cb.update_api_key(apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}])
    became = becomes(a, key["value"], 403)
    print(f"key disabled on B refused on A after {became:.3f} s")
    becomes(b, key["value"], 403)

    # Redis down: both keep serving their last table, and a change on A works on A
    redis_server.stop()
    ca.update_api_key(apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}])
    becomes(a, key["value"], 200)
    second = ca.create_api_key(name="second", enabled=True)
    ca.create_usage_plan_key(usagePlanId=plan["id"], keyId=second["id"], keyType="API_KEY")
    becomes(a, second["value"], 200)
    time.sleep(1)
    assert status(b, key["value"]) == 403 and status(b, second["value"]) == 403
    assert httpx.get(f"{b.url}/prod/free", timeout=5).status_code == 200

    # Redis back, empty: A's pending changes reach B, and new changes flow both ways
    redis_server.start()
    becomes(b, key["value"], 200)
    becomes(b, second["value"], 200)
    third = cb.create_api_key(name="third", enabled=True)
    cb.create_usage_plan_key(usagePlanId=plan["id"], keyId=third["id"], keyType="API_KEY")
    becomes(a, third["value"], 200)
    cb.delete_api_key(apiKey=second["id"])
    becomes(a, second["value"], 403)
    assert {k["name"] for k in ca.get_api_keys()["items"]} == {"partner", "third"}
    log = a.p.output()                        # stops A; its log tells the outage once each way
    assert log.count("unreachable") == 1 and log.count("reachable again") == 1, log


def test_a_missed_message_heals_by_the_version_check(hosts, redis_server):
    """A change written to Redis without its pub/sub message (as if the message were lost)
    still reaches every host by the periodic version check."""
    a, b = hosts
    ca = control(a)
    wait_until(lambda: httpx.get(f"{b.url}/prod/free", timeout=5).status_code == 200, timeout=10)
    key = ca.create_api_key(name="quiet", enabled=True)
    plan = ca.create_usage_plan(name="silver", apiStages=[{"apiId": API_ID, "stage": "prod"}])
    ca.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    becomes(b, key["value"], 200)
    r = redis.Redis.from_url(redis_server.url)
    field = f"apikey//{key['id']}".encode()
    doc = json.loads(r.hget("fastgate:keys:docs", field))
    doc["enabled"] = False
    r.hset("fastgate:keys:docs", field, json.dumps(doc))
    r.incr("fastgate:keys:version")          # no PUBLISH
    r.close()
    becomes(a, key["value"], 403)
    becomes(b, key["value"], 403)
