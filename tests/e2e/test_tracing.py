"""Tracing through a real fastgate: the upstream gets a traceparent continuing the
client's trace (and X-Amzn-Trace-Id), and an OTLP receiver gets the gateway's SERVER
span and its CLIENT child for the integration; without tracing the client's headers
pass through untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.observability.test_tracing_export import Receiver, wait_for  # noqa: E402

from conftest import Gateway  # noqa: E402

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def hdr(seen: dict, name: str):
    return next((v for k, v in seen["headers"] if k.lower() == name), None)


def test_spans_and_propagation(tmp_path, up):
    rx = Receiver()
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        tracing: {{sampler: parentbased_ratio, ratio: 1.0, endpoint: "{rx.endpoint}", flush_interval_ms: 200}}
        routes:
          - path: /pets/{{id}}
            method: GET
            integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}
            path_rewrite: /echo/{{id}}
        """)
    try:
        r = httpx.get(f"{g.url}/pets/1", timeout=5,
                      headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        seen = r.json()
        tp = hdr(seen, "traceparent")
        assert tp.startswith(f"00-{TRACE}-") and tp.endswith("-01")
        assert hdr(seen, "x-amzn-trace-id").startswith("Root=1-4bf92f35-77b34da6a3ce929d0e0e4736")
        # a request without context starts a new trace, still propagated
        r2 = httpx.get(f"{g.url}/pets/2", timeout=5).json()
        assert hdr(r2, "traceparent") and not hdr(r2, "traceparent").startswith(f"00-{TRACE}")
        assert wait_for(lambda: len([s for s in rx.spans() if s["traceId"] == TRACE]) >= 2)
        spans = {s["kind"]: s for s in rx.spans() if s["traceId"] == TRACE}
        server, client = spans[2], spans[3]        # SPAN_KIND_SERVER, SPAN_KIND_CLIENT
        assert server["name"] == "GET /pets/{id}"
        assert server["parentSpanId"] == "00f067aa0ba902b7"
        assert client["parentSpanId"] == server["spanId"]
        assert tp.split("-")[2] == client["spanId"]     # the upstream's parent is the CLIENT span
    finally:
        g.stop()
        rx.close()


def test_without_tracing_the_clients_context_passes_through(tmp_path, up):
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        routes:
          - {{path: /x, integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}, path_rewrite: /echo}}
        """)
    try:
        tp = f"00-{TRACE}-00f067aa0ba902b7-01"
        seen = httpx.get(f"{g.url}/x", headers={"traceparent": tp, "tracestate": "a=1"}, timeout=5).json()
        assert hdr(seen, "traceparent") == tp and hdr(seen, "tracestate") == "a=1"
    finally:
        g.stop()
