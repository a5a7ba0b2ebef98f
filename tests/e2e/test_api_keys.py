"""API keys and usage plans end to end: boto3 creates the key, the plan (throttle,
quota) and deploys an API whose method requires a key; requests through fastgate are
refused without a valid key, throttled and cut off by the plan, and GetUsage counts them."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import httpx
import pytest

from conftest import Gateway, wait_until

KEY, SECRET = "AKIAFASTGATETEST03", "keys-test-secret"


def api_doc() -> bytes:
    integ = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
             "responses": {"default": {"statusCode": "200",
                                       "responseTemplates": {"application/json": '{"ok": true}'}}}}
    return json.dumps({
        "swagger": "2.0", "info": {"title": "Keyed", "version": "1"},
        "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
        "paths": {
            "/paid": {"get": {"security": [{"api_key": []}], "x-amazon-apigateway-integration": integ}},
            "/free": {"get": {"x-amazon-apigateway-integration": integ}},
        },
    }).encode()


@pytest.fixture
def gw(tmp_path):
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp_path / 'state'}
        """, workers=2, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY,
                             "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET})
    yield g
    g.stop()


def test_key_required_throttle_quota_and_usage(gw):
    c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                     region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    api_id = c.import_rest_api(body=api_doc())["id"]
    c.create_deployment(restApiId=api_id, stageName="prod")
    key = c.create_api_key(name="partner", enabled=True)
    other = c.create_api_key(name="stranger", enabled=True)
    plan = c.create_usage_plan(name="gold", apiStages=[{"apiId": api_id, "stage": "prod"}],
                               throttle={"rateLimit": 0.5, "burstLimit": 5},
                               quota={"limit": 8, "period": "DAY"})
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    url = f"{gw.url}/prod/paid"
    wait_until(lambda: httpx.get(f"{gw.url}/prod/free", timeout=5).status_code == 200, timeout=10)

    r = httpx.get(url, timeout=5)
    assert r.status_code == 403 and r.json() == {"message": "Forbidden"}
    assert r.headers["x-amzn-errortype"] == "ForbiddenException"
    assert httpx.get(url, headers={"x-api-key": "x" * 40}, timeout=5).status_code == 403
    # a valid key in no plan of this stage
    assert httpx.get(url, headers={"x-api-key": other["value"]}, timeout=5).status_code == 403

    wait_until(lambda: httpx.get(url, headers={"x-api-key": key["value"]}, timeout=5).status_code == 200,
               timeout=10)
    with httpx.Client(timeout=5, headers={"x-api-key": key["value"]}) as s:
        statuses = [s.get(url) for _ in range(6)]
    codes = [r.status_code for r in statuses]
    # burst 5 (one was spent above): 4 more pass, then the plan's throttle answers 429
    assert codes[:4] == [200] * 4 and codes[4] == 429, codes
    assert statuses[4].json() == {"message": "Too Many Requests"}
    assert "retry-after" in statuses[4].headers

    # the quota: 8 a day; after the throttle refills (0.5/s) the rest of the day's 8 pass
    passed = 5
    import time
    deadline = time.monotonic() + 20
    last = None
    while time.monotonic() < deadline:
        last = httpx.get(url, headers={"x-api-key": key["value"]}, timeout=5)
        if last.status_code == 200:
            passed += 1
        elif last.json() == {"message": "Limit Exceeded"}:
            break
        time.sleep(0.5)
    assert passed == 8 and last.status_code == 429 and last.json() == {"message": "Limit Exceeded"}

    # usage: the 8 calls that passed the quota, counted by the workers, flushed by the admin process
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()

    def used():
        items = c.get_usage(usagePlanId=plan["id"], startDate=today, endDate=today)["items"]
        return items.get(key["id"], [[0, 0]])[0][0]
    assert wait_until(lambda: used() == 8, timeout=10)
    # the key value never reaches the log
    assert key["value"] not in gw.p.output()
