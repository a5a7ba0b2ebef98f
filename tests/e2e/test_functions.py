"""Function integrations through a real fastgate: Lambda-style handlers behind a YAML
route (payload 2.0) and behind an OpenAPI aws_proxy integration (REST, payload 1.0),
a Starlette app through mangum, and failures (raise, timeout, crash) answered as API
Gateway answers them while the gateway keeps serving — driven with httpx."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from conftest import Gateway

HANDLERS = '''
import json, os, time

def echo(event, context):
    return {"statusCode": 201, "headers": {"X-Fn": context.function_name},
            "cookies": ["a=1", "b=2; Path=/"],
            "body": json.dumps({"event": event, "remaining": context.get_remaining_time_in_millis()})}

def rest(event, context):
    return {"statusCode": "200", "multiValueHeaders": {"X-Multi": ["1", "2"]},
            "body": json.dumps({"path": event["path"], "resource": event["resource"],
                                "pathParameters": event["pathParameters"],
                                "stage": event["requestContext"]["stage"],
                                "stageVariables": event["stageVariables"],
                                "query": event["multiValueQueryStringParameters"],
                                "body": event["body"]})}

def boom(event, context):
    raise ValueError("nope")

def slow(event, context):
    time.sleep(5)

def die(event, context):
    os._exit(3)

def bare(event, context):
    return {"plain": "dict"}

def counted(event, context):
    with open(event["queryStringParameters"]["log"], "a") as f:
        f.write(context.aws_request_id + "\\n")
    return {"statusCode": 200, "body": "counted"}

def v1http(event, context):
    if event["path"].endswith("/png"):
        return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                "body": "iVBORw0=", "isBase64Encoded": True}
    if event["path"].endswith("/bad"):
        return {"statusCode": 200, "cookies": ["a=1"]}     # a 2.0 key: malformed in 1.0
    return {"statusCode": 200, "multiValueHeaders": {"X-Multi": ["1", "2"]},
            "body": json.dumps(event)}
'''

STARLETTE_APP = '''
from mangum import Mangum
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def item(request):
    return JSONResponse({"id": request.path_params["id"], "q": request.query_params.getlist("q"),
                         "cookie": request.cookies.get("c")})

app = Starlette(routes=[Route("/items/{id}", item)])
handler = Mangum(app, lifespan="off")
'''


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("functions")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(HANDLERS)
    (tmp / "fn" / "web.py").write_text(STARLETTE_APP)
    (tmp / "api.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Fn", "version": "1"},
        "paths": {"/things/{id}": {"post": {
            "parameters": [{"name": "id", "in": "path", "required": True, "type": "string"}],
            "x-amazon-apigateway-integration": {
                "type": "aws_proxy", "httpMethod": "POST",
                "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                       "arn:aws:lambda:us-east-1:123456789012:function:rest/invocations"}}}},
    }))
    (tmp / "http.json").write_text(json.dumps({
        "openapi": "3.0.1", "info": {"title": "HttpV1", "version": "1"},
        "x-amazon-apigateway-importexport-version": "1.0",
        "paths": {"/pets/{petId}": {"get": {"x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST", "payloadFormatVersion": "1.0",
            "uri": "arn:aws:lambda:us-east-1:123456789012:function:v1http"}}},
                  "/{proxy+}": {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST", "payloadFormatVersion": "1.0",
            "uri": "arn:aws:lambda:us-east-1:123456789012:function:v1http"}}}},
    }))
    g = Gateway(tmp, """\
        access_log: {path: 'off'}
        function_path: [fn]
        functions:
          echo: {handler: handlers:echo}
          rest: {handler: handlers:rest}
          boom: {handler: handlers:boom}
          slow: {handler: handlers:slow, timeout_ms: 10000}
          die: {handler: handlers:die}
          bare: {handler: handlers:bare}
          counted: {handler: handlers:counted}
          web: {handler: web:handler}
          v1http: {handler: handlers:v1http}
        apis:
          - openapi: http.json
            id: httpv1
            stages: {live: {}}
          - openapi: api.json
            id: fnapi
            stages: {v1: {variables: {color: red}}}
        routes:
          - {path: "/echo/{proxy+}", integration: {type: function, function: echo}}
          - {path: /boom, integration: {type: function, function: boom}}
          - {path: /slow, integration: {type: function, function: slow, timeout_ms: 500}}
          - {path: /die, integration: {type: function, function: die}}
          - {path: /bare, integration: {type: function, function: bare}}
          - {path: /counted, integration: {type: function, function: counted}}
          - {path: "/items/{id}", integration: {type: function, function: web, payload_format: "1.0"}}
          - {path: "/yaml/{petId}", integration: {type: function, function: v1http, payload_format: "1.0"}}
        """)
    yield g
    g.stop()


def test_payload_v2_event_and_response(gw):
    r = httpx.post(f"{gw.url}/echo/a/b?x=1&x=2", content=b"hi", headers={"Cookie": "c=3"}, timeout=10)
    assert r.status_code == 201
    assert r.headers["x-fn"] == "echo"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2; Path=/"]
    event = r.json()["event"]
    assert event["version"] == "2.0" and event["routeKey"] == "ANY /echo/{proxy+}"
    assert event["rawPath"] == "/echo/a/b" and event["rawQueryString"] == "x=1&x=2"
    assert event["queryStringParameters"] == {"x": "1,2"}
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["cookies"] == ["c=3"] and "cookie" not in event["headers"]
    assert event["requestContext"]["requestId"] == r.headers["x-request-id"]
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["body"] == "aGk=" and event["isBase64Encoded"] is True   # no Content-Type: binary
    assert 0 < r.json()["remaining"] <= 3000


def test_aws_proxy_from_openapi_gets_the_rest_event(gw):
    r = httpx.post(f"{gw.url}/v1/things/7%20x?q=a&q=b", content=b'{"k": 1}',
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200
    assert r.headers.get_list("x-multi") == ["1", "2"] or r.headers["x-multi"] == "1, 2"
    assert r.headers["x-amzn-requestid"] == r.headers["x-request-id"]
    body = r.json()
    assert body["resource"] == "/things/{id}"
    assert body["pathParameters"] == {"id": "7%20x"}     # a REST API keeps the escape
    assert body["stage"] == "v1" and body["stageVariables"] == {"color": "red"}
    assert body["query"] == {"q": ["a", "b"]}
    assert body["body"] == '{"k": 1}'


def test_http_api_with_payload_1_0_gets_the_http_api_1_0_event(gw):
    r = httpx.get(f"{gw.url}/live/pets/7?q=a&q=b", headers={"X-Trace": "1", "Cookie": "c=3"},
                  timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-multi"] in ("1, 2", "1,2") or r.headers.get_list("x-multi") == ["1", "2"]
    event = r.json()
    assert event["version"] == "1.0"
    assert event["resource"] == "/pets/{petId}" and event["path"] == "/live/pets/7"
    assert event["pathParameters"] == {"petId": "7"}
    assert event["multiValueQueryStringParameters"] == {"q": ["a", "b"]}
    # the client's spelling (httpx sends these as given), AWS's own headers in AWS's
    assert event["headers"]["X-Trace"] == "1" and event["headers"]["Cookie"] == "c=3"
    assert event["headers"]["Content-Length"] == "0" and event["headers"]["X-Forwarded-Proto"] == "http"
    ctx = event["requestContext"]
    assert ctx["apiId"] == "httpv1" and ctx["stage"] == "live" and ctx["resourceId"] is None
    assert ctx["authorizer"] == {"claims": None, "scopes": None}
    assert ctx["requestId"] == r.headers["x-request-id"]
    assert event["body"] is None and event["stageVariables"] is None
    # no Content-Type: base64 by the HTTP API rule (a REST API without binaryMediaTypes sends text)
    event = httpx.post(f"{gw.url}/live/any/thing", content=b"\x00\x01", timeout=10).json()
    assert event["resource"] == "/{proxy+}" == event["requestContext"]["resourcePath"]
    assert event["pathParameters"] == {"proxy": "any/thing"}
    assert event["isBase64Encoded"] is True and event["body"] == "AAE="


def test_yaml_route_with_payload_1_0_gets_the_http_api_1_0_event(gw):
    # gateway.yaml's routes are an HTTP API's routes: 1.0 is the HTTP API's 1.0 event
    # (as for the OpenAPI HTTP API above), not the REST API's
    r = httpx.post(f"{gw.url}/yaml/7?q=a&q=b", content=b"\x00\x01",
                   headers={"X-Trace": "1", "Cookie": "c=3"}, timeout=10)
    assert r.status_code == 200, r.text
    event = r.json()
    assert event["version"] == "1.0"
    assert event["resource"] == "/yaml/{petId}" == event["requestContext"]["resourcePath"]
    assert event["path"] == "/yaml/7" and event["pathParameters"] == {"petId": "7"}
    assert event["multiValueQueryStringParameters"] == {"q": ["a", "b"]}
    assert event["headers"]["X-Trace"] == "1" and event["headers"]["Cookie"] == "c=3"
    ctx = event["requestContext"]
    assert ctx["stage"] == "$default" and ctx["resourceId"] is None
    assert ctx["authorizer"] == {"claims": None, "scopes": None}
    assert event["isBase64Encoded"] is True and event["body"] == "AAE="   # the HTTP API rule
    r = httpx.get(f"{gw.url}/yaml/png", timeout=10)
    assert r.status_code == 200 and r.content == bytes.fromhex("89504e470d")


def test_http_api_1_0_response_rules(gw):
    r = httpx.get(f"{gw.url}/live/pets/png", timeout=10)
    assert r.status_code == 200 and r.content == bytes.fromhex("89504e470d")   # always decoded
    r = httpx.get(f"{gw.url}/live/pets/bad", timeout=10)
    assert r.status_code == 500 and r.json() == {"message": "Internal Server Error"}
    assert "x-amzn-errortype" not in r.headers


def test_a_starlette_app_through_mangum(gw):
    r = httpx.get(f"{gw.url}/items/42?q=1&q=2", headers={"Cookie": "c=yum"}, timeout=10)
    assert r.status_code == 200
    assert r.json() == {"id": "42", "q": ["1", "2"], "cookie": "yum"}


def test_the_handler_runs_once_per_request(gw, tmp_path):
    # a request without a body is whole at head-complete; message-complete must not
    # start the function a second time
    calls = tmp_path / "calls"
    with httpx.Client(timeout=10) as client:
        for method, body in (("GET", None), ("POST", b"x"), ("DELETE", None)):
            r = client.request(method, f"{gw.url}/counted", params={"log": str(calls)}, content=body)
            assert r.status_code == 200 and r.text == "counted"
    ids = calls.read_text().split()
    assert len(ids) == 3 and len(set(ids)) == 3


def test_v2_result_without_status_code_is_json(gw):
    r = httpx.get(f"{gw.url}/bare", timeout=10)
    assert r.status_code == 200 and r.json() == {"plain": "dict"}
    assert r.headers["content-type"] == "application/json"


def test_failures_are_api_gateways_errors_and_the_gateway_keeps_serving(gw):
    pid_before = gw.workers()
    r = httpx.get(f"{gw.url}/boom", timeout=10)
    assert r.status_code == 502 and r.json() == {"message": "Internal server error"}
    r = httpx.get(f"{gw.url}/slow", timeout=10)
    assert r.status_code == 504 and r.json() == {"message": "Endpoint request timed out"}
    r = httpx.get(f"{gw.url}/die", timeout=10)
    assert r.status_code == 502 and r.json() == {"message": "Internal server error"}
    # the same keep-alive connection still works, and the workers are the same processes
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{gw.url}/boom").status_code == 502
        assert c.get(f"{gw.url}/bare").status_code == 200
    assert gw.workers() == pid_before


def test_unknown_function_is_a_config_error(tmp_path):
    import subprocess
    from conftest import ROOT
    cfg = tmp_path / "g.yaml"
    cfg.write_text(textwrap.dedent("""\
        listeners: [{address: 127.0.0.1:1}]
        functions: {a: {handler: "not valid"}}
        routes: [{path: /x, integration: {type: function, function: b}}]
        """))
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "fastgate"), "check", "-c", str(cfg)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "functions.a.handler" in r.stderr or "routes[0].integration.function" in r.stderr


def test_serve_openapi_with_function_flags(gw, tmp_path):
    from conftest import ROOT, Proc, free_port, wait_port
    base = gw.config_path.parent
    port = free_port()
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi", str(base / "api.json"),
              "--stage", "dev", "--function", "rest=handlers:rest", "--function-path", str(base / "fn"),
              "--listen", f"127.0.0.1:{port}", "--control", "off"], cwd=str(tmp_path))
    try:
        wait_port(port, p.proc)
        r = httpx.post(f"http://127.0.0.1:{port}/dev/things/5", content=b"x", timeout=10)
        assert r.status_code == 200 and r.json()["pathParameters"] == {"id": "5"}
        assert r.json()["stage"] == "dev"
    finally:
        p.stop()
    bad = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi", str(base / "api.json"),
                "--function", "rest", "--control", "off"], cwd=str(tmp_path))
    assert bad.proc.wait(30) == 2
    assert "--function" in bad.output()
