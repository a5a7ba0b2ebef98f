"""fastgate.observability.tracing_export: spans reach a real OTLP/HTTP receiver started here, which
decodes them; slow, failing and absent collectors cost counted drops, not blocking."""
import gzip
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import ApiStage, RequestContext, Route
from fastgate._core.upstream import Target, UpstreamGroup
from fastgate.observability.tracing_export import build_tracer, parse_spec, record_spans

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"

try:   # when installed, every body must also parse as the protobuf message it claims to be
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
except ImportError:
    json_format = None


class Receiver:
    """An OTLP/HTTP JSON receiver on a free loopback port. `script` lists what to answer,
    one entry per POST (then 200): an int status, or ("sleep", seconds)."""

    def __init__(self, script=(), reply=b"{}"):
        self.requests = []               # (headers, decoded JSON)
        self.script = list(script)
        self.reply = reply
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    step = receiver.script.pop(0) if receiver.script else 200
                if isinstance(step, tuple):
                    time.sleep(step[1])
                    step = 200
                if step == 200:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    assert self.headers["Content-Type"] == "application/json"
                    doc = json.loads(body)
                    if json_format is not None:
                        json_format.Parse(body, ExportTraceServiceRequest())
                    with receiver.lock:
                        receiver.requests.append((dict(self.headers), doc))
                out = receiver.reply if step == 200 else b'{"code": 14}'
                try:
                    self.send_response(step)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                except OSError:
                    pass              # the exporter timed out and left

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self):
        with self.lock:
            return [span for _, doc in self.requests for rs in doc["resourceSpans"]
                    for ss in rs["scopeSpans"] for span in ss["spans"]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def spec(endpoint, **kw):
    return {"endpoint": endpoint, "sampler": "always_on", "flush_interval_ms": 50, **kw}


def context(status=200, route_key="GET /pets/{id}", target=True, tls=False):
    api = ApiStage(api_id="a1b2c3", stage="prod")
    ctx = RequestContext()
    ctx.method = b"GET"
    ctx.path = b"/pets/7"
    ctx.query = b"full=1"
    ctx.host = b"api.example.com:8443"
    ctx.route_host = b"api.example.com"
    ctx.headers = [(b"Host", ctx.host), (b"User-Agent", b"curl/8.5.0")]
    ctx.http_minor = 1
    ctx.tls = tls
    ctx.local_port = 8443
    ctx.source_ip = b"127.0.0.1"
    ctx.source_port = 50123
    ctx.client_ip = b"203.0.113.9"
    ctx.request_id = b"req-1"
    ctx.api = api
    ctx.route = Route(route_key=route_key, api=api)
    ctx.start = monotonic_s() - 0.020
    if target:
        group = UpstreamGroup("pets")
        ctx.target = Target(group, "http://10.0.0.5:9000", "http", "10.0.0.5", 9000)
        ctx.upstream_path = b"/pets/7?full=1"
        ctx.attempts = 1
        ctx.integration_start = ctx.start + 0.005
        ctx.integration_end = ctx.start + 0.015
    ctx.end = ctx.start + 0.018
    ctx.status = status
    return ctx


def attrs(span):
    out = {}
    for a in span["attributes"]:
        (kind, value), = a["value"].items()
        out[a["key"]] = int(value) if kind == "intValue" else value
    return out


def test_spans_reach_the_collector_with_semconv_attributes_and_links(receiver):
    tracer = build_tracer(spec(receiver.endpoint, service_name="edge"), worker_id=3)
    try:
        t = tracer.begin(f"00-{TID}-{PID}-01".encode(), b"rojo=1", None, 1.0)
        t.auth_start = monotonic_s() - 0.019
        t.auth_end = t.auth_start + 0.002
        t.upstream_status = 200
        tracer.finish(t, context())
        assert wait_for(lambda: len(receiver.spans()) == 3)
    finally:
        tracer.close()
    headers, doc = receiver.requests[0]
    resource = attrs(doc["resourceSpans"][0]["resource"])
    assert resource["service.name"] == "edge" and resource["service.instance.id"].endswith("/3")
    by_kind = {s["kind"]: s for s in receiver.spans()}
    server, client, auth = by_kind[2], by_kind[3], by_kind[1]
    assert {s["traceId"] for s in (server, client, auth)} == {TID}
    assert server["parentSpanId"] == PID and server["spanId"] == t.span_id
    assert server["name"] == "GET /pets/{id}" and server["traceState"] == "rojo=1"
    assert client["parentSpanId"] == auth["parentSpanId"] == server["spanId"]
    # the span the upstream saw as its parent is the CLIENT span
    assert client["spanId"] == t.client_span_id
    assert "status" not in server and "status" not in client
    assert attrs(server) == {
        "http.request.method": "GET", "url.path": "/pets/7", "url.query": "full=1",
        "url.scheme": "http", "server.address": "api.example.com", "server.port": 8443,
        "client.address": "203.0.113.9", "network.peer.address": "127.0.0.1",
        "network.peer.port": 50123, "network.protocol.version": "1.1",
        "user_agent.original": "curl/8.5.0", "http.route": "/pets/{id}",
        "http.response.status_code": 200, "fastgate.request.id": "req-1",
        "fastgate.route.key": "GET /pets/{id}", "fastgate.api.id": "a1b2c3",
        "fastgate.api.stage": "prod",
    }
    assert attrs(client) == {
        "http.request.method": "GET", "server.address": "10.0.0.5", "server.port": 9000,
        "url.full": "http://10.0.0.5:9000/pets/7?full=1", "http.response.status_code": 200,
    }
    assert auth["name"] == "authorizer"
    start, end = int(server["startTimeUnixNano"]), int(server["endTimeUnixNano"])
    assert end - start == pytest.approx(18_000_000, abs=10_000)
    assert abs(start - (time.time_ns() - 20_000_000)) < 5_000_000_000
    assert start < int(auth["startTimeUnixNano"]) < int(client["startTimeUnixNano"]) \
        < int(client["endTimeUnixNano"]) < end
    assert tracer.counters == {"exported": 3, "dropped_queue_full": 0, "dropped_export_failed": 0}


def test_5xx_is_an_error_on_both_spans(receiver):
    tracer = build_tracer(spec(receiver.endpoint, compression="gzip"), worker_id=0)
    try:
        t = tracer.begin(None, None, None, 1.0)
        t.upstream_status = 503
        tracer.finish(t, context(status=503))
        t = tracer.begin(None, None, None, 1.0)           # the upstream never answered
        ctx = context(status=504)
        ctx.error_type = "INTEGRATION_TIMEOUT"
        ctx.integration_end = 0
        tracer.finish(t, ctx)
        assert wait_for(lambda: len(receiver.spans()) == 4)
    finally:
        tracer.close()
    assert receiver.requests[0][0]["Content-Encoding"] == "gzip"
    servers = sorted((s for s in receiver.spans() if s["kind"] == 2),
                     key=lambda s: attrs(s)["http.response.status_code"])
    clients = {s["parentSpanId"]: s for s in receiver.spans() if s["kind"] == 3}
    assert [s["status"]["code"] for s in servers] == [2, 2]
    assert attrs(servers[0])["error.type"] == "503"
    assert attrs(servers[1])["error.type"] == "INTEGRATION_TIMEOUT"
    assert attrs(clients[servers[0]["spanId"]])["error.type"] == "503"
    timeout_client = clients[servers[1]["spanId"]]
    assert attrs(timeout_client)["error.type"] == "INTEGRATION_TIMEOUT"
    assert "http.response.status_code" not in attrs(timeout_client)
    assert timeout_client["endTimeUnixNano"] == servers[1]["endTimeUnixNano"]


def test_unmatched_request_has_a_method_only_name():
    tracer = build_tracer(spec("http://127.0.0.1:9/v1/traces"), worker_id=0, start=False)
    t = tracer.begin(None, None, None, 1.0)
    ctx = context(status=404, target=False)
    ctx.route = None
    ctx.api = None
    ctx.method = b"PURGE"
    tracer.finish(t, ctx)
    (server,) = record_spans(tracer.drain(1)[0])
    assert server["name"] == "PURGE"
    a = attrs(server)
    assert a["http.request.method"] == "_OTHER" and a["http.request.method_original"] == "PURGE"
    assert "http.route" not in a and "fastgate.api.id" not in a and "error.type" not in a
    assert "parentSpanId" not in server and server["flags"] == 0x101


def test_retryable_status_is_retried_then_exported():
    receiver = Receiver(script=[503, 429])
    tracer = build_tracer(spec(receiver.endpoint), worker_id=0)
    try:
        tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
        assert wait_for(lambda: tracer.counters["exported"] == 1)
        assert tracer.exporter.posts == 3
    finally:
        tracer.close()
        receiver.close()


def test_non_retryable_status_drops_at_once():
    receiver = Receiver(script=[400])
    tracer = build_tracer(spec(receiver.endpoint), worker_id=0)
    try:
        tracer.finish(tracer.begin(None, None, None, 1.0), context())
        assert wait_for(lambda: tracer.counters["dropped_export_failed"] == 2)
        assert tracer.exporter.posts == 1 and tracer.counters["exported"] == 0
    finally:
        tracer.close()
        receiver.close()


def test_partial_success_counts_rejected_spans():
    receiver = Receiver(reply=b'{"partialSuccess": {"rejectedSpans": "1", "errorMessage": "x"}}')
    tracer = build_tracer(spec(receiver.endpoint), worker_id=0)
    try:
        tracer.finish(tracer.begin(None, None, None, 1.0), context())
        assert wait_for(lambda: tracer.counters["dropped_export_failed"] == 1)
        assert tracer.counters["exported"] == 1
    finally:
        tracer.close()
        receiver.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_absent_collector_counts_drops_and_never_blocks_finish():
    tracer = build_tracer(spec(f"http://127.0.0.1:{free_port()}/v1/traces", queue_size=8,
                               batch_size=4, retry_budget_ms=300), worker_id=0)
    try:
        n = 200
        for _ in range(n):
            tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
        # every span is accounted for: queued, dropped at the ring, or failed export
        assert wait_for(lambda: tracer.queued == 0 and
                        sum(tracer.counters.values()) == n, timeout=20)
        c = tracer.counters
        assert c["exported"] == 0 and c["dropped_queue_full"] > 0 and c["dropped_export_failed"] > 0
    finally:
        tracer.close()


def test_slow_collector_times_out_and_the_ring_keeps_accepting():
    receiver = Receiver(script=[("sleep", 1.0)] * 3)
    tracer = build_tracer(spec(receiver.endpoint, timeout_ms=200, retry_budget_ms=500,
                               queue_size=4, batch_size=2), worker_id=0)
    try:
        for _ in range(2):
            tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
        assert wait_for(lambda: tracer.exporter.posts >= 1)
        # the exporter is stuck in a POST: finish() still returns, filling the ring, then dropping
        for _ in range(10):
            tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
        assert tracer.counters["dropped_queue_full"] >= 6
        assert wait_for(lambda: tracer.counters["dropped_export_failed"] >= 2, timeout=20)
    finally:
        tracer.close()
        receiver.close()


def test_close_flushes_what_is_queued(receiver):
    tracer = build_tracer(spec(receiver.endpoint, flush_interval_ms=600_000), worker_id=0)
    for _ in range(5):
        tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
    time.sleep(0.1)
    assert receiver.spans() == []           # nothing made the thread send yet
    tracer.close()
    assert not tracer.exporter.thread.is_alive()
    assert len(receiver.spans()) == 5 and tracer.counters["exported"] == 5


def test_close_gives_up_at_its_deadline():
    tracer = build_tracer(spec(f"http://127.0.0.1:{free_port()}/v1/traces", flush_interval_ms=600_000,
                               shutdown_timeout_ms=300, retry_budget_ms=60_000), worker_id=0)
    for _ in range(3):
        tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
    started = time.monotonic()
    tracer.close(5.0)
    assert time.monotonic() - started < 3.0
    assert not tracer.exporter.thread.is_alive()
    assert tracer.counters["dropped_export_failed"] == 3


def test_batches_are_split_at_batch_size(receiver):
    tracer = build_tracer(spec(receiver.endpoint, batch_size=3, flush_interval_ms=600_000), worker_id=0)
    try:
        for _ in range(7):
            tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
    finally:
        tracer.close()
    assert [len(doc["resourceSpans"][0]["scopeSpans"][0]["spans"]) for _, doc in receiver.requests] \
        == [3, 3, 1]


def test_headers_from_the_spec_are_sent(receiver):
    tracer = build_tracer(spec(receiver.endpoint, headers={"Authorization": "Bearer t0k"}), worker_id=0)
    try:
        tracer.finish(tracer.begin(None, None, None, 1.0), context(target=False))
        assert wait_for(lambda: receiver.requests)
    finally:
        tracer.close()
    assert receiver.requests[0][0]["Authorization"] == "Bearer t0k"


@pytest.mark.parametrize("bad, message", [
    ({"sampling": "x"}, "unknown tracing key"),
    ({"sampler": "sometimes"}, "tracing.sampler"),
    ({"ratio": 2}, "tracing.ratio"),
    ({"queue_size": 0}, "tracing.queue_size"),
    ({"reservoir_per_s": -1}, "tracing.reservoir_per_s"),
    ({"endpoint": "grpc://x:4317"}, "tracing.endpoint"),
    ({"compression": "zstd"}, "tracing.compression"),
    ({"headers": {"a": 1}}, "tracing.headers"),
])
def test_bad_spec_is_rejected(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_spec(bad)


def test_spec_defaults():
    cfg = parse_spec({})
    assert cfg["sampler"] == "parentbased_ratio" and cfg["ratio"] == 0.01
    tracer = build_tracer({}, worker_id=0, start=False)
    assert (tracer.capacity, tracer.batch_size, tracer.ratio) == (8192, 512, 0.01)
