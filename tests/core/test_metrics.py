"""fastgate._core.metrics: shared-memory series summed over forked workers, Prometheus text."""
import os
import re

import pytest

from fastgate._core import metrics
from fastgate._core.metrics import SharedMetrics, BUCKET_BOUNDS_S, level_of
from prometheus_client.parser import text_string_to_metric_families
from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import RequestContext


def test_compiled_module_is_loaded():
    assert metrics.__file__.endswith(".so"), metrics.__file__


# --- a small parser of the text exposition format 0.0.4, as the oracle ---

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)\Z')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|\Z)')


def _unescape(value):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], value)


def parse_prometheus(text):
    """{(name, frozenset(labels)): value} plus {family: type}; asserts the syntax."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ")
            assert family not in types, f"family {family} declared twice"
            types[family] = kind
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = _SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        name, label_text, value = m.groups()
        labels = {}
        pos = 0
        while label_text and pos < len(label_text):
            lm = _LABEL.match(label_text, pos)
            assert lm, f"bad labels in {line!r}"
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        family = re.sub(r"_(bucket|sum|count)\Z", "", name)
        assert family in types or name in types, f"sample {name} before its TYPE"
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(value)
    return samples, types


def sample(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def route_labels(route, **extra):
    return dict(route=route, api="", stage="", **extra)


# --- cross-process summing ---

def _fork(fn):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    return pid


def _wait_all(pids):
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_counters_are_summed_over_forked_workers():
    m = SharedMetrics.create(64)
    slot = m.request_series("GET /pets")
    conns = m.gauge_series("fastgate_open_connections", {})
    n_workers, per_worker = 4, 5000

    def worker():
        for i in range(per_worker):
            m.record(slot, 200 if i % 5 else 503, 0.002, 0.001)
        m.add(conns, 3)

    _wait_all([_fork(worker) for _ in range(n_workers)])
    stats = m.request_stats(slot)
    total = n_workers * per_worker
    assert stats["status"]["2xx"] == total * 4 // 5
    assert stats["status"]["5xx"] == total // 5
    assert stats["count"] == total
    assert stats["integration_count"] == total
    assert stats["duration_sum_s"] == pytest.approx(total * 0.002)
    assert m.get(conns) == 3 * n_workers
    samples, _ = parse_prometheus(m.render().decode())
    assert sample(samples, "fastgate_requests_total", **route_labels("GET /pets", status_class="2xx")) == total * 4 // 5
    assert sample(samples, "fastgate_open_connections") == 3 * n_workers


def test_workers_asking_for_the_same_labels_share_one_slot():
    m = SharedMetrics.create(64)
    m.request_series("GET /first")  # so the new route does not land in slot 0 by luck

    def worker():
        for _ in range(50):
            # allocation races between the children: the lock and idempotence make one slot
            slot = m.request_series("POST /orders", "shop", "prod")
            m.record(slot, 201, 0.01)

    _wait_all([_fork(worker) for _ in range(4)])
    slot = m.request_series("POST /orders", "shop", "prod")
    assert m.request_stats(slot)["status"]["2xx"] == 200
    samples, _ = parse_prometheus(m.render().decode())
    routes = {dict(k[1]).get("route") for k in samples if k[0] == "fastgate_requests_total"}
    assert routes == {"GET /first", "POST /orders"}


def test_allocation_is_idempotent_and_survives_reload():
    m = SharedMetrics.create(8)
    a = m.request_series("GET /a")
    m.record(a, 200, 0.1)
    # a config reload compiles the routes again: same labels, same slot, counts kept
    assert m.request_series("GET /a") == a
    assert m.request_series("GET /a", "api1") != a
    assert m.request_stats(a)["status"]["2xx"] == 1
    g1 = m.gauge_series("fastgate_upstream_healthy", {"upstream": "pets", "target": "10.0.0.1:80"})
    g2 = m.gauge_series("fastgate_upstream_healthy", {"target": "10.0.0.1:80", "upstream": "pets"})
    assert g1 == g2
    assert m.gauge_series("fastgate_upstream_connections", {"upstream": "pets", "target": "10.0.0.1:80"}) != g1


def test_overflow_folds_into_route_other():
    m = SharedMetrics.create(3)
    slots = [m.request_series(f"GET /r{i}") for i in range(5)]
    assert slots[:3] == [0, 1, 2]
    assert slots[3] == slots[4] == m.overflow_slot
    assert m.request_series("GET /r4") == m.overflow_slot
    for s in slots:
        m.record(s, 404, 0.003)
    # gauges cannot be summed meaningfully: past capacity they are dropped (slot -1)
    g = m.gauge_series("fastgate_upstream_healthy", {"upstream": "u", "target": "t"})
    assert g == -1
    m.set(g, 1)
    m.add(g, 5)
    assert m.get(g) == 0
    samples, _ = parse_prometheus(m.render().decode())
    assert sample(samples, "fastgate_requests_total", **route_labels("other", status_class="4xx")) == 2
    assert sample(samples, "fastgate_requests_total", **route_labels("GET /r0", status_class="4xx")) == 1
    assert "fastgate_upstream_healthy" not in m.render().decode()


def test_overflow_slot_hidden_until_used():
    m = SharedMetrics.create(4)
    m.request_series("GET /a")
    assert 'route="other"' not in m.render().decode()


def test_too_long_labels_fold_into_overflow():
    m = SharedMetrics.create(4)
    assert m.request_series("GET /" + "x" * 1000) == m.overflow_slot


def test_status_classes():
    m = SharedMetrics.create(4)
    s = m.request_series("ANY /")
    for status in (101, 200, 299, 302, 404, 500, 599, 0, 700):
        m.record(s, status, 0.0)
    assert m.request_stats(s)["status"] == {"1xx": 1, "2xx": 2, "3xx": 1, "4xx": 1, "5xx": 4}


def test_histogram_buckets_sum_and_count():
    m = SharedMetrics.create(4)
    s = m.request_series("GET /h")
    latencies = [0.0005, 0.0006, 0.003, 0.7, 59.0, 61.0, 0.0]
    for v in latencies:
        m.record(s, 200, v)
    m.record(s, 200, 0.02, 0.015)
    latencies.append(0.02)
    samples, types = parse_prometheus(m.render().decode())
    assert types["fastgate_request_duration_seconds"] == "histogram"
    labels = route_labels("GET /h")
    for bound in BUCKET_BOUNDS_S:
        expected = sum(1 for v in latencies if v <= bound)
        assert sample(samples, "fastgate_request_duration_seconds_bucket", **labels, le=repr(bound)) == expected
    assert sample(samples, "fastgate_request_duration_seconds_bucket", **labels, le="+Inf") == len(latencies)
    assert sample(samples, "fastgate_request_duration_seconds_count", **labels) == len(latencies)
    assert sample(samples, "fastgate_request_duration_seconds_sum", **labels) == pytest.approx(sum(latencies))
    # only the one request that had an integration
    assert sample(samples, "fastgate_integration_duration_seconds_count", **labels) == 1
    assert sample(samples, "fastgate_integration_duration_seconds_sum", **labels) == pytest.approx(0.015)
    assert sample(samples, "fastgate_integration_duration_seconds_bucket", **labels, le="0.01") == 0
    assert sample(samples, "fastgate_integration_duration_seconds_bucket", **labels, le="0.025") == 1


def test_route_without_integration_has_no_integration_histogram():
    m = SharedMetrics.create(4)
    s = m.request_series("GET /mock")
    m.record(s, 200, 0.001)
    assert "fastgate_integration_duration_seconds_count{" not in m.render().decode()


def test_label_values_are_escaped():
    m = SharedMetrics.create(8)
    nasty = 'GET /a\\b"c\nd'
    s = m.request_series(nasty, 'api"x', "st\\age")
    m.record(s, 200, 0.001)
    g = m.gauge_series("fastgate_upstream_healthy", {"upstream": 'u"1', "target": "t\n"})
    m.set(g, 1)
    samples, _ = parse_prometheus(m.render().decode())
    assert sample(samples, "fastgate_requests_total", route=nasty, api='api"x', stage="st\\age",
                  status_class="2xx") == 1
    assert sample(samples, "fastgate_upstream_healthy", upstream='u"1', target="t\n") == 1


def test_render_declares_every_family_once_with_its_type():
    m = SharedMetrics.create(16)
    m.record(m.request_series("GET /x"), 200, 0.1, 0.05)
    m.set(m.gauge_series("fastgate_upstream_healthy", {"upstream": "a", "target": "1"}), 1)
    m.set(m.gauge_series("fastgate_upstream_healthy", {"upstream": "a", "target": "2"}), 0)
    m.add(m.gauge_series("fastgate_upstream_connections", {"upstream": "a", "target": "1"}), 7)
    m.add(m.gauge_series("fastgate_open_connections"), 2)
    text = m.render().decode()
    assert text.endswith("\n")
    _, types = parse_prometheus(text)
    assert types == {
        "fastgate_requests_total": "counter",
        "fastgate_throttled_total": "counter",
        "fastgate_request_duration_seconds": "histogram",
        "fastgate_integration_duration_seconds": "histogram",
        "fastgate_open_connections": "gauge",
        "fastgate_upstream_connections": "gauge",
        "fastgate_upstream_healthy": "gauge",
    }


def test_gauge_set_add_get():
    m = SharedMetrics.create(4)
    g = m.gauge_series("fastgate_open_connections")
    m.add(g, 5)
    m.add(g, -2)
    assert m.get(g) == 3
    m.set(g, 42)
    assert m.get(g) == 42


def test_out_of_range_slots_are_ignored():
    m = SharedMetrics.create(2)
    for slot in (-1, -7, 3, 10**6):
        m.record(slot, 200, 0.1)
        m.add(slot, 1)
        assert m.get(slot) == 0


def test_invalid_names_are_rejected():
    m = SharedMetrics.create(4)
    with pytest.raises(ValueError):
        m.gauge_series("bad-name", {})
    with pytest.raises(ValueError):
        m.gauge_series("fastgate_x", {"bad-label": "v"})
    with pytest.raises(ValueError):
        m.gauge_series("fastgate_x", {"__reserved": "v"})
    with pytest.raises(ValueError):
        SharedMetrics.create(0)
    with pytest.raises(TypeError):
        SharedMetrics()


def test_record_from_request_context():
    m = SharedMetrics.create(4)
    s = m.request_series("GET /ctx")
    ctx = RequestContext()
    now = monotonic_s()
    ctx.start, ctx.end, ctx.status = now - 0.2, now, 302
    m.record_ctx(s, ctx)  # no integration ran
    ctx.integration_start, ctx.integration_end = now - 0.1, now - 0.05
    m.record_ctx(s, ctx)
    stats = m.request_stats(s)
    assert stats["status"]["3xx"] == 2
    assert stats["duration_sum_s"] == pytest.approx(0.4, abs=1e-5)
    assert stats["integration_count"] == 1
    assert stats["integration_sum_s"] == pytest.approx(0.05, abs=1e-5)


def test_record_many_matches_record():
    m = SharedMetrics.create(4)
    s = m.request_series("GET /many")
    m.record_many(s, 1000, 200, 0.004, 0.001)
    stats = m.request_stats(s)
    assert stats["count"] == stats["integration_count"] == stats["status"]["2xx"] == 1000


# --- API Gateway's CloudWatch series; checked with prometheus_client's parser ---

def families(m):
    """{family name: (type, {(sample name, frozenset labels): value})} by the reference parser."""
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        out[fam.name] = (fam.type, {(s.name, frozenset(s.labels.items())): s.value for s in fam.samples})
    return out


def value(fams, family, name, **labels):
    return fams[family][1][(name, frozenset(labels.items()))]


def ctx_of(status, error_type=None, key=None):
    ctx = RequestContext()
    now = monotonic_s()
    ctx.start, ctx.end, ctx.status, ctx.error_type, ctx.api_key_id = now - 0.01, now, status, error_type, key
    return ctx


def test_route_label_off_gives_one_series_per_stage():
    m = SharedMetrics.create(16)
    a = m.request_series("GET /a", "api1", "prod", route_label=False)
    b = m.request_series("GET /b", "api1", "prod", route_label=False)
    assert a == b
    m.record(a, 200, 0.01)
    m.record(b, 404, 0.01)
    fams = families(m)
    assert fams["fastgate_requests"][0] == "counter"
    assert value(fams, "fastgate_requests", "fastgate_requests_total", api="api1", stage="prod",
                 status_class="2xx") == 1
    assert value(fams, "fastgate_requests", "fastgate_requests_total", api="api1", stage="prod",
                 status_class="4xx") == 1
    assert all("route" not in dict(k[1]) for k in fams["fastgate_requests"][1])


def test_api_key_series_are_allocated_lazily_and_summed_over_workers():
    m = SharedMetrics.create(64)
    base = m.request_series("GET /pets", "api1", "prod", api_key_label=True)

    def worker():
        for i in range(300):
            key = (b"k1", b"k2", None)[i % 3]
            m.record_ctx(base, ctx_of(200 if i % 2 else 500, key=key))

    _wait_all([_fork(worker) for _ in range(3)])
    fams = families(m)
    lab = dict(route="GET /pets", api="api1", stage="prod")
    got = {(dict(k[1]).get("api_key"), dict(k[1])["status_class"]): v
           for k, v in fams["fastgate_requests"][1].items() if v}
    # per worker: 100 requests per key (50 2xx, 50 5xx); 3 workers
    assert got == {(k, c): 150 for k in ("k1", "k2", None) for c in ("2xx", "5xx")}
    assert value(fams, "fastgate_requests", "fastgate_requests_total", api_key="k1",
                 status_class="2xx", **lab) == 150
    # all workers found the same slot for each key: one series per key
    assert m.key_series(base, b"k1") == m.key_series(base, b"k1") != base
    assert m.key_series(base, None) == base


def test_key_series_fold_into_api_key_other_past_the_cap():
    m = SharedMetrics.create(32, max_labelled_series=4)
    base = m.request_series("GET /x", "a", "s", api_key_label=True)    # labelled: 1 of 4
    slots = [m.key_series(base, b"key%d" % i) for i in range(6)]
    assert len(set(slots[:3])) == 3                                     # 2..4 of 4
    assert slots[3] == slots[4] == slots[5] not in slots[:3]            # api_key="other"
    for i in range(6):
        m.record_ctx(base, ctx_of(200, key=b"key%d" % i))
    fams = families(m)
    assert value(fams, "fastgate_requests", "fastgate_requests_total", route="GET /x", api="a",
                 stage="s", api_key="other", status_class="2xx") == 3
    # a new route past the cap folds into its stage's route="other"
    r = m.request_series("GET /late", "a", "s")
    assert r == m.request_series("GET /later", "a", "s") != base
    m.record(r, 200, 0.01)
    assert value(families(m), "fastgate_requests", "fastgate_requests_total", route="other", api="a",
                 stage="s", status_class="2xx") == 1


def test_a_slot_that_does_not_split_ignores_keys():
    m = SharedMetrics.create(8)
    base = m.request_series("GET /x", "a", "s")
    assert m.key_series(base, b"k") == base


def test_throttled_by_level_and_gateway_responses_by_type():
    m = SharedMetrics.create(16)
    s1 = m.request_series("GET /a", "api1", "prod")
    s2 = m.request_series("GET /b", "api1", "prod")
    other = m.request_series("GET /a", "api2", "dev")
    assert m.stage_entry(s1) == m.stage_entry(s2) != m.stage_entry(other)
    m.record_ctx(s1, ctx_of(429, "THROTTLED"))                                    # usage plan
    m.record_ctx(s2, ctx_of(429, "THROTTLED"), level_of("route"))
    m.record_ctx(s2, ctx_of(429, "THROTTLED"), level_of("stage"))
    m.record_ctx(s1, ctx_of(429, "THROTTLED"), level_of("gateway"))
    m.record_ctx(s1, ctx_of(429, "QUOTA_EXCEEDED"))
    m.record_ctx(other, ctx_of(403, "INVALID_API_KEY"))
    m.record_ctx(other, ctx_of(502, "INTEGRATION_FAILURE"))
    m.record_ctx(other, ctx_of(500, "SOMETHING_5XX"))     # outside the table: its family's default
    m.record_ctx(other, ctx_of(200))
    m.cache(s1, True)
    m.cache(s2, True)
    m.cache(s1, False)
    fams = families(m)
    assert fams["fastgate_throttled"][0] == "counter"
    t = {dict(k[1])["level"]: v for k, v in fams["fastgate_throttled"][1].items()
         if dict(k[1])["api"] == "api1"}
    assert t == {"usage_plan": 1, "method": 2, "gateway": 1, "quota": 1}
    assert value(fams, "fastgate_throttled", "fastgate_throttled_total", api="api2", stage="dev",
                 level="method") == 0
    g = {(dict(k[1])["api"], dict(k[1])["type"]): v for k, v in fams["fastgate_gateway_responses"][1].items()}
    assert g == {("api1", "THROTTLED"): 4, ("api1", "QUOTA_EXCEEDED"): 1, ("api2", "INVALID_API_KEY"): 1,
                 ("api2", "INTEGRATION_FAILURE"): 1, ("api2", "DEFAULT_5XX"): 1}
    assert value(fams, "fastgate_cache_requests", "fastgate_cache_requests_total", api="api1",
                 stage="prod", result="hit") == 2
    assert value(fams, "fastgate_cache_requests", "fastgate_cache_requests_total", api="api1",
                 stage="prod", result="miss") == 1
    # 4XXError / 5XXError as CloudWatch has them: from the status classes
    assert value(fams, "fastgate_requests", "fastgate_requests_total", route="GET /a", api="api2",
                 stage="dev", status_class="5xx") == 2


def test_stage_counters_are_summed_over_forked_workers():
    m = SharedMetrics.create(16)
    s = m.request_series("GET /a", "api1", "prod")

    def worker():
        for _ in range(1000):
            m.throttled(s, level_of("gateway"))
            m.cache(s, False)
            m.response_type(s, "THROTTLED")

    _wait_all([_fork(worker) for _ in range(4)])
    st = m.stage_stats(s)
    assert st["throttled"]["gateway"] == st["cache"]["miss"] == st["responses"]["THROTTLED"] == 4000


def test_stages_past_capacity_share_the_overflow_entry():
    m = SharedMetrics.create(16, max_stages=2)
    slots = [m.request_series("GET /a", f"api{i}", "prod") for i in range(4)]
    assert m.stage_entry(slots[2]) == m.stage_entry(slots[3]) == 2
    m.throttled(slots[3], 0)
    fams = families(m)
    assert value(fams, "fastgate_throttled", "fastgate_throttled_total", api="other", stage="other",
                 level="usage_plan") == 1


def test_counter_series_render_as_counters():
    m = SharedMetrics.create(8)
    c = m.counter_series("fastgate_execution_log_dropped_total")
    t = m.counter_series("fastgate_trace_spans_total", {"result": "exported"})
    m.add(c, 3)
    m.add(t, 2)
    m.add(t, 5)
    fams = families(m)
    assert fams["fastgate_execution_log_dropped"] == ("counter", {("fastgate_execution_log_dropped_total",
                                                                   frozenset()): 3})
    assert value(fams, "fastgate_trace_spans", "fastgate_trace_spans_total", result="exported") == 7
    assert m.counter_series("fastgate_trace_spans_total", {"result": "exported"}) == t


def test_full_render_parses_with_the_reference_parser():
    m = SharedMetrics.create(32)
    s = m.request_series("GET /pets/{id}", "api1", "prod", api_key_label=True)
    m.record_ctx(s, ctx_of(200, key=b"abc"))
    m.record(s, 200, 0.2, 0.1)
    m.response_type(s, "THROTTLED")
    m.cache(s, True)
    m.add(m.counter_series("fastgate_trace_spans_total", {"result": "exported"}), 1)
    m.set(m.gauge_series("fastgate_upstream_healthy", {"upstream": "u", "target": "t"}), 1)
    m.add(m.gauge_series("fastgate_open_connections"), 2)
    types = {name: t for name, (t, _) in families(m).items()}
    assert types == {
        "fastgate_requests": "counter", "fastgate_request_duration_seconds": "histogram",
        "fastgate_integration_duration_seconds": "histogram", "fastgate_throttled": "counter",
        "fastgate_cache_requests": "counter", "fastgate_gateway_responses": "counter",
        "fastgate_trace_spans": "counter", "fastgate_upstream_healthy": "gauge",
        "fastgate_open_connections": "gauge",
    }
