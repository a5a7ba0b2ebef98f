"""Per-request cost of tracing on the loop thread (begin, upstream headers, finish; sampled
and not) against a naive Python implementation and the OpenTelemetry SDK.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_tracing.py
Targets: an unsampled request (begin + upstream_headers + finish) well under 1 µs; a
sampled one a few µs (one tuple queued). The SDK's span costs 20-50 µs: it must not
run per request. Encoding (test_export_encode) runs on the exporter thread.
"""
import os
import re
import time

import orjson
import pytest

from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import ApiStage, RequestContext, Route
from fastgate._core.tracing import SAMPLERS, Tracer
from fastgate._core.upstream import Target, UpstreamGroup
from fastgate.observability.tracing_export import record_spans

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
UNSAMPLED_PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
XRAY = b"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0;Lineage=a87bd80c:1"
PER_ROUND = 10_000


def make_ctx():
    api = ApiStage(api_id="a1b2c3", stage="prod")
    ctx = RequestContext()
    now = monotonic_s()
    ctx.method, ctx.path, ctx.source_ip, ctx.client_ip = b"GET", b"/pets/42", b"198.51.100.23", b"198.51.100.23"
    ctx.host, ctx.route_host, ctx.http_minor, ctx.status = b"api.example.com", b"api.example.com", 1, 200
    ctx.headers = [(b"Host", b"api.example.com"), (b"Accept", b"application/json"),
                   (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")]
    ctx.request_id = b"4f6c2a1e-9b7d-4c3a-8e2f-1a2b3c4d5e6f"
    ctx.start, ctx.end = now - 0.0042, now
    ctx.integration_start, ctx.integration_end = now - 0.0035, now - 0.0004
    ctx.api = api
    ctx.route = Route(route_key="GET /pets/{id}", api=api)
    ctx.target = Target(UpstreamGroup("pets"), "http://10.0.0.5:9000", "http", "10.0.0.5", 9000)
    ctx.upstream_path = b"/pets/42"
    return ctx


def tracer(ratio):
    return Tracer(sampler=SAMPLERS["parentbased_ratio"], ratio=ratio, queue_size=PER_ROUND * 2,
                  batch_size=PER_ROUND * 2)


@pytest.mark.parametrize("incoming", ["none", "traceparent", "xray"])
def test_begin_many(benchmark, incoming):
    """begin() from C, PER_ROUND requests per round: parse + decide + ids, no Python call."""
    headers = {"none": (None, None, None), "traceparent": (UNSAMPLED_PARENT, b"rojo=1", None),
               "xray": (None, None, XRAY)}[incoming]
    t = tracer(0.0)
    benchmark(t.begin_many, [headers], 1.0, PER_ROUND)


def test_begin_unsampled(benchmark):
    t = tracer(0.0)
    benchmark(t.begin, None, None, None, 1.0)


def test_upstream_headers(benchmark):
    trace = tracer(0.0).begin(None, None, XRAY, 1.0)
    benchmark(trace.upstream_headers)


def test_request_unsampled(benchmark):
    """What one unsampled proxied request costs: begin + upstream_headers + finish."""
    t, ctx = tracer(0.0), make_ctx()

    def request():
        trace = t.begin(TRACEPARENT[:-1] + b"0", None, None, 1.0)
        trace.upstream_headers()
        t.finish(trace, ctx)
    benchmark(request)


def test_request_sampled(benchmark):
    """Same, sampled: finish() builds and queues the span record (drained every round)."""
    t, ctx = tracer(1.0), make_ctx()

    def requests():
        for _ in range(1000):
            trace = t.begin(None, None, None, 1.0)
            trace.upstream_headers()
            t.finish(trace, ctx)
        t.drain(1000)
    benchmark(requests)


def test_export_encode(benchmark):
    """Exporter thread, per sampled request: record -> OTLP/JSON spans -> bytes (1000 per round)."""
    t, ctx = tracer(1.0), make_ctx()
    for _ in range(1000):
        t.finish(t.begin(None, None, None, 1.0), ctx)
    records = t.drain(1000)
    benchmark(lambda: orjson.dumps([s for r in records for s in record_spans(r)]))


# --- baselines ---

_TP = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")


def naive_request(traceparent, ratio, queue, ctx):
    # What a straightforward Python implementation does per request.
    m = _TP.match(traceparent.decode().strip()) if traceparent else None
    if m and m.group(1) != "ff":
        trace_id, sampled = m.group(2), int(m.group(4), 16) & 1
    else:
        trace_id = f"{int(time.time()):08x}{os.urandom(12).hex()}"
        sampled = int(trace_id[16:], 16) < ratio * 2 ** 64
    span_id, client_id = os.urandom(8).hex(), os.urandom(8).hex()
    headers = (f"traceparent: 00-{trace_id}-{client_id}-0{int(sampled)}\r\n"
               f"X-Amzn-Trace-Id: Root=1-{trace_id[:8]}-{trace_id[8:]};Parent={client_id};"
               f"Sampled={int(sampled)}\r\n").encode()
    if sampled:
        queue.append({"trace_id": trace_id, "span_id": span_id, "start": ctx.start, "end": ctx.end,
                      "status": ctx.status, "route": ctx.route.route_key})
    return headers


def test_naive_request_unsampled(benchmark):
    ctx, queue = make_ctx(), []
    benchmark(naive_request, TRACEPARENT[:-1] + b"0", 0.0, queue, ctx)


def test_naive_request_new_trace(benchmark):
    ctx, queue = make_ctx(), []
    benchmark(naive_request, None, 0.0, queue, ctx)


def test_otel_sdk_span(benchmark):
    """The OpenTelemetry SDK per request: extract, a SERVER span with attributes, inject."""
    trace_sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    provider = trace_sdk.TracerProvider()      # no processor: span building alone
    otel = provider.get_tracer("bench")
    prop = TraceContextTextMapPropagator()
    ctx = make_ctx()
    incoming = {"traceparent": TRACEPARENT.decode()}

    def request():
        parent = prop.extract(incoming)
        with otel.start_as_current_span("GET /pets/{id}", context=parent, kind=SpanKind.SERVER,
                                        attributes={"http.request.method": "GET",
                                                    "url.path": "/pets/42",
                                                    "http.route": "/pets/{id}"}) as span:
            out = {}
            prop.inject(out)
            span.set_attribute("http.response.status_code", ctx.status)
    benchmark(request)
