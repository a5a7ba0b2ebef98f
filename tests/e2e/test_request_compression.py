"""Compressed request bodies over real HTTP: a Content-Encoding (gzip, deflate, br, zstd)
is undone before body validation, a mapping template and a function's event, and the http
integration behind a validated method gets the decoded body; the route's body limit
caps the decoded size (413, a bomb never inflates); an unknown coding or data not in
the declared coding is API Gateway's 415; plain proxying passes the body through
still compressed."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import brotli
import httpx
import pytest
import zstandard

from conftest import Gateway

LIMIT = 65536       # the routes' max_body_bytes: the cap on the decoded body too

HANDLERS = '''
import json

def event(event, context):
    return {"statusCode": 200, "body": json.dumps({"body": event["body"],
            "isBase64Encoded": event["isBase64Encoded"], "headers": event["headers"]})}
'''


def rest_doc(port: int) -> dict:
    return {
        "swagger": "2.0", "info": {"title": "Z", "version": "1"},
        "x-amazon-apigateway-minimum-compression-size": 0,
        "x-amazon-apigateway-request-validators": {"body": {"validateRequestBody": True}},
        "x-amazon-apigateway-request-validator": "body",
        "definitions": {"Pet": {"type": "object", "required": ["name"],
                                "properties": {"name": {"type": "string"}}}},
        "paths": {"/pets": {"post": {
            "consumes": ["application/json"],
            "parameters": [{"name": "body", "in": "body", "required": True,
                            "schema": {"$ref": "#/definitions/Pet"}}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "POST", "uri": f"http://127.0.0.1:{port}/echo/pets"}}},
            # an http (non-proxy) integration: its request template reads the body
            "/mapped": {"post": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "POST", "uri": f"http://127.0.0.1:{port}/echo/mapped",
                "passthroughBehavior": "WHEN_NO_TEMPLATES",
                "requestTemplates": {"application/json": '{"pet": $input.json(\'$.name\')}'},
                "responses": {"default": {"statusCode": "200"}}}}}},
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory, up):
    tmp = tmp_path_factory.mktemp("reqcomp")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(HANDLERS)
    (tmp / "rest.json").write_text(json.dumps(rest_doc(up.port)))
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        limits: {{max_body_bytes: {LIMIT}}}
        function_path: [fn]
        functions: {{event: {{handler: handlers:event}}}}
        upstreams: {{up: {{targets: [{{url: "{up.url}"}}]}}}}
        apis:
          - {{openapi: rest.json, id: zipped, stages: {{prod: {{}}}}}}
        routes:
          - {{path: /fn, method: POST, integration: {{type: function, function: event}}}}
          - {{path: "/plain/{{proxy+}}", method: ANY, strip_prefix: /plain, integration: {{type: http, upstream: up}}}}
        """)
    yield g
    g.stop()


CODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}


def headers_of(seen) -> dict:
    return {k.lower(): v for k, v in seen["headers"]}


@pytest.mark.parametrize("coding", sorted(CODERS))
def test_validated_body_is_decoded_and_forwarded_decoded(gw, coding):
    plain = json.dumps({"name": "rex", "pad": "x" * 3000}).encode()
    r = httpx.post(f"{gw.url}/prod/pets", content=CODERS[coding](plain),
                   headers={"Content-Type": "application/json", "Content-Encoding": coding}, timeout=5)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert seen["body_size"] == len(plain)
    assert seen["body_sha256"] == hashlib.sha256(plain).hexdigest()
    assert "content-encoding" not in headers_of(seen)
    # the model is checked on the decoded body
    r = httpx.post(f"{gw.url}/prod/pets", content=CODERS[coding](b'{"name": 7}'),
                   headers={"Content-Type": "application/json", "Content-Encoding": coding}, timeout=5)
    assert r.status_code == 400 and r.json()["message"] == "Invalid request body"


def test_corrupt_unknown_and_too_large(gw):
    url = f"{gw.url}/prod/pets"
    h = {"Content-Type": "application/json"}
    good = gzip.compress(b'{"name": "rex"}')
    # data not in the declared coding, and a truncated stream: AWS answers 415 for both
    for body, coding in ((b'{"name": "rex"}', "gzip"), (good[:-6], "gzip"), (good, "br")):
        r = httpx.post(url, content=body, headers={**h, "Content-Encoding": coding}, timeout=5)
        assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}, r.text
        assert r.headers["x-amzn-errortype"] == "UnsupportedMediaTypeException"
    r = httpx.post(url, content=good, headers={**h, "Content-Encoding": "compress"}, timeout=5)
    assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}
    # a bomb: 64 MiB of zeros in ~64 KiB of gzip... here 16 MiB in 16 KiB, under the raw limit
    bomb = gzip.compress(b"\0" * (16 << 20), 9)
    assert len(bomb) < LIMIT
    for coding, data in (("gzip", bomb), ("zstd", zstandard.ZstdCompressor().compress(b"\0" * (16 << 20)))):
        r = httpx.post(url, content=data, headers={**h, "Content-Encoding": coding}, timeout=10)
        assert r.status_code == 413 and r.json() == {"message": "Request Too Long"}, r.text
    # exactly the limit decoded is fine (the model fails, so 400, not 413)
    r = httpx.post(url, content=gzip.compress(b" " * LIMIT), headers={**h, "Content-Encoding": "gzip"},
                   timeout=5)
    assert r.status_code == 400
    # the worker lives on
    r = httpx.post(url, content=good, headers={**h, "Content-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200


def test_function_event_gets_the_decoded_body(gw):
    r = httpx.post(f"{gw.url}/fn", content=gzip.compress("héllo".encode()),
                   headers={"Content-Type": "text/plain; charset=utf-8", "Content-Encoding": "gzip"},
                   timeout=10)
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["body"] == "héllo" and event["isBase64Encoded"] is False
    assert "content-encoding" not in {k.lower() for k in event["headers"]}
    r = httpx.post(f"{gw.url}/fn", content=b"not gzip", headers={"Content-Encoding": "gzip"}, timeout=10)
    assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}


def test_plain_proxy_passes_the_compressed_body_through(gw):
    data = gzip.compress(b"x" * 5000)
    r = httpx.post(f"{gw.url}/plain/echo/raw", content=data, headers={"Content-Encoding": "gzip"},
                   timeout=5)
    assert r.status_code == 200
    seen = r.json()
    assert seen["body_size"] == len(data) and seen["body_sha256"] == hashlib.sha256(data).hexdigest()
    assert headers_of(seen)["content-encoding"] == "gzip"
    # not decoded, so not checked either: bytes that are not gzip reach the upstream as they are
    r = httpx.post(f"{gw.url}/plain/echo/raw", content=b"junk", headers={"Content-Encoding": "gzip"},
                   timeout=5)
    assert r.status_code == 200 and r.json()["body_size"] == 4


def test_mapping_template_reads_the_decoded_body(gw):
    r = httpx.post(f"{gw.url}/prod/mapped", content=gzip.compress(b'{"name": "rex"}'),
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200, r.text
    seen = r.json()
    assert "content-encoding" not in headers_of(seen)
    assert seen["body_sha256"] == hashlib.sha256(b'{"pet": "rex"}').hexdigest(), seen
    r = httpx.post(f"{gw.url}/prod/mapped", content=b"\x1f\x8bjunk",
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}
