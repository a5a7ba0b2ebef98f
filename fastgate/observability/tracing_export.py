"""Tracing config -> a Tracer, and the thread that exports its spans over OTLP/HTTP.

The hot path (fastgate._core.tracing) only queues one tuple per sampled request.
Here, on one daemon thread per worker, those tuples become OTLP spans, are
encoded as OTLP/JSON and POSTed to the collector in batches; a slow or absent
collector costs dropped spans (counted), never request latency.

Why OTLP/JSON and not protobuf: it needs no new dependency (orjson is already
one), the collector accepts it on the same /v1/traces endpoint
(https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding), and at the
sampling rates a gateway runs with (1% of 20k requests/s is 600 spans/s) the
larger body does not matter. See docs/tracing.md.
"""
from __future__ import annotations

import gzip
import http.client
import os
import random
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

import orjson

from fastgate._core.tracing import RECORD_FIELDS, SAMPLERS, Result, Tracer

# The spec dict the control plane hands to build_tracer, with its defaults.
DEFAULTS = {
    "sampler": "parentbased_ratio",   # always_off | always_on | ratio | parentbased_ratio
    "ratio": 0.01,                    # share of root traces sampled after the reservoir, 0..1
    "reservoir_per_s": 0,             # root traces sampled first each second, per worker
    "endpoint": "http://127.0.0.1:4318/v1/traces",
    "service_name": "fastgate",
    "resource_attributes": {},        # extra resource attributes, string values
    "headers": {},                    # extra HTTP headers on every export (auth tokens)
    "compression": "none",            # none | gzip
    "batch_size": 512,                # span records (requests) per POST
    "flush_interval_ms": 1000,        # longest a record waits before its batch is sent
    "queue_size": 8192,               # span records buffered; past it finish() drops and counts
    "timeout_ms": 2000,               # per POST (connect + send + response)
    "retry_budget_ms": 5000,          # time one batch may spend on retries before it is dropped
    "shutdown_timeout_ms": 2000,      # close() flushes for at most this long
}

# OTLP/HTTP: only these are retryable; every other 4xx/5xx MUST NOT be retried
# (https://opentelemetry.io/docs/specs/otlp/#retryable-response-codes)
RETRYABLE = frozenset((429, 502, 503, 504))
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

# OTLP enum values (opentelemetry/proto/trace/v1/trace.proto)
ENCODE_YIELD_EVERY = 32    # records encoded between two GIL hand-overs to the event loop
KIND_INTERNAL, KIND_SERVER, KIND_CLIENT = 1, 2, 3
STATUS_ERROR = 2
FLAG_SAMPLED = 0x01
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200

# http.request.method is one of these or "_OTHER" (semantic conventions, HTTP spans)
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS",
                           "TRACE", "PATCH"))
INTEGRATION_NAMES = {1: "mock", 2: "echo"}    # pipeline.Integration without a remote call


def parse_spec(spec: dict) -> dict:
    """The spec with defaults filled in; ValueError naming the bad key otherwise."""
    unknown = set(spec) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown tracing key(s): {', '.join(sorted(unknown))}")
    cfg = {**DEFAULTS, **spec}
    if cfg["sampler"] not in SAMPLERS:
        raise ValueError(f"tracing.sampler must be one of {', '.join(SAMPLERS)}, not {cfg['sampler']!r}")
    if not isinstance(cfg["ratio"], (int, float)) or not 0 <= cfg["ratio"] <= 1:
        raise ValueError(f"tracing.ratio must be a number within 0..1, not {cfg['ratio']!r}")
    for key in ("reservoir_per_s",):
        if not isinstance(cfg[key], int) or cfg[key] < 0:
            raise ValueError(f"tracing.{key} must be an integer >= 0, not {cfg[key]!r}")
    for key in ("batch_size", "flush_interval_ms", "queue_size", "timeout_ms",
                "retry_budget_ms", "shutdown_timeout_ms"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"tracing.{key} must be an integer >= 1, not {cfg[key]!r}")
    url = urlsplit(cfg["endpoint"])
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"tracing.endpoint must be an http(s) URL, not {cfg['endpoint']!r}")
    if cfg["compression"] not in ("none", "gzip"):
        raise ValueError(f"tracing.compression must be none or gzip, not {cfg['compression']!r}")
    for key in ("headers", "resource_attributes"):
        if not isinstance(cfg[key], dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in cfg[key].items()):
            raise ValueError(f"tracing.{key} must map strings to strings")
    return cfg


def build_tracer(spec: dict, *, worker_id: int, metrics=None, start: bool = True) -> Tracer:
    """A Tracer for one worker, its exporter thread started (unless start=False).
    Call after fork (threads do not survive it). metrics: the SharedMetrics to count
    fastgate_trace_spans_total{result} into, or None."""
    cfg = parse_spec(spec)
    tracer = Tracer(sampler=SAMPLERS[cfg["sampler"]], ratio=float(cfg["ratio"]),
                    reservoir_per_s=cfg["reservoir_per_s"], queue_size=cfg["queue_size"],
                    batch_size=cfg["batch_size"])
    if metrics is not None:
        tracer.attach_metrics(metrics)
    exporter = SpanExporter(tracer, cfg, worker_id=worker_id)
    tracer.exporter = exporter
    tracer.wake = exporter.wake
    if start:
        exporter.start()
    return tracer


# --- records -> OTLP/JSON spans ---

def _attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}   # proto3 JSON: int64 as a string
    return {"key": key, "value": {"stringValue": value}}


def _text(b) -> str:
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


def _host_port(host: bytes, default_port: int) -> int:
    # Host: name[:port], [v6]:port
    _, sep, port = host.rpartition(b":")
    if sep and port.isdigit() and not host.endswith(b"]"):
        return int(port)
    return default_port


def record_spans(rec) -> list:
    """The OTLP/JSON spans of one queued record: SERVER, and the CLIENT (integration)
    and INTERNAL (authorizer) children when they ran."""
    r = dict(zip(RECORD_FIELDS, rec))
    trace_id = r["trace_id"].hex()
    server_id = r["span_id"].hex()
    method = _text(r["method"]) or "GET"
    otel_method = method if method in KNOWN_METHODS else "_OTHER"
    status = r["status"]
    route_key = r["route_key"]
    template = route_key.split(" ", 1)[1] if route_key and " " in route_key else None
    scheme = "https" if r["tls"] else "http"

    attrs = [
        _attr("http.request.method", otel_method),
        _attr("url.path", _text(r["path"])),
        _attr("url.scheme", scheme),
        _attr("server.address", _text(r["route_host"])),
        _attr("server.port", _host_port(r["host"], r["local_port"])),
        _attr("client.address", _text(r["client_ip"])),
        _attr("network.peer.address", _text(r["source_ip"])),
        _attr("network.peer.port", r["source_port"]),
        _attr("network.protocol.version", "1.1" if r["http_minor"] else "1.0"),
        _attr("http.response.status_code", status),
        _attr("fastgate.request.id", _text(r["request_id"])),
    ]
    if otel_method == "_OTHER":
        attrs.append(_attr("http.request.method_original", method))
    if r["query"]:
        attrs.append(_attr("url.query", _text(r["query"])))
    if r["user_agent"] is not None:
        attrs.append(_attr("user_agent.original", _text(r["user_agent"])))
    if template:
        attrs.append(_attr("http.route", template))
    if route_key:
        attrs.append(_attr("fastgate.route.key", route_key))
    if r["api_id"]:
        attrs.append(_attr("fastgate.api.id", r["api_id"]))
        attrs.append(_attr("fastgate.api.stage", r["stage"]))
    if r["error_type"]:
        attrs.append(_attr("fastgate.gateway.response_type", r["error_type"]))
    if status >= 500:
        attrs.append(_attr("error.type", r["error_type"] or str(status)))

    flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE
    server = {
        "traceId": trace_id,
        "spanId": server_id,
        "name": f"{method} {template}" if template else method,
        "kind": KIND_SERVER,
        "startTimeUnixNano": str(r["start_ns"]),
        "endTimeUnixNano": str(r["end_ns"]),
        "attributes": attrs,
        "flags": flags | (FLAG_IS_REMOTE if r["parent_id"] is not None else 0),
    }
    if r["parent_id"] is not None:
        server["parentSpanId"] = r["parent_id"].hex()
    if r["tracestate"]:
        server["traceState"] = _text(r["tracestate"])
    if status >= 500:
        server["status"] = {"code": STATUS_ERROR}
    spans = [server]

    if r["client_id"] is not None:
        spans.append(_integration_span(r, trace_id, server_id, method, otel_method, flags))
    if r["auth_id"] is not None:
        spans.append({
            "traceId": trace_id,
            "spanId": r["auth_id"].hex(),
            "parentSpanId": server_id,
            "name": "authorizer",
            "kind": KIND_INTERNAL,
            "startTimeUnixNano": str(r["auth_start_ns"]),
            "endTimeUnixNano": str(r["auth_end_ns"] or r["auth_start_ns"]),
            "attributes": [],
            "flags": flags,
        })
    return spans


def _integration_span(r, trace_id, server_id, method, otel_method, flags) -> dict:
    upstream_status = r["upstream_status"]
    integration = r["integration"]
    attrs = []
    failed = False
    if integration == 0 and r["target_host"] is not None:       # HTTP proxy
        kind, name = KIND_CLIENT, method
        path = _text(r["upstream_path"]) or "/"
        attrs += [
            _attr("http.request.method", otel_method),
            _attr("server.address", r["target_host"]),
            _attr("server.port", r["target_port"]),
            _attr("url.full", f"{r['target_scheme']}://{r['target_host']}:{r['target_port']}{path}"),
        ]
        if r["attempts"] > 1:
            attrs.append(_attr("http.request.resend_count", r["attempts"] - 1))
        if upstream_status:
            attrs.append(_attr("http.response.status_code", upstream_status))
            # a client span's error starts at 4xx (semantic conventions, HTTP client status)
            if upstream_status >= 400:
                attrs.append(_attr("error.type", str(upstream_status)))
                failed = True
        elif r["error_type"]:
            attrs.append(_attr("error.type", r["error_type"]))
            failed = True
    elif integration == 3:                                        # function
        kind, name = KIND_CLIENT, r["function_name"] or "function"
        attrs.append(_attr("faas.invoked_name", name))
        if r["error_type"] and r["status"] >= 500:
            attrs.append(_attr("error.type", r["error_type"]))
            failed = True
    else:
        kind, name = KIND_INTERNAL, INTEGRATION_NAMES.get(integration, "integration")
    span = {
        "traceId": trace_id,
        "spanId": r["client_id"].hex(),
        "parentSpanId": server_id,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": str(r["integration_start_ns"]),
        # no end: the upstream failed or the client left mid-response; the request's end
        "endTimeUnixNano": str(r["integration_end_ns"] or r["end_ns"]),
        "attributes": attrs,
        "flags": flags,
    }
    if failed:
        span["status"] = {"code": STATUS_ERROR}
    return span


class SpanExporter:
    """Drains one Tracer's ring on a daemon thread and POSTs OTLP/JSON batches."""

    def __init__(self, tracer: Tracer, cfg: dict, *, worker_id: int):
        self.tracer = tracer
        self.cfg = cfg
        url = urlsplit(cfg["endpoint"])
        self.https = url.scheme == "https"
        self.host = url.hostname
        self.port = url.port or (443 if self.https else 80)
        self.path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        self.timeout_s = cfg["timeout_ms"] / 1000.0
        self.headers = {"Content-Type": "application/json", **cfg["headers"]}
        if cfg["compression"] == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        resource = {
            "service.name": cfg["service_name"],
            "service.instance.id": f"{socket.gethostname()}/{os.getpid()}/{worker_id}",
            "telemetry.sdk.name": "fastgate",
            "telemetry.sdk.language": "python",
            **cfg["resource_attributes"],
        }
        self.resource = {"attributes": [_attr(k, v) for k, v in resource.items()]}
        self.scope = {"name": "fastgate"}
        self.posts = 0                    # POSTs made, retries included (tests, debugging)
        self.conn = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._deadline = float("inf")     # monotonic s; set by close()
        self.thread = threading.Thread(target=self._run, name=f"fastgate-trace-export-{worker_id}",
                                       daemon=True)

    def start(self):
        self.thread.start()

    def wake(self):
        self._wake.set()

    def close(self, timeout_s=None):
        """Export what is queued within timeout_s (default shutdown_timeout_ms), then stop;
        spans still queued or failing by then are counted dropped_export_failed.
        timeout_s=0 returns at once and lets the thread finish on its own (a reload)."""
        if timeout_s is None:
            timeout_s = self.cfg["shutdown_timeout_ms"] / 1000.0
        if not self._closing.is_set():
            self._deadline = time.monotonic() + self.cfg["shutdown_timeout_ms"] / 1000.0
            self._closing.set()
            self._wake.set()
        if self.thread.is_alive() and timeout_s > 0:
            self.thread.join(timeout_s)

    # --- the thread ---

    def _run(self):
        interval_s = self.cfg["flush_interval_ms"] / 1000.0
        try:
            while True:
                self._wake.wait(interval_s)
                self._wake.clear()
                closing = self._closing.is_set()
                while True:
                    batch = self.tracer.drain(self.cfg["batch_size"])
                    if not batch:
                        break
                    if closing and time.monotonic() >= self._deadline:
                        self._fail(batch)
                        continue
                    self._export(batch)
                if closing:
                    return
        finally:
            if self.conn is not None:
                self.conn.close()

    def _fail(self, records):
        n = sum(1 + (r[3] is not None) + (r[4] is not None) for r in records)
        self.tracer.count_result(Result.RESULT_DROPPED_EXPORT_FAILED, n)

    def _export(self, records):
        spans = []
        for i, rec in enumerate(records):
            spans.extend(record_spans(rec))
            if i % ENCODE_YIELD_EVERY == ENCODE_YIELD_EVERY - 1:
                # hand the GIL to the event loop now and then: a 512-record batch is ~10 ms
                # of Python, and the loop would otherwise wait out the 5 ms switch interval
                time.sleep(0)
        body = orjson.dumps({"resourceSpans": [{
            "resource": self.resource,
            "scopeSpans": [{"scope": self.scope, "spans": spans}],
        }]})
        if self.cfg["compression"] == "gzip":
            body = gzip.compress(body, 6)
        n = len(spans)
        budget_end = min(time.monotonic() + self.cfg["retry_budget_ms"] / 1000.0, self._deadline)
        delay = BACKOFF_FIRST_S
        while True:
            retry_after = None
            try:
                status, reply, retry_after = self._post(body)
            except (OSError, http.client.HTTPException):
                status, reply = 0, b""     # no answer: retryable, like a 503
            if 200 <= status < 300:
                rejected = _rejected_spans(reply)
                self.tracer.count_result(Result.RESULT_EXPORTED, n - rejected)
                if rejected:
                    self.tracer.count_result(Result.RESULT_DROPPED_EXPORT_FAILED, rejected)
                return
            if status and status not in RETRYABLE:
                self._report(f"collector answered {status}: {reply[:200]!r}")
                self.tracer.count_result(Result.RESULT_DROPPED_EXPORT_FAILED, n)
                return
            # exponential backoff with jitter, or the server's Retry-After
            wait = retry_after if retry_after is not None else delay * random.uniform(0.5, 1.0)
            delay = min(delay * 2, BACKOFF_MAX_S)
            budget_end = min(budget_end, self._deadline)
            if time.monotonic() + wait >= budget_end:
                self._report(f"export failed ({status or 'no connection'}); retry budget spent")
                self.tracer.count_result(Result.RESULT_DROPPED_EXPORT_FAILED, n)
                return
            if self._closing.is_set():
                time.sleep(wait)           # the deadline already bounds it (budget_end)
            else:
                self._closing.wait(wait)   # close() interrupts it, so the deadline applies

    def _post(self, body: bytes):
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=self.timeout_s)
        self.posts += 1
        try:
            self.conn.request("POST", self.path, body, self.headers)
            resp = self.conn.getresponse()
            reply = resp.read()
        except BaseException:
            self.conn.close()
            self.conn = None
            raise
        if resp.will_close:
            self.conn.close()
            self.conn = None
        retry_after = resp.getheader("Retry-After")
        return resp.status, reply, (float(retry_after) if retry_after and retry_after.isdigit()
                                    else None)

    _reported = 0.0

    def _report(self, message):
        # at most one line a minute: a dead collector must not flood stderr
        now = time.monotonic()
        if now - self._reported >= 60.0:
            self._reported = now
            sys.stderr.write(f"fastgate: tracing: {message}\n")


def _rejected_spans(reply: bytes) -> int:
    """partialSuccess.rejectedSpans of an OTLP/JSON ExportTraceServiceResponse (0 if none)."""
    if not reply:
        return 0
    try:
        doc = orjson.loads(reply)
        return int(doc.get("partialSuccess", {}).get("rejectedSpans", 0) or 0)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0
