"""Cost of the API key check of one request -- SHA-256 of the presented key, lookup,
constant-time compare, the usage plan of the stage, its bucket and quota takes, the usage
counters -- compiled (fastgate._core.keys) against the Python path it replaced.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider -o python_files='bench_*.py' \
         bench/bench_keys.py --benchmark-only
Each round checks CHECKS_PER_ROUND requests: per-check cost = reported time / CHECKS_PER_ROUND.
The compiled loop runs in C (KeyGate.check_n), as the protocol calls KeyGate.check; the
baseline is fastgate.phases.access.KeyRequirement.check as it was before keys.pyx (commit 8fb8078):
KeyTable.lookup (hashlib + hmac.compare_digest), check_key, BucketTable.take_key,
QuotaTable.take and UsageRecorder.record through their Python wrappers.
"""
import hashlib

from fastgate._core.keys import KeyGate, KeyIndex, sha256_digest
from fastgate._core.pipeline import RequestContext
from fastgate._core.throttle import BucketTable, QuotaTable
from fastgate._core.usage import UsageCounters
from fastgate.compile.keys import KeyTable, check_key
from fastgate.compile.shared import UsageRecorder

CHECKS_PER_ROUND = 10_000
VALUE = b"BenchKeyValue0123456789abcdefXYZ"      # bench/wrk_compare.py's keyed scenario key
KEYS = 1000                                      # keys in the table (the others are decoys)


def setup():
    """A table of KEYS keys in one plan with a throttle and a quota far above the rate, so
    every check takes from both and passes (the keyed wrk scenario's shape)."""
    data = {"api_keys": [{"id": "benchkey", "value": VALUE.decode()}] +
                        [{"id": f"k{i}", "value": f"decoy-value-{i:024d}"} for i in range(KEYS - 1)],
            "usage_plans": [{"id": "plan", "api_stages": [{"api": "bench", "stage": "$default"}],
                             "throttle": {"rate_limit": 1e9, "burst_limit": 1e9},
                             "quota": {"limit": 10**12, "period": "MONTH"},
                             "keys": ["benchkey"] + [f"k{i}" for i in range(KEYS - 1)]}]}
    table = KeyTable.from_state(data)
    recorder = UsageRecorder.create(workers=1, capacity=KEYS)
    return table, BucketTable.create(16, 4096), QuotaTable.create(4096), recorder


def python_check(table, value, buckets, quotas, recorder, slots, method_key="/GET"):
    """The per-request key path before keys.pyx, minus the conn/ctx plumbing."""
    error, key, plan = check_key(table, value, "bench", "$default")
    if error is not None:
        return False
    method = plan.method_limit(method_key)
    settings, bucket = method if method is not None else (plan.throttle, plan.bucket_key)
    if settings is not None and not buckets.take_key(bucket, settings).allowed:
        return False
    if plan.quota is not None and not quotas.take(plan.quota_key, plan.quota).allowed:
        return False
    slot = slots.get(key.key_id)
    if slot is None:
        slot = slots[key.key_id] = recorder.slot(0, key.key_id, "bench", "$default")
    recorder.record(slot, 200, False, True, 0, 5)
    return True


def python_checks(n, *args):
    passed = 0
    for _ in range(n):
        passed += python_check(*args)
    return passed


def test_key_check_python_baseline(benchmark):
    table, buckets, quotas, recorder = setup()
    passed = benchmark(python_checks, CHECKS_PER_ROUND, table, VALUE, buckets, quotas, recorder, {})
    assert passed == CHECKS_PER_ROUND


def test_key_check_compiled(benchmark):
    table, buckets, quotas, recorder = setup()
    index = KeyIndex(table, buckets, quotas,
                     lambda key_id, api_id, stage: recorder.slot(0, key_id, api_id, stage))
    gate = KeyGate(index, "bench", "$default", "/GET")
    passed = benchmark(gate.check_n, RequestContext(), VALUE, CHECKS_PER_ROUND, recorder.counters, 0, 5)
    assert passed == CHECKS_PER_ROUND
    # metered in the shared counters
    assert recorder.totals()[("benchkey", "bench", "$default")][0] >= passed


def test_unknown_key_compiled(benchmark):
    """The 403 path under a flood of wrong keys: hash, one probe, no take."""
    table, buckets, quotas, recorder = setup()
    index = KeyIndex(table, buckets, quotas, UsageCounters(recorder, 0))
    gate = KeyGate(index, "bench", "$default", "/GET")
    assert benchmark(gate.check_n, RequestContext(), b"x" * 40, CHECKS_PER_ROUND) == 0


def sha_many(f, n):
    for _ in range(n):
        f(VALUE)


def test_sha256_hashlib(benchmark):
    benchmark(sha_many, lambda v: hashlib.sha256(v).digest(), CHECKS_PER_ROUND)


def test_sha256_compiled(benchmark):
    """Through its Python wrapper: an upper bound of what the C hash costs in check()."""
    benchmark(sha_many, sha256_digest, CHECKS_PER_ROUND)
