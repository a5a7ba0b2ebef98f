"""Request validation, CORS and parameter mapping over real HTTP: API Gateway's 400
bodies for missing parameters and invalid bodies, preflight answered before routing,
backend CORS headers replaced, HTTP API query/header mappings sent upstream."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import Gateway


def rest_doc(port: int) -> dict:
    return {
        "swagger": "2.0", "info": {"title": "V", "version": "1"},
        "x-amazon-apigateway-request-validators": {
            "all": {"validateRequestBody": True, "validateRequestParameters": True}},
        "x-amazon-apigateway-request-validator": "all",
        "definitions": {"Pet": {"type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"},
                                               "tags": {"type": "array", "items": {"type": "string"}}}}},
        "paths": {"/pets": {"post": {
            "consumes": ["application/json"],
            "parameters": [{"name": "q1", "in": "query", "required": True, "type": "string"},
                           {"name": "h1", "in": "header", "required": True, "type": "string"},
                           {"name": "body", "in": "body", "required": True,
                            "schema": {"$ref": "#/definitions/Pet"}}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "POST", "uri": f"http://127.0.0.1:{port}/echo/pets"}}}},
    }


def http_doc(port: int) -> dict:
    return {
        "openapi": "3.0.1", "info": {"title": "C", "version": "1"},
        "x-amazon-apigateway-cors": {"allowOrigins": ["https://*.example.com"], "allowMethods": ["GET"],
                                     "allowHeaders": ["x-a"], "exposeHeaders": ["x-upstream"],
                                     "maxAge": 300, "allowCredentials": True},
        "paths": {"/things": {"get": {"x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET", "payloadFormatVersion": "1.0",
            "uri": f"http://127.0.0.1:{port}/hopbyhop",
            "requestParameters": {"append:querystring.extra": "1",
                                  "overwrite:header.x-mapped": "$request.querystring.a"}}}},
            "/seen": {"get": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET", "payloadFormatVersion": "1.0",
                "uri": f"http://127.0.0.1:{port}/echo/seen",
                "requestParameters": {"append:querystring.extra": "1",
                                      "overwrite:header.x-mapped": "$request.querystring.a"}}}}},
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, up):
    tmp = tmp_path_factory.mktemp("handling")
    (tmp / "rest.json").write_text(json.dumps(rest_doc(up.port)))
    (tmp / "http.json").write_text(json.dumps(http_doc(up.port)))
    g = Gateway(tmp, """\
        access_log: {path: 'off'}
        apis:
          - {openapi: rest.json, id: valid, stages: {prod: {}}}
          - {openapi: http.json, id: corsy}
        """)
    yield g
    g.stop()


def test_required_parameters_and_body_model(gw):
    url = f"{gw.url}/prod/pets"
    ok = {"q1": "x"}, {"h1": "y", "Content-Type": "application/json"}
    r = httpx.post(url, params=ok[0], headers=ok[1], content=b'{"name": "rex"}', timeout=5)
    assert r.status_code == 200 and r.json()["path"] == "/echo/pets"
    r = httpx.post(url, headers={"Content-Type": "application/json"}, content=b'{"name": "rex"}', timeout=5)
    assert r.status_code == 400
    assert r.json()["message"] == "Missing required request parameters: [h1, q1]"
    assert r.headers["x-amzn-errortype"] == "BadRequestException"
    r = httpx.post(url, params=ok[0], headers=ok[1], content=b'{"tags": [1]}', timeout=5)
    assert r.status_code == 400 and r.json()["message"] == "Invalid request body"
    assert {e["path"] for e in r.json()["errors"]} >= {"/tags/0"}       # beyond AWS: where
    r = httpx.post(url, params=ok[0], headers=ok[1], content=b"not json", timeout=5)
    assert r.status_code == 400 and r.json()["message"] == "Invalid request body"


def test_cors_preflight_and_actual_response(gw):
    origin = "https://app.example.com"
    r = httpx.options(f"{gw.url}/things", headers={
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "x-a"}, timeout=5)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == origin
    assert r.headers["access-control-allow-credentials"] == "true"
    assert r.headers["access-control-max-age"] == "300"
    # no route for OPTIONS /things, and still answered: before routing
    r = httpx.get(f"{gw.url}/things", headers={"Origin": origin}, timeout=5)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == origin
    assert "Origin" in r.headers["vary"]
    assert r.headers["access-control-expose-headers"].lower() == "x-upstream"
    # an origin outside the list gets no CORS headers, and never an echo of itself
    r = httpx.get(f"{gw.url}/things", headers={"Origin": "https://evil.test"}, timeout=5)
    assert "access-control-allow-origin" not in r.headers


def test_http_api_parameter_mapping(gw):
    r = httpx.get(f"{gw.url}/seen?a=hello&b=2", timeout=5)
    seen = r.json()
    assert seen["query"] == "a=hello&b=2&extra=1"
    assert next(v for k, v in seen["headers"] if k.lower() == "x-mapped") == "hello"


def test_compression_above_the_minimum_size(tmp_path, up):
    doc = {"swagger": "2.0", "info": {"title": "Z", "version": "1"},
           "x-amazon-apigateway-minimum-compression-size": 1000,
           "paths": {"/big/{n}": {"get": {
               "parameters": [{"name": "n", "in": "path", "required": True, "type": "string"}],
               "x-amazon-apigateway-integration": {
                   "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{up.port}/bytes/{{n}}",
                   "requestParameters": {"integration.request.path.n": "method.request.path.n"}}}},
               "/stream/{n}": {"get": {
                   "parameters": [{"name": "n", "in": "path", "required": True, "type": "string"}],
                   "x-amazon-apigateway-integration": {
                       "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{up.port}/chunked/{{n}}",
                       "requestParameters": {"integration.request.path.n": "method.request.path.n"}}}}}}
    (tmp_path / "z.json").write_text(json.dumps(doc))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis: [{openapi: z.json, id: zipped, stages: {prod: {}}}]
        """)
    try:
        plain = httpx.get(f"{g.url}/prod/big/200000", headers={"Accept-Encoding": "identity"}, timeout=10)
        assert "content-encoding" not in plain.headers and len(plain.content) == 200000
        for enc in ("gzip", "br", "zstd"):
            with httpx.Client(timeout=10) as c:
                r = c.get(f"{g.url}/prod/big/200000", headers={"Accept-Encoding": enc})
                assert r.headers["content-encoding"] == enc and r.content == plain.content
                assert int(r.headers.get("content-length") or 0) == 0     # chunked: length unknown
                assert c.get(f"{g.url}/prod/big/10", headers={"Accept-Encoding": enc}).headers.get(
                    "content-encoding") is None                              # under the minimum
        r = httpx.get(f"{g.url}/prod/stream/300000", headers={"Accept-Encoding": "gzip"}, timeout=10)
        assert r.headers["content-encoding"] == "gzip" and len(r.content) == 300000
    finally:
        g.stop()
