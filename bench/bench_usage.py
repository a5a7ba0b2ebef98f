"""Per-request cost of metering an API key's usage (UsageCounters.record, the LOG phase's C call) against the naive Python version it replaced.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_usage.py
What it guards: respond.pyx Responder.log's `PERF:` note. The naive baseline is the
earlier UsageRecorder.record: a Python method doing memoryview increments (~0.8 µs
with the call). record() from C should stay in the nanoseconds.
"""
import pytest

from fastgate.compile.shared import BYTES_IN, BYTES_OUT, QUOTA_USED, REQUESTS, STATUS_4XX, STATUS_5XX, \
    THROTTLED, UsageRecorder

RECORDS_PER_ROUND = 10_000


def naive_record(q, slot, status, throttled, quota_used, bytes_in, bytes_out):
    """The Python version: what a worker paid per request before the C counters."""
    q[slot + REQUESTS] += 1
    if status >= 500:
        q[slot + STATUS_5XX] += 1
    elif status >= 400:
        q[slot + STATUS_4XX] += 1
        if throttled:
            q[slot + THROTTLED] += 1
    if quota_used:
        q[slot + QUOTA_USED] += 1
    q[slot + BYTES_IN] += bytes_in
    q[slot + BYTES_OUT] += bytes_out


@pytest.fixture
def recorder():
    rec = UsageRecorder.create(workers=1, capacity=16)
    return rec, rec.slot(0, "benchkey01", "a1b2c3d4e5", "prod")


def test_record_from_c(benchmark, recorder):
    """record() as the protocol calls it: C to C, RECORDS_PER_ROUND per round."""
    rec, slot = recorder
    benchmark(rec.counters.record_many, slot, RECORDS_PER_ROUND)
    assert rec.totals()[("benchkey01", "a1b2c3d4e5", "prod")][0] >= RECORDS_PER_ROUND


def test_record_naive_python(benchmark, recorder):
    """The baseline: the memoryview version, called from Python, RECORDS_PER_ROUND per round."""
    rec, slot = recorder
    q = rec._q

    def run():
        for _ in range(RECORDS_PER_ROUND):
            naive_record(q, slot, 200, False, True, 0, 5)
    benchmark(run)
    assert rec.totals()[("benchkey01", "a1b2c3d4e5", "prod")][0] >= RECORDS_PER_ROUND
