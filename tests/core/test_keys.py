"""fastgate._core.keys: the compiled key table against fastgate.compile.keys.KeyTable, its oracle."""
import hashlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastgate._core import keys as ckeys
from fastgate._core.keys import KeyGate, KeyIndex, KeyVerdict, sha256_digest
from fastgate._core.pipeline import RequestContext
from fastgate._core.throttle import BucketTable, QuotaTable
from fastgate.compile.keys import KeyTable, check_key, digest
from fastgate.compile.shared import UsageRecorder

S = 1_000_000_000
T0 = 10**15                 # ns: a fixed monotonic "now"
DAY0 = 1_750_000_000        # epoch s: a fixed wall clock
VALUES = {"gold": "g" * 20 + "0123456789", "silver": "s" * 24 + "abcdef", "off": "o" * 30,
          "loner": "l" * 32}


def config(method_throttle=None):
    stage = {"api": "api1", "stage": "prod"}
    if method_throttle:
        stage["throttle"] = method_throttle
    return {"api_keys": [{"id": "gold", "value": VALUES["gold"]},
                         {"id": "silver", "value": VALUES["silver"]},
                         {"id": "off", "value": VALUES["off"], "enabled": False},
                         {"id": "loner", "value": VALUES["loner"]}],
            "usage_plans": [
                {"id": "p1", "api_stages": [stage, {"api": "api1", "stage": "beta"}],
                 "throttle": {"rate_limit": 1, "burst_limit": 3}, "quota": {"limit": 5, "period": "DAY"},
                 "keys": ["gold", "off"]},
                {"id": "p2", "api_stages": [{"api": "api2", "stage": "prod"}],
                 "keys": ["gold", "silver"]}]}


def compiled(method_throttle=None, usage=None):
    table = KeyTable.from_state(config(method_throttle), now_s=DAY0)
    return table, KeyIndex(table, BucketTable.create(16, 64), QuotaTable.create(64), usage)


def test_compiled_module_is_loaded():
    assert ckeys.__file__.endswith(".so"), ckeys.__file__


@pytest.fixture(params=["hardware", "portable"])
def sha_impl(request):
    """Both block functions: the SHA extensions (skipped on a CPU without them) and C."""
    hw = ckeys.sha256_use_hardware(request.param == "hardware")
    if request.param == "hardware" and not hw:
        pytest.skip("this CPU has no SHA extensions")
    yield request.param
    ckeys.sha256_use_hardware(True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_sha256_is_fips_180_4(sha_impl, data):
    assert sha256_digest(data) == hashlib.sha256(data).digest()


def test_sha256_block_boundaries(sha_impl):
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 127, 128, 129, 1000):
        data = bytes(range(256)) * 4
        assert sha256_digest(data[:n]) == hashlib.sha256(data[:n]).digest(), n


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([None, b"", b"x" * 40] + [v.encode() for v in VALUES.values()]),
       st.sampled_from([("api1", "prod"), ("api1", "beta"), ("api2", "prod"), ("api3", "prod")]))
def test_identify_agrees_with_the_python_table(value, stage):
    table, index = compiled()
    gate = KeyGate(index, stage[0], stage[1], "/pets/GET")
    assert gate.identify(value) == check_key(table, value, *stage)
    assert index.lookup(value) is table.lookup(value)


def test_unknown_missing_disabled_unplanned_are_invalid():
    _, index = compiled()
    ctx = RequestContext()
    gate = KeyGate(index, "api1", "prod", "/pets/GET")
    for value in (None, b"", b"x" * 40, VALUES["off"], VALUES["silver"], VALUES["loner"]):
        assert gate.run(ctx, value, T0, DAY0) == ("INVALID_API_KEY", None), value
    assert ctx.api_key_id is None and not ctx.metered
    # a stage no plan covers, and a snapshot without keys
    assert KeyGate(index, "api9", "prod", "/x/GET").run(ctx, VALUES["gold"], T0, DAY0)[0] == "INVALID_API_KEY"
    assert KeyGate(None, "api1", "prod", "/x/GET").run(ctx, VALUES["gold"], T0, DAY0)[0] == "INVALID_API_KEY"


def test_plan_throttle_then_quota_with_headers():
    _, index = compiled()
    gate = KeyGate(index, "api1", "prod", "/pets/GET")
    ctx = RequestContext()
    # burst 3 at once; the 4th is throttled with the usage plan's RateLimit headers
    assert [gate.run(ctx, VALUES["gold"], T0, DAY0) for _ in range(3)] == [(None, None)] * 3
    assert ctx.api_key_id == b"gold"
    err, block = gate.run(ctx, VALUES["gold"], T0, DAY0)
    assert err == "THROTTLED"
    assert block == b'RateLimit-Policy: "usage-plan";q=3;w=3\r\nRateLimit: "usage-plan";r=0;t=1\r\nRetry-After: 1\r\n'
    # 2 more refill over 2 s: the quota (5 a day) then says no, with its own headers
    assert gate.run(ctx, VALUES["gold"], T0 + S, DAY0) == (None, None)
    assert gate.run(ctx, VALUES["gold"], T0 + 2 * S, DAY0) == (None, None)
    err, block = gate.run(ctx, VALUES["gold"], T0 + 10 * S, DAY0)
    assert err == "QUOTA_EXCEEDED" and block.startswith(b'RateLimit-Policy: "quota";q=5;w=86400\r\n')
    assert b'RateLimit: "quota";r=0;t=' in block
    # the beta stage is the same plan: the same (plan, key) bucket and quota
    assert KeyGate(index, "api1", "beta", "/x/GET").run(ctx, VALUES["gold"], T0 + 10 * S, DAY0)[0] == "QUOTA_EXCEEDED"
    # another plan of the key (no limits) on another API is unaffected
    assert KeyGate(index, "api2", "prod", "/x/GET").run(ctx, VALUES["gold"], T0, DAY0) == (None, None)


def test_method_override_has_its_own_bucket():
    _, index = compiled({"/pets/GET": {"rate_limit": 1, "burst_limit": 1}})
    ctx = RequestContext()
    pets = KeyGate(index, "api1", "prod", "/pets/GET")
    other = KeyGate(index, "api1", "prod", "/toys/GET")
    assert pets.run(ctx, VALUES["gold"], T0, DAY0) == (None, None)
    err, block = pets.run(ctx, VALUES["gold"], T0, DAY0)
    assert err == "THROTTLED" and b'"usage-plan";q=1;' in block
    # the plan's own bucket (burst 3) is untouched by the method's
    assert [other.run(ctx, VALUES["gold"], T0, DAY0)[0] for _ in range(3)] == [None] * 3


def test_buckets_are_the_python_paths_buckets():
    """The compiled take and fastgate.compile.keys' PlanInfo keys name the same shared buckets,
    so a reload (or the Redis fallback's local twin) sees one count."""
    table, index = compiled()
    plan = table.by_id["gold"].plans[("api1", "prod")]
    for _ in range(3):
        assert index.buckets.take_key(plan.bucket_key, plan.throttle, now_ns=T0).allowed
    assert KeyGate(index, "api1", "prod", "/pets/GET").run(RequestContext(), VALUES["gold"], T0, DAY0)[0] == "THROTTLED"


def test_usage_is_metered_per_key_and_stage_in_the_workers_slab():
    rec = UsageRecorder.create(workers=2, capacity=4)
    asked = []

    def slot_of(key_id, api_id, stage):
        asked.append((key_id, api_id, stage))
        return rec.slot(1, key_id, api_id, stage)
    _, index = compiled(usage=slot_of)
    ctx = RequestContext()
    gate = KeyGate(index, "api2", "prod", "/x/GET")
    assert gate.run(ctx, VALUES["silver"], T0, DAY0) == (None, None)
    assert ctx.metered and ctx.quota_used and ctx.usage_slot == rec.slot(1, "silver", "api2", "prod")
    rec.record(ctx.usage_slot, 200, False, ctx.quota_used, 100, 2000)
    ctx2 = RequestContext()
    gate.run(ctx2, VALUES["silver"], T0, DAY0)
    assert ctx2.usage_slot == ctx.usage_slot and asked == [("silver", "api2", "prod")]  # looked up once
    assert [w for w, *_ in rec.entries()] == [1]
    (counts,) = rec.totals().values()
    assert counts[0] == 1 and counts[-1] == 1     # one request, one used against the quota
    # an unknown key is not metered at all
    ctx3 = RequestContext()
    assert gate.run(ctx3, "nope", T0, DAY0)[0] == "INVALID_API_KEY" and not ctx3.metered


def test_digests_only_no_value_in_the_index():
    table, index = compiled()
    assert len(index) == 4
    for v in VALUES.values():
        assert v not in repr(index) and v not in repr(KeyGate(index, "api1", "prod", "/x/GET"))
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(index)


def test_verdicts_are_an_enum():
    assert (KeyVerdict.KEY_ALLOW, KeyVerdict.KEY_INVALID, KeyVerdict.KEY_THROTTLED, KeyVerdict.KEY_QUOTA) == (0, 1, 2, 3)


def test_many_keys_all_found():
    data = {"api_keys": [{"id": f"k{i}", "value": f"value-{i:030d}"} for i in range(500)],
            "usage_plans": [{"id": "p", "api_stages": [{"api": "a", "stage": "s"}],
                             "keys": [f"k{i}" for i in range(500)]}]}
    table = KeyTable.from_state(data)
    index = KeyIndex(table, BucketTable.create(16, 64), QuotaTable.create(64))
    gate = KeyGate(index, "a", "s", "/GET")
    for i in range(500):
        assert gate.identify(f"value-{i:030d}")[1].key_id == f"k{i}"
    assert gate.identify(f"value-{500:030d}") == ("INVALID_API_KEY", None, None)
    assert digest(f"value-{1:030d}") == sha256_digest(f"value-{1:030d}".encode())
