"""Usage reports end to end: a known mix of traffic (ok, upstream 4xx and 5xx, throttled
by the plan) from two API keys over two stages through a real fastgate (two workers, a
real upstream), then `fastgate usage export` (CSV and JSON) and boto3's get_usage must
say exactly what was sent, before and after a graceful stop.

Across hosts: two fastgate processes, each with its own data dir, sharing one real
redis-server. `fastgate usage export -c` and GetUsage on either host read the sum; with
Redis stopped the hosts keep counting locally, and when it comes back (empty: no
persistence) they push everything again."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import boto3
import httpx
import pytest

from conftest import Gateway, Upstream, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from redis_server import RedisServer  # noqa: E402

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

    def probe(self, client: httpx.Client, base: str, key: dict, stage: str) -> bool:
        """Whether the stage serves the key yet; a call that passes is traffic (a 403
        before the key is known is not metered)."""
        r = client.get(f"{base}/{stage}/ok", headers={"x-api-key": key["value"]})
        if r.status_code == 200:
            row = self.rows[(key["id"], stage)]
            row["requests"] += 1
            row["bytes_out"] += len(r.content)
            row["quota_used"] += 1
        return r.status_code == 200

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


def deploy(gw: Gateway, upstream: Upstream):
    """(boto3 client of gw's control API, id of the metered API deployed to prod and beta)."""
    c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                     region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    api_id = c.import_rest_api(body=api_doc(upstream.port))["id"]
    dep = c.create_deployment(restApiId=api_id, stageName="prod")
    c.create_stage(restApiId=api_id, stageName="beta", deploymentId=dep["id"])
    return c, api_id


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
        c, api_id = deploy(gw, upstream)
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
                assert wait_until(lambda: sent.probe(h, gw.url, probe, stage), timeout=15)
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
        until_rows(state, today, [(r["key_id"], r["stage"], r["requests"], r["4xx"], r["5xx"],
                                   r["bytes_in"], r["bytes_out"], r["quota_used"]) for r in want])
        assert exported(state, today) == (want_csv, want)     # the CLI, CSV and JSON

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


# ---------------------------------------------------------------- several hosts

@pytest.fixture
def redis():
    r = RedisServer().start()
    yield r
    if r.proc is not None:
        r.stop()


def host_config(state: Path, redis_url: str) -> str:
    return f"""\
        access_log: {{path: 'off'}}
        data_dir: {state}
        redis: {{url: "{redis_url}", fail_open: true, timeout_ms: 200}}
        """


def copy_state(src: Path, dst: Path) -> None:
    """What the control-auth replication will do: host B gets host A's keys and plans
    (the same ids). Only the documents: B is another host with its own usage."""
    dst.mkdir()
    shutil.copy(src / "apikeys.secret", dst / "apikeys.secret")
    with sqlite3.connect(src / "fastgate.db") as a, sqlite3.connect(dst / "fastgate.db") as b:
        a.backup(b)
    with sqlite3.connect(dst / "fastgate.db") as b:
        for table in ("usage", "usage_cursor", "usage_meta"):
            b.execute(f"DROP TABLE IF EXISTS {table}")
        b.execute("PRAGMA user_version = 0")


def rows(data_dir: Path, day: str, config: Path | None = None) -> list[tuple]:
    out = export(data_dir, "--from", day, "--to", day, *(("-c", str(config)) if config else ()))
    assert out.returncode == 0, out.stderr
    return [(r["key_id"], r["stage"], int(r["requests"]), int(r["4xx"]), int(r["5xx"]),
             int(r["bytes_in"]), int(r["bytes_out"]), int(r["quota_used"]))
            for r in csv.DictReader(io.StringIO(out.stdout))]


def quick_rows(data_dir: Path, day: str, redis_url: str | None = None) -> list[tuple]:
    """rows() without a process per poll (slow on a busy machine): the same functions
    the CLI calls, in this process. The CLI itself is checked once the data is there."""
    from fastgate.compile.config import RedisConfig
    from fastgate.control.usage import ROW_COLUMNS, UsageStore
    from fastgate.control.usage_redis import all_hosts_rows
    store = UsageStore.in_dir(data_dir)
    try:
        got = all_hosts_rows(store, RedisConfig(url=redis_url) if redis_url else None, day, day)
    finally:
        store.close()
    idx = [ROW_COLUMNS.index(c) for c in ("key_id", "stage", "requests", "status_4xx", "status_5xx",
                                          "bytes_in", "bytes_out", "quota_used")]
    return [tuple(r[i] for i in idx) for r in got]


def until_rows(data_dir: Path, day: str, want: list[tuple], redis_url: str | None = None,
               timeout: float = 30.0) -> None:
    """Wait for the flushes (and pushes) to show `want`; on timeout say what was there."""
    try:
        wait_until(lambda: quick_rows(data_dir, day, redis_url) == want, timeout=timeout, step=0.2)
    except AssertionError:
        raise AssertionError((quick_rows(data_dir, day, redis_url), want)) from None


def expected(sent: Traffic) -> list[tuple]:
    return [(k, stage, c["requests"], c["4xx"], c["5xx"], c["bytes_in"], c["bytes_out"], c["quota_used"])
            for (k, stage), c in sorted(sent.rows.items())]


def test_two_hosts_one_redis_sum_and_survive_an_outage(tmp_path, redis, upstream):
    env = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    state_a, state_b = tmp_path / "a" / "state", tmp_path / "b" / "state"
    a = Gateway(tmp_path / "a", host_config(state_a, redis.url), workers=2, env=env)
    b = None
    try:
        c, api_id = deploy(a, upstream)
        plan = c.create_usage_plan(name="shared", quota={"limit": 500, "period": "DAY"},
                                   apiStages=[{"apiId": api_id, "stage": s} for s in ("prod", "beta")])
        one = c.create_api_key(name="one", enabled=True)
        two = c.create_api_key(name="two", enabled=True)
        for k in (one, two):
            c.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
        copy_state(state_a, state_b)
        b = Gateway(tmp_path / "b", host_config(state_b, redis.url), workers=1, env=env)
        sent = Traffic(api_id)
        today = dt.datetime.now(dt.timezone.utc).date().isoformat()
        with httpx.Client(timeout=10) as h:
            for gw in (a, b):
                for stage in ("prod", "beta"):
                    assert wait_until(lambda: sent.probe(h, gw.url, one, stage), timeout=15)
            # key two's was the last change (a build may hold one's and not yet two's)
            assert wait_until(lambda: sent.probe(h, a.url, two, "beta"), timeout=15)

            sent.send(h, a.url, one, "prod", "/ok", b"a" * 10)
            sent.send(h, a.url, one, "prod", "/ok")
            sent.send(h, b.url, one, "prod", "/ok", b"b" * 20)
            sent.send(h, b.url, one, "prod", "/missing", expect=404)
            sent.send(h, b.url, one, "beta", "/broken", expect=500)
            sent.send(h, a.url, two, "beta", "/ok", b"c" * 5)

            want = expected(sent)
            until_rows(state_a, today, want, redis.url)
            assert rows(state_a, today, a.config_path) == want     # the CLI says the same
            assert rows(state_b, today, b.config_path) == want
            assert rows(state_a, today) != want            # A alone holds only its own share
            used = {one["id"]: sum(r[7] for r in want if r[0] == one["id"]),
                    two["id"]: sum(r[7] for r in want if r[0] == two["id"])}
            assert c.get_usage(usagePlanId=plan["id"], startDate=today, endDate=today)["items"] == \
                {k: [[n, 500 - n]] for k, n in used.items()}

            # Redis down: B keeps serving (fail_open) and counting in its own SQLite
            local_b = rows(state_b, today)
            redis.stop()
            sent.send(h, b.url, one, "prod", "/ok", b"d" * 3)
            sent.send(h, b.url, two, "prod", "/broken", expect=500)
            assert wait_until(lambda: sum(r[2] for r in quick_rows(state_b, today))
                              == sum(r[2] for r in local_b) + 2, timeout=30, step=0.2), rows(state_b, today)
            # back, and empty: both hosts push everything they have
            redis.start()
            want = expected(sent)
            until_rows(state_a, today, want, redis.url)
            assert rows(state_a, today, a.config_path) == want
            assert rows(state_b, today, b.config_path) == want
    finally:
        assert a.stop() == 0
        if b is not None:
            assert b.stop() == 0
