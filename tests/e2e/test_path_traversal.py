"""Path traversal past route rules (issue 11, item 3), over real sockets.

A public route, an admin route that only 127.0.0.2 may call (an IP policy), and an
open catch-all, all in front of tests/upstream_server.py, whose /echo... answers with
the exact path and query it received. Every spelling of a path into the admin route
must meet the admin route's policy, and the upstream must receive the canonical path
(fastgate/_core/paths.pxd): otherwise an upstream that resolves dot segments itself
serves /echo/admin/... to anyone. Paths that climb above the root, hide a dot segment
from the "/" reading, or reach another route when read as Tomcat or nginx read them
get 400 with a JSON body. Responses are read with h11, a strict client.
"""

from __future__ import annotations

import json
import socket

import h11
import pytest

from conftest import Gateway

ADMIN_IP = "127.0.0.2"      # the one client the admin route lets in (Linux routes all of 127/8)

FUNCTIONS = '''
import json

def event(event, context):
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"},
            "body": json.dumps(event)}
'''


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paths")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(FUNCTIONS)
    (tmp / "api.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Paths", "version": "1"},
        "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
            "parameters": [{"name": "proxy", "in": "path", "required": True, "type": "string"}],
            "x-amazon-apigateway-integration": {
                "type": "aws_proxy", "httpMethod": "POST",
                "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                       "arn:aws:lambda:us-east-1:123456789012:function:event/invocations"}}}},
    }))
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        function_path: [fn]
        functions:
          event: {{handler: handlers:event}}
        apis:
          - {{openapi: api.json, id: pathsapi, stages: {{prod: {{}}}}}}
        routes:
          - path: /echo/public/{{proxy+}}
            integration: {{type: http, url: "{up.url}"}}
          - path: /echo/admin/{{proxy+}}
            integration: {{type: http, url: "{up.url}"}}
            auth: {{ip_allow: [{ADMIN_IP}/32]}}
          - path: /echo/{{proxy+}}
            integration: {{type: http, url: "{up.url}"}}
          - path: /fn/{{proxy+}}
            integration: {{type: function, function: event}}
        """)
    yield g
    g.stop()


class Answer:
    def __init__(self, status: int, headers: list, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes):
        return next((v for k, v in self.headers if k == name), None)

    def json(self):
        return json.loads(self.body)


def ask(gw: Gateway, target: bytes, source: str = "127.0.0.1", method: str = "GET") -> Answer:
    """One request with this exact request target, its answer read by h11."""
    conn = h11.Connection(h11.CLIENT)
    with socket.socket() as s:
        s.settimeout(10)
        s.bind((source, 0))
        s.connect(("127.0.0.1", gw.port))
        s.sendall(conn.send(h11.Request(method=method, target=target,
                                        headers=[("Host", "gw.test"), ("Connection", "close")])))
        s.sendall(conn.send(h11.EndOfMessage()))
        head, body = None, b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(s.recv(65536))
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return Answer(head.status_code, list(head.headers), body)


def upstream_requests(up) -> int:
    """Requests the upstream has read so far, this look included."""
    import httpx
    return httpx.get(f"{up.url}/stats", timeout=5).json()["requests"]


# Every one of these is the admin route's /echo/admin/secret.
ADMIN_SPELLINGS = [
    b"/echo/public/../admin/secret",
    b"/echo/public/%2e%2e/admin/secret",
    b"/echo/public/%2E%2E/admin/secret",
    b"/echo/public/.%2e/admin/secret",
    b"/echo/public/%2e./admin/secret",
    b"/echo/public/x/../../admin/secret",
    b"/echo/public/./../admin/./secret",
    b"/echo/public/a/b/%2e%2e/../../admin/secret",
    b"/echo/x/../admin/secret",
    b"/echo/%61dmin/secret",                 # an escaped unreserved letter is that letter
    b"/%65cho/admin/secret",
    b"/echo/public/../%61%64min/secret",
    b"//echo/admin/secret",                  # leading slashes: API Gateway reads /echo/...
    b"/echo/admin/secret",
    b"http://gw.test/echo/public/../admin/secret",   # absolute-form
]


@pytest.mark.parametrize("target", ADMIN_SPELLINGS)
def test_every_spelling_of_the_admin_path_meets_the_admin_policy(gw, up, target):
    before = upstream_requests(up)
    denied = ask(gw, target + b"?q=1")
    assert denied.status == 403, (denied.status, denied.body)
    assert denied.header(b"content-type") == b"application/json"
    assert "not authorized" in json.dumps(denied.json())   # the IP policy's denial, not a 404
    assert upstream_requests(up) == before + 1          # only the look itself: nothing forwarded

    allowed = ask(gw, target + b"?q=1", source=ADMIN_IP)
    assert allowed.status == 200, (allowed.status, allowed.body)
    seen = allowed.json()
    assert (seen["path"], seen["query"]) == ("/echo/admin/secret", "q=1")


def test_the_query_string_is_left_alone(gw):
    seen = ask(gw, b"/echo/public/a/../b?x=../y&z=%2e%2e&w=%2f&v=%41",).json()
    assert (seen["path"], seen["query"]) == ("/echo/public/b", "x=../y&z=%2e%2e&w=%2f&v=%41")


@pytest.mark.parametrize("target,path", [
    (b"/echo/public/a/./b/../c", "/echo/public/a/c"),
    (b"/echo/public/a/b/..", "/echo/public/a/"),
    (b"/echo/public/a%2Fb", "/echo/public/a%2Fb"),       # an encoded slash is data, forwarded
    (b"/echo/public/a%2fb%7e", "/echo/public/a%2Fb~"),
    (b"/echo/public/a//b", "/echo/public/a//b"),         # the same route either way: kept
    (b"/echo/public/a;v=1/b", "/echo/public/a;v=1/b"),
    (b"/echo/public/.well-known/x", "/echo/public/.well-known/x"),
])
def test_public_paths_are_forwarded_canonical(gw, target, path):
    answer = ask(gw, target)
    assert answer.status == 200, (answer.status, answer.body)
    assert answer.json()["path"] == path


@pytest.mark.parametrize("target", [
    b"/..", b"/../echo/public/x", b"/echo/../../admin/secret", b"/echo/public/x/../../../..",
    b"/%2e%2e/echo/public/x", b"/echo/public/%2E%2E/%2e%2e/%2e%2e/x",
    b"http://gw.test/echo/../../x",
])
def test_climbing_above_the_root_is_a_400(gw, up, target):
    before = upstream_requests(up)
    answer = ask(gw, target)
    assert answer.status == 400 and answer.json() == {"message": "Bad Request"}
    assert answer.header(b"content-type") == b"application/json"
    assert upstream_requests(up) == before + 1


@pytest.mark.parametrize("target", [
    b"/echo/public/..;/admin/secret",         # Tomcat reads "..;" as ".."
    b"/echo/public/..;jsessionid=1/admin/secret",
    b"/echo/public/%2e%2e;/admin/secret",
    b"/echo/public/..%2Fadmin/secret",        # a server that decodes %2F before resolving
    b"/echo/public/x%2F..%2F..%2Fadmin/secret",
    b"/echo/public/..%5Cadmin/secret",
    b"/echo/public/..\\admin/secret",         # Windows and WHATWG URL parsers read "\" as "/"
    b"/echo/public/%zz",                      # malformed escapes
    b"/echo/public/%%32%65%%32%65/admin/secret",
    b"/echo/admin;x/secret",                  # Tomcat's /echo/admin/secret, here /echo/{proxy+}
    b"/echo//admin/secret",                   # nginx's (merge_slashes) /echo/admin/secret
    b"/echo/x/..//admin/secret",
    b"/echo/admin\\secret",                   # /echo/{proxy+} here, /echo/admin/secret on Windows
])
def test_paths_that_read_two_ways_are_a_400(gw, up, target):
    before = upstream_requests(up)
    for source in ("127.0.0.1", ADMIN_IP):
        answer = ask(gw, target, source=source)
        assert answer.status == 400 and answer.json() == {"message": "Bad Request"}, target
    assert upstream_requests(up) == before + 1


def test_options_asterisk_is_not_a_path(gw):
    answer = ask(gw, b"*", method="OPTIONS")
    assert answer.status == 404 and answer.json() == {"message": "Not Found"}


def test_function_events_carry_the_canonical_path(gw):
    # payload 2.0 on a gateway.yaml route
    event = ask(gw, b"/fn/a/../b/%2e/c%7e?x=..&y=%2e").json()
    assert event["rawPath"] == "/fn/b/c~" == event["requestContext"]["http"]["path"]
    assert event["rawQueryString"] == "x=..&y=%2e"
    assert event["routeKey"] == "ANY /fn/{proxy+}" and event["pathParameters"] == {"proxy": "b/c~"}
    # REST payload 1.0 behind the prod stage
    event = ask(gw, b"/prod/things/../x/%2E/y").json()
    assert event["path"] == "/x/y" and event["requestContext"]["path"] == "/prod/x/y"
    assert event["resource"] == "/{proxy+}" == event["requestContext"]["resourcePath"]
    assert event["pathParameters"] == {"proxy": "x/y"}
    # as AWS records it (LocalStack's AWS-validated test_lambda_aws_proxy_integration snapshot):
    # slashes leading the stage's path go, inner ones stay
    event = ask(gw, b"/prod//proxy-value").json()
    assert event["path"] == "/proxy-value" and event["pathParameters"] == {"proxy": "proxy-value"}
    event = ask(gw, b"/prod/proxy-value//double-slash").json()
    assert event["path"] == "/proxy-value//double-slash"
    assert event["pathParameters"] == {"proxy": "proxy-value//double-slash"}
    # a ".." out of the stage leaves the stage: the top-level routes answer
    answer = ask(gw, b"/prod/../fn/x")
    assert answer.status == 200 and answer.json()["rawPath"] == "/fn/x"
    assert ask(gw, b"/prod/../../x").status == 400
