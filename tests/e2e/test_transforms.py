"""Per-route transforms end to end, through a real gateway to the real upstream's /echo:
request and response header operations with template values, path rewrites (template and
strip_prefix), mock bodies, the gateway's own echo integration, and route selection
(precedence by path, method and host; 404 for a miss)."""

from __future__ import annotations

import json
import re
import socket
import textwrap
import time

import httpx
import pytest

from conftest import Gateway, read_response

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def send(port: int, raw: bytes, n: int = 1, method: str = "GET") -> list:
    """Send raw bytes on one connection and read n strictly framed responses."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, s.makefile("rb") as f:
        s.sendall(raw)
        return [read_response(f, method) for _ in range(n)]


def get(port: int, path: str, host: str = "gw.test", extra: str = "", method: str = "GET"):
    return send(port, f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode(),
                method=method)[0]


def seen(resp) -> list:
    """[name, value] pairs the upstream's /echo received, names as sent on the wire."""
    return [tuple(p) for p in json.loads(resp.body)["headers"]]


def values(resp, name: str) -> list:
    return [v for k, v in seen(resp) if k.lower() == name.lower()]


CONFIG = """\
access_log: {{path: 'off'}}
upstreams:
  api:
    targets: [{up}]
routes:
  - path: /echo/hdr/{{id}}
    method: GET
    integration: {{type: http, upstream: api}}
    request_headers:
      rename: {{X-Old: X-New}}
      remove: [cookie, X-INTERNAL]
      set:
        X-From-Header: got-${{request.header.x-in}}
        X-Id: $request.path.id
        X-Q: $request.querystring.q
        X-Rid: $context.requestId
        X-Ip: $context.identity.sourceIp
        X-Time: $context.requestTimeEpoch
        x-replace: replaced
        X-User: $request.header.X-Verified-User
        X-Route: $context.routeKey|$context.httpMethod|$context.domainName|$context.protocol
        X-Cost: costs $$5 and $5
      append:
        X-Multi: added-$request.path.id
        X-Gone: $request.header.X-Absent
  - path: /echo/host
    integration: {{type: http, upstream: api}}
    request_headers:
      set: {{host: "${{request.header.X-Backend}}:8080"}}
  - path: /echo/resp
    integration: {{type: http, upstream: api}}
    response_headers:
      remove: [x-upstream]
      set:
        X-Seen-Connection: overwritten
        X-Resp-Rid: $context.requestId
        X-Resp-Q: q=$request.querystring.q
      rename: {{content-type: X-Was-Content-Type}}
      append:
        X-Extra: one
  - path: /api/items/{{id}}/{{proxy+}}
    method: GET
    path_rewrite: /echo/v2/items/{{id}}/{{proxy}}
    integration: {{type: http, upstream: api}}
  - path: /tenant/{{id}}
    path_rewrite: /echo/t/${{request.header.X-Tenant}}/{{id}}/x
    integration: {{type: http, upstream: api}}
  - path: /pre/{{proxy+}}
    strip_prefix: /pre
    integration: {{type: http, upstream: api}}
  - path: /mock/{{id}}
    integration:
      type: mock
      status: 201
      headers: {{Content-Type: application/json, X-Static: "$context.requestId"}}
      body: >-
        {{"id":"$request.path.id","q":"$request.querystring.q","rid":"$context.requestId",
        "ua":"$context.identity.userAgent","host":"$context.domainName","route":"$context.routeKey",
        "method":"$context.httpMethod","ip":"$context.identity.sourceIp","cost":"$$5",
        "path":"$request.path","t":$context.requestTimeEpoch}}
    response_headers:
      set:
        X-Mock-Id: id-${{request.path.id}}-end
      remove: [x-static]
      append:
        X-Static-2: kept
  - path: /gwecho/{{id}}
    path_rewrite: /v1/{{id}}/$request.querystring.v
    integration: {{type: echo}}
    request_headers:
      rename: {{Authorization: X-Original-Authorization}}
      remove: [Cookie]
      set:
        X-Id: $request.path.id
        Host: rewritten.internal
      append:
        x-trace: gw
  - path: /strip
    strip_prefix: /strip
    integration: {{type: echo}}
  - path: /strip/{{proxy+}}
    strip_prefix: /strip
    integration: {{type: echo}}
"""


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("transforms"), CONFIG.format(up=up.url))
    yield g
    g.stop()


# --- request headers --------------------------------------------------------------------------

def test_request_header_operations_and_templates(gw, up):
    before_ms = time.time() * 1000
    extra = ("x-OLD: a\r\nX-Keep: k\r\nX-old: b\r\nCookie: s=1\r\nx-internal: secret\r\n"
             "X-In: one\r\nx-in: two\r\nX-Replace: r1\r\nX-Mid: m\r\nx-REPLACE: r2\r\n"
             "X-User: forged\r\nX-Multi: first\r\nUser-Agent: probe/1\r\n")
    r = get(gw.port, "/echo/hdr/a%2Fb?q=hello%20w&other=x&q=2", host="Api.Test:81", extra=extra)
    after_ms = time.time() * 1000
    assert r.status == 200
    e = json.loads(r.body)
    assert (e["method"], e["path"], e["query"]) == ("GET", "/echo/hdr/a%2Fb", "q=hello%20w&other=x&q=2")
    h = seen(r)
    names = [k.lower() for k, _ in h]
    # rename: every value moves to the new name, in place; the name written in the config is sent
    client_order = [(k, v) for k, v in h if k.lower() in ("x-new", "x-keep")]
    assert client_order == [("X-New", "a"), ("X-Keep", "k"), ("X-New", "b")]
    assert "x-old" not in names
    # remove, whatever case either side used
    assert "cookie" not in names and "x-internal" not in names
    # set: one value at the first one's position, under the configured name
    assert [p for p in h if p[0].lower() in ("x-replace", "x-mid")] == [("x-replace", "replaced"),
                                                                          ("X-Mid", "m")]
    # templates read the incoming request
    assert values(r, "X-From-Header") == ["got-one,two"]
    assert values(r, "X-Id") == ["a%2Fb"]
    assert values(r, "X-Q") == ["hello%20w,2"]
    rid = values(r, "x-request-id")
    assert len(rid) == 1 and UUID.match(rid[0]), rid
    assert values(r, "X-Rid") == rid
    assert r.header("x-request-id") == rid[0]
    assert values(r, "X-Ip") == ["127.0.0.1"]
    (t,) = values(r, "X-Time")
    assert t.isdigit() and before_ms - 1000 <= int(t) <= after_ms + 1000, (before_ms, t, after_ms)
    assert values(r, "X-Route") == ["GET /echo/hdr/{id}|GET|api.test|HTTP/1.1"]
    assert values(r, "X-Cost") == ["costs $5 and $5"]
    # a set whose value renders empty removes the client's own header
    assert "x-user" not in names
    # append adds one value at the end; an empty append adds nothing
    assert values(r, "X-Multi") == ["first", "added-a%2Fb"]
    assert "x-gone" not in names
    # the whole forwarded list, in order: Host first, the client's headers as transformed, the
    # headers set (absent before) in config order, the appended one, then what the proxy adds
    assert [p[0] for p in h] == [
        "Host", "X-New", "X-Keep", "X-New", "X-In", "x-in", "x-replace", "X-Mid", "X-Multi",
        "User-Agent", "X-From-Header", "X-Id", "X-Q", "X-Rid", "X-Ip", "X-Time", "X-Route",
        "X-Cost", "X-Multi", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host",
        "X-Forwarded-Port", "Via", "x-request-id"]
    assert h[0] == ("Host", up.url.split("//")[1])


def test_host_may_be_set(gw):
    r = get(gw.port, "/echo/host", host="client.test", extra="X-Backend: b1.internal\r\n")
    assert [p for p in seen(r) if p[0].lower() == "host"] == [("Host", "b1.internal:8080")]
    assert values(r, "X-Forwarded-Host") == ["client.test"]


def test_request_id_template_uses_the_incoming_id(gw):
    r = get(gw.port, "/echo/hdr/7", extra="X-Request-Id: my-id.42\r\nX-Verified-User: alice\r\n"
                                          "X-User: forged\r\n")
    assert values(r, "X-Rid") == ["my-id.42"] and values(r, "x-request-id") == ["my-id.42"]
    assert values(r, "X-User") == ["alice"]
    # absent sources render empty: the set headers built only from them disappear
    names = {k.lower() for k, _ in seen(r)}
    assert "x-q" not in names
    assert values(r, "X-From-Header") == ["got-"]


def test_template_values_never_split_a_header(gw):
    # percent-encoded CR LF in the query stays encoded text; it cannot start a new header
    r = get(gw.port, "/echo/hdr/1?q=a%0D%0AX-Evil:%201")
    assert values(r, "X-Q") == ["a%0D%0AX-Evil:%201"]
    assert "x-evil" not in {k.lower() for k, _ in seen(r)}


# --- response headers -------------------------------------------------------------------------

def test_response_header_operations(gw):
    r = get(gw.port, "/echo/resp?q=zz", extra="X-Request-Id: resp-1\r\n")
    assert r.status == 200
    assert json.loads(r.body)["path"] == "/echo/resp"
    assert r.header("x-upstream") is None
    assert r.all("x-seen-connection") == ["overwritten"]
    assert r.all("x-resp-rid") == ["resp-1"]
    assert r.all("x-resp-q") == ["q=zz"]
    assert r.all("x-extra") == ["one"]
    assert r.header("content-type") is None
    assert r.all("x-was-content-type") == ["application/json"]
    assert r.header("content-length") == str(len(r.body))


def test_other_routes_keep_upstream_response_headers(gw):
    r = get(gw.port, "/pre/echo/x")
    assert r.all("x-upstream") == ["up1"]
    assert r.all("content-type") == ["application/json"]
    assert r.header("x-extra") is None


# --- path rewrite -----------------------------------------------------------------------------

def test_path_rewrite_with_param_and_greedy(gw):
    r = get(gw.port, "/api/items/42/photos/7/big.jpg?size=l&x=%2F")
    assert r.status == 200
    e = json.loads(r.body)
    assert (e["path"], e["query"]) == ("/echo/v2/items/42/photos/7/big.jpg", "size=l&x=%2F")


def test_path_rewrite_with_a_header_variable_is_percent_encoded(gw):
    r = get(gw.port, "/tenant/9?keep=1", extra="X-Tenant: acme\r\n")
    assert (json.loads(r.body)["path"], json.loads(r.body)["query"]) == ("/echo/t/acme/9/x", "keep=1")
    # a header value cannot add a query or fragment to the rewritten path
    r = get(gw.port, "/tenant/9", extra="X-Tenant: a?b#c d\r\n")
    e = json.loads(r.body)
    assert e["query"] == ""
    assert e["path"].lower() == "/echo/t/a%3fb%23c%20d/9/x", e["path"]


def test_strip_prefix(gw):
    r = get(gw.port, "/pre/echo/a/b?k=v&k=w")
    e = json.loads(r.body)
    assert (e["path"], e["query"]) == ("/echo/a/b", "k=v&k=w")
    e = json.loads(get(gw.port, "/strip?z=1").body)
    assert (e["path"], e["rawPath"], e["query"]) == ("/", "/strip", "z=1")
    e = json.loads(get(gw.port, "/strip/deep/er").body)
    assert (e["path"], e["rawPath"]) == ("/deep/er", "/strip/deep/er")


# --- mock and echo integrations ---------------------------------------------------------------

def test_mock_with_templated_body(gw):
    before_ms = time.time() * 1000
    r = get(gw.port, "/mock/abc?q=x%20y", host="Mock.Example:8080",
            extra="User-Agent: agent/2\r\nX-Request-Id: mock-rid\r\n")
    after_ms = time.time() * 1000
    assert r.status == 201
    assert r.header("content-type") == "application/json"
    doc = json.loads(r.body)
    t = doc.pop("t")
    assert before_ms - 1000 <= t <= after_ms + 1000
    assert doc == {"id": "abc", "q": "x%20y", "rid": "mock-rid", "ua": "agent/2",
                   "host": "mock.example", "route": "ANY /mock/{id}", "method": "GET",
                   "ip": "127.0.0.1", "cost": "$5", "path": "/mock/abc"}
    assert r.header("content-length") == str(len(r.body))
    assert r.all("x-request-id") == ["mock-rid"]
    # response transforms apply to the mock's headers too; mock headers themselves are static
    assert r.all("x-mock-id") == ["id-abc-end"]
    assert r.header("x-static") is None
    assert r.all("x-static-2") == ["kept"]


def test_mock_static_headers_are_sent_as_written(gw, tmp_path):
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        routes:
          - path: /m
            integration:
              type: mock
              status: 418
              headers: {X-Literal: "$context.requestId", X-Two: "a b"}
              body: "line1\\nline2 $request.header.X-A"
        """)
    try:
        r = get(g.port, "/m", extra="X-A: v\r\n")
        assert (r.status, r.body) == (418, b"line1\nline2 v")
        assert r.all("x-literal") == ["$context.requestId"]
        assert r.all("x-two") == ["a b"]
    finally:
        g.stop()


def test_gateway_echo_shows_the_request_after_transforms(gw):
    body = b'{"k": 1}'
    raw = (b"POST /gwecho/55?v=3&w=4 HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer t\r\n"
           b"Cookie: a=b\r\nX-Trace: client\r\nX-Id: forged\r\nX-Request-Id: echo-rid\r\n"
           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    r = send(gw.port, raw)[0]
    assert r.status == 200
    e = json.loads(r.body)
    assert (e["method"], e["path"], e["rawPath"], e["query"]) == ("POST", "/v1/55/3", "/gwecho/55",
                                                                 "v=3&w=4")
    assert (e["routeKey"], e["pathParameters"], e["body"]) == ("ANY /gwecho/{id}", {"id": "55"},
                                                                '{"k": 1}')
    h = e["headers"]
    assert h["x-original-authorization"] == "Bearer t"
    assert "authorization" not in h and "cookie" not in h
    assert h["x-id"] == "55"
    assert h["x-trace"] == "client,gw"
    assert h["host"] == "rewritten.internal"
    # what the gateway itself adds to an integration request is part of what echo shows
    assert (h["x-request-id"], h["x-forwarded-for"], h["x-forwarded-proto"], h["via"]) == (
        "echo-rid", "127.0.0.1", "http", "1.1 fastgate")
    assert h["x-forwarded-host"] == "gw.test" and h["x-forwarded-port"] == str(gw.port)
    assert "content-length" not in h
    assert e["requestContext"]["requestId"] == "echo-rid"
    assert e["requestContext"]["sourceIp"] == "127.0.0.1"


# --- routing ----------------------------------------------------------------------------------

ROUTING = """\
access_log: {path: 'off'}
upstreams:
  api:
    targets: [UP]
routes:
  - {path: /r/static, method: GET, integration: {type: mock, body: static}}
  - {path: '/r/{id}', method: GET, integration: {type: mock, body: 'param:$request.path.id'}}
  - {path: '/r/{id}/deep', method: GET, integration: {type: mock, body: 'deep:$request.path.id'}}
  - {path: '/r/{proxy+}', method: GET, integration: {type: mock, body: 'greedy:$request.path.proxy'}}
  - {path: /m, method: ANY, integration: {type: mock, body: any}}
  - {path: /m, method: GET, integration: {type: mock, body: get}}
  - {path: /m, method: POST, integration: {type: mock, body: post}}
  - {path: '/echo/{proxy+}', integration: {type: http, upstream: api}}
  - {path: /h, host: api.example.com, integration: {type: mock, body: exact}}
  - {path: /h, host: '*.example.com', integration: {type: mock, body: wild}}
  - {path: /h, host: '*.eu.example.com', integration: {type: mock, body: eu-wild}}
  - {path: /h, integration: {type: mock, body: star}}
"""


@pytest.fixture(scope="module")
def router_gw(up, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("routing"), ROUTING.replace("UP", up.url))
    yield g
    g.stop()


@pytest.mark.parametrize("path,body", [
    ("/r/static", b"static"),
    ("/r/static/", b"static"),
    ("/r/other", b"param:other"),
    ("/r/x%2Fy", b"param:x%2Fy"),
    ("/r/static/deep", b"deep:static"),
    ("/r/a/deep", b"deep:a"),
    ("/r/a/b", b"greedy:a/b"),
    ("/r/a/deep/er", b"greedy:a/deep/er"),
])
def test_static_beats_param_beats_greedy(router_gw, path, body):
    r = get(router_gw.port, path)
    assert (r.status, r.body) == (200, body)


@pytest.mark.parametrize("method,body", [("GET", b"get"), ("POST", b"post"), ("DELETE", b"any"),
                                         ("PATCH", b"any"), ("HEAD", b"")])
def test_specific_method_beats_any(router_gw, method, body):
    r = get(router_gw.port, "/m", method=method)
    assert (r.status, r.body) == (200, body)
    if method == "HEAD":   # HEAD is not GET: it falls to ANY, whose body is 3 bytes
        assert r.header("content-length") == "3"


@pytest.mark.parametrize("host,body", [
    ("api.example.com", b"exact"),
    ("API.Example.COM:8443", b"exact"),
    ("x.example.com", b"wild"),
    ("a.b.example.com", b"wild"),
    ("x.eu.example.com", b"eu-wild"),
    ("example.com", b"star"),
    ("other.test", b"star"),
    ("127.0.0.1", b"star"),
])
def test_host_specific_routes(router_gw, host, body):
    r = get(router_gw.port, "/h", host=host)
    assert (r.status, r.body) == (200, body)


@pytest.mark.parametrize("method,path,host", [
    ("GET", "/nope", "gw.test"),
    ("GET", "/r", "gw.test"),              # greedy never matches its parent
    ("POST", "/r/static", "gw.test"),      # only GET routes there
    ("GET", "/R/static", "gw.test"),       # paths are case-sensitive
    ("GET", "/r/static", "api.example.com"),   # a host with routes of its own: no fallback to *
    ("GET", "/", "gw.test"),
])
def test_not_found(router_gw, method, path, host):
    r = get(router_gw.port, path, host=host, method=method)
    assert r.status == 404
    assert json.loads(r.body) == {"message": "Not Found"}
    assert r.header("content-type") == "application/json"
    assert r.header("connection") is None   # a 404 keeps the connection


def test_routing_to_the_upstream_and_back_on_one_connection(router_gw):
    raw = b"".join(f"GET {p} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                   for p in ("/echo/a?x=1", "/nope", "/r/static", "/echo/b/c", "/m"))
    rs = send(router_gw.port, raw, n=5)
    assert [r.status for r in rs] == [200, 404, 200, 200, 200]
    assert (json.loads(rs[0].body)["path"], json.loads(rs[0].body)["query"]) == ("/echo/a", "x=1")
    assert rs[1].body == b'{"message":"Not Found"}'
    assert rs[2].body == b"static"
    assert json.loads(rs[3].body)["path"] == "/echo/b/c"
    assert rs[4].body == b"get"


def test_transform_of_a_gateway_header_replaces_it(tmp_path, up):
    """Setting x-request-id / Via / X-Forwarded-For in a transform replaces the gateway's line."""
    g = Gateway(tmp_path, admin=False, config=f"""\
access_log: {{path: 'off'}}
upstreams:
  api: {{targets: [{up.url}]}}
routes:
  - path: /echo
    integration: {{type: http, upstream: api}}
    request_headers:
      set: {{X-Request-Id: "fixed-id", Via: "1.1 custom", X-Forwarded-For: "203.0.113.9"}}
""")
    try:
        r = httpx.get(g.url + "/echo")
        sent = [(k.lower(), v) for k, v in r.json()["headers"]]
        for name, value in (("x-request-id", "fixed-id"), ("via", "1.1 custom"),
                            ("x-forwarded-for", "203.0.113.9")):
            assert [v for k, v in sent if k == name] == [value], (name, sent)
        assert [v for k, v in sent if k == "x-forwarded-proto"] == ["http"]
    finally:
        g.stop()
