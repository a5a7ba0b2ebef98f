"""fastgate._core.metrics: shared-memory series summed over forked workers, Prometheus text."""
import os
import re

import pytest

from fastgate._core import metrics
from fastgate._core.metrics import SharedMetrics, BUCKET_BOUNDS_S
from fastgate._core.pipeline import RequestContext, monotonic_s


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
