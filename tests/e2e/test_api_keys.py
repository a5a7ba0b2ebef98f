"""API keys and usage plans end to end: boto3 creates the key, the plan (throttle,
quota) and deploys an API whose method requires a key; requests through fastgate are
refused without a valid key, throttled and cut off by the plan, and GetUsage counts them."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import httpx
import pytest

from conftest import FRESH, Gateway, wait_every_worker, wait_until

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


def plan_with_key(gw, **plan) -> tuple:
    """(boto3 client, key, usage plan): an API deployed to prod whose /paid needs a key,
    and one key in a usage plan (create_usage_plan's keyword arguments) of that stage."""
    c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                     region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    api_id = c.import_rest_api(body=api_doc())["id"]
    c.create_deployment(restApiId=api_id, stageName="prod")
    key = c.create_api_key(name="partner", enabled=True)
    plan = c.create_usage_plan(apiStages=[{"apiId": api_id, "stage": "prod"}], **plan)
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    return c, key, plan


def test_key_required_throttle_quota_and_usage(gw):
    c, key, plan = plan_with_key(gw, name="gold", throttle={"rateLimit": 0.5, "burstLimit": 5},
                                 quota={"limit": 8, "period": "DAY"})
    other = c.create_api_key(name="stranger", enabled=True)
    url = f"{gw.url}/prod/paid"
    # two workers, each building the deployment on its own: both serve it before the refusals
    wait_every_worker(gw, lambda: FRESH.get(f"{gw.url}/prod/free"))

    r = httpx.get(url, timeout=5)
    assert r.status_code == 403 and r.json() == {"message": "Forbidden"}
    assert r.headers["x-amzn-errortype"] == "ForbiddenException"
    assert httpx.get(url, headers={"x-api-key": "x" * 40}, timeout=5).status_code == 403
    # a valid key in no plan of this stage
    assert httpx.get(url, headers={"x-api-key": other["value"]}, timeout=5).status_code == 403

    # the keyed calls share one kept-alive connection, so one worker: the one that was seen to
    # hold the key (the buckets and the quota are shared by the workers all the same)
    with httpx.Client(timeout=5, headers={"x-api-key": key["value"]}) as s:
        wait_until(lambda: s.get(url).status_code == 200, timeout=10)
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
            last = s.get(url)
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


AUTHZ = '''
def token(event, context):
    # the caller's token is its API key: API Gateway's key source AUTHORIZER
    return {"principalId": "caller", "usageIdentifierKey": event["authorizationToken"],
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "*"}]}}
'''
GOLD, SILVER = "gold-value-0123456789abcdef", "silver-value-0123456789abcd"


def keyed_api(source: str) -> dict:
    mock = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "responses": {"default": {"statusCode": "200"}}}
    schemes = {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}}
    security = [{"api_key": []}]
    if source == "AUTHORIZER":
        schemes["tok"] = {"type": "apiKey", "name": "Authorization", "in": "header",
                          "x-amazon-apigateway-authtype": "custom",
                          "x-amazon-apigateway-authorizer": {
                              "type": "token", "authorizerResultTtlInSeconds": 0,
                              "authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/"
                                               "functions/arn:aws:lambda:us-east-1:123456789012:"
                                               "function:tokenauth/invocations"}}
        security = [{"tok": [], "api_key": []}]
    return {"swagger": "2.0", "info": {"title": source, "version": "1"},
            "x-amazon-apigateway-api-key-source": source,
            "securityDefinitions": schemes,
            "paths": {p: {"get": {"security": security, "x-amazon-apigateway-integration": mock}}
                      for p in ("/a", "/b")}}


@pytest.fixture
def static_gw(tmp_path):
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "authz.py").write_text(AUTHZ)
    (tmp_path / "hdr.json").write_text(json.dumps(keyed_api("HEADER")))
    (tmp_path / "authz.json").write_text(json.dumps(keyed_api("AUTHORIZER")))
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        function_path: [fn]
        functions:
          tokenauth: {{handler: authz:token}}
        apis:
          - {{openapi: hdr.json, id: hdr, stages: {{prod: {{}}}}}}
          - {{openapi: authz.json, id: authz, stages: {{live: {{}}}}}}
        api_keys:
          - {{id: gold, name: gold, value: {GOLD}}}
          - {{id: silver, name: silver, value: {SILVER}, enabled: false}}
        usage_plans:
          - id: plan
            name: plan
            api_stages:
              - {{api: hdr, stage: prod, throttle: {{"/b/GET": {{rate_limit: 0.001, burst_limit: 1}}}}}}
              - {{api: authz, stage: live}}
            throttle: {{rate_limit: 0.001, burst_limit: 10}}
            quota: {{limit: 5, period: DAY}}
            keys: [gold, silver]
        """, workers=1, admin=False)
    yield g
    g.stop()


def test_header_keys_method_override_throttle_and_quota(static_gw):
    """Key-only methods (the compiled ACCESS path): 403 for a missing, unknown or disabled
    key; the plan's per-method throttle has its own bucket; then the quota cuts off."""
    url = f"{static_gw.url}/prod"
    with httpx.Client(timeout=5) as c:
        for headers in ({}, {"x-api-key": "nope" * 8}, {"x-api-key": SILVER}):
            r = c.get(f"{url}/a", headers=headers)
            assert r.status_code == 403 and r.json() == {"message": "Forbidden"}, headers
            assert r.headers["x-amzn-errortype"] == "ForbiddenException"
            assert "ratelimit" not in r.headers
        gold = {"x-api-key": GOLD}
        assert c.get(f"{url}/b", headers=gold).status_code == 200
        r = c.get(f"{url}/b", headers=gold)          # the method's burst of 1 is spent
        assert r.status_code == 429 and r.json() == {"message": "Too Many Requests"}
        assert r.headers["ratelimit-policy"].startswith('"usage-plan";q=1;')
        assert r.headers["ratelimit"].startswith('"usage-plan";r=0;') and "retry-after" in r.headers
        # the plan's own bucket (burst 10) was not touched by /b's; the quota (5 a day)
        # counts every call that passed a throttle: 1 on /b, then 4 on /a
        codes = [c.get(f"{url}/a", headers=gold) for _ in range(5)]
        assert [r.status_code for r in codes] == [200] * 4 + [429]
        assert codes[4].json() == {"message": "Limit Exceeded"}
        assert codes[4].headers["ratelimit-policy"].startswith('"quota";q=5;w=86400')


def test_authorizer_supplied_key(static_gw):
    """Key source AUTHORIZER: the Lambda authorizer's usageIdentifierKey is the key (the
    Python access phase, through the same compiled gate)."""
    url = f"{static_gw.url}/live"
    with httpx.Client(timeout=10) as c:
        # the x-api-key header is not read for such an API
        r = c.get(f"{url}/a", headers={"Authorization": "nope" * 8, "x-api-key": GOLD})
        assert r.status_code == 403 and r.json() == {"message": "Forbidden"}
        assert c.get(f"{url}/a", headers={"Authorization": SILVER}).status_code == 403
        codes = [c.get(f"{url}/{p}", headers={"Authorization": GOLD}).status_code for p in "ababa"]
        assert codes == [200] * 5, codes
        r = c.get(f"{url}/b", headers={"Authorization": GOLD})
        assert r.status_code == 429 and r.json() == {"message": "Limit Exceeded"}
        assert r.headers["ratelimit-policy"].startswith('"quota";q=5;w=86400')


def test_an_update_usage_grant_ends_with_its_period_not_at_the_next_reload(gw, tmp_path):
    """KeyTable.valid_until_s: the worker rebuilds its snapshot when a grant ends."""
    import os
    import signal
    import time

    from fastgate.control.store import Store
    c, key, plan = plan_with_key(gw, name="one", quota={"limit": 1, "period": "DAY"})
    url = f"{gw.url}/prod/paid"
    # one kept-alive connection, so one worker throughout: each worker builds every change
    # (the plan's key, the grant, its end) on its own
    client = httpx.Client(timeout=5, headers={"x-api-key": key["value"]})

    def call():
        return client.get(url)
    wait_until(lambda: call().status_code == 200, timeout=10)
    assert call().json() == {"message": "Limit Exceeded"}
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    wait_until(lambda: c.get_usage(usagePlanId=plan["id"], startDate=today,
                                   endDate=today)["items"].get(key["id"]) == [[1, 0]], timeout=10)
    c.update_usage(usagePlanId=plan["id"], keyId=key["id"],
                   patchOperations=[{"op": "replace", "path": "/remaining", "value": "5"}])
    wait_until(lambda: call().status_code == 200, timeout=10)     # the grant: 6 for today

    # A grant ends with its quota period (today, UTC); let it end in a few seconds
    # instead, as if the day were ending, and reload so the workers hold that grant.
    ends_s = int(time.time()) + 4
    store = Store.in_dir(tmp_path / "state")
    try:
        member = dict(store.load().extra["usageplankey"][plan["id"]][key["id"]])
        member["_extension"] = {**member["_extension"], "until_s": ends_s}
        with store.transaction() as txn:
            txn.put("usageplankey", plan["id"], key["id"], member)
    finally:
        store.close()
    os.kill(gw.pid, signal.SIGHUP)
    time.sleep(max(0.0, ends_s - time.time()) + 1.0)
    # the plan's own quota again (1, already used): no reload happened since
    r = call()
    client.close()
    assert r.status_code == 429 and r.json() == {"message": "Limit Exceeded"}
