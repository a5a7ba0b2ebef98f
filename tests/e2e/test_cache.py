"""The response cache through a real fastgate: a stage with caching on answers a repeated
GET from the cache shared by its workers (X-Cache: Hit, the upstream not called), keys on
the cache key parameters, expires with the TTL, refreshes on Cache-Control: max-age=0
only for callers allowed to, and never caches POSTs."""

from __future__ import annotations

import json
import socket
import time

import httpx

from conftest import FRESH, Gateway


def doc(port: int) -> dict:
    return {
        "swagger": "2.0", "info": {"title": "Cached", "version": "1"},
        "paths": {"/pets": {"get": {
            "parameters": [{"name": "kind", "in": "query", "type": "string"}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{port}/conn",
                "cacheKeyParameters": ["method.request.querystring.kind"]}},
            "post": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "POST", "uri": f"http://127.0.0.1:{port}/conn"}}}},
    }


def stats(up) -> int:
    return httpx.get(f"{up.url}/stats", timeout=5).json()["requests"]


def test_hits_misses_ttl_and_refresh(tmp_path, upstream):
    (tmp_path / "api.json").write_text(json.dumps(doc(upstream.port)))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - {openapi: api.json, id: cached, stages: {prod: {cache_ttl_s: 3}}}
        """, workers=2)
    try:
        url = f"{g.url}/prod/pets?kind=cat"
        # FRESH: a new connection per request, without httpx.get's ~50-170 ms per call on a
        # busy machine, which let ten "hits" outlast a 2 s TTL
        first = FRESH.get(url)
        stored_by = time.monotonic()              # the entry's TTL ends no later than 3 s after
        assert first.status_code == 200 and first.headers["x-cache"] == "Miss"
        before = stats(upstream)
        for _ in range(10):      # new connections: both workers answer from the one cache
            r = FRESH.get(url)
            assert r.status_code == 200 and r.headers["x-cache"] == "Hit"
            assert r.content == first.content
        assert stats(upstream) == before + 1      # only /stats itself: the upstream was not asked again
        # another value of a cache key parameter is another entry
        assert httpx.get(f"{g.url}/prod/pets?kind=dog", timeout=5).headers["x-cache"] == "Miss"
        # POST is never cached
        assert "x-cache" not in httpx.post(f"{g.url}/prod/pets", content=b"x", timeout=5).headers
        # max-age=0 from an unauthorised caller: served from the cache, with API Gateway's warning
        r = httpx.get(url, headers={"Cache-Control": "max-age=0"}, timeout=5)
        assert r.headers["x-cache"] == "Hit" and r.headers["warning"].startswith("199 ")
        time.sleep(max(0.0, stored_by + 3.2 - time.monotonic()))    # the TTL has passed
        assert FRESH.get(url).headers["x-cache"] == "Miss"
        text = httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).text
        assert 'fastgate_cache_requests_total{api="cached",stage="prod",result="hit"} 11' in text
    finally:
        g.stop()


def raw_get(port: int, target: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_a_hit_has_one_content_length(tmp_path, upstream):
    (tmp_path / "api.json").write_text(json.dumps(doc(upstream.port)))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - {openapi: api.json, id: cached, stages: {prod: {cache_ttl_s: 30}}}
        """)
    try:
        for expect in (b"X-Cache: Miss", b"X-Cache: Hit"):
            head, _, body = raw_get(g.port, b"/prod/pets?kind=cat").partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            assert expect.lower() in lines
            # the entry's stored Content-Length and the hit's own would be two: a proxy in
            # front (nginx: "upstream sent duplicate header line") rejects that response
            assert [ln for ln in lines if ln.startswith(b"content-length:")] == \
                [b"content-length: %d" % len(body)]
            assert sum(ln.startswith(b"date:") for ln in lines) == 1
    finally:
        g.stop()


def test_an_http_non_proxy_integration_caches_its_mapped_response(tmp_path, upstream):
    api = {
        "openapi": "3.0.1", "info": {"title": "Mapped", "version": "1"},
        "paths": {"/who": {"get": {"x-amazon-apigateway-integration": {
            "type": "http", "httpMethod": "GET", "uri": f"http://127.0.0.1:{upstream.port}/conn",
            "responses": {"default": {
                "statusCode": "200",
                "responseParameters": {"method.response.header.X-From": "'mapped'"},
                "responseTemplates": {"application/json": '{"upstream": "$input.body"}'}}}}}}},
    }
    (tmp_path / "api.json").write_text(json.dumps(api))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - {openapi: api.json, id: mapped, stages: {prod: {cache_ttl_s: 30}}}
        """)
    try:
        first = httpx.get(f"{g.url}/prod/who", timeout=5)
        assert first.status_code == 200 and first.headers["x-cache"] == "Miss"
        assert first.json()["upstream"].startswith("up1:") and first.headers["x-from"] == "mapped"
        before = stats(upstream)
        for _ in range(3):
            r = httpx.get(f"{g.url}/prod/who", timeout=5)   # new connections, new upstream ports
            assert r.headers["x-cache"] == "Hit" and r.content == first.content
            assert r.headers["x-from"] == "mapped"
        assert stats(upstream) == before + 1      # only /stats: the mapped answer came from the cache
    finally:
        g.stop()
