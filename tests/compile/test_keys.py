"""fastgate/compile/keys.py: the data plane's key table, the hashing and the sealing of key values."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from fastgate.compile import keys
from fastgate._core.throttle import QuotaSettings, ThrottleSettings
from fastgate.compile.keys import INVALID_API_KEY, KeySealer, KeyTable, check_key, digest
from fastgate.control.state import State

VALUE = "v" * 20 + "0123456789abcdefghij"


def state_with(*, enabled=True, stage=("api1", "prod"), method_throttle=None, extension=None) -> State:
    st = State()
    st.set("apikey", "", "key1", {"id": "key1", "name": "partner", "enabled": enabled,
                                  "customerId": "acme", "_hash": digest(VALUE).hex(), "_sealed": "x"})
    api_stage = {"apiId": stage[0], "stage": stage[1]}
    if method_throttle:
        api_stage["throttle"] = method_throttle
    st.set("usageplan", "", "plan1", {"id": "plan1", "name": "gold", "apiStages": [api_stage],
                                      "throttle": {"rateLimit": 10.0, "burstLimit": 20},
                                      "quota": {"limit": 1000, "offset": 100, "period": "MONTH"},
                                      "_createdDate": 1_700_000_000})
    member = {"id": "key1", "type": "API_KEY"}
    if extension:
        member["_extension"] = extension
    st.set("usageplankey", "plan1", "key1", member)
    return st


def test_unknown_missing_disabled_not_in_plan_in_plan():
    table = KeyTable.from_state(state_with())
    assert check_key(table, None, "api1", "prod") == (INVALID_API_KEY, None, None)
    assert check_key(table, b"", "api1", "prod") == (INVALID_API_KEY, None, None)
    assert check_key(table, b"w" * 40, "api1", "prod") == (INVALID_API_KEY, None, None)
    err, key, plan = check_key(table, VALUE.encode(), "api1", "beta")     # no plan for this stage
    assert err == INVALID_API_KEY and key.key_id == "key1" and plan is None
    err, key, plan = check_key(table, VALUE.encode(), "api1", "prod")
    assert err is None and key.customer_id == "acme" and plan.plan_id == "plan1"
    disabled = KeyTable.from_state(state_with(enabled=False))
    err, key, plan = check_key(disabled, VALUE, "api1", "prod")
    assert err == INVALID_API_KEY and key.enabled is False and plan is None


def test_lookup_compares_digests_in_constant_time(monkeypatch):
    table = KeyTable.from_state(state_with())
    seen = []

    def spy(a, b):
        seen.append((a, b))
        return a == b
    monkeypatch.setattr(keys.hmac, "compare_digest", spy)
    assert table.lookup(VALUE).key_id == "key1"
    assert seen == [(digest(VALUE), digest(VALUE))]
    # the table keeps digests only: no clear value anywhere in it
    assert VALUE not in repr(table) and VALUE.encode() not in repr(table).encode()


def test_plan_policies_are_ready_settings():
    table = KeyTable.from_state(state_with(method_throttle={"/pets/GET": {"rateLimit": 1.0, "burstLimit": 2}}))
    plan = table.by_id["key1"].plans[("api1", "prod")]
    assert isinstance(plan.throttle, ThrottleSettings) and (plan.throttle.rate, plan.throttle.burst) == (10.0, 20.0)
    assert isinstance(plan.quota, QuotaSettings)
    assert (plan.quota.limit, plan.quota.offset, plan.quota.period, plan.quota.start_s) == \
        (1000, 100, "MONTH", 1_700_000_000)
    settings, bucket = plan.method_limit("/pets/GET")
    assert (settings.rate, settings.burst) == (1.0, 2.0)
    assert plan.method_limit("/pets/POST") is None
    ids = {plan.bucket_key, bucket, plan.quota_key}
    assert len(ids) == 3 and 0 not in ids and all(0 < i < 2 ** 64 for i in ids)
    # stable across builds (and so across workers and reloads)
    again = KeyTable.from_state(state_with(method_throttle={"/pets/GET": {"rateLimit": 1.0, "burstLimit": 2}}))
    assert again.by_id["key1"].plans[("api1", "prod")].bucket_key == plan.bucket_key


def test_update_usage_extension_applies_until_the_period_ends():
    ext = {"limit": 5000, "period_start_s": 1_700_000_000, "until_s": 1_800_000_000}
    table = KeyTable.from_state(state_with(extension=ext), now_s=1_750_000_000)
    plan = table.by_id["key1"].plans[("api1", "prod")]
    assert plan.quota.limit == 5000 and plan.quota.period == "MONTH"
    assert table.valid_until_s == 1_800_000_000 == plan.quota_until_s
    after = KeyTable.from_state(state_with(extension=ext), now_s=1_800_000_000)
    assert after.by_id["key1"].plans[("api1", "prod")].quota.limit == 1000
    assert after.valid_until_s is None


def test_config_data_in_the_same_shapes():
    data = {"api_keys": [{"id": "cfgkey", "name": "from-yaml", "value": "y" * 32, "customer_id": "c1"},
                         {"name": "hashed-only", "value_sha256": digest("z" * 32).hex(), "enabled": False}],
            "usage_plans": [{"id": "basic", "name": "basic",
                             "api_stages": [{"api": "pets", "stage": "prod",
                                             "throttle": {"/pets/GET": {"rate_limit": 1, "burst_limit": 1}}}],
                             "throttle": {"rate_limit": 5, "burst_limit": 10},
                             "quota": {"limit": 100, "period": "DAY"},
                             "keys": ["cfgkey", "hashed-only"]}]}
    table = KeyTable.from_state(data, state_with())
    err, key, plan = check_key(table, "y" * 32, "pets", "prod")
    assert err is None and key.key_id == "cfgkey" and key.customer_id == "c1" and key.enabled
    assert (plan.throttle.rate, plan.quota.limit) == (5.0, 100)
    assert plan.method_limit("/pets/GET")[0].burst == 1.0
    assert check_key(table, "z" * 32, "pets", "prod")[0] == INVALID_API_KEY   # disabled
    assert check_key(table, VALUE, "api1", "prod")[0] is None                  # the State's key too
    with pytest.raises(ValueError, match="defined twice"):
        KeyTable.from_state({"api_keys": [{"id": "key1", "value": "q" * 20}]}, state_with())
    with pytest.raises(ValueError, match="value"):
        KeyTable.from_state({"api_keys": [{"id": "novalue"}]})


def test_values_generated_and_checked():
    v = keys.generate_value()
    assert len(v) == 40 and v.isalnum() and keys.check_value(v) is None
    assert "at least 20" in keys.check_value("a" * 19)
    assert keys.check_value("a" * 129) is not None
    assert keys.check_value("a" * 19 + " ") is not None        # it travels in a header


def test_sealer_round_trip_file_mode_and_binding(tmp_path):
    sealer = KeySealer(tmp_path)
    sealed = sealer.seal("key1", VALUE)
    assert VALUE not in sealed
    assert KeySealer(tmp_path).open("key1", sealed) == VALUE       # a new process, the same file
    path = tmp_path / KeySealer.FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    from cryptography.exceptions import InvalidTag
    with pytest.raises(InvalidTag):
        sealer.open("key2", sealed)                                # bound to its key id
    other = tmp_path / "other"
    with pytest.raises(InvalidTag):
        KeySealer(other).open("key1", sealed)                      # another data dir's secret


def test_sealer_first_use_race_ends_with_one_secret(tmp_path):
    results = []
    sealers = [KeySealer(tmp_path) for _ in range(8)]
    threads = [threading.Thread(target=lambda s=s: results.append(s._key())) for s in sealers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 32
    assert [p.name for p in tmp_path.iterdir()] == [KeySealer.FILE]   # no temporary file left


def test_no_key_value_reaches_a_log_line():
    """Every log call in the key and usage code formats ids, never values."""
    import re
    from pathlib import Path
    root = Path(keys.__file__).parents[1]
    for name in ("compile/keys.py", "control/usage.py", "control/model/keys.py",
                 "control/model/usage_plans.py", "control/api.py"):
        for line in (root / name).read_text().splitlines():
            if re.search(r"\b(log|print)\(", line):
                assert not re.search(r"value|_sealed|row\[.key.\]", line), f"{name}: {line.strip()}"
