"""API keys, usage plans and usage over the control API, driven by boto3 as users drive AWS."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import stat

import pytest
from botocore.exceptions import ClientError

from fastgate.compile.keys import KeyTable, check_key
from fastgate.control.store import load_state
from fastgate.compile.shared import UsageRecorder
from fastgate.control.usage import UsageStore
from tests.control.test_api import Server, build_api, c, code_of, server  # noqa: F401 (fixtures)

VALUE = "abcdefghijklmnopqrstuvwxyz0123456789ABCD"   # 40 characters


def deployed_api(c, stage="prod"):
    api, pets, _ = build_api(c)
    c.create_deployment(restApiId=api["id"], stageName=stage)
    return api


def error(fn, **kw) -> tuple[str, int]:
    with pytest.raises(ClientError) as e:
        fn(**kw)
    return code_of(e)


# ---------------------------------------------------------------- API keys

def test_create_generates_a_40_char_value_and_get_hides_it(c):
    key = c.create_api_key(name="partner", description="d", enabled=True, customerId="acme",
                           tags={"team": "x"})
    assert len(key["value"]) == 40 and key["value"].isalnum()
    assert key["enabled"] is True and key["customerId"] == "acme" and key["tags"] == {"team": "x"}
    got = c.get_api_key(apiKey=key["id"])
    assert "value" not in got
    assert got["name"] == "partner" and got["description"] == "d"
    assert isinstance(got["createdDate"], dt.datetime)
    assert c.get_api_key(apiKey=key["id"], includeValue=True)["value"] == key["value"]


def test_create_with_a_value_and_its_rules(c):
    key = c.create_api_key(name="given", value=VALUE)
    assert key["value"] == VALUE
    assert key["enabled"] is False          # AWS's default when `enabled` is absent
    assert error(c.create_api_key, name="short", value="x" * 19) == ("BadRequestException", 400)
    assert error(c.create_api_key, name="dup", value=VALUE) == ("ConflictException", 409)
    assert error(c.get_api_key, apiKey="nope") == ("NotFoundException", 404)


def test_get_api_keys_filters_and_pages(c):
    ids = [c.create_api_key(name=f"team-{i}", customerId="even" if i % 2 == 0 else "odd")["id"]
           for i in range(5)]
    c.create_api_key(name="other")
    assert sorted(k["name"] for k in c.get_api_keys(nameQuery="team-")["items"]) == [f"team-{i}" for i in range(5)]
    assert {k["id"] for k in c.get_api_keys(customerId="even")["items"]} == {ids[0], ids[2], ids[4]}
    page = c.get_api_keys(limit=2)
    assert len(page["items"]) == 2 and page["position"]
    rest = c.get_api_keys(limit=10, position=page["position"])
    assert len(rest["items"]) == 4 and "position" not in rest
    assert all("value" not in k for k in c.get_api_keys()["items"])
    assert all(len(k["value"]) == 40 for k in c.get_api_keys(includeValues=True)["items"])
    # the boto3 paginator walks the same positions
    names = [k["name"] for p in c.get_paginator("get_api_keys").paginate(PaginationConfig={"PageSize": 2})
             for k in p["items"]]
    assert len(names) == 6


def test_update_api_key(c):
    api = deployed_api(c)
    key = c.create_api_key(name="k")
    out = c.update_api_key(apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "true"},
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "replace", "path": "/description", "value": "desc"},
        {"op": "replace", "path": "/customerId", "value": "cust"},
        {"op": "add", "path": "/stages", "value": f"{api['id']}/prod"}])
    assert out["enabled"] is True and out["name"] == "renamed" and out["customerId"] == "cust"
    assert out["stageKeys"] == [f"{api['id']}/prod"]
    assert error(c.update_api_key, apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/value", "value": VALUE}]) == ("BadRequestException", 400)
    assert error(c.update_api_key, apiKey=key["id"], patchOperations=[
        {"op": "add", "path": "/stages", "value": f"{api['id']}/nostage"}]) == ("BadRequestException", 400)
    assert c.get_api_key(apiKey=key["id"])["description"] == "desc"


def test_delete_api_key_leaves_its_plans(c):
    key = c.create_api_key(name="k")
    plan = c.create_usage_plan(name="p")
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    c.delete_api_key(apiKey=key["id"])
    assert error(c.get_api_key, apiKey=key["id"]) == ("NotFoundException", 404)
    assert c.get_usage_plan_keys(usagePlanId=plan["id"])["items"] == []
    assert error(c.delete_api_key, apiKey=key["id"]) == ("NotFoundException", 404)


def test_import_api_keys_csv(c):
    plan = c.create_usage_plan(name="gold")
    body = ("Name,key,description,Enabled,usageplanIds,Extra\n"
            f"first,{VALUE},An imported key,TRUE,{plan['id']},ignored\n"
            f"second,{'k' * 30},,false,,\n").encode()
    out = c.import_api_keys(body=body, format="csv")
    assert len(out["ids"]) == 2 and "warnings" not in out
    first = c.get_api_key(apiKey=out["ids"][0], includeValue=True)
    assert first["value"] == VALUE and first["enabled"] is True and first["description"] == "An imported key"
    assert c.get_api_key(apiKey=out["ids"][1])["enabled"] is False
    assert [k["id"] for k in c.get_usage_plan_keys(usagePlanId=plan["id"])["items"]] == [out["ids"][0]]
    # the same value again overwrites the key that has it; single quotes around plan ids
    plan2 = c.create_usage_plan(name="silver")
    again = c.import_api_keys(body=(f"Key,Name,UsagePlanIds\n{VALUE},renamed,'{plan['id']},{plan2['id']}'\n").encode(),
                              format="csv")
    assert again["ids"] == [out["ids"][0]]
    assert c.get_api_key(apiKey=out["ids"][0])["name"] == "renamed"
    assert sorted(p["id"] for p in c.get_usage_plans(keyId=out["ids"][0])["items"]) == sorted([plan["id"], plan2["id"]])


def test_import_api_keys_warnings_and_errors(c):
    body = f"Name,Key\nok,{'a' * 25}\nbad,tooshort\n".encode()
    out = c.import_api_keys(body=body, format="csv")
    assert len(out["ids"]) == 1 and "Line 3" in out["warnings"][0]
    assert error(c.import_api_keys, body=f"Name,Key\nfail,{'b' * 25}\nbad,short\n".encode(),
                 format="csv", failOnWarnings=True) == ("BadRequestException", 400)
    # nothing of the failed file was kept
    assert len(c.get_api_keys()["items"]) == 1
    assert error(c.import_api_keys, body=b"Name,Description\nx,y\n", format="csv") == ("BadRequestException", 400)
    assert error(c.import_api_keys, body=f"Name,Key,UsagePlanIds\nx,{'c' * 25},nope\n".encode(),
                 format="csv") == ("NotFoundException", 404)


def test_key_values_are_hashed_and_sealed_in_the_database(server, c, tmp_path):
    key = c.create_api_key(name="secret", value=VALUE, enabled=True)
    generated = c.create_api_key(name="gen")
    db = tmp_path / "data" / "fastgate.db"
    raw = b""
    for path in (db, db.with_name("fastgate.db-wal")):
        if path.exists():
            raw += path.read_bytes()
    rows = sqlite3.connect(str(db)).execute("SELECT doc FROM entities WHERE kind = 'apikey'").fetchall()
    assert len(rows) == 2
    for value in (VALUE, generated["value"]):
        assert value.encode() not in raw
        assert all(value.encode() not in r[0] for r in rows)
    secret = tmp_path / "data" / "apikeys.secret"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600 and secret.stat().st_size == 32
    # and the data plane finds the key from the value alone
    table = KeyTable.from_state(load_state(tmp_path / "data"))
    assert table.lookup(VALUE.encode()).key_id == key["id"]
    # without the sealing key the value cannot come back: the key is answered without it, as
    # on a fleet host whose apikeys.secret is not the one the key was sealed with
    secret.unlink()
    server.admin.control.model._key_sealer = None
    got = c.get_api_key(apiKey=key["id"], includeValue=True)
    assert got["id"] == key["id"] and "value" not in got


# ---------------------------------------------------------------- usage plans

def test_usage_plan_lifecycle(c):
    api = deployed_api(c)
    plan = c.create_usage_plan(
        name="gold", description="d",
        apiStages=[{"apiId": api["id"], "stage": "prod",
                    "throttle": {"/pets/GET": {"burstLimit": 5, "rateLimit": 2.5}}}],
        throttle={"burstLimit": 100, "rateLimit": 50.0},
        quota={"limit": 1000, "offset": 10, "period": "MONTH"}, tags={"a": "b"})
    assert plan["apiStages"] == [{"apiId": api["id"], "stage": "prod",
                                  "throttle": {"/pets/GET": {"burstLimit": 5, "rateLimit": 2.5}}}]
    assert plan["throttle"] == {"burstLimit": 100, "rateLimit": 50.0}
    assert plan["quota"] == {"limit": 1000, "offset": 10, "period": "MONTH"}
    assert c.get_usage_plan(usagePlanId=plan["id"])["name"] == "gold"
    assert [p["id"] for p in c.get_usage_plans()["items"]] == [plan["id"]]
    assert error(c.get_usage_plan, usagePlanId="nope") == ("NotFoundException", 404)
    # a plan with stages cannot be deleted; without them it can
    assert error(c.delete_usage_plan, usagePlanId=plan["id"]) == ("BadRequestException", 400)
    c.update_usage_plan(usagePlanId=plan["id"], patchOperations=[
        {"op": "remove", "path": "/apiStages", "value": f"{api['id']}:prod"}])
    c.delete_usage_plan(usagePlanId=plan["id"])
    assert c.get_usage_plans()["items"] == []


def test_usage_plan_validation(c):
    api = deployed_api(c)
    assert error(c.create_usage_plan, name="x", apiStages=[{"apiId": api["id"], "stage": "nope"}]) == \
        ("BadRequestException", 400)
    # an enumeration the service model declares fails AWS's input validation
    assert error(c.create_usage_plan, name="x", quota={"limit": 10, "period": "YEAR"}) == ("ValidationException", 400)
    assert error(c.create_usage_plan, name="x", quota={"limit": 10, "offset": 11, "period": "DAY"}) == \
        ("BadRequestException", 400)
    assert error(c.create_usage_plan, name="x", throttle={"burstLimit": -1, "rateLimit": 1.0}) == \
        ("BadRequestException", 400)
    assert error(c.create_usage_plan, name="x", apiStages=[
        {"apiId": api["id"], "stage": "prod", "throttle": {"pets": {"burstLimit": 1, "rateLimit": 1.0}}}]) == \
        ("BadRequestException", 400)


def test_update_usage_plan_patch_paths(c):
    api = deployed_api(c)
    c.create_stage(restApiId=api["id"], stageName="beta",
                   deploymentId=c.get_stage(restApiId=api["id"], stageName="prod")["deploymentId"])
    plan = c.create_usage_plan(name="p", apiStages=[{"apiId": api["id"], "stage": "prod"}])
    pid, stage = plan["id"], f"{api['id']}:prod"
    out = c.update_usage_plan(usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "replace", "path": "/throttle/rateLimit", "value": "10"},
        {"op": "replace", "path": "/throttle/burstLimit", "value": "20"},
        {"op": "replace", "path": "/quota/limit", "value": "500"},
        {"op": "replace", "path": "/quota/period", "value": "WEEK"},
        {"op": "add", "path": "/apiStages", "value": f"{api['id']}:beta"},
        # the AWS CLI's forms: a slash-kept resource path, and an escaped one
        {"op": "replace", "path": f"/apiStages/{stage}/throttle//pets/GET/rateLimit", "value": "0.5"},
        {"op": "replace", "path": f"/apiStages/{stage}/throttle/~1pets/GET/burstLimit", "value": "1"},
        {"op": "replace", "path": f"/apiStages/{stage}/throttle///GET/burstLimit", "value": "3"}])
    assert out["name"] == "renamed"
    assert out["throttle"] == {"rateLimit": 10.0, "burstLimit": 20}
    assert out["quota"] == {"limit": 500, "offset": 0, "period": "WEEK"}
    prod = next(s for s in out["apiStages"] if s["stage"] == "prod")
    assert prod["throttle"] == {"/pets/GET": {"rateLimit": 0.5, "burstLimit": 1}, "//GET": {"burstLimit": 3}}
    out = c.update_usage_plan(usagePlanId=pid, patchOperations=[
        {"op": "remove", "path": f"/apiStages/{stage}/throttle//pets/GET"},
        {"op": "remove", "path": "/throttle"},
        {"op": "remove", "path": "/quota"}])
    assert "throttle" not in out and "quota" not in out
    assert next(s for s in out["apiStages"] if s["stage"] == "prod")["throttle"] == {"//GET": {"burstLimit": 3}}
    out = c.update_usage_plan(usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": f"/apiStages/{stage}/throttle",
         "value": '{"/pets/GET":{"rateLimit":1.0,"burstLimit":1}}'}])
    assert next(s for s in out["apiStages"] if s["stage"] == "prod")["throttle"] == \
        {"/pets/GET": {"rateLimit": 1.0, "burstLimit": 1}}
    assert error(c.update_usage_plan, usagePlanId=pid, patchOperations=[
        {"op": "add", "path": "/apiStages", "value": f"{api['id']}:beta"}]) == ("ConflictException", 409)
    assert error(c.update_usage_plan, usagePlanId=pid, patchOperations=[
        {"op": "replace", "path": "/bogus", "value": "1"}]) == ("BadRequestException", 400)
    # a rejected patch changes nothing
    assert c.get_usage_plan(usagePlanId=pid)["name"] == "renamed"


# ---------------------------------------------------------------- usage plan keys

def test_usage_plan_keys(c):
    api = deployed_api(c)
    plan = c.create_usage_plan(name="p", apiStages=[{"apiId": api["id"], "stage": "prod"}])
    key = c.create_api_key(name="alpha", value=VALUE, enabled=True)
    other = c.create_api_key(name="beta")
    got = c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    assert got == {"id": key["id"], "type": "API_KEY", "value": VALUE, "name": "alpha",
                   "ResponseMetadata": got["ResponseMetadata"]}
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=other["id"], keyType="API_KEY")
    assert error(c.create_usage_plan_key, usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY") == \
        ("ConflictException", 409)
    assert error(c.create_usage_plan_key, usagePlanId=plan["id"], keyId="nope", keyType="API_KEY") == \
        ("NotFoundException", 404)
    assert error(c.create_usage_plan_key, usagePlanId=plan["id"], keyId=key["id"], keyType="OTHER") == \
        ("BadRequestException", 400)
    assert c.get_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"])["value"] == VALUE
    assert sorted(k["name"] for k in c.get_usage_plan_keys(usagePlanId=plan["id"])["items"]) == ["alpha", "beta"]
    assert [k["name"] for k in c.get_usage_plan_keys(usagePlanId=plan["id"], nameQuery="be")["items"]] == ["beta"]
    assert [p["id"] for p in c.get_usage_plans(keyId=key["id"])["items"]] == [plan["id"]]
    # AWS: one key cannot be in two plans that share a stage
    plan2 = c.create_usage_plan(name="p2", apiStages=[{"apiId": api["id"], "stage": "prod"}])
    assert error(c.create_usage_plan_key, usagePlanId=plan2["id"], keyId=key["id"], keyType="API_KEY") == \
        ("ConflictException", 409)
    c.delete_usage_plan_key(usagePlanId=plan["id"], keyId=other["id"])
    assert error(c.get_usage_plan_key, usagePlanId=plan["id"], keyId=other["id"]) == ("NotFoundException", 404)
    assert error(c.delete_usage_plan_key, usagePlanId=plan["id"], keyId=other["id"]) == ("NotFoundException", 404)


def test_key_table_follows_the_control_api(c, tmp_path):
    api = deployed_api(c)
    plan = c.create_usage_plan(name="p", apiStages=[{"apiId": api["id"], "stage": "prod",
                                                     "throttle": {"/pets/GET": {"burstLimit": 2, "rateLimit": 1.0}}}],
                               throttle={"burstLimit": 10, "rateLimit": 5.0},
                               quota={"limit": 100, "period": "DAY"})
    key = c.create_api_key(name="k", value=VALUE, enabled=True)
    table = KeyTable.from_state(load_state(tmp_path / "data"))
    assert check_key(table, VALUE, api["id"], "prod")[0] == "INVALID_API_KEY"   # in no plan yet
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    table = KeyTable.from_state(load_state(tmp_path / "data"))
    err, info, p = check_key(table, VALUE, api["id"], "prod")
    assert err is None and info.key_id == key["id"] and p.plan_id == plan["id"]
    assert (p.throttle.rate, p.throttle.burst) == (5.0, 10.0)
    assert (p.quota.limit, p.quota.period) == (100, "DAY")
    assert p.method_limit("/pets/GET")[0].burst == 2.0


# ---------------------------------------------------------------- usage

def test_get_usage_after_recorded_calls(server, c, tmp_path):
    api = deployed_api(c)
    plan = c.create_usage_plan(name="p", apiStages=[{"apiId": api["id"], "stage": "prod"}],
                               quota={"limit": 100, "period": "DAY"})
    a = c.create_api_key(name="a", enabled=True)
    b = c.create_api_key(name="b", enabled=True)
    for k in (a, b):
        c.create_usage_plan_key(usagePlanId=plan["id"], keyId=k["id"], keyType="API_KEY")
    rec = UsageRecorder.create(workers=2, capacity=8)
    slot_a0, slot_a1 = rec.slot(0, a["id"], api["id"], "prod"), rec.slot(1, a["id"], api["id"], "prod")
    for _ in range(7):
        rec.record(slot_a0, 200, False, True, 100, 1000)
    for _ in range(3):
        rec.record(slot_a1, 502, False, True, 10, 10)    # an upstream's 5xx still used the quota
    rec.record(slot_a1, 429, True, False, 0, 30)          # throttled by the plan: no quota used
    # the same key on a stage of another plan counts there, not here
    rec.record(rec.slot(0, a["id"], "otherapi01", "prod"), 200, False, True, 0, 0)
    store = UsageStore.in_dir(tmp_path / "data")
    today = dt.datetime.now(dt.timezone.utc).date()
    yesterday = today - dt.timedelta(days=1)
    store.add(a["id"], yesterday.isoformat(), api["id"], "prod", requests=5, throttled=1,
              status_4xx=1, quota_used=4)
    assert store.flush(rec) == 12
    usage = c.get_usage(usagePlanId=plan["id"], startDate=yesterday.isoformat(), endDate=today.isoformat())
    assert usage["usagePlanId"] == plan["id"] and usage["startDate"] == yesterday.isoformat()
    # per day [used, remaining]; a DAY quota starts afresh every day
    assert usage["items"] == {a["id"]: [[4, 96], [10, 90]], b["id"]: [[0, 100], [0, 100]]}
    only_b = c.get_usage(usagePlanId=plan["id"], keyId=b["id"], startDate=today.isoformat(),
                         endDate=today.isoformat())
    assert only_b["items"] == {b["id"]: [[0, 100]]}
    paged = c.get_usage(usagePlanId=plan["id"], startDate=today.isoformat(), endDate=today.isoformat(), limit=1)
    assert list(paged["items"]) == [min(a["id"], b["id"])] and paged["position"]   # keys by id
    assert error(c.get_usage, usagePlanId=plan["id"], startDate="2024-13-01", endDate="2024-12-01") == \
        ("BadRequestException", 400)
    assert error(c.get_usage, usagePlanId=plan["id"], startDate=today.isoformat(),
                 endDate=yesterday.isoformat()) == ("BadRequestException", 400)
    # UpdateUsage grants quota for the current period
    out = c.update_usage(usagePlanId=plan["id"], keyId=a["id"], patchOperations=[
        {"op": "replace", "path": "/remaining", "value": "500"}])
    assert out["items"] == {a["id"]: [[10, 500]]}
    table = KeyTable.from_state(load_state(tmp_path / "data"))
    info = table.by_id[a["id"]].plans[(api["id"], "prod")]
    assert info.quota.limit == 510 and info.quota_until_s == table.valid_until_s
    assert error(c.update_usage, usagePlanId=plan["id"], keyId=a["id"], patchOperations=[
        {"op": "replace", "path": "/used", "value": "1"}]) == ("BadRequestException", 400)
    store.close()


def test_state_survives_a_restart(tmp_path):
    s = Server(tmp_path / "data")
    c = s.client()
    key = c.create_api_key(name="persist", value=VALUE, enabled=True)
    plan = c.create_usage_plan(name="p", quota={"limit": 5, "period": "DAY"})
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    s.stop()
    s = Server(tmp_path / "data")
    try:
        c = s.client()
        assert c.get_api_key(apiKey=key["id"], includeValue=True)["value"] == VALUE
        assert c.get_usage_plan(usagePlanId=plan["id"])["quota"]["limit"] == 5
        assert [k["id"] for k in c.get_usage_plan_keys(usagePlanId=plan["id"])["items"]] == [key["id"]]
    finally:
        s.stop()


def test_every_operation_is_served(server):
    ops = ["CreateApiKey", "GetApiKey", "GetApiKeys", "UpdateApiKey", "DeleteApiKey", "ImportApiKeys",
           "CreateUsagePlan", "GetUsagePlan", "GetUsagePlans", "UpdateUsagePlan", "DeleteUsagePlan",
           "CreateUsagePlanKey", "GetUsagePlanKey", "GetUsagePlanKeys", "DeleteUsagePlanKey",
           "GetUsage", "UpdateUsage"]
    assert set(ops) <= set(server.admin.control.handlers)


def test_update_usage_as_the_first_usage_call(c):
    """UpdateUsage opens the usage tables itself, outside its own write transaction."""
    plan = c.create_usage_plan(name="p", quota={"limit": 10, "period": "WEEK"})
    key = c.create_api_key(name="k", enabled=True)
    c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
    out = c.update_usage(usagePlanId=plan["id"], keyId=key["id"], patchOperations=[
        {"op": "replace", "path": "/remaining", "value": "25"}])
    assert list(out["items"].values()) == [[[0, 25]]]
    bare = c.create_usage_plan(name="no quota")
    c.create_usage_plan_key(usagePlanId=bare["id"], keyId=key["id"], keyType="API_KEY")
    assert error(c.update_usage, usagePlanId=bare["id"], keyId=key["id"], patchOperations=[
        {"op": "replace", "path": "/remaining", "value": "1"}]) == ("BadRequestException", 400)
