"""/metrics end to end, read with prometheus_client's parser: API Gateway's CloudWatch
series (Count, 4XX/5XX, Latency, IntegrationLatency, throttles by level, gateway
responses by type) labelled by API and stage, summed over two workers, equal to the
traffic sent."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import FRESH, Gateway, wait_every_worker, wait_until

KEY, SECRET = "AKIAFASTGATETEST09", "observe-test-secret"


def api_doc() -> bytes:
    integ = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
             "responses": {"default": {"statusCode": "200",
                                       "responseTemplates": {"application/json": '{"ok": true}'}}}}
    return json.dumps({
        "swagger": "2.0", "info": {"title": "Observed", "version": "1"},
        "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
        "paths": {
            "/paid": {"get": {"security": [{"api_key": []}], "x-amazon-apigateway-integration": integ}},
            "/free/{id}": {"get": {"x-amazon-apigateway-integration": integ}},
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


def scrape(gw) -> dict:
    """{family: {(sample name, frozenset labels): value}} by the reference parser."""
    text = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {(s.name, frozenset(s.labels.items())): s.value for s in fam.samples}
        out[fam.name + ":type"] = fam.type
    return out


def total(fams, family, sample, **labels) -> float:
    """Sum of the samples of `sample` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (name, lab), v in fams.get(family, {}).items() if name == sample and want <= lab)


def test_cloudwatch_series_match_the_traffic(gw):
    c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                     region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    api_id = c.import_rest_api(body=api_doc())["id"]
    c.create_deployment(restApiId=api_id, stageName="prod")
    key = c.create_api_key(name="partner", enabled=True)
    plan = c.create_usage_plan(name="gold", apiStages=[{"apiId": api_id, "stage": "prod"}],
                               throttle={"rateLimit": 0.01, "burstLimit": 100},
                               quota={"limit": 6, "period": "DAY"})
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    # the traffic below goes to both workers, which build each change on their own: one last
    # change that costs no quota to see, and a wait until every worker serves it (and so the key)
    c.create_deployment(restApiId=api_id, stageName="probe")
    wait_every_worker(gw, lambda: FRESH.get(f"{gw.url}/probe/free/0"))
    wait_until(lambda: httpx.get(f"{gw.url}/prod/paid", headers={"x-api-key": key["value"]},
                                 timeout=5).status_code == 200, timeout=10)
    base = scrape(gw)
    stage = dict(api=api_id, stage="prod")

    # new connections each time, so both workers serve
    statuses = {"free": [], "paid": [], "nokey": []}
    for i in range(20):
        statuses["free"].append(FRESH.get(f"{gw.url}/prod/free/{i}").status_code)
    for _ in range(8):   # 5 left in the quota of 6 (one used above), then 429 QUOTA_EXCEEDED
        statuses["paid"].append(FRESH.get(f"{gw.url}/prod/paid",
                                          headers={"x-api-key": key["value"]}).status_code)
    for _ in range(3):
        statuses["nokey"].append(FRESH.get(f"{gw.url}/prod/paid").status_code)
    assert statuses["free"] == [200] * 20
    assert statuses["paid"] == [200] * 5 + [429] * 3
    assert statuses["nokey"] == [403] * 3

    def delta(family, sample, **labels):
        return total(scrape(gw), family, sample, **labels) - total(base, family, sample, **labels)

    wait_until(lambda: delta("fastgate_requests", "fastgate_requests_total", **stage) == 31, timeout=5)
    fams = scrape(gw)
    assert fams["fastgate_requests:type"] == "counter"
    assert fams["fastgate_request_duration_seconds:type"] == "histogram"
    assert fams["fastgate_throttled:type"] == "counter"
    assert fams["fastgate_gateway_responses:type"] == "counter"
    # Count, 4XXError, 5XXError by route template (never the raw path /prod/free/7)
    assert delta("fastgate_requests", "fastgate_requests_total", route="GET /free/{id}", status_class="2xx",
                 **stage) == 20
    assert delta("fastgate_requests", "fastgate_requests_total", route="GET /paid", status_class="2xx",
                 **stage) == 5
    assert delta("fastgate_requests", "fastgate_requests_total", route="GET /paid", status_class="4xx",
                 **stage) == 6
    assert delta("fastgate_requests", "fastgate_requests_total", status_class="5xx", **stage) == 0
    assert not any("/prod/free/" in v for fam in fams.values() if isinstance(fam, dict)
                   for _, lab in fam for _, v in lab)
    # Latency: one observation per request
    assert delta("fastgate_request_duration_seconds", "fastgate_request_duration_seconds_count",
                 route="GET /free/{id}", **stage) == 20
    assert delta("fastgate_request_duration_seconds", "fastgate_request_duration_seconds_bucket",
                 route="GET /free/{id}", le="+Inf", **stage) == 20
    # the quota's refusals, and every gateway response by type
    assert delta("fastgate_throttled", "fastgate_throttled_total", level="quota", **stage) == 3
    assert delta("fastgate_throttled", "fastgate_throttled_total", level="usage_plan", **stage) == 0
    assert delta("fastgate_gateway_responses", "fastgate_gateway_responses_total", type="QUOTA_EXCEEDED",
                 **stage) == 3
    assert delta("fastgate_gateway_responses", "fastgate_gateway_responses_total", **stage) == 6
