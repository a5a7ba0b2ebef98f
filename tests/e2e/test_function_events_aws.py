"""The Lambda proxy event and response of a REST API (payload 1.0) exactly as AWS makes them,
through a real fastgate on a real socket: each case is one of the requests LocalStack's
AWS-validated recordings replay against real API Gateway (tests/aws/services/apigateway/
test_apigateway_lambda.py::test_lambda_aws_proxy_integration and
::test_aws_proxy_response_payload_format_validation in localstack/localstack), with the
answer AWS recorded; plus HTTP API 2.0 and 1.0 events from live AWS captures."""

from __future__ import annotations

import io
import json
import re

import httpx
import pytest

from conftest import Gateway, raw_request, read_response

TRACE_ID = re.compile(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}")

HANDLERS = '''
import base64, json

def echo(event, context):
    return {"statusCode": 200, "body": json.dumps(event)}

def authorize(event, context):
    # allows everything and hands its own event back through the context
    return {"principalId": "me", "context": {"event": json.dumps(event)},
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": event["methodArn"]}]}}

def from_body(event, context):
    # the result is whatever JSON the client posted (AWS's own test function)
    body = event["body"]
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return json.loads(body)
'''

ARN = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
       "arn:aws:lambda:us-east-1:123456789012:function:{}/invocations")


def integration(fn: str) -> dict:
    return {"x-amazon-apigateway-integration": {"type": "aws_proxy", "httpMethod": "POST",
                                                 "uri": ARN.format(fn)}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("awsevents")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(HANDLERS)
    (tmp / "rest.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Events", "version": "1"},
        "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": integration("echo")},
                  "/hardcoded": {"x-amazon-apigateway-any-method": integration("echo")},
                  "/result": {"post": integration("from_body")},
                  "/get-method": {"get": {"x-amazon-apigateway-integration": {
                      "type": "aws_proxy", "httpMethod": "GET", "uri": ARN.format("echo")}}},
                  "/guarded/{id}": {"get": {**integration("echo"), "security": [{"req": []}]}}},
        "securityDefinitions": {"req": {
            "type": "apiKey", "name": "Unused", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "request", "identitySource": "method.request.header.X-Token",
                "authorizerResultTtlInSeconds": 0,
                "authorizerUri": ARN.format("authorize")}}}}))
    (tmp / "binary.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "Binary", "version": "1"},
        "x-amazon-apigateway-binary-media-types": ["image/png"],
        "paths": {"/result": {"post": integration("from_body")}}}))
    (tmp / "http.json").write_text(json.dumps({
        "openapi": "3.0.1", "info": {"title": "Http", "version": "1"},
        "x-amazon-apigateway-importexport-version": "1.0",
        "paths": {"/v1/{proxy+}": {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST", "payloadFormatVersion": "1.0",
            "uri": "arn:aws:lambda:us-east-1:123456789012:function:echo"}}},
                  "/v2/{proxy+}": {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": {
            "type": "aws_proxy", "httpMethod": "POST", "payloadFormatVersion": "2.0",
            "uri": "arn:aws:lambda:us-east-1:123456789012:function:echo"}}}}}))
    g = Gateway(tmp, """\
        access_log: {path: 'off'}
        function_path: [fn]
        functions:
          echo: {handler: handlers:echo}
          from_body: {handler: handlers:from_body}
          authorize: {handler: handlers:authorize}
        apis:
          - {openapi: rest.json, id: evapi, stages: {stage: {}}}
          - {openapi: binary.json, id: binapi, stages: {bin: {}}}
          - {openapi: http.json, id: httpapi, stages: {live: {}}}
        """)
    yield g
    g.stop()


def raw_get(gw, target: str, headers: str = "") -> tuple[int, dict]:
    """GET `target` exactly as written (httpx would normalise it), the echoed event."""
    data = raw_request(gw.port, (f"GET {target} HTTP/1.1\r\nHost: evapi.example\r\n"
                                 "User-Agent: python-requests/testing\r\ntEsT-HEADeR: aValUE\r\n"
                                 f"authorization: random-value\r\n{headers}"
                                 "Connection: close\r\n\r\n").encode())
    r = read_response(io.BytesIO(data))
    return r.status, (json.loads(r.body) if r.status == 200 else r.body)


def test_headers_forwarded_authorization_and_deployment(gw):
    status, event = raw_get(gw, "/stage/proxy-value", "X-Forwarded-For: 198.51.100.7\r\n")
    assert status == 200
    headers, multi = event["headers"], event["multiValueHeaders"]
    # the client's casing is kept, except the names API Gateway spells its own way
    assert headers["tEsT-HEADeR"] == "aValUE" and multi["tEsT-HEADeR"] == ["aValUE"]
    assert headers["Authorization"] == "random-value" and "authorization" not in headers
    assert multi["Authorization"] == ["random-value"]
    assert headers["User-Agent"] == "python-requests/testing"
    # X-Forwarded-*: the client's X-Forwarded-For with the client's address appended
    assert headers["X-Forwarded-For"] == "198.51.100.7, 127.0.0.1"
    assert multi["X-Forwarded-For"] == ["198.51.100.7, 127.0.0.1"]
    assert headers["X-Forwarded-Port"] == str(gw.port) and multi["X-Forwarded-Port"] == [str(gw.port)]
    assert headers["X-Forwarded-Proto"] == "http" and multi["X-Forwarded-Proto"] == ["http"]
    assert [k for k in headers if k.lower() == "x-forwarded-for"] == ["X-Forwarded-For"]
    ctx = event["requestContext"]
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    # the deployment the stage serves, as GetStage reports it
    assert isinstance(ctx["deploymentId"], str) and ctx["deploymentId"]
    assert event["path"] == "/proxy-value" and event["pathParameters"] == {"proxy": "proxy-value"}
    assert ctx["path"] == "/stage/proxy-value" and event["resource"] == "/{proxy+}"
    # without an X-Forwarded-For of its own the client's address is the whole chain
    _, event = raw_get(gw, "/stage/proxy-value")
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"


def test_every_event_carries_an_amazon_trace_id(gw):
    # AWS's recordings and captures: X-Amzn-Trace-Id in every REST and HTTP API event
    _, event = raw_get(gw, "/stage/proxy-value")
    trace = event["headers"]["X-Amzn-Trace-Id"]
    assert TRACE_ID.fullmatch(trace) and event["multiValueHeaders"]["X-Amzn-Trace-Id"] == [trace]
    _, other = raw_get(gw, "/stage/proxy-value")
    assert other["headers"]["X-Amzn-Trace-Id"] != trace          # one per request
    # a client's own is passed on as it is
    _, event = raw_get(gw, "/stage/proxy-value", "X-Amzn-Trace-Id: Root=1-5e1b4151-5ac6c58f5b3b4c0c9d2f7d1e\r\n")
    assert event["headers"]["X-Amzn-Trace-Id"] == "Root=1-5e1b4151-5ac6c58f5b3b4c0c9d2f7d1e"
    assert [k for k in event["headers"] if k.lower() == "x-amzn-trace-id"] == ["X-Amzn-Trace-Id"]
    v2 = httpx.get(f"{gw.url}/live/v2/x", timeout=10).json()
    assert TRACE_ID.fullmatch(v2["headers"]["x-amzn-trace-id"])
    v1 = httpx.get(f"{gw.url}/live/v1/x", timeout=10).json()
    assert TRACE_ID.fullmatch(v1["headers"]["X-Amzn-Trace-Id"])


def test_percent_encoding_in_the_path_is_kept(gw):
    # AWS's recording: "%2B" stays "%2B" and "+" stays "+" in path, requestContext.path
    # and the greedy parameter
    _, event = raw_get(gw, "/stage/proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com")
    tail = "proxy-value/api/user/test%2Balias@gmail.com/plus/test+alias@gmail.com"
    assert event["path"] == "/" + tail
    assert event["pathParameters"] == {"proxy": tail}
    assert event["requestContext"]["path"] == "/stage/" + tail
    _, event = raw_get(gw, "/stage/capture/space%20value")      # a live capture
    assert event["path"] == "/capture/space%20value"
    assert event["pathParameters"] == {"proxy": "capture/space%20value"}


def test_query_string_plus_is_a_space(gw):
    # AWS's recording of the same query string
    _, event = raw_get(gw, "/stage/proxy-value/api?dateTimeOffset=2023-06-12T18:05:10.123456+00:00"
                           "&email=test%2Balias@gmail.com&plus=test+alias@gmail.com"
                           "&url=https://www.google.com/&whitespace=foo%20bar&zhash=abort/")
    assert event["queryStringParameters"] == {
        "dateTimeOffset": "2023-06-12T18:05:10.123456 00:00", "email": "test+alias@gmail.com",
        "plus": "test alias@gmail.com", "url": "https://www.google.com/", "whitespace": "foo bar",
        "zhash": "abort/"}
    assert event["multiValueQueryStringParameters"]["plus"] == ["test alias@gmail.com"]
    _, event = raw_get(gw, "/stage/proxy-value?category=electronics&category=books&price=10&price=20")
    assert event["queryStringParameters"] == {"category": "books", "price": "20"}
    assert event["multiValueQueryStringParameters"] == {"category": ["electronics", "books"],
                                                        "price": ["10", "20"]}


def test_repeated_slashes_as_aws_normalises_them(gw):
    # //stage/x is served as /stage/x
    status, event = raw_get(gw, "//stage/proxy-value")
    assert status == 200
    assert event["path"] == "/proxy-value" and event["requestContext"]["path"] == "/stage/proxy-value"
    assert event["pathParameters"] == {"proxy": "proxy-value"}
    # /stage//x routes as /x; requestContext.path keeps what was asked for
    _, event = raw_get(gw, "/stage//proxy-value")
    assert event["path"] == "/proxy-value" and event["pathParameters"] == {"proxy": "proxy-value"}
    assert event["requestContext"]["path"] == "/stage//proxy-value"
    _, event = raw_get(gw, "/stage//hardcoded")
    assert event["resource"] == "/hardcoded" and event["path"] == "/hardcoded"
    assert event["pathParameters"] is None and event["requestContext"]["path"] == "/stage//hardcoded"
    # inner slashes stay in the greedy parameter
    _, event = raw_get(gw, "/stage/proxy-value//double-slash")
    assert event["path"] == "/proxy-value//double-slash"
    assert event["pathParameters"] == {"proxy": "proxy-value//double-slash"}
    assert event["requestContext"]["path"] == "/stage/proxy-value//double-slash"


def post_result(gw, result, stage="stage", accept=None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    return httpx.post(f"{gw.url}/{stage}/result", content=json.dumps(result),
                      headers={"Content-Type": "application/json", **headers}, timeout=10)


def test_result_defaults(gw):
    # AWS's recordings of ::test_aws_proxy_response_payload_format_validation
    r = post_result(gw, {"statusCode": 200})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/json"
    r = post_result(gw, {"statusCode": 200, "headers": {"test-header": "value", "header-bool": True}})
    assert r.headers["content-type"] == "application/json"
    assert r.headers["test-header"] == "value" and r.headers["header-bool"] == "true"
    r = post_result(gw, {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "x"})
    assert r.headers.get_list("content-type") == ["text/plain"]
    # only headers, no statusCode: a 200 with an empty body
    r = post_result(gw, {"headers": {"test-header": "value"}})
    assert r.status_code == 200 and r.content == b"" and r.headers["test-header"] == "value"
    r = post_result(gw, {"statusCode": "201"})
    assert r.status_code == 201
    for bad in ({"statusCode": 200, "wrongValue": "value"}, {"statusCode": "test"}, "justAString",
                {"statusCode": 200, "multiValueHeaders": {"test-multi-invalid": "value1"}}):
        r = post_result(gw, bad)
        assert r.status_code == 502 and r.json() == {"message": "Internal server error"}, bad


def test_base64_result_without_a_matching_binary_media_type_is_sent_as_text(gw):
    encoded = {"statusCode": 200, "body": "dGVzdC1kYXRh", "isBase64Encoded": True}
    r = post_result(gw, encoded)        # no binaryMediaTypes on the API
    assert r.status_code == 200 and r.content == b"dGVzdC1kYXRh"
    r = post_result(gw, {"statusCode": 200, "body": "dGVzdC1kYXRh"})
    assert r.content == b"dGVzdC1kYXRh"
    # an API with image/png: decoded only for a client that accepts image/png first
    r = post_result(gw, encoded, stage="bin", accept="image/png")
    assert r.status_code == 200 and r.content == b"test-data"
    r = post_result(gw, encoded, stage="bin", accept="text/html")
    assert r.content == b"dGVzdC1kYXRh"


def test_headers_and_multi_value_headers_are_both_sent(gw):
    r = post_result(gw, {"statusCode": 200, "multiValueHeaders": {"test-multi": ["value1", "value2"]}})
    assert r.headers.get_list("test-multi") == ["value1", "value2"]
    r = post_result(gw, {"statusCode": 200, "multiValueHeaders": {"test-multi": ["value-multi"]},
                         "headers": {"test-multi": "value-solo"}})
    assert r.headers.get_list("test-multi") == ["value-multi", "value-solo"]
    r = post_result(gw, {"statusCode": 200, "multiValueHeaders": {"tesT-Multi": ["value-multi"]},
                         "headers": {"test-multi": "value-solo"}})
    lines = [(n, v) for n, v in r.headers.raw if n.lower() == b"test-multi"]
    assert lines == [(b"tesT-Multi", b"value-multi"), (b"test-multi", b"value-solo")]


def test_http_api_payload_2_0_event(gw):
    r = httpx.get(f"{gw.url}/live/v2/capture/space%20value?literalPlus=a+b&encodedPlus=a%2Bb&r=1&r=2",
                  headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10)
    event = r.json()
    # live capture: rawPath is decoded, the query string is not; "+" is a space
    assert event["rawPath"] == "/live/v2/capture/space value"
    assert event["requestContext"]["http"]["path"] == "/live/v2/capture/space value"
    assert event["rawQueryString"] == "literalPlus=a+b&encodedPlus=a%2Bb&r=1&r=2"
    assert event["queryStringParameters"] == {"literalPlus": "a b", "encodedPlus": "a+b", "r": "1,2"}
    assert event["pathParameters"] == {"proxy": "capture/space value"}
    headers = event["headers"]
    assert headers["content-length"] == "0"
    assert headers["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"
    assert headers["x-forwarded-port"] == str(gw.port) and headers["x-forwarded-proto"] == "http"
    assert all(name == name.lower() for name in headers)
    r = httpx.post(f"{gw.url}/live/v2/x", content=b"12345", timeout=10)
    assert r.json()["headers"]["content-length"] == "5"


def test_http_api_payload_1_0_event(gw):
    r = httpx.get(f"{gw.url}/live/v1/a%20b?q=a+b", headers={"accept": "*/*", "X-Trace": "1"}, timeout=10)
    event = r.json()
    assert event["version"] == "1.0"
    assert event["path"] == "/live/v1/a b" and event["pathParameters"] == {"proxy": "a b"}
    assert event["queryStringParameters"] == {"q": "a b"}
    headers = event["headers"]
    # the client's spelling, AWS's own headers in AWS's (a live capture)
    assert headers["accept"] == "*/*" and headers["X-Trace"] == "1"
    assert headers["Content-Length"] == "0" and headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http" and headers["Host"]
    assert event["multiValueHeaders"]["X-Forwarded-Port"] == [str(gw.port)]
    assert "deploymentId" not in event["requestContext"]


def test_request_authorizer_event_has_the_same_headers_and_path_rules(gw):
    status, event = raw_get(gw, "/stage/guarded/a%2Bb?q=x+y", "X-Token: t\r\nX-Forwarded-For: 10.1.1.1\r\n")
    assert status == 200, event
    auth_event = json.loads(event["requestContext"]["authorizer"]["event"])
    assert auth_event["type"] == "REQUEST"
    assert auth_event["headers"]["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
    assert auth_event["headers"]["X-Forwarded-Proto"] == "http"
    assert auth_event["headers"]["Authorization"] == "random-value"
    assert auth_event["headers"]["X-Amzn-Trace-Id"] == event["headers"]["X-Amzn-Trace-Id"]
    assert auth_event["pathParameters"] == {"id": "a%2Bb"} == event["pathParameters"]
    assert auth_event["queryStringParameters"] == {"q": "x y"}
    assert auth_event["requestContext"]["deploymentId"] == event["requestContext"]["deploymentId"]


def test_aws_proxy_with_a_method_other_than_post_fails_every_request(gw):
    # AWS's recording (test_lambda_aws_proxy_integration_non_post_method): the integration is
    # taken, every request answers 500
    r = httpx.get(f"{gw.url}/stage/get-method", timeout=10)
    assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
