"""Every way fastgate makes a response, read by a strict HTTP/1.1 client.

h11 parses each answer; on top of it the head is checked for what h11 tolerates and
other clients refuse (Node's http and fetch, httptools): a second Content-Length even
with the same value, a second Transfer-Encoding, Content-Length together with
Transfer-Encoding, framing headers on a 1xx/204 (RFC 9112 section 6; RFC 9110 section
8.6). Where the connection stays open, a second request on it proves the first body
ended exactly where its framing said.

The ways: proxied (length, chunked, close-delimited, 1xx, 204, 304, HEAD, HTTP/1.0),
functions (payload 2.0 and 1.0; raw results setting framing headers themselves,
Starlette through mangum, Flask through apig-wsgi, aws-lambda-powertools; gateway.yaml
routes, an HTTP API, a REST API's aws_proxy; a streamed result), mocks (plain, and
Velocity mapping framing headers into its answer), a cached hit, echo, and the gateway's own answers: 400, 401, 403, 404, 413,
414, 429, 431, 502, 504.
"""

from __future__ import annotations

import json
import socket
import time

import h11
import pytest

from conftest import Gateway, free_port
from tests.phases.auth.conftest import SigningKey

HANDLERS = '''
import time

FRAMING = {"Content-Length": "99", "Transfer-Encoding": "chunked", "Connection": "close",
           "Date": "Thu, 01 Jan 1970 00:00:00 GMT"}

def raw(event, context):
    # a handler that frames its own answer (wrongly): the gateway frames it
    return {"statusCode": 200, "headers": dict(FRAMING, **{"Content-Type": "text/plain"}),
            "body": "hi"}

def raw_v1(event, context):
    return {"statusCode": 200, "multiValueHeaders": {k: [v] for k, v in FRAMING.items()},
            "headers": {"Content-Length": "2"}, "body": "hi"}

def nobody(event, context):
    return {"statusCode": 204, "headers": {"Content-Length": "0"}, "body": ""}

def early_hints(event, context):
    # a 1xx is no final answer: a client given it would wait for the real one
    return {"statusCode": 103, "headers": {"Link": "</a.css>; rel=preload"}, "body": ""}

def stream(event, context):
    yield {"statusCode": 200, "headers": {"Content-Length": "5", "Transfer-Encoding": "chunked"}}
    yield "one "
    yield "two"

def boom(event, context):
    raise ValueError("nope")

def slow(event, context):
    # far past the route's 300 ms: killed at the integration timeout (an answer that is
    # there when a late timer looks is taken, and a loaded machine once was 3 s late)
    time.sleep(60)
'''

STARLETTE = '''
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

async def item(request):
    return JSONResponse({"id": request.path_params["id"]})

async def empty(request):
    return PlainTextResponse("", status_code=204)

app = Starlette(routes=[Route("/{prefix:path}/items/{id}", item),
                        Route("/{prefix:path}/empty", empty)])
handler = Mangum(app, lifespan="off")
'''

FLASK = '''
from apig_wsgi import make_lambda_handler
from flask import Flask, jsonify

app = Flask(__name__)

@app.get("/<path:prefix>/hello")
def hello(prefix):
    return jsonify(hello=prefix)

handler = make_lambda_handler(app, binary_support=True)
'''

POWERTOOLS = '''
from aws_lambda_powertools.event_handler import (
    APIGatewayHttpResolver, APIGatewayRestResolver, Response)

def hello():
    return Response(status_code=200, content_type="text/plain", body="hello",
                    headers={"Content-Length": "5"})

http = APIGatewayHttpResolver(strip_prefixes=["/fn", "/live"])
http.get("/pt/hello")(hello)
rest = APIGatewayRestResolver(strip_prefixes=["/prod"])
rest.get("/pt/hello")(hello)

def http_handler(event, context):
    return http.resolve(event, context)

def rest_handler(event, context):
    return rest.resolve(event, context)
'''


def fn_uri(name: str) -> str:
    return ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
            f"arn:aws:lambda:us-east-1:123456789012:function:{name}/invocations")


def proxy_method(name: str, version: str | None = None) -> dict:
    integ = {"type": "aws_proxy", "httpMethod": "POST", "uri": fn_uri(name)}
    if version:
        integ["payloadFormatVersion"] = version
    return {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": integ}}


def rest_api(upstream_port: int) -> dict:
    """A REST API: aws_proxy functions (payload 1.0), a Velocity mock that maps framing
    headers into its response, an http_proxy GET the stage caches."""
    vtl = {"get": {"x-amazon-apigateway-integration": {
        "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
        "responses": {"default": {
            "statusCode": "200",
            "responseParameters": {"method.response.header.Content-Length": "'99'",
                                   "method.response.header.Transfer-Encoding": "'chunked'",
                                   "method.response.header.X-Mapped": "'yes'"},
            "responseTemplates": {"application/json": '{"mock": true}'}}}}}}
    return {
        "swagger": "2.0", "info": {"title": "Framing", "version": "1"},
        "paths": {
            "/raw": proxy_method("raw_v1"),
            "/web/{proxy+}": proxy_method("web"),
            "/wsgi/{proxy+}": proxy_method("wsgi"),
            "/pt/hello": proxy_method("pt_rest"),
            "/vtl": vtl,
            "/cached": {"get": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET",
                "uri": f"http://127.0.0.1:{upstream_port}/bytes/300"}}},
        },
    }


def http_api() -> dict:
    return {
        "openapi": "3.0.1", "info": {"title": "FramingHttp", "version": "1"},
        "x-amazon-apigateway-importexport-version": "1.0",
        "paths": {
            "/raw": proxy_method("raw", "2.0"),
            "/raw1": proxy_method("raw_v1", "1.0"),
            "/web/{proxy+}": proxy_method("web", "2.0"),
            "/wsgi/{proxy+}": proxy_method("wsgi", "1.0"),
            "/pt/hello": proxy_method("pt_http", "2.0"),
        },
    }


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("framing")
    fn = tmp / "fn"
    fn.mkdir()
    (fn / "handlers.py").write_text(HANDLERS)
    (fn / "web.py").write_text(STARLETTE)
    (fn / "wsgi.py").write_text(FLASK)
    (fn / "pt.py").write_text(POWERTOOLS)
    (tmp / "rest.json").write_text(json.dumps(rest_api(up.port)))
    (tmp / "http.json").write_text(json.dumps(http_api()))
    key = SigningKey("framing-1", "RS256")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk]}))
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        limits:
          max_url_bytes: 512
          max_header_bytes: 4096
          max_body_bytes: 1000
        function_path: [fn]
        functions:
          raw: {{handler: handlers:raw}}
          raw_v1: {{handler: handlers:raw_v1}}
          nobody: {{handler: handlers:nobody}}
          early_hints: {{handler: handlers:early_hints}}
          stream: {{handler: handlers:stream}}
          boom: {{handler: handlers:boom}}
          slow: {{handler: handlers:slow, timeout_ms: 90000}}
          web: {{handler: web:handler}}
          wsgi: {{handler: wsgi:handler}}
          pt_http: {{handler: pt:http_handler}}
          pt_rest: {{handler: pt:rest_handler}}
        upstreams:
          api: {{targets: ["{up.url}"]}}
        apis:
          - {{openapi: rest.json, id: framerest, stages: {{prod: {{cache_ttl_s: 300}}}}}}
          - {{openapi: http.json, id: framehttp, stages: {{live: {{}}}}}}
        routes:
          - {{path: /ok, integration: {{type: mock, body: ok}}}}
          - {{path: /mock/empty, integration: {{type: mock, status: 204}}}}
          - {{path: /echo, integration: {{type: echo}}}}
          - {{path: "/proxy/{{proxy+}}", strip_prefix: /proxy, integration: {{type: http, upstream: api}}}}
          - {{path: /dead, integration: {{type: http, url: "http://127.0.0.1:{free_port()}"}}}}
          - {{path: /fn/raw, integration: {{type: function, function: raw}}}}
          - {{path: /fn/raw1, integration: {{type: function, function: raw_v1, payload_format: "1.0"}}}}
          - {{path: /fn/nobody, integration: {{type: function, function: nobody}}}}
          - {{path: /fn/early-hints, integration: {{type: function, function: early_hints}}}}
          - {{path: /fn/stream, integration: {{type: function, function: stream}}}}
          - {{path: /fn/boom, integration: {{type: function, function: boom}}}}
          - {{path: /fn/slow, integration: {{type: function, function: slow, timeout_ms: 300}}}}
          - {{path: "/fn/web/{{proxy+}}", integration: {{type: function, function: web}}}}
          - {{path: "/fn/wsgi/{{proxy+}}", integration: {{type: function, function: wsgi, payload_format: "1.0"}}}}
          - {{path: /fn/pt/hello, integration: {{type: function, function: pt_http}}}}
          - path: /throttled
            throttle: {{rate: 0, burst: 0}}
            integration: {{type: mock, body: never}}
          - path: /private
            auth: {{ip_deny: [127.0.0.0/8]}}
            integration: {{type: mock, body: never}}
          - path: /jwt
            auth: {{jwt: {{issuer: https://issuer.example, audience: [a], jwks_file: {tmp / 'jwks.json'}}}}}
            integration: {{type: mock, body: never}}
        """)
    yield g
    g.stop()


# --- the strict client ---------------------------------------------------------------

class FramingError(AssertionError):
    pass


def check_head(head: bytes) -> int:
    """The framing rules h11 does not enforce, on one raw response head; its status."""
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    names = [line.split(b":", 1)[0].strip().lower() for line in lines[1:] if line]
    lengths, codings = names.count(b"content-length"), names.count(b"transfer-encoding")
    if lengths > 1:
        raise FramingError(f"{lengths} Content-Length headers: {head!r}")
    if codings > 1:
        raise FramingError(f"{codings} Transfer-Encoding headers: {head!r}")
    if lengths and codings:
        raise FramingError(f"Content-Length and Transfer-Encoding: {head!r}")
    if (status < 200 or status == 204) and (lengths or codings):
        raise FramingError(f"a {status} with framing headers: {head!r}")
    if status == 304 and codings:
        raise FramingError(f"a 304 with Transfer-Encoding: {head!r}")
    return status


class Answer:
    def __init__(self, status: int, headers: list, body: bytes, interim: list, closes: bool):
        self.status = status
        self.headers = headers            # [(lower-case name, value)] as h11 read them
        self.body = body
        self.interim = interim            # statuses of 1xx responses before it
        self.closes = closes

    def get(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


def read_answer(sock: socket.socket, conn: h11.Connection, raw: bytearray) -> Answer:
    """Read one response with h11 (conn knows the request method), checking each head
    in the raw bytes as it completes."""
    interim, body, heads_checked, pos = [], [], 0, 0
    response = None
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = sock.recv(65536)
            raw.extend(data)
            conn.receive_data(data)
            continue
        if isinstance(event, (h11.InformationalResponse, h11.Response)):
            end = raw.index(b"\r\n\r\n", pos)
            assert check_head(bytes(raw[pos:end])) == event.status_code
            pos = end + 4
            heads_checked += 1
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            else:
                response = event
        elif isinstance(event, h11.Data):
            body.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
        elif isinstance(event, h11.ConnectionClosed):
            raise FramingError("closed before the end of the response")
    closes = conn.their_state is h11.MUST_CLOSE or conn.our_state is h11.MUST_CLOSE
    return Answer(response.status_code, list(response.headers), b"".join(body), interim, closes)


def exchange(port: int, data: bytes, method: str = "GET", http10: bool = False) -> Answer:
    """Send raw request bytes and read the answer strictly. When the connection stays
    open, a second request on it must get its own, whole answer."""
    conn = h11.Connection(h11.CLIENT)
    # h11 frames the response by the request's method (it sends only HTTP/1.1 itself, and
    # reads an answer to 1.0 by the answer's own headers); the bytes sent are ours
    conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    raw = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass      # answered and closed before reading all of it
        answer = read_answer(s, conn, raw)
        if answer.closes or http10:
            # nothing may follow the message on a connection the response closes
            s.settimeout(5)
            rest = b""
            try:
                while chunk := s.recv(65536):
                    rest += chunk
            except ConnectionResetError:
                pass
            assert conn.trailing_data[0] == b"" and rest == b"", (conn.trailing_data, rest)
            return answer
        conn.start_next_cycle()
        conn.send(h11.Request(method="GET", target="/ok", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        raw.clear()
        raw.extend(conn.trailing_data[0])     # what came after the first message, if anything
        s.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        after = read_answer(s, conn, raw)
        assert (after.status, after.body) == (200, b"ok")
    return answer


def request(method: str, target: str, headers: dict | None = None, body: bytes | None = None,
            version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: x"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding")
                                    for k in (headers or {})):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


# --- the cases -------------------------------------------------------------------------

G = "GET"
CASES = {
    # proxied
    "proxy-length": (G, "/proxy/bytes/3000", {}, None, 200),
    "proxy-chunked": (G, "/proxy/chunked/70000", {}, None, 200),
    "proxy-close-delimited": (G, "/proxy/close/500", {}, None, 200),
    "proxy-tiny-chunks-trailer": (G, "/proxy/tinychunks/5", {}, None, 200),
    "proxy-204": (G, "/proxy/status/204", {}, None, 204),
    "proxy-304": (G, "/proxy/status/304", {}, None, 304),
    "proxy-head": ("HEAD", "/proxy/bytes/3000", {}, None, 200),
    "proxy-1xx": (G, "/proxy/interim", {}, None, 200),
    "proxy-hop-by-hop": (G, "/proxy/hopbyhop", {}, None, 200),
    "proxy-post": ("POST", "/proxy/echo", {}, b"x" * 500, 200),
    # functions on gateway.yaml routes (an HTTP API's routes)
    "fn-raw-2.0": (G, "/fn/raw", {}, None, 200),
    "fn-raw-1.0": (G, "/fn/raw1", {}, None, 200),
    "fn-raw-head": ("HEAD", "/fn/raw", {}, None, 200),
    "fn-204": (G, "/fn/nobody", {}, None, 204),
    "fn-1xx-is-malformed": (G, "/fn/early-hints", {}, None, 502),
    "fn-stream": (G, "/fn/stream", {}, None, 200),
    "fn-mangum-2.0": (G, "/fn/web/items/7", {}, None, 200),
    "fn-mangum-204": (G, "/fn/web/empty", {}, None, 204),
    "fn-apig-wsgi-1.0": (G, "/fn/wsgi/hello", {}, None, 200),
    "fn-powertools-2.0": (G, "/fn/pt/hello", {}, None, 200),
    "fn-error-502": (G, "/fn/boom", {}, None, 502),
    "fn-timeout-504": (G, "/fn/slow", {}, None, 504),
    # an HTTP API from OpenAPI
    "http-api-raw-2.0": (G, "/live/raw", {}, None, 200),
    "http-api-raw-1.0": (G, "/live/raw1", {}, None, 200),
    "http-api-mangum-2.0": (G, "/live/web/items/7", {}, None, 200),
    "http-api-apig-wsgi-1.0": (G, "/live/wsgi/hello", {}, None, 200),
    "http-api-powertools-2.0": (G, "/live/pt/hello", {}, None, 200),
    # a REST API: aws_proxy, payload 1.0
    "rest-raw": (G, "/prod/raw", {}, None, 200),
    "rest-mangum": (G, "/prod/web/items/7", {}, None, 200),
    "rest-apig-wsgi": (G, "/prod/wsgi/hello", {}, None, 200),
    "rest-powertools": (G, "/prod/pt/hello", {}, None, 200),
    "rest-vtl-mock": (G, "/prod/vtl", {}, None, 200),
    "rest-cached": (G, "/prod/cached", {}, None, 200),
    # the gateway's own
    "mock": (G, "/ok", {}, None, 200),
    "mock-head": ("HEAD", "/ok", {}, None, 200),
    "mock-204": (G, "/mock/empty", {}, None, 204),
    "echo": ("POST", "/echo", {"Content-Type": "text/plain"}, b"hello", 200),
    "no-route-404": (G, "/nowhere", {}, None, 404),
    "connect-failed-502": (G, "/dead", {}, None, 502),
    "throttled-429": (G, "/throttled", {}, None, 429),
    "jwt-401": (G, "/jwt", {}, None, 401),
    "ip-denied-403": (G, "/private", {}, None, 403),
    "body-too-large-413": ("POST", "/ok", {}, b"x" * 5000, 413),
    "chunked-body-too-large-413": ("POST", "/ok", {"Transfer-Encoding": "chunked"},
                                   b"".join([b"400\r\n" + b"x" * 1024 + b"\r\n"] * 3) + b"0\r\n\r\n", 413),
    "uri-too-long-414": (G, "/ok?" + "q" * 1000, {}, None, 414),
    "headers-too-large-431": (G, "/ok", {"X-Big": "b" * 5000}, None, 431),
    "both-framings-400": ("POST", "/ok", {"Content-Length": "3", "Transfer-Encoding": "chunked"},
                          b"0\r\n\r\n", 400),
}
HTTP10 = {"proxy-chunked-http10": ("/proxy/chunked/1000", 200),
          "fn-mangum-http10": ("/fn/web/items/7", 200),
          "fn-stream-http10": ("/fn/stream", 200),
          "mock-http10": ("/ok", 200)}


@pytest.mark.parametrize("case", list(CASES))
def test_every_response_parses_strictly(gw, case):
    method, target, headers, body, status = CASES[case]
    answer = exchange(gw.port, request(method, target, headers, body), method)
    assert answer.status == status, (answer.status, answer.body[:300])
    if case.startswith(("fn-raw", "http-api-raw", "rest-raw")) and method == "GET":
        assert answer.body == b"hi"
    if case == "fn-stream":
        assert answer.body == b"one two"


def test_a_malformed_request_line_gets_a_strict_400(gw):
    answer = exchange(gw.port, b"GET /ok HTTP/1.1 extra\r\nHost: x\r\n\r\n")
    assert answer.status == 400 and answer.closes


@pytest.mark.parametrize("case", list(HTTP10))
def test_http10_responses_parse_strictly(gw, case):
    target, status = HTTP10[case]
    answer = exchange(gw.port, request("GET", target, version="1.0"), http10=True)
    assert answer.status == status


def test_a_cached_hit_parses_strictly(gw):
    first = exchange(gw.port, request("GET", "/prod/cached?hit=1"))
    hit = exchange(gw.port, request("GET", "/prod/cached?hit=1"))
    assert (first.status, hit.status) == (200, 200)
    assert hit.get(b"x-cache") == [b"Hit"] and hit.body == first.body and len(hit.body) == 300


def test_rest_apis_remap_a_functions_framing_headers_as_aws_does(gw):
    # REST APIs keep an integration's Content-Length, Connection and Date as
    # x-amzn-Remapped-*, and drop its Transfer-Encoding
    for target in ("/prod/raw", "/prod/web/items/7"):
        answer = exchange(gw.port, request("GET", target))
        if target == "/prod/raw":
            # headers and multiValueHeaders merge: both of the function's values are kept
            assert answer.get(b"x-amzn-remapped-content-length") == [b"99", b"2"]
            assert answer.get(b"x-amzn-remapped-connection") == [b"close"]
            assert answer.get(b"x-amzn-remapped-date") == [b"Thu, 01 Jan 1970 00:00:00 GMT"]
        else:
            assert answer.get(b"x-amzn-remapped-content-length") == [b"%d" % len(answer.body)]
        assert answer.get(b"content-length") == [b"%d" % len(answer.body)]
        assert answer.get(b"transfer-encoding") == [] and len(answer.get(b"date")) == 1
    # an HTTP API (and gateway.yaml's routes) frames the answer itself: nothing remapped
    for target in ("/live/raw", "/fn/raw", "/fn/web/items/7"):
        answer = exchange(gw.port, request("GET", target))
        assert answer.get(b"content-length") == [b"%d" % len(answer.body)]
        assert not any(k.startswith(b"x-amzn-remapped") for k, _ in answer.headers)
        assert len(answer.get(b"date")) == 1 and answer.get(b"connection") == []


def test_httpx_and_httptools_read_function_answers(gw):
    """What the issue saw fail in clients: a mangum app's answer, read by httptools
    (llhttp, like Node's http) through a second request on the same connection."""
    import httptools

    class Sink:
        def __init__(self):
            self.done = 0

        def on_message_complete(self):
            self.done += 1

    for target in ("/fn/web/items/7", "/live/web/items/7", "/prod/wsgi/hello", "/fn/wsgi/hello"):
        sink = Sink()
        parser = httptools.HttpResponseParser(sink)
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(request("GET", target) + b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            deadline = time.monotonic() + 10
            while sink.done < 2 and time.monotonic() < deadline:
                data = s.recv(65536)
                if not data:
                    break
                parser.feed_data(data)       # raises HttpParserError on a duplicate Content-Length
        assert sink.done == 2, target
