"""Usage reports end to end: a known mix of traffic (ok, upstream 4xx and 5xx, throttled
by the plan) from two API keys over two stages through a real fastgate (two workers, a
real upstream), then `fastgate usage export` (CSV and JSON) and boto3's get_usage must
say exactly what was sent, before and after a graceful stop."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import boto3
import httpx
import pytest

from conftest import Gateway, Upstream, wait_until

KEY, SECRET = "AKIAFASTGATEUSAGE01", "usage-test-secret"
ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ("requests", "throttled", "4xx", "5xx", "bytes_in", "bytes_out", "quota_used")


def api_doc(upstream_port: int) -> bytes:
    def proxy(code: int) -> dict:
        return {"security": [{"api_key": []}], "x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "ANY",
            "uri": f"http://127.0.0.1:{upstream_port}/status/{code}"}}
    return json.dumps({
        "swagger": "2.0", "info": {"title": "Metered", "version": "1"},
        "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
        "paths": {"/ok": {"x-amazon-apigateway-any-method": proxy(200)},
                  "/missing": {"get": proxy(404)},
                  "/broken": {"get": proxy(500)}},
    }).encode()


class Traffic:
    """What the test sent, per (key id, stage), in the export's columns."""

    def __init__(self, api_id: str):
        self.api_id = api_id
        self.rows: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))

    def send(self, client: httpx.Client, base: str, key: dict, stage: str, path: str,
             body: bytes = b"", expect: int = 200) -> httpx.Response:
        r = client.request("POST" if body else "GET", f"{base}/{stage}{path}", content=body or None,
                           headers={"x-api-key": key["value"]})
        assert r.status_code == expect, (path, r.status_code, r.text)
        row = self.rows[(key["id"], stage)]
        row["requests"] += 1
        row["bytes_in"] += len(body)
        row["bytes_out"] += len(r.content)
        throttled = r.status_code == 429 and r.json() == {"message": "Too Many Requests"}
        row["throttled"] += throttled
        row["4xx"] += 400 <= r.status_code < 500
        row["5xx"] += r.status_code >= 500
        row["quota_used"] += not throttled
        return r

    def expected(self, day: str, names: dict[str, str]) -> list[dict]:
        return [{"key_id": k, "day": day, "api_id": self.api_id, "stage": stage, **counts,
                 "key_name": names[k]} for (k, stage), counts in sorted(self.rows.items())]


def export(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastgate", "usage", "export", "--data-dir",
                           str(data_dir), *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=str(ROOT))


def exported(data_dir: Path, day: str) -> tuple[list[dict], list[dict]]:
    """(CSV rows, JSON rows) of one day, both with the export's numbers as ints."""
    out = export(data_dir, "--from", day, "--to", day)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    for r in rows:
        for c in COLUMNS:
            r[c] = int(r[c])
    js = export(data_dir, "--from", day, "--to", day, "--format", "json")
    assert js.returncode == 0, js.stderr
    return rows, json.loads(js.stdout)


@pytest.fixture
def upstream():
    u = Upstream("metered")
    yield u
    u.stop()


def test_usage_by_key_day_and_stage_matches_the_traffic_sent(tmp_path, upstream):
    state = tmp_path / "state"
    gw = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        data_dir: {state}
        """, workers=2, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET})
    try:
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                         region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        api_id = c.import_rest_api(body=api_doc(upstream.port))["id"]
        dep = c.create_deployment(restApiId=api_id, stageName="prod")
        c.create_stage(restApiId=api_id, stageName="beta", deploymentId=dep["id"])
        stages = [{"apiId": api_id, "stage": "prod"}, {"apiId": api_id, "stage": "beta"}]
        # a burst of 10 and a refill of one token every 1000 s: the 11th call of a key is throttled
        plan = c.create_usage_plan(name="metered", apiStages=stages,
                                   throttle={"rateLimit": 0.001, "burstLimit": 10},
                                   quota={"limit": 1000, "period": "MONTH"})
        one = c.create_api_key(name="partner-one", enabled=True)
        two = c.create_api_key(name="partner-two", enabled=True)
        # the probe key finds out when both stages serve the keys; its calls are traffic too
        probe_plan = c.create_usage_plan(name="probe", apiStages=stages)
        probe = c.create_api_key(name="probe", enabled=True)
        for k, p in ((one, plan), (two, plan), (probe, probe_plan)):
            c.create_usage_plan_key(usagePlanId=p["id"], keyId=k["id"], keyType="API_KEY")
        names = {k["id"]: k["name"] for k in (one, two, probe)}
        sent = Traffic(api_id)
        with httpx.Client(timeout=10) as h:
            for stage in ("prod", "beta"):
                def ready():
                    r = h.get(f"{gw.url}/{stage}/ok", headers={"x-api-key": probe["value"]})
                    if r.status_code == 200:
                        row = sent.rows[(probe["id"], stage)]
                        row["requests"] += 1
                        row["bytes_out"] += len(r.content)
                        row["quota_used"] += 1
                    return r.status_code == 200
                assert wait_until(ready, timeout=15)
            # not metered: no key, an unknown key (403 before any key is known)
            assert h.get(f"{gw.url}/prod/ok").status_code == 403
            assert h.get(f"{gw.url}/prod/ok", headers={"x-api-key": "n" * 40}).status_code == 403

            # key one: 10 calls pass (prod 3 ok + 2x404 + 1x500, beta 2 ok + 1x404 + 1 ok), then 3 throttled
            for path, body, status in (("/ok", b"", 200), ("/ok", b"x" * 1000, 200), ("/ok", b"y" * 7, 200),
                                       ("/missing", b"", 404), ("/missing", b"", 404), ("/broken", b"", 500)):
                sent.send(h, gw.url, one, "prod", path, body, status)
            for path, body, status in (("/ok", b"", 200), ("/ok", b"z" * 300, 200), ("/missing", b"", 404),
                                       ("/ok", b"", 200)):
                sent.send(h, gw.url, one, "beta", path, body, status)
            for _ in range(3):
                sent.send(h, gw.url, one, "beta", "/ok", expect=429)
            # key two: a 5xx on prod, a 404 and an ok on beta, nothing throttled
            sent.send(h, gw.url, two, "prod", "/broken", expect=500)
            sent.send(h, gw.url, two, "beta", "/missing", expect=404)
            sent.send(h, gw.url, two, "beta", "/ok", b"q" * 55)

        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        want = sent.expected(today, names)
        assert want[0]["requests"] and any(r["throttled"] == 3 for r in want)
        want_csv = [{k: (str(v) if k in ("key_id", "day", "api_id", "stage", "key_name") else v)
                     for k, v in r.items()} for r in want]

        # the admin process flushes every second
        assert wait_until(lambda: exported(state, today)[0] == want_csv, timeout=15), \
            (exported(state, today)[0], want_csv)
        rows_csv, rows_json = exported(state, today)
        assert rows_json == want

        # GetUsage: per key one [used, remaining] for today; used = the calls the plan let
        # through on its stages (throttled ones are not), remaining = what the quota left
        usage = c.get_usage(usagePlanId=plan["id"], startDate=today, endDate=today)
        used_one = sum(r["quota_used"] for r in want if r["key_id"] == one["id"])
        used_two = sum(r["quota_used"] for r in want if r["key_id"] == two["id"])
        assert (used_one, used_two) == (10, 3)
        assert usage["items"] == {one["id"]: [[10, 990]], two["id"]: [[3, 997]]}
        assert set(usage) >= {"usagePlanId", "startDate", "endDate", "items"}
        assert c.get_usage(usagePlanId=probe_plan["id"], startDate=today,
                           endDate=today)["items"] == {probe["id"]: [[sum(
                               r["quota_used"] for r in want if r["key_id"] == probe["id"]), 0]]}
    finally:
        assert gw.stop() == 0
    # a graceful stop loses nothing and counts nothing twice
    assert exported(state, today) == (want_csv, want)
