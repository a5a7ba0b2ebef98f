"""fastgate._core.tracing: header parsing, propagation, sampling, the span ring."""
import random
import re
import time

import pytest

from fastgate._core import tracing
from fastgate._core.metrics import SharedMetrics
from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import RequestContext, Route
from fastgate._core.tracing import (RECORD_FIELDS, SAMPLERS, Origin, Result, Tracer,
                                    parse_traceparent_value as tp, parse_xray_value as xr)

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
VALID = f"00-{TID}-{PID}-01".encode()
XRAY_ROOT = "1-5759e988-bd862e3fe1be46a994272793"


def test_compiled_module_is_loaded():
    assert tracing.__file__.endswith(".so"), tracing.__file__


# --- W3C traceparent (test vectors after w3c/trace-context test/test.py) ---

@pytest.mark.parametrize("value, expect", [
    (VALID, (TID, PID, 1)),
    (f"00-{TID}-{PID}-00".encode(), (TID, PID, 0)),
    (f"00-{TID}-{PID}-09".encode(), (TID, PID, 1)),            # unknown flag bits: only bit 0 counts
    (f"00-{TID}-{PID}-fe".encode(), (TID, PID, 0)),
    (b" \t" + VALID + b"  ", (TID, PID, 1)),                     # the field's optional whitespace
    # a future version: more fields after a '-' at byte 55 are ignored (section 3.2.4)
    (f"cc-{TID}-{PID}-01-what-the-future-will-be-like".encode(), (TID, PID, 1)),
    (f"01-{TID}-{PID}-01".encode(), (TID, PID, 1)),
    (f"fe-{TID}-{PID}-01-".encode(), (TID, PID, 1)),
])
def test_traceparent_valid(value, expect):
    assert tp(value) == expect


@pytest.mark.parametrize("value", [
    b"",
    f"ff-{TID}-{PID}-01".encode(),                               # version ff is forbidden
    f"00-{TID}-{PID}-01-extra".encode(),                         # version 00 is exactly 55 bytes
    f"00-{TID}-{PID}-011".encode(),
    f"cc-{TID}-{PID}-01x".encode(),                              # more, but not after a '-'
    f"00-{TID.upper()}-{PID}-01".encode(),                       # uppercase hex
    f"00-{TID}-{PID.upper()}-01".encode(),
    f"0G-{TID}-{PID}-01".encode(),
    f"00-{'0' * 32}-{PID}-01".encode(),                          # all-zero trace id
    f"00-{TID}-{'0' * 16}-01".encode(),                          # all-zero parent id
    f"00-{TID[:-1]}-{PID}-01".encode(),                          # short trace id
    f"00-{TID}-{PID[:-1]}-01".encode(),
    f"00-{TID}g-{PID[:-1]}-01".encode(),
    f"00_{TID}-{PID}-01".encode(),                               # wrong separators
    f"00-{TID}_{PID}-01".encode(),
    f"00-{TID}-{PID}_01".encode(),
    f"00-{TID}-{PID}-0x".encode(),                               # bad flags
    f"0-{TID}-{PID}-01".encode(),
    f"00-{TID}-{PID}-1".encode(),
])
def test_traceparent_invalid(value):
    assert tp(value) is None


# --- X-Amzn-Trace-Id ---

@pytest.mark.parametrize("value, expect", [
    (f"Root={XRAY_ROOT};Parent=53995c3f42cd8ad8;Sampled=1",
     ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", 1, b"")),
    (f"Root={XRAY_ROOT}", ("5759e988bd862e3fe1be46a994272793", None, -1, b"")),
    (f"Root={XRAY_ROOT};Sampled=0", ("5759e988bd862e3fe1be46a994272793", None, 0, b"")),
    (f"Root={XRAY_ROOT};Sampled=?", ("5759e988bd862e3fe1be46a994272793", None, -1, b"")),
    # any order, optional whitespace, uppercase hex; Self= stops here, others go on
    (f"Self=1-67891234-12456789abcdef012345678;Sampled=1 ; Parent=53995C3F42CD8AD8; Root={XRAY_ROOT.upper()};"
     f"Lineage=a87bd80c:1|68fd508a:5;CalledFrom=x",
     ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8", 1,
      b";Lineage=a87bd80c:1|68fd508a:5;CalledFrom=x")),
    (f"Root={XRAY_ROOT};Parent=0000000000000000", ("5759e988bd862e3fe1be46a994272793", None, -1, b"")),
])
def test_xray_valid(value, expect):
    assert xr(value.encode()) == expect


@pytest.mark.parametrize("value", [
    "", "Parent=53995c3f42cd8ad8;Sampled=1",                    # no Root
    "Root=2-5759e988-bd862e3fe1be46a994272793",                  # unknown version
    "Root=1-5759e988-bd862e3fe1be46a99427279",                   # short
    "Root=1-5759e988bd862e3fe1be46a994272793",
    "Root=1-5759e98g-bd862e3fe1be46a994272793",
    "Root=1-00000000-000000000000000000000000",
    f"Root={XRAY_ROOT};Parent=53995c3f42cd8ad",                  # bad parent
    "root=" + XRAY_ROOT,                                          # keys are case-sensitive
    "Root=" + XRAY_ROOT + ";" + "Lineage=x" * 200,               # over XRAY_MAX bytes
])
def test_xray_invalid(value):
    assert xr(value.encode()) is None


# --- begin(): context, propagation ---

def tracer(**kw):
    kw.setdefault("sampler", SAMPLERS["parentbased_ratio"])
    kw.setdefault("ratio", 0.0)
    t = Tracer(**kw)
    t.reseed(12345)
    return t


TRACEPARENT_RE = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])\Z")
XRAY_RE = re.compile(rb"Root=1-([0-9a-f]{8})-([0-9a-f]{24});Parent=([0-9a-f]{16});Sampled=([01])(.*)\Z")


def upstream(trace):
    """{header name: value} of what goes upstream, checking the CRLF framing."""
    head = trace.upstream_headers()
    assert head.endswith(b"\r\n")
    lines = head[:-2].split(b"\r\n")
    out = dict(line.split(b": ", 1) for line in lines)
    assert len(out) == len(lines)
    assert out[b"traceparent"] == trace.traceparent()
    assert out[b"X-Amzn-Trace-Id"] == trace.xray_header()
    return out


def test_w3c_context_is_continued():
    t = tracer().begin(VALID, b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", None, 1.0)
    assert t.origin == Origin.ORIGIN_W3C and t.sampled
    assert (t.trace_id, t.parent_id) == (TID, PID)
    h = upstream(t)
    m = TRACEPARENT_RE.match(h[b"traceparent"])
    assert m.group(1).decode() == TID
    # the upstream's parent is the gateway's CLIENT span, neither the caller's nor the SERVER span
    assert m.group(2).decode() == t.client_span_id != t.span_id
    assert m.group(2).decode() != PID and m.group(3) == b"1"
    assert h[b"tracestate"] == b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    x = XRAY_RE.match(h[b"X-Amzn-Trace-Id"])
    assert (x.group(1) + x.group(2)).decode() == TID
    assert x.group(3) == m.group(2) and x.group(4) == b"1" and x.group(5) == b""


def test_unsampled_parent_still_propagates():
    t = tracer(ratio=1.0).begin(f"00-{TID}-{PID}-00".encode(), None, None, 1.0)
    assert not t.sampled
    h = upstream(t)
    assert TRACEPARENT_RE.match(h[b"traceparent"]).group(3) == b"0"
    assert h[b"X-Amzn-Trace-Id"].endswith(b";Sampled=0")
    assert b"tracestate" not in h


def test_invalid_traceparent_starts_a_new_trace_and_drops_tracestate():
    before = int(time.time())
    t = tracer().begin(f"ff-{TID}-{PID}-01".encode(), b"rojo=1", None, 1.0)
    after = int(time.time())
    assert t.origin == Origin.ORIGIN_NEW and t.parent_id is None
    assert t.trace_id != TID
    # X-Ray compatible: the first 8 hex digits are the epoch seconds
    assert before - 1 <= int(t.trace_id[:8], 16) <= after + 1
    assert b"tracestate" not in upstream(t)


def test_xray_context_is_continued_with_its_extra_fields():
    value = f"Root={XRAY_ROOT};Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1;Self=1-x-y".encode()
    t = tracer().begin(None, b"ignored=1", value, 1.0)
    assert t.origin == Origin.ORIGIN_XRAY and t.sampled
    assert (t.trace_id, t.parent_id) == ("5759e988bd862e3fe1be46a994272793", "53995c3f42cd8ad8")
    h = upstream(t)
    assert h[b"X-Amzn-Trace-Id"] == (f"Root={XRAY_ROOT};Parent={t.client_span_id};Sampled=1;"
                                     f"Lineage=a87bd80c:1").encode()
    assert h[b"traceparent"] == f"00-{t.trace_id}-{t.client_span_id}-01".encode()
    assert b"tracestate" not in h          # tracestate belongs to a traceparent


def test_traceparent_wins_over_xray_but_xray_fields_are_kept():
    value = f"Root={XRAY_ROOT};Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a:1".encode()
    t = tracer().begin(VALID, None, value, 1.0)
    assert t.origin == Origin.ORIGIN_W3C and t.trace_id == TID and t.sampled
    assert upstream(t)[b"X-Amzn-Trace-Id"].endswith(b";Sampled=1;Lineage=a:1")


def test_xray_sampled_question_mark_is_decided_here():
    value = f"Root={XRAY_ROOT};Sampled=?".encode()
    assert tracer(ratio=1.0).begin(None, None, value, 1.0).sampled
    assert not tracer(ratio=0.0).begin(None, None, value, 1.0).sampled
    # and a parent's decision is followed whatever the ratio says
    assert not tracer(ratio=1.0).begin(None, None, value.replace(b"?", b"0"), 1.0).sampled
    assert tracer(ratio=0.0).begin(None, None, value.replace(b"?", b"1"), 1.0).sampled


def test_new_ids_are_unique_and_valid():
    tr = Tracer()
    seen = set()
    for _ in range(2000):
        t = tr.begin(None, None, None, 1.0)
        h = upstream(t)
        assert TRACEPARENT_RE.match(h[b"traceparent"]) and XRAY_RE.match(h[b"X-Amzn-Trace-Id"])
        for ident in (t.trace_id, t.span_id, t.client_span_id):
            assert ident not in seen and int(ident, 16) != 0
            seen.add(ident)
        # what the gateway sends parses as valid in both formats, the same trace
        assert tp(t.traceparent())[0] == xr(t.xray_header())[0] == t.trace_id


def test_reseeded_tracers_differ():
    a, b = Tracer(), Tracer()
    assert a.begin(None, None, None, 1.0).span_id != b.begin(None, None, None, 1.0).span_id


# --- sampling ---

def ratio_oracle(trace_id_hex, ratio):
    # OpenTelemetry's TraceIdRatioBased: the low 64 bits against round(ratio * 2**64)
    return int(trace_id_hex[16:], 16) < round(ratio * 2 ** 64)


def test_ratio_is_trace_id_based_and_ignores_parent_flag():
    tr = tracer(sampler=SAMPLERS["ratio"], ratio=0.3)
    rnd = random.Random(7)
    for _ in range(3000):
        tid = f"{rnd.getrandbits(128):032x}"
        flag = rnd.choice("01")
        t = tr.begin(f"00-{tid}-{PID}-0{flag}".encode(), None, None, 1.0)
        assert t.sampled == ratio_oracle(tid, 0.3), tid


@pytest.mark.parametrize("ratio", [0.01, 0.25, 0.5])
def test_ratio_distribution_of_new_traces(ratio):
    tr = tracer(ratio=ratio)
    n = 40000
    sampled = sum(tr.begin(None, None, None, 1.0).sampled for _ in range(n))
    sd = (n * ratio * (1 - ratio)) ** 0.5
    assert abs(sampled - n * ratio) < 5 * sd, (sampled, n * ratio)


def test_ratio_bounds():
    assert tracer(ratio=0.0).begin_many([(None, None, None)], 1.0, 5000) == 0
    assert tracer(ratio=1.0).begin_many([(None, None, None)], 1.0, 5000) == 5000
    with pytest.raises(ValueError):
        Tracer(ratio=1.5)


def test_reservoir_per_second_with_a_fake_clock():
    tr = tracer(ratio=0.0, reservoir_per_s=3)
    begin = lambda now: tr.begin(None, None, None, now).sampled
    assert [begin(100.1) for _ in range(5)] == [True, True, True, False, False]
    assert not begin(100.99)
    assert [begin(101.0) for _ in range(4)] == [True, True, True, False]
    assert [begin(250.5) for _ in range(4)] == [True, True, True, False]


def test_reservoir_then_ratio_of_the_rest():
    tr = tracer(ratio=0.5, reservoir_per_s=10)
    for second in range(20):
        got = sum(tr.begin(None, None, None, second + 0.5).sampled for _ in range(1010))
        # 10 from the reservoir, then about half of the other 1000
        assert 10 + 500 - 5 * 16 < got < 10 + 500 + 5 * 16


def test_reservoir_is_not_used_by_sampled_parents():
    tr = tracer(ratio=0.0, reservoir_per_s=1)
    assert tr.begin(VALID, None, None, 5.0).sampled                 # parent says yes
    assert tr.begin(None, None, None, 5.0).sampled                  # reservoir still has its one
    assert not tr.begin(None, None, None, 5.0).sampled


def test_always_on_and_off():
    unsampled_parent = f"00-{TID}-{PID}-00".encode()
    assert tracer(sampler=SAMPLERS["always_on"]).begin(unsampled_parent, None, None, 1.0).sampled
    off = tracer(sampler=SAMPLERS["always_off"], ratio=1.0, reservoir_per_s=5)
    t = off.begin(VALID, None, None, 1.0)
    assert not t.sampled and upstream(t)[b"traceparent"].endswith(b"-00")


# --- finish() and the ring ---

def context(status=200, integration=True):
    ctx = RequestContext()
    ctx.method = b"GET"
    ctx.path = b"/pets/7"
    ctx.host = b"api.example.com:8080"
    ctx.route_host = b"api.example.com"
    ctx.route = Route(route_key="GET /pets/{id}")
    ctx.start = monotonic_s() - 0.010
    if integration:
        ctx.integration_start = ctx.start + 0.002
        ctx.integration_end = ctx.start + 0.008
    ctx.end = ctx.start + 0.009
    ctx.status = status
    return ctx


def test_unsampled_finish_queues_nothing():
    tr = tracer(ratio=0.0)
    tr.finish(tr.begin(None, None, None, 1.0), context())
    assert tr.queued == 0 and tr.drain(10) == []


def test_sampled_finish_queues_one_record():
    tr = tracer(ratio=1.0)
    t = tr.begin(VALID, b"a=1", None, 1.0)
    t.auth_start = monotonic_s() - 0.009
    t.auth_end = t.auth_start + 0.001
    t.upstream_status = 201
    ctx = context()
    before_ns = time.time_ns()
    tr.finish(t, ctx)
    assert tr.queued == 1
    (rec,) = tr.drain(10)
    r = dict(zip(RECORD_FIELDS, rec))
    assert len(rec) == len(RECORD_FIELDS)
    assert r["trace_id"].hex() == TID and r["parent_id"].hex() == PID
    assert r["span_id"].hex() == t.span_id and r["client_id"].hex() == t.client_span_id
    assert r["auth_id"] is not None and r["auth_id"] not in (r["span_id"], r["client_id"])
    assert r["tracestate"] == b"a=1" and r["upstream_status"] == 201
    assert r["route_key"] == "GET /pets/{id}" and r["method"] == b"GET"
    # monotonic times became epoch ns, the 10 ms request about 10 ms before now
    assert abs(r["start_ns"] - (before_ns - 10_000_000)) < 50_000_000
    assert r["end_ns"] - r["start_ns"] == pytest.approx(9_000_000, abs=2000)
    assert r["integration_end_ns"] - r["integration_start_ns"] == pytest.approx(6_000_000, abs=2000)
    assert tr.queued == 0


def test_queue_full_drops_and_counts_spans():
    tr = tracer(ratio=1.0, queue_size=4, batch_size=2)
    for _ in range(4):
        tr.finish(tr.begin(None, None, None, 1.0), context())
    t = tr.begin(None, None, None, 1.0)
    t.auth_start = t.auth_end = monotonic_s()
    tr.finish(t, context())                                    # 3 spans lost
    tr.finish(tr.begin(None, None, None, 1.0), context(integration=False))   # 1 more
    assert tr.queued == 4
    assert tr.counters == {"exported": 0, "dropped_queue_full": 4, "dropped_export_failed": 0}
    assert len(tr.drain(3)) == 3 and tr.queued == 1
    tr.finish(tr.begin(None, None, None, 1.0), context())      # room again, ring wrapped
    assert [r[0] for r in tr.drain(10)] and tr.queued == 0


def test_ring_keeps_order_across_wraps():
    tr = tracer(ratio=1.0, queue_size=3)
    ids = []
    for round_ in range(5):
        for _ in range(2):
            t = tr.begin(None, None, None, 1.0)
            ids.append(t.span_id)
            tr.finish(t, context())
        assert [r[1].hex() for r in tr.drain(10)] == ids[-2:]


def test_wake_called_once_per_batch():
    tr = tracer(ratio=1.0, queue_size=100, batch_size=3)
    calls = []
    tr.wake = lambda: calls.append(tr.queued)
    for _ in range(7):
        tr.finish(tr.begin(None, None, None, 1.0), context())
    assert calls == [3]
    tr.drain(100)
    for _ in range(3):
        tr.finish(tr.begin(None, None, None, 1.0), context())
    assert calls == [3, 3]


def test_counters_go_to_shared_memory():
    m = SharedMetrics.create(64)
    tr = tracer(ratio=1.0, queue_size=1)
    tr.attach_metrics(m)
    for _ in range(3):
        tr.finish(tr.begin(None, None, None, 1.0), context())       # 2 spans each, 2 dropped
    tr.count_result(Result.RESULT_EXPORTED, 5)
    tr.count_result(Result.RESULT_DROPPED_EXPORT_FAILED, 2)
    text = m.render().decode()
    assert 'fastgate_trace_spans_total{result="dropped_queue_full"} 4' in text
    assert 'fastgate_trace_spans_total{result="exported"} 5' in text
    assert 'fastgate_trace_spans_total{result="dropped_export_failed"} 2' in text
    # a second worker's tracer lands on the same series
    other = tracer(ratio=1.0)
    other.attach_metrics(m)
    other.count_result(Result.RESULT_EXPORTED, 1)
    assert 'fastgate_trace_spans_total{result="exported"} 6' in m.render().decode()
