"""Throttling through a real fastgate: route, per-client and gateway-wide buckets
shared by all workers, API stage method throttling from YAML and from the control
API, and API Gateway's 429 with RateLimit and Retry-After headers."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import boto3
import httpx

from conftest import Gateway, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bucket_bounds import check_accuracy, hammer, statuses  # noqa: E402


def test_route_throttle_429_with_headers(tmp_path):
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        routes:
          - path: /limited
            integration: {type: mock, body: ok}
            throttle: {rate: 1, burst: 3}
          - path: /free
            integration: {type: mock, body: ok}
        """)
    try:
        with httpx.Client(timeout=5) as c:
            statuses = [c.get(f"{g.url}/limited").status_code for _ in range(6)]
            assert statuses[:3] == [200, 200, 200] and statuses.count(429) >= 2
            r = c.get(f"{g.url}/limited")
            assert r.status_code == 429
            assert r.json() == {"message": "Too Many Requests"}
            assert 1 <= int(r.headers["retry-after"]) <= 2
            assert r.headers["ratelimit-policy"] == '"route";q=3;w=3'
            assert r.headers["ratelimit"].startswith('"route";r=0;t=')
            # the connection stays open after a 429, and other routes are not limited
            assert all(c.get(f"{g.url}/free").status_code == 200 for _ in range(20))
    finally:
        g.stop()


def test_gateway_limit_is_for_the_whole_host_and_accurate(tmp_path):
    # rate 0: exactly `burst` requests pass, however the workers share the connections
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        throttle: {rate: 0, burst: 25}
        routes:
          - {path: /x, integration: {type: mock, body: ok}}
        """, workers=2)
    try:
        got = statuses(hammer([f"{g.url}/x"], 1.0, threads_per_url=6, at_least=60))
        assert got.get(200) == 25, got
    finally:
        g.stop()
    rate, burst = 50, 50
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        routes:
          - path: /x
            integration: {{type: mock, body: ok}}
            throttle: {{rate: {rate}, burst: {burst}}}
        """, workers=2)
    try:
        takes = hammer([f"{g.url}/x"], 2.0, threads_per_url=8)
        check_accuracy(takes, rate, burst)
    finally:
        g.stop()


def test_per_client_ip_buckets_behind_a_trusted_proxy(tmp_path):
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        trusted_proxies: [127.0.0.1]
        routes:
          - path: /x
            integration: {type: mock, body: ok}
            throttle: {rate: 0, burst: 2, key: client_ip}
        """)
    try:
        def status(client):
            return httpx.get(f"{g.url}/x", headers={"X-Forwarded-For": client}, timeout=5).status_code
        assert [status("203.0.113.1") for _ in range(3)] == [200, 200, 429]
        assert [status("203.0.113.2") for _ in range(3)] == [200, 200, 429]
        # the last hop the trusted proxy appended is the client, not what the client claimed
        assert status("198.51.100.7, 203.0.113.1") == 429
    finally:
        g.stop()


def api_doc() -> dict:
    return {
        "openapi": "3.0.1", "info": {"title": "T", "version": "1"},
        "paths": {p: {"get": {"x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
            "responses": {"default": {"statusCode": "200",
                                      "responseTemplates": {"application/json": '{"ok": true}'}}}}}}
            for p in ("/a", "/b")},
        "x-amazon-apigateway-gateway-responses": {
            "THROTTLED": {"statusCode": 429,
                          "responseTemplates": {"application/json": '{"slow": "down"}'}}},
    }


def test_api_stage_method_throttling_from_yaml(tmp_path):
    (tmp_path / "api.json").write_text(json.dumps(api_doc()))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - openapi: api.json
            id: thr
            stages:
              prod:
                throttle: {rate: 0, burst: 2}
                method_throttles: {"/b/GET": {rate: 0, burst: 4}}
        """)
    try:
        with httpx.Client(timeout=5) as c:
            a = [c.get(f"{g.url}/prod/a").status_code for _ in range(4)]
            b = [c.get(f"{g.url}/prod/b").status_code for _ in range(6)]
            assert a == [200, 200, 429, 429] and b == [200] * 4 + [429, 429]
            r = c.get(f"{g.url}/prod/a")
            assert r.json() == {"slow": "down"}           # the API's customised THROTTLED response
            assert r.headers["x-amzn-errortype"] == "TooManyRequestsException"
            assert "retry-after" not in r.headers         # rate 0: no token will ever come back
    finally:
        g.stop()


def test_stage_throttling_set_through_the_control_api(tmp_path):
    key, secret = "AKIAFASTGATETEST02", "throttle-test-secret"
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp_path / 'state'}
        """, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": key, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": secret})
    try:
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                         region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret)
        api_id = c.import_rest_api(body=json.dumps(api_doc()).encode())["id"]
        c.create_deployment(restApiId=api_id, stageName="live")
        wait_until(lambda: httpx.get(f"{g.url}/live/a", timeout=5).status_code == 200)
        c.update_stage(restApiId=api_id, stageName="live", patchOperations=[
            {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "0"},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "3"}])
        wait_until(lambda: httpx.get(f"{g.url}/live/b", timeout=5).status_code == 429, timeout=10)
        assert httpx.get(f"{g.url}/live/b", timeout=5).status_code == 429
    finally:
        g.stop()


def test_execution_log_and_throttle_metrics(tmp_path):
    from prometheus_client.parser import text_string_to_metric_families
    (tmp_path / "api.json").write_text(json.dumps(api_doc()))
    log = tmp_path / "exec.log"
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        execution_log: {{path: {log}}}
        throttle: {{rate: 0, burst: 100}}
        apis:
          - openapi: api.json
            id: obs
            stages:
              prod: {{throttle: {{rate: 0, burst: 2}}, logging_level: ERROR}}
        """)
    try:
        with httpx.Client(timeout=5) as c:
            codes = [c.get(f"{g.url}/prod/a", headers={"x-api-key": "secret-value-123"}).status_code
                     for _ in range(3)]
            assert codes == [200, 200, 429]
            assert c.get(f"{g.url}/prod/nothing").status_code == 403
        text = httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).text
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(text) for s in fam.samples}
        assert samples[("fastgate_throttled_total",
                        (("api", "obs"), ("level", "method"), ("stage", "prod")))] == 1
        def lines():
            return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        import time
        deadline = time.monotonic() + 5
        while len(lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        got = lines()
        assert sorted(x["status"] for x in got) == [403, 429]     # ERROR: failures only
        assert "secret-value-123" not in log.read_text()
    finally:
        g.stop()
