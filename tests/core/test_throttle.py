"""fastgate._core.throttle: GCRA buckets and quotas in shared memory, one limit per host."""
import calendar
import datetime
import os
import time
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from fastgate._core import throttle
from fastgate._core.throttle import (BucketTable, QuotaSettings, QuotaTable, Take, ThrottleSettings,
                                     header_block, namespace, quota_period)

S = 1_000_000_000          # ns per s
T0 = 10**15                # ns: an arbitrary monotonic "now" for the fake-clock tests


def test_compiled_module_is_loaded():
    assert throttle.__file__.endswith(".so"), throttle.__file__


def table(static=16, dynamic=64, probe=8):
    return BucketTable.create(static, dynamic, probe)


# --- the oracle: an exact token bucket (tokens + last refill) in rationals ---

class OracleBucket:
    """tokens refill at one per T ns up to burst; a take needs one whole token.
    T is the settings' emission interval, ns (1e9/rate rounded as the table does)."""

    def __init__(self, rate, burst):
        self.T = max(int(1e9 / rate + 0.5), 1)
        self.burst = burst
        self.tokens = Fraction(burst)
        self.last = None

    def take(self, now):
        if self.last is not None and now > self.last:
            self.tokens = min(Fraction(self.burst), self.tokens + Fraction(now - self.last, self.T))
        if self.last is None or now > self.last:
            self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens)
        return False, 0


@settings(max_examples=200, deadline=None)
@given(rate=st.sampled_from([0.5, 1, 3, 7, 10, 200, 1000, 12345]),
       burst=st.integers(1, 60),
       gaps=st.lists(st.integers(0, 3 * S), min_size=1, max_size=200))
def test_static_bucket_matches_the_token_bucket_oracle(rate, burst, gaps):
    t, s = table(), ThrottleSettings(rate, burst)
    slot = t.static_slot("route")
    oracle = OracleBucket(rate, burst)
    now = T0
    for gap in gaps:
        now += gap
        got = t.take(slot, s, now_ns=now)
        assert (got.allowed, got.remaining) == oracle.take(now), (now - T0, gap)


def test_fresh_bucket_allows_burst_then_one_per_interval():
    t, s = table(), ThrottleSettings(10, 5)        # T = 100 ms
    slot = t.static_slot("stage:prod")
    results = [t.take(slot, s, now_ns=T0) for _ in range(7)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 2
    assert [r.remaining for r in results[:5]] == [4, 3, 2, 1, 0]
    assert results[0] == Take(True, 5, 4, S // 10, 0, 1)
    assert results[5] == Take(False, 5, 0, S // 2, S // 10, 1)
    assert not t.take(slot, s, now_ns=T0 + S // 10 - 1).allowed
    assert t.take(slot, s, now_ns=T0 + S // 10).allowed
    # a full second later the bucket is full again, and no fuller
    assert t.take_n(slot, s, 100, now_ns=T0 + 10 * S) == 5


def test_exact_count_over_simulated_overload():
    # B + R*T exactly with a fake clock: a take every ms for 10 s, R=200/s, B=50
    t, s = table(), ThrottleSettings(200, 50)
    slot = t.static_slot("r")
    passed = sum(t.take(slot, s, now_ns=T0 + i * S // 1000).allowed for i in range(10_001))
    assert passed == 50 + 200 * 10


def test_burst_zero_rejects_everything():
    t, s = table(), ThrottleSettings(1000, 0)
    slot = t.static_slot("closed")
    r = t.take(slot, s, now_ns=T0)
    assert r == Take(False, 0, 0, -1, -1, 0)
    assert t.take_n(slot, s, 1000, now_ns=T0 + 100 * S) == 0
    assert t.take_key(b"1.2.3.4", s, now_ns=T0).allowed is False
    assert t.stats()["hashed_used"] == 0     # nothing stored for a closed limit
    assert header_block("closed", r) == b'RateLimit-Policy: "closed";q=0\r\nRateLimit: "closed";r=0\r\n'


def test_rate_zero_allows_burst_then_nothing_ever():
    t, s = table(), ThrottleSettings(0, 3)
    slot = t.static_slot("trial")
    assert [t.take(slot, s, now_ns=T0 + i * S).remaining for i in range(3)] == [2, 1, 0]
    later = t.take(slot, s, now_ns=T0 + 10**6 * S)
    assert later == Take(False, 3, 0, -1, -1, 0)
    assert t.take_n(slot, s, 10, key=b"k", now_ns=T0) == 3
    assert t.take_n(slot, s, 10, key=b"k", now_ns=T0 + 10**6 * S) == 0


def test_clock_going_backwards_grants_nothing_and_blocks_no_longer_than_empty():
    t, s = table(), ThrottleSettings(10, 5)
    slot = t.static_slot("r")
    assert t.take_n(slot, s, 10, now_ns=T0) == 5
    back = T0 - 3600 * S                                   # an hour back (> CLOCK_STEP_MAX)
    r = t.take(slot, s, now_ns=back)
    assert not r.allowed
    assert 0 < r.retry_after_ns <= S // 10                  # an empty bucket's wait, not an hour
    assert t.take_n(slot, s, 10, now_ns=back) == 0
    # the clock runs on from there at the rate, never faster
    assert t.take_n(slot, s, 10, now_ns=back + S // 10) == 1
    assert t.take_n(slot, s, 10, now_ns=back + S // 10 + S // 2) == 5


def test_a_stale_clock_read_from_another_worker_grants_nothing():
    # A worker that read the clock 1 s ago (preempted before its CAS) sees a TAT
    # beyond a full debt. It must reject and leave the state alone: clamping it
    # would give the other workers that second's worth of tokens again.
    t, s = table(), ThrottleSettings(10, 5)
    slot = t.static_slot("r")
    now = T0 + 10 * S
    assert t.take_n(slot, s, 10, now_ns=now) == 5          # TAT = now + 500 ms
    stale = t.take(slot, s, now_ns=now - S)
    assert not stale.allowed and stale.retry_after_ns == S + S // 10
    assert t.take_n(slot, s, 10, now_ns=now) == 0           # nothing given back
    assert t.take_n(slot, s, 10, now_ns=now + S // 10) == 1


def test_huge_gaps_refill_to_burst_only():
    t, s = table(), ThrottleSettings(1000, 20)
    slot = t.static_slot("r")
    assert t.take_n(slot, s, 100, now_ns=T0) == 20
    for gap in (10**9 * S, 2**62 - T0 - 1):               # 31 years; the edge of int64 time
        assert t.take_n(slot, s, 100, now_ns=T0 + gap) == 20


def test_rate_changes_carry_the_debt_in_time():
    t = table()
    slot = t.static_slot("r")
    assert t.take_n(slot, ThrottleSettings(10, 5), 10, now_ns=T0) == 5     # debt: 500 ms
    # a lower rate (reload): the 500 ms of debt stays; tau is now 5 s, so 4.5 s of room
    slow = ThrottleSettings(1, 5)
    assert t.take_n(slot, slow, 10, now_ns=T0) == 4
    # a higher rate with a smaller bucket: the debt (TAT at T0 + 4.5 s) is kept in time
    fast = ThrottleSettings(100, 2)                    # tau 20 ms
    r = t.take(slot, fast, now_ns=T0)
    assert not r.allowed and r.retry_after_ns == 4_500_000_000 + S // 100 - S // 50
    assert t.take_n(slot, fast, 10, now_ns=T0 + r.retry_after_ns - 1) == 0
    assert t.take_n(slot, fast, 10, now_ns=T0 + r.retry_after_ns) == 1
    # a debt of more than 60 s past the new bucket is clamped to an empty bucket
    t.take_n(slot, ThrottleSettings(1, 1000), 1000, now_ns=T0)          # TAT ~ T0 + 1000 s
    r = t.take(slot, fast, now_ns=T0)
    assert not r.allowed and r.retry_after_ns == S // 100


def test_settings_validation():
    for rate, burst in ((-1, 5), (5, -1), (float("nan"), 1), (1, float("inf")), (1e-9, 10)):
        with pytest.raises(ValueError):
            ThrottleSettings(rate, burst)
    s = ThrottleSettings(3, 10.7)
    assert (s.limit, s.window_s) == (10, 4)
    with pytest.raises(ValueError):
        QuotaSettings(10, "YEAR")
    with pytest.raises(ValueError):
        QuotaSettings(-1, "DAY")


# --- static slots ---

def test_static_slots_are_idempotent_and_bounded():
    t = table(static=3)
    a, b = t.static_slot("stage:prod"), t.static_slot("route:GET /pets")
    assert a != b
    assert t.static_slot("stage:prod") == a
    t.static_slot("gateway")
    with pytest.raises(ValueError):
        t.static_slot("one too many")
    # an unconfigured slot (-1) and out-of-range slots take nothing and allow
    s = ThrottleSettings(1, 1)
    assert t.take(-1, s, now_ns=T0).allowed and t.take(99, s, now_ns=T0).allowed


def test_cannot_construct_or_pickle():
    import pickle
    with pytest.raises(TypeError):
        BucketTable()
    with pytest.raises(TypeError):
        pickle.dumps(table())
    s = pickle.loads(pickle.dumps(ThrottleSettings(5, 2)))
    assert (s.rate, s.burst) == (5, 2)


# --- dynamic keys ---

def test_keys_and_namespaces_have_their_own_buckets():
    t, s = table(), ThrottleSettings(1, 2)
    assert t.take_n(0, s, 5, key=b"10.0.0.1", now_ns=T0) == 2
    assert t.take_n(0, s, 5, key=b"10.0.0.2", now_ns=T0) == 2
    ip_a, ip_b = namespace("route-a:ip"), namespace("route-b:ip")
    assert ip_a != ip_b
    assert t.take_key(b"10.0.0.1", s, now_ns=T0, namespace=ip_a).allowed
    assert t.take_key(b"10.0.0.1", s, now_ns=T0, namespace=ip_b).allowed
    assert t.key(b"x", ip_a) == t.key(b"x", ip_a) != t.key(b"x", ip_b)
    assert t.key(b"", 0) != 0


def test_full_buckets_are_reused_without_loss():
    t, s = table(dynamic=8, probe=8), ThrottleSettings(10, 2)
    for i in range(8):
        assert t.take_n(0, s, 1, key=b"old%d" % i, now_ns=T0) == 1
    # a second later every old bucket is full again: new keys take their slots
    for i in range(8):
        assert t.take_n(0, s, 5, key=b"new%d" % i, now_ns=T0 + S) == 2
    stats = t.stats()
    assert stats["hashed_used"] == 8
    assert stats["idle_evictions"] == 8 and stats["forced_evictions"] == 0
    # an evicted key comes back to a fresh, i.e. full, bucket: what it had anyway
    assert t.take_n(0, s, 5, key=b"old0", now_ns=T0 + S) == 2


def test_a_flood_of_keys_evicts_the_bucket_closest_to_full():
    t = table(dynamic=4, probe=4)
    s = ThrottleSettings(1, 10)                   # a drained bucket needs 10 s to fill
    for i in range(4):                            # four keys in debt, drained at 1 s steps
        assert t.take_n(0, s, 10, key=b"k%d" % i, now_ns=T0 + i * S) == 10
    assert t.take_n(0, s, 1, key=b"new", now_ns=T0 + 5 * S) == 1
    st_ = t.stats()
    assert st_["forced_evictions"] == 1 and st_["hashed_used"] == 4
    # k0 (drained first, so closest to full) lost its slot and restarts full; k3 kept its debt
    assert t.take_n(0, s, 20, key=b"k3", now_ns=T0 + 5 * S) == 2
    assert t.take_n(0, s, 20, key=b"k0", now_ns=T0 + 5 * S) == 10


def test_rate_zero_buckets_are_evicted_last():
    t = table(dynamic=2, probe=2)
    trial, normal = ThrottleSettings(0, 1), ThrottleSettings(1, 1)
    t.take_key(b"trial", trial, now_ns=T0)
    t.take_key(b"busy", normal, now_ns=T0)
    t.take_key(b"other", normal, now_ns=T0)       # must evict "busy", not "trial"
    assert not t.take_key(b"trial", trial, now_ns=T0 + 10**6 * S).allowed


def test_per_client_ip_memory_is_bounded():
    t, s = table(dynamic=1024), ThrottleSettings(5, 5)
    for i in range(50_000):
        t.take_key(b"198.51.%d.%d" % (i // 256, i % 256), s, now_ns=T0 + i * 1000)
    stats = t.stats()
    assert stats["hashed_used"] <= 1024
    assert stats["hashed_slots"] == 1024


# --- quotas ---

def utc(*args):
    return calendar.timegm(datetime.datetime(*args).timetuple())


@settings(max_examples=300, deadline=None)
@given(st.integers(0, utc(2200, 1, 1)))
def test_quota_periods_match_the_calendar(now_s):
    d = datetime.datetime.fromtimestamp(now_s, datetime.timezone.utc)
    day0 = d.replace(hour=0, minute=0, second=0)
    sunday = day0 - datetime.timedelta(days=(d.weekday() + 1) % 7)
    month0 = day0.replace(day=1)
    month1 = (month0 + datetime.timedelta(days=32)).replace(day=1)
    for period, start, end in (("DAY", day0, day0 + datetime.timedelta(days=1)),
                               ("WEEK", sunday, sunday + datetime.timedelta(days=7)),
                               ("MONTH", month0, month1)):
        _, s, e = quota_period(period, now_s)
        assert (s, e) == (int(start.timestamp()), int(end.timestamp())), period
    assert quota_period("MONTH", now_s)[0] == (d.year - 1970) * 12 + d.month - 1


def test_quota_counts_per_period_and_resets_at_utc_boundaries():
    q = QuotaTable.create(64)
    plan = QuotaSettings(3, "DAY", start_s=utc(2024, 1, 1))
    now = utc(2024, 3, 10, 23, 59, 58)
    takes = [q.take(b"key1", plan, now_s=now) for _ in range(5)]
    assert [r.allowed for r in takes] == [True, True, True, False, False]
    assert [r.remaining for r in takes] == [2, 1, 0, 0, 0]
    assert takes[3].reset_ns == takes[3].retry_after_ns == 2 * S
    assert takes[0].window_s == 86400
    assert q.take(b"key2", plan, now_s=now).allowed          # another key, another counter
    nxt = q.take(b"key1", plan, now_s=utc(2024, 3, 11))      # midnight UTC: a new day
    assert nxt.allowed and nxt.remaining == 2


def test_quota_week_starts_sunday_and_month_on_the_first():
    q = QuotaTable.create(64)
    week = QuotaSettings(1, "WEEK", start_s=0)
    assert q.take(b"w", week, now_s=utc(2024, 3, 16, 23, 0)).allowed      # a Saturday
    assert not q.take(b"w", week, now_s=utc(2024, 3, 16, 23, 59)).allowed
    assert q.take(b"w", week, now_s=utc(2024, 3, 17, 0, 0)).allowed       # Sunday
    month = QuotaSettings(1, "MONTH", start_s=0)
    assert q.take(b"m", month, now_s=utc(2024, 2, 29, 12)).allowed
    r = q.take(b"m", month, now_s=utc(2024, 2, 29, 12))
    assert not r.allowed and r.window_s == 29 * 86400 and r.reset_ns == 12 * 3600 * S
    assert q.take(b"m", month, now_s=utc(2024, 3, 1)).allowed


def test_quota_offset_applies_to_the_initial_period_only():
    q = QuotaTable.create(64)
    plan = QuotaSettings(10, "MONTH", offset=7, start_s=utc(2024, 5, 20))
    may = utc(2024, 5, 25)
    assert sum(q.take(b"k", plan, now_s=may).allowed for _ in range(20)) == 3
    assert q.take(b"k", plan, now_s=may).limit == 3
    june = utc(2024, 6, 2)
    assert sum(q.take(b"k", plan, now_s=june).allowed for _ in range(20)) == 10
    assert not q.take(b"z", QuotaSettings(5, "DAY", offset=9, start_s=may), now_s=may).allowed


def test_stale_quotas_are_reused_live_ones_never():
    q = QuotaTable.create(4, probe=4)
    day = QuotaSettings(100, "DAY", start_s=0)
    d1, d2 = utc(2024, 1, 1, 12), utc(2024, 1, 2, 12)
    for i in range(4):
        q.take(b"k%d" % i, day, now_s=d1)
    # table full of live quotas: the new key is allowed (fail open) and counted, not stored
    r = q.take(b"new", day, now_s=d1)
    assert r.allowed and q.stats()["no_slot"] == 1
    assert q.take(b"k0", day, now_s=d1).remaining == 98      # k0's count survived
    # the next day every counter is stale: new keys reuse the slots
    for i in range(4):
        assert q.take(b"n%d" % i, day, now_s=d2).remaining == 99
    assert q.stats()["idle_evictions"] == 4


# --- headers ---

def test_header_block_allowed_and_rejected():
    t, s = table(), ThrottleSettings(2, 4)        # T = 500 ms, w = 2 s
    slot = t.static_slot("r")
    first = t.take(slot, s, now_ns=T0)
    assert header_block("route", first) == (
        b'RateLimit-Policy: "route";q=4;w=2\r\nRateLimit: "route";r=3;t=1\r\n')
    t.take_n(slot, s, 3, now_ns=T0)
    rejected = t.take(slot, s, now_ns=T0 + 1)     # 499,999,999 ns until a token: ceil -> 1 s
    assert header_block("route", rejected) == (
        b'RateLimit-Policy: "route";q=4;w=2\r\nRateLimit: "route";r=0;t=1\r\nRetry-After: 1\r\n')
    q = QuotaTable.create(8)
    plan = QuotaSettings(1, "DAY", start_s=0)
    now = utc(2024, 1, 1, 23, 0)
    q.take(b"k", plan, now_s=now)
    over = q.take(b"k", plan, now_s=now)
    assert header_block("quota", over) == (
        b'RateLimit-Policy: "quota";q=1;w=86400\r\nRateLimit: "quota";r=0;t=3600\r\n'
        b'Retry-After: 3600\r\n')
    for bad in ('a"b', "a\\b", "a\nb"):
        with pytest.raises(ValueError):
            header_block(bad, first)


# --- accuracy against the real clock: B + R*T within 2% ---

R, B, DURATION_S = 200, 50, 2.0


def assert_within_2_percent(accepted, first_ns, last_ns):
    expected = B + R * (last_ns - first_ns) / S
    assert abs(accepted - expected) <= 0.02 * expected, (accepted, expected)


def hammer(t, s, slot, key, duration_s):
    """Takes as fast as one process can for duration_s; (accepted, first_ns, last_ns)."""
    accepted, first = 0, time.monotonic_ns()
    end = first + int(duration_s * S)
    now = first
    while now < end:
        now = time.monotonic_ns()
        if key is None:
            accepted += t.take(slot, s, now_ns=now).allowed
        else:
            accepted += t.take_key(key, s, now_ns=now).allowed
    return accepted, first, now


@pytest.mark.parametrize("dynamic", [False, True])
def test_accuracy_one_process(dynamic):
    t, s = table(), ThrottleSettings(R, B)
    slot = t.static_slot("accuracy")
    accepted, first, last = hammer(t, s, slot, b"client" if dynamic else None, DURATION_S)
    assert_within_2_percent(accepted, first, last)


def run_forked(fn, n):
    """fn() in n forked children at once; the list of what each returned (ints)."""
    children = []
    for _ in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                os.write(w, " ".join(map(str, fn())).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    results = []
    for pid, r in children:
        with os.fdopen(r) as f:
            results.append([int(x) for x in f.read().split()])
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    return results


@pytest.mark.parametrize("dynamic", [False, True])
def test_accuracy_forked_workers_share_one_bucket(dynamic):
    # created before fork, like the supervisor does; each child hammers the same bucket
    t, s = table(), ThrottleSettings(R, B)
    slot = t.static_slot("accuracy")
    key = b"client" if dynamic else None
    results = run_forked(lambda: hammer(t, s, slot, key, DURATION_S), 3)
    accepted = sum(a for a, _, _ in results)
    assert all(a > 0 for a, _, _ in results)      # every worker drew from the bucket
    assert_within_2_percent(accepted, min(f for _, f, _ in results), max(l for _, _, l in results))


def test_quota_is_exact_across_forked_workers():
    q = QuotaTable.create(64)
    plan = QuotaSettings(1500, "DAY", start_s=0)
    now = utc(2024, 4, 1, 8)
    results = run_forked(lambda: [sum(q.take(b"key", plan, now_s=now).allowed for _ in range(1000))], 4)
    assert sum(a for a, in results) == 1500
    assert not q.take(b"key", plan, now_s=now).allowed
    assert q.take(b"key", plan, now_s=utc(2024, 4, 2)).remaining == 1499
