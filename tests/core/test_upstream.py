"""Load balancing and pool bookkeeping of fastgate/_core/upstream.pyx."""

from collections import Counter

from fastgate._core.pipeline import RequestContext
from fastgate._core.upstream import Balance, HashOn, UpstreamGroup, parse_cookie


def group(balance=Balance.BALANCE_ROUND_ROBIN, weights=(1, 1, 1), hash_on=HashOn.HASH_CLIENT_IP,
          hash_name="", max_failures=0):
    g = UpstreamGroup("g", balance, hash_on, hash_name, max_failures, 10.0)
    for i, w in enumerate(weights):
        g.add_target(f"http://10.0.0.{i}:80", "http", f"10.0.0.{i}", 80, w)
    return g


def picks(g, n, ctx=None, now=1.0):
    return Counter(g.choose(ctx, None, now).host for _ in range(n))


def test_round_robin_honours_weights_exactly():
    g = group(weights=(1, 2, 5))
    assert picks(g, 800) == {"10.0.0.0": 100, "10.0.0.1": 200, "10.0.0.2": 500}


def test_smooth_round_robin_interleaves():
    g = group(weights=(5, 1, 1))
    seq = [g.choose(None, None, 1.0).host[-1] for _ in range(7)]
    # nginx's smooth weighted round robin: {a a b a c a a}, never five a's in a row
    assert "".join(seq) == "0010200"


def test_unhealthy_and_ejected_targets_are_skipped():
    g = group()
    g.targets[0].healthy = False
    g.targets[1].ejected_until = 100.0
    assert picks(g, 30, now=50.0) == {"10.0.0.2": 30}
    assert set(picks(g, 30, now=150.0)) == {"10.0.0.1", "10.0.0.2"}


def test_no_target_available_gives_none():
    g = group(weights=(1,))
    g.targets[0].healthy = False
    assert g.choose(None, None, 1.0) is None


def test_exclude_skips_the_failed_target():
    g = group(weights=(1, 1))
    first = g.targets[0]
    assert all(g.choose(None, first, 1.0) is g.targets[1] for _ in range(10))


def test_least_conn_prefers_fewest_active_per_weight():
    g = group(Balance.BALANCE_LEAST_CONN, weights=(1, 1, 2))
    g.targets[0].active = 3
    g.targets[1].active = 1
    g.targets[2].active = 3   # 1.5 per unit of weight
    assert g.choose(None, None, 1.0) is g.targets[1]


def ctx_with(ip=b"1.2.3.4", headers=()):
    c = RequestContext()
    c.source_ip = ip
    c.headers = list(headers)
    return c


def test_hash_same_key_same_target_and_spread():
    g = group(Balance.BALANCE_HASH)
    keys = [b"10.1.%d.%d" % (i // 250, i % 250) for i in range(3000)]
    first = {k: g.choose(ctx_with(k), None, 1.0) for k in keys}
    assert all(g.choose(ctx_with(k), None, 1.0) is first[k] for k in keys)
    share = Counter(t.host for t in first.values())
    assert all(700 < n < 1300 for n in share.values()), share


def test_hash_removing_a_target_moves_only_its_keys():
    g = group(Balance.BALANCE_HASH)
    keys = [b"k%d" % i for i in range(2000)]
    before = {k: g.choose(ctx_with(k), None, 1.0).host for k in keys}
    g.targets[1].healthy = False
    after = {k: g.choose(ctx_with(k), None, 1.0).host for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == "10.0.0.1" for k in moved)


def test_hash_on_header_and_cookie():
    g = group(Balance.BALANCE_HASH, hash_on=HashOn.HASH_HEADER, hash_name="X-User")
    a = g.choose(ctx_with(b"1.1.1.1", [(b"x-user", b"alice")]), None, 1.0)
    assert all(g.choose(ctx_with(b"9.9.9.%d" % i, [(b"X-User", b"alice")]), None, 1.0) is a
               for i in range(20))
    g = group(Balance.BALANCE_HASH, hash_on=HashOn.HASH_COOKIE, hash_name="sid")
    b = g.choose(ctx_with(b"1.1.1.1", [(b"Cookie", b"a=1; sid=xyz")]), None, 1.0)
    assert all(g.choose(ctx_with(b"9.9.9.%d" % i, [(b"cookie", b"sid=xyz; z=2")]), None, 1.0) is b
               for i in range(20))


def test_parse_cookie():
    assert parse_cookie(b"a=1; sid=xyz; b=2", b"sid") == b"xyz"
    assert parse_cookie(b"sidx=1; sid=2", b"sid") == b"2"
    assert parse_cookie(b"a=1", b"sid") is None
    assert parse_cookie(None, b"sid") is None


def test_passive_ejection_after_consecutive_failures():
    g = group(weights=(1, 1), max_failures=3)
    t = g.targets[0]
    t.failed(5.0)
    t.failed(5.0)
    assert t.ejected_until == 0
    t.succeeded()           # a success resets the count
    t.failed(5.0)
    t.failed(5.0)
    assert t.ejected_until == 0
    t.failed(5.0)
    assert t.ejected_until == 15.0
    assert set(picks(g, 10, now=10.0)) == {"10.0.0.1"}
    assert set(picks(g, 10, now=16.0)) == {"10.0.0.0", "10.0.0.1"}


def test_host_header_omits_default_port_and_brackets_ipv6():
    g = UpstreamGroup("g")
    a = g.add_target("http://a:80", "http", "a", 80)
    b = g.add_target("https://b:8443", "https", "b", 8443)
    c = g.add_target("http://[::1]:9000", "http", "::1", 9000)
    assert (a.host_header, b.host_header, c.host_header) == (b"a", b"b:8443", b"[::1]:9000")
