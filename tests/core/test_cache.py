"""fastgate/_core/cache.pyx: the shared response cache, its keys and its Cache-Control policy."""
import hashlib
import os
import random
import struct
import time

import pytest
from hypothesis import given, settings, strategies as st

from fastgate._core.cache import (
    BLOCK_BYTES_PY as BLOCK, CacheDecision, CacheKeySpec, RouteCache, SharedCache, WARNING_HEADER,
    parse_cache_key_parameter, wants_refresh)

MS = 1000


def now_ms():
    return int(time.time() * 1000)


# ---------------------------------------------------------------- basics --

def test_put_get_round_trip_and_stats():
    c = SharedCache.create(1 << 20, 65536)
    exp = now_ms() + 60 * MS
    c.store(b"k1", exp, 201, b"Content-Type: application/json\r\n", b'{"a": 1}')
    c.store(b"k2", exp, 404, b"", b"")
    assert c.lookup(b"k1") == (201, b"Content-Type: application/json\r\n", b'{"a": 1}')
    assert c.lookup(b"k2") == (404, b"", b"")
    assert c.lookup(b"k3") is None
    st_ = c.stats()
    assert (st_["hits"], st_["misses"], st_["entries"], st_["stores"]) == (2, 1, 2, 2)
    assert st_["bytes_used"] == 2 * BLOCK


def test_replace_same_key_keeps_one_entry():
    c = SharedCache.create(1 << 20, 65536)
    exp = now_ms() + 60 * MS
    for i in range(50):
        c.store(b"k", exp, 200, b"", b"v%d" % i * 100)
    assert c.lookup(b"k") == (200, b"", b"v49" * 100)
    assert c.stats()["entries"] == 1
    assert c.stats()["bytes_used"] == BLOCK     # the old blocks went back to the free list


def test_multi_block_entry_exact_boundaries():
    c = SharedCache.create(1 << 20, 1 << 18)
    exp = now_ms() + 60 * MS
    for n in (0, 1, BLOCK - 3, BLOCK - 2, BLOCK - 1, BLOCK, 5 * BLOCK + 7, 100_000):
        body = os.urandom(n)
        key = b"k%d" % n                          # 2..7 bytes of key before the body
        c.store(key, exp, 200, b"X: y\r\n", body)
        assert c.lookup(key) == (200, b"X: y\r\n", body), n


def test_ttl_expiry():
    c = SharedCache.create(1 << 20, 65536)
    t = now_ms()
    c.store(b"k", t + 10 * MS, 200, b"", b"body")
    assert c.lookup(b"k", t) is not None
    assert c.lookup(b"k", t + 10 * MS - 1) is not None
    assert c.lookup(b"k", t + 10 * MS) is None      # expires_ms is the first instant it is gone
    c.store(b"old", t - 1, 200, b"", b"body")      # already expired: not stored
    assert c.stats()["stores"] == 1


def test_entry_size_cap():
    c = SharedCache.create(1 << 20, 4096)
    exp = now_ms() + 60 * MS
    c.store(b"key", exp, 200, b"H: v\r\n", b"x" * (4096 - 3 - 6))     # exactly the cap: stored
    assert c.lookup(b"key") is not None
    c.store(b"big", exp, 200, b"", b"x" * 4094)                      # one byte over: not stored
    assert c.lookup(b"big") is None
    assert c.stats()["too_large"] == 1


def test_memory_cap_holds_and_evicts():
    mem = 64 * BLOCK
    c = SharedCache.create(mem, 8 * BLOCK, slots=1024)
    exp = now_ms() + 60 * MS
    rng = random.Random(1)
    for i in range(2000):
        c.store(b"k%d" % i, exp, 200, b"", b"x" * rng.randrange(1, 6 * BLOCK))
        assert c.stats()["bytes_used"] <= mem
    s = c.stats()
    assert s["evictions"] > 0 and 0 < s["entries"] <= 64
    assert c.lookup(b"k1999") is not None         # the newest fits: the sweep made room for it


def test_lru_hot_key_survives_churn():
    # A key read between every put is never the one evicted, whatever its age;
    # FIFO would drop it first (it is the oldest), so would a random policy soon.
    c = SharedCache.create(32 * BLOCK, 4 * BLOCK, slots=4096)
    exp = now_ms() + 600 * MS
    c.store(b"hot", exp, 200, b"", b"h" * (2 * BLOCK))
    for i in range(3000):
        c.store(b"cold%d" % i, exp, 200, b"", b"c" * (BLOCK + i % BLOCK))
        assert c.lookup(b"hot") is not None, i
    assert c.lookup(b"cold0") is None              # the cold ones went
    assert c.stats()["evictions"] > 2900


def test_expired_entries_get_no_second_chance():
    # Every entry was read (referenced); the short-lived ones then expire. The
    # sweep gives the live ones their second chance and takes the expired ones
    # at first sight, so the recently read live entries all stay.
    c = SharedCache.create(16 * BLOCK, 4 * BLOCK, slots=1024)
    t = now_ms()
    for i in range(8):
        c.store(b"short%d" % i, t + 200, 200, b"", b"s" * (BLOCK - 8))       # 1 block each
        c.store(b"long%d" % i, t + 600 * MS, 200, b"", b"l" * (BLOCK - 8))
    assert all(c.lookup(b"%s%d" % (kind, i)) for kind in (b"short", b"long") for i in range(8))
    time.sleep(0.25)
    for i in range(8):
        c.store(b"new%d" % i, t + 600 * MS, 200, b"", b"n" * (BLOCK - 8))
    assert all(c.lookup(b"long%d" % i) is not None for i in range(8))
    assert c.lookup(b"new7") is not None
    assert c.stats()["expired"] >= 1 and c.stats()["bytes_used"] == 16 * BLOCK


def test_full_set_evicts_within_the_set():
    # 64 slots and 8 ways, many keys: puts keep working when a set is full.
    c = SharedCache.create(1 << 20, 4096, slots=64)
    exp = now_ms() + 60 * MS
    for i in range(1000):
        c.store(b"k%d" % i, exp, 200, b"", b"v%d" % i)
        assert c.lookup(b"k%d" % i) == (200, b"", b"v%d" % i)
    assert c.stats()["entries"] <= 64


def test_remove_and_flush_prefix():
    c = SharedCache.create(1 << 20, 4096)
    exp = now_ms() + 60 * MS
    for stage in (b"a/prod/", b"a/dev/"):
        for i in range(20):
            c.store(stage + b"%d" % i, exp, 200, b"", b"x")
    assert c.remove(b"a/prod/0") and not c.remove(b"a/prod/0")
    assert c.flush(b"a/prod/") == 19
    assert c.lookup(b"a/prod/1") is None and c.lookup(b"a/dev/1") is not None
    assert c.flush() == 20 and c.stats()["entries"] == 0 and c.stats()["bytes_used"] == 0


def test_create_rejects_bad_sizes():
    with pytest.raises(ValueError):
        SharedCache.create(1000, 2000)
    with pytest.raises(ValueError):
        SharedCache.create(1 << 20, 0)
    with pytest.raises(TypeError):
        SharedCache()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "del"]), st.integers(0, 15),
                          st.integers(0, 3000), st.integers(-5, 50)), max_size=80))
def test_matches_a_dict_oracle_without_pressure(ops):
    # Enough memory and slots that nothing is evicted: the cache must then be a dict with TTLs.
    c = SharedCache.create(1 << 20, 1 << 16, slots=4096)
    t = now_ms() + 1000 * MS
    oracle = {}
    for op, k, size, ttl in ops:
        key = b"key-%d" % k
        if op == "put":
            value = (200 + k, b"h%d\r\n" % size, bytes([k]) * size)
            c.store(key, t + ttl, *value)       # t is 1000 s ahead of the clock: always stored
            oracle[key] = (t + ttl, value)
        elif op == "get":
            want = oracle.get(key)
            got = c.lookup(key, t)
            assert got == (want[1] if want and want[0] > t else None)
        else:
            assert c.remove(key) == (key in oracle)
            oracle.pop(key, None)


# ------------------------------------------------------ across processes --

KEYS = [b"GET /item/%d" % i for i in range(12)]


def make_entry(key, version, rng):
    body = rng.randbytes(rng.randrange(0, 6 * BLOCK))
    digest = hashlib.sha256(key + body).hexdigest().encode()
    headers = b"X-Key: %s\r\nX-Version: %d\r\nX-Sum: %s\r\n" % (key, version, digest)
    return 200 + version % 300, headers, body


def check_entry(key, entry):
    status, headers, body = entry
    lines = dict(line.split(b": ", 1) for line in headers.split(b"\r\n") if line)
    assert lines[b"X-Key"] == key
    assert status == 200 + int(lines[b"X-Version"]) % 300
    assert lines[b"X-Sum"] == hashlib.sha256(key + body).hexdigest().encode()


def run_forked(fn, n):
    """fn(i) in n forked children at once; what each wrote to its pipe, as ints."""
    children = []
    for i in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                os.write(w, " ".join(map(str, fn(i))).encode())
                code = 0
            except BaseException as e:            # noqa: BLE001 -- report, then exit non-zero
                os.write(w, repr(e).encode())
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    results = []
    for pid, r in children:
        with os.fdopen(r) as f:
            out = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, out
        results.append([int(x) for x in out.split()])
    return results


def test_forked_writers_and_readers_never_see_a_torn_entry():
    # Little memory for the entry sizes, so blocks are recycled all the time:
    # a reader copying an entry while a writer evicts it and reuses its blocks
    # must throw the copy away, never return it.
    c = SharedCache.create(48 * BLOCK, 8 * BLOCK, slots=64)
    deadline = time.monotonic() + 1.5

    def worker(i):
        rng = random.Random(i)
        exp = now_ms() + 600 * MS
        hits = puts = 0
        while time.monotonic() < deadline:
            key = rng.choice(KEYS)
            if i < 2:                                      # writers
                c.store(key, exp, *make_entry(key, puts, rng))
                puts += 1
                e = c.lookup(key)
            else:                                          # readers
                e = c.lookup(key)
            if e is not None:
                check_entry(key, e)
                hits += 1
        return [hits, puts]

    results = run_forked(worker, 4)
    s = c.stats()
    assert sum(p for _, p in results) == s["stores"] > 1000
    assert all(h > 100 for h, _ in results), results          # readers did read entries
    assert s["evictions"] > 100 and s["bytes_used"] <= 48 * BLOCK


def test_entry_stored_by_one_worker_is_a_hit_in_another():
    c = SharedCache.create(1 << 20, 65536)
    exp = now_ms() + 60 * MS
    run_forked(lambda i: c.store(b"shared", exp, 203, b"A: b\r\n", b"from child") or [], 1)
    assert c.lookup(b"shared") == (203, b"A: b\r\n", b"from child")


def test_dead_writer_lock_is_robbed_and_cache_cleared():
    c = SharedCache.create(1 << 20, 65536)
    exp = now_ms() + 60 * MS
    c.store(b"before", exp, 200, b"", b"x")
    pid = os.fork()
    if pid == 0:
        c._hold_lock_for_test()          # take the writer lock and die holding it
        os._exit(0)
    os.waitpid(pid, 0)
    c.store(b"after", exp, 200, b"", b"y")   # robs the dead holder's lock, clears, stores
    assert c.lookup(b"after") == (200, b"", b"y")
    assert c.lookup(b"before") is None
    assert c.stats()["resets"] == 1


# ------------------------------------------------------------------ keys --

def test_key_spec_parameters():
    spec = CacheKeySpec(True, [("querystring", "page"), ("header", "Accept-Language")], namespace=b"api/prod/GET /pets")
    k = lambda m=b"GET", p=b"/pets", q=b"", h=(): spec.key(m, p, q, list(h))
    base = k(q=b"page=1&sort=asc", h=[(b"accept-language", b"en")])
    assert base == k(q=b"sort=desc&page=1", h=[(b"Accept-Language", b"en"), (b"X-Other", b"1")])  # unlisted ignored
    assert base != k(q=b"page=2&sort=asc", h=[(b"accept-language", b"en")])
    assert base != k(q=b"page=1", h=[(b"accept-language", b"fr")])
    assert base != k(m=b"HEAD", q=b"page=1", h=[(b"accept-language", b"en")])
    assert base != k(p=b"/pets/1", q=b"page=1", h=[(b"accept-language", b"en")])
    assert k(q=b"page=") != k(q=b"")                      # empty and absent differ
    assert k(q=b"page") == k(q=b"page=")                    # a bare name is an empty value
    assert k(q=b"page=1&page=2") != k(q=b"page=2&page=1")  # multi-value order counts
    other = CacheKeySpec(True, [("querystring", "page")], namespace=b"api/dev/GET /pets")
    assert other.key(b"GET", b"/pets", b"page=1", []) != spec.key(b"GET", b"/pets", b"page=1", [])


def test_key_spec_method_out_of_key_and_path_params():
    spec = CacheKeySpec(False, ["method.request.path.id"])
    assert spec.key(b"GET", b"/p/1", b"", [], {b"id": b"1"}) == spec.key(b"HEAD", b"/p/1", b"", [], {b"id": b"1"})
    assert spec.key(b"GET", b"/p/1", b"", [], {b"id": b"1"}) != spec.key(b"GET", b"/p/1", b"", [], {b"id": b"2"})


def test_key_fields_cannot_be_forged():
    spec = CacheKeySpec(True, [("header", "a"), ("header", "b")])
    assert (spec.key(b"GET", b"/", b"", [(b"a", b"1#1:2"), (b"b", b"")])
            != spec.key(b"GET", b"/", b"", [(b"a", b"1"), (b"b", b"2")]))


def test_parse_cache_key_parameter():
    assert parse_cache_key_parameter("method.request.querystring.page") == ("querystring", "page")
    assert parse_cache_key_parameter("method.request.header.X-A.b") == ("header", "X-A.b")
    assert parse_cache_key_parameter("method.request.multivaluequerystring.t") == ("querystring", "t")
    assert parse_cache_key_parameter("method.request.path.id") == ("path", "id")
    for bad in ("integration.request.path.id", "method.request.body.x", "method.request.header."):
        with pytest.raises(ValueError):
            parse_cache_key_parameter(bad)


# ---------------------------------------------------------------- policy --

@pytest.mark.parametrize("value,refresh", [
    (b"max-age=0", True), (b"no-store, MAX-AGE=0", True), (b'max-age="0"', True), (b"max-age=00", True),
    (b"max-age=10", False), (b"no-cache", False), (b"max-age=", False), (b"s-maxage=0", False),
])
def test_wants_refresh(value, refresh):
    assert wants_refresh([(b"Cache-Control", value)]) is refresh
    assert wants_refresh([(b"X-Cache-Control", value)]) is False


def test_route_cache_decisions():
    spec = CacheKeySpec()
    fresh = [(b"cache-control", b"max-age=0")]
    D = CacheDecision
    for strategy, unauthorized in (("FAIL_WITH_403", D.CACHE_FORBIDDEN),
                                   ("SUCCEED_WITH_RESPONSE_HEADER", D.CACHE_LOOKUP_WARN),
                                   ("SUCCEED_WITHOUT_RESPONSE_HEADER", D.CACHE_LOOKUP)):
        rc = RouteCache(spec, 300, unauthorized_strategy=strategy)
        assert rc.decide(b"GET", [], False) == D.CACHE_LOOKUP
        assert rc.decide(b"GET", fresh, True) == D.CACHE_REFRESH
        assert rc.decide(b"GET", fresh, False) == unauthorized
        assert rc.decide(b"POST", fresh, True) == D.CACHE_BYPASS
    open_rc = RouteCache(spec, 300, require_authorization=False, unauthorized_strategy="FAIL_WITH_403")
    assert open_rc.decide(b"GET", fresh, False) == D.CACHE_REFRESH
    assert RouteCache(spec).ttl_ms == 300_000 and RouteCache(spec).methods == {b"GET", b"HEAD"}
    for ttl in (0, 3601, -1):
        with pytest.raises(ValueError):
            RouteCache(spec, ttl)
    with pytest.raises(ValueError):
        RouteCache(spec, 300, unauthorized_strategy="IGNORE")
    assert WARNING_HEADER[0] == b"Warning" and WARNING_HEADER[1].startswith(b"199 ")


def test_a_stage_is_one_prefix_flush():
    from fastgate._core.cache import namespace_prefix
    c = SharedCache.create(1 << 20)
    exp = int(time.time() * 1000) + 60_000
    specs = {ns: CacheKeySpec(True, [], namespace=ns)
             for ns in (b"api/prod/GET /pets", b"api/prod/GET /pets/{id}", b"api/prod2/GET /pets",
                        b"api/dev/GET /pets")}
    for spec in specs.values():
        c.store(spec.key(b"GET", b"/pets", b"", []), exp, 200, b"", b"x")
    assert c.flush(namespace_prefix("api/prod/")) == 2      # not prod2: the stage ends at "/"
    left = {ns for ns, spec in specs.items() if c.lookup(spec.key(b"GET", b"/pets", b"", [])) is not None}
    assert left == {b"api/prod2/GET /pets", b"api/dev/GET /pets"}
    with pytest.raises(ValueError):
        CacheKeySpec(True, [], namespace=b"a\0b")
