"""Events built by fastgate against AWS's sample events (tests/data/events/), field by field."""

import base64
import json
from pathlib import Path

import pytest

from fastgate._core.fncall import trace_header
from fastgate.phases.functions.events import (
    FunctionRequest, build_event_v1, build_event_v1_http, build_event_v2, format_request_time,
    is_binary_v2,
    media_type_matches,
)

EVENTS = Path(__file__).resolve().parents[2] / "data" / "events"
REST_HOST = b"a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com"
HTTP_HOST = b"f6g7h8i9j0.execute-api.eu-west-1.amazonaws.com"
# Values that identify one request rather than describe it: only their type is compared.
OPAQUE = {"extendedRequestId", "resourceId"}


def sample(name):
    return json.loads((EVENTS / name).read_text())


def json_type(value):
    return {type(None): "null", bool: "boolean", int: "number", float: "number",
            str: "string", list: "array", dict: "object"}[type(value)]


def assert_same(ours, theirs, where="event"):
    """Same keys present (null versus absent matters), same JSON types, same values."""
    assert json_type(ours) == json_type(theirs), f"{where}: {json_type(ours)} != {json_type(theirs)}"
    if isinstance(theirs, dict):
        assert sorted(ours) == sorted(theirs), f"{where}: keys differ: {sorted(set(ours) ^ set(theirs))}"
        for key in theirs:
            if key not in OPAQUE:
                assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), f"{where}: {ours} != {theirs}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"


def rest_request(**kw):
    base = dict(api_id="a1b2c3d4e5", stage="prod", source_ip="203.0.113.9",
                protocol="HTTP/1.1")
    base.update(kw)
    return FunctionRequest(**base)


def http_request(**kw):
    base = dict(api_id="f6g7h8i9j0", stage="$default", source_ip="203.0.113.9")
    base.update(kw)
    return FunctionRequest(**base)


def test_rest_proxy_event_matches_sample():
    req = rest_request(
        method="POST", raw_path=b"/pets/42", raw_query=b"tag=a&limit=10&tag=b",
        headers=[(b"Accept", b"application/json"), (b"Content-Type", b"application/json"),
                 (b"Host", REST_HOST), (b"User-Agent", b"curl/8.5.0"),
                 (b"X-Trace", b"first"), (b"X-Trace", b"second")],
        body=b'{"name": "Rex"}', request_id="8f6e2d1c-5b4a-4c3d-9e8f-7a6b5c4d3e2f",
        request_time_ms=1428582896000, resource_path="/pets/{petId}",
        path_parameters={"petId": "42"}, stage_variables={"backend": "blue"},
        authorizer={"principalId": "user-7", "integrationLatency": 12, "tier": "gold"})
    assert_same(build_event_v1(req), sample("rest-v1-proxy.json"))


def test_rest_minimal_get_has_nulls_not_missing_keys():
    req = rest_request(method="GET", raw_path=b"/health",
                       headers=[(b"Host", REST_HOST), (b"User-Agent", b"probe/1.0")],
                       request_id="0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
                       request_time_ms=1704067200000, resource_path="/health")
    event = build_event_v1(req)
    assert_same(event, sample("rest-v1-get-minimal.json"))
    assert "authorizer" not in event["requestContext"]


def test_rest_binary_body_and_api_key_identity():
    theirs = sample("rest-v1-binary.json")
    png = base64.b64decode(theirs["body"])
    req = rest_request(method="PUT", raw_path=b"/images/dot.png",
                       headers=[(b"Content-Type", b"image/png"), (b"Host", REST_HOST),
                                (b"User-Agent", b"uploader/2")],
                       body=png, request_id="1c2d3e4f-5061-4728-93a4-b5c6d7e8f901",
                       request_time_ms=1704067201000, resource_path="/images/{name}",
                       path_parameters={"name": "dot.png"}, binary_media_types=("image/*",),
                       identity={"apiKey": "k3y-value", "apiKeyId": "abc123def4"})
    assert_same(build_event_v1(req), theirs)


def http_pets_request(**kw):
    return http_request(
        method="GET", raw_path=b"/pets/42", raw_query=b"tag=a&tag=b&limit=10",
        headers=[(b"Accept", b"application/json"), (b"Content-Type", b"application/json"),
                 (b"Cookie", b"session=abc; theme=dark"), (b"Host", HTTP_HOST),
                 (b"User-Agent", b"curl/8.5.0"), (b"X-Trace", b"first"), (b"x-trace", b"second")],
        body=b'{"q": 1}', request_id="JKJaXmPLvHcESHA=", request_time_ms=1584039838000,
        route_key="GET /pets/{petId}", path_parameters={"petId": "42"},
        stage_variables={"backend": "blue"}, **kw)


def test_http_proxy_event_matches_sample():
    req = http_pets_request(authorizer={"jwt": {"claims": {"sub": "user-7", "iss": "https://issuer.example"},
                                                "scopes": ["pets.read"]}})
    assert_same(build_event_v2(req), sample("http-v2-proxy.json"))


def test_http_minimal_get_leaves_optional_keys_out():
    req = http_request(method="GET", raw_path=b"/",
                       headers=[(b"Accept", b"*/*"), (b"Host", HTTP_HOST), (b"User-Agent", b"curl/8.5.0")],
                       request_id="LV7fzho-PHcEJPw=", request_time_ms=1587481701000)
    event = build_event_v2(req)
    assert_same(event, sample("http-v2-get-minimal.json"))
    for key in ("cookies", "queryStringParameters", "body", "pathParameters", "stageVariables"):
        assert key not in event


def test_http_form_body_is_base64_with_lambda_authorizer():
    req = http_request(method="POST", raw_path=b"/orders", route_key="POST /orders",
                       headers=[(b"Content-Type", b"application/x-www-form-urlencoded"),
                                (b"Host", HTTP_HOST), (b"User-Agent", b"form/1")],
                       body=b"item=1&qty=2", request_id="MX8gAip-QIdFKQx=",
                       request_time_ms=1704067202000, authorizer={"lambda": {"tenant": "acme"}})
    assert_same(build_event_v2(req), sample("http-v2-lambda-authorizer.json"))


# --- rules the samples do not show -------------------------------------------------

def test_request_time_is_clf_utc_with_english_months():
    assert format_request_time(1428582896000) == "09/Apr/2015:12:34:56 +0000"
    assert format_request_time(1704067199999) == "31/Dec/2023:23:59:59 +0000"


def test_v1_keeps_path_escapes_and_reads_plus_as_a_space():
    # AWS's recordings: a REST path keeps its escapes; the query is read as a form
    req = FunctionRequest(method="GET", raw_path=b"/a%20b/%E2%9C%93", raw_query=b"x=1%2B1&flag&y=a+b&&z=")
    event = build_event_v1(req)
    assert event["path"] == "/a%20b/%E2%9C%93"
    assert event["multiValueQueryStringParameters"] == {"x": ["1+1"], "flag": [""], "y": ["a b"], "z": [""]}
    assert event["headers"] is None and event["multiValueHeaders"] is None


def test_v1_headers_api_gateway_writes():
    req = FunctionRequest(method="GET", raw_path=b"/",
                          headers=[(b"authorization", b"t"), (b"host", b"h"), (b"user-agent", b"u"),
                                   (b"x-forwarded-for", b"10.0.0.1"), (b"tEsT", b"1")],
                          forwarded=("10.0.0.1, 203.0.113.9", "443", "https"), deployment_id="dep1",
                          request_id="r-1", request_time_ms=1_700_000_000_123)
    event = build_event_v1(req)
    assert event["headers"] == {"Authorization": "t", "Host": "h", "User-Agent": "u", "tEsT": "1",
                                "X-Forwarded-For": "10.0.0.1, 203.0.113.9", "X-Forwarded-Port": "443",
                                "X-Forwarded-Proto": "https",
                                "X-Amzn-Trace-Id": trace_header("r-1", 1_700_000_000_123)}
    assert trace_header("r-1", 1_700_000_000_123).startswith("Root=1-6553f100-")
    assert event["multiValueHeaders"]["X-Forwarded-For"] == ["10.0.0.1, 203.0.113.9"]
    assert event["requestContext"]["deploymentId"] == "dep1"
    assert "deploymentId" not in build_event_v1(FunctionRequest(method="GET", raw_path=b"/"))["requestContext"]


def test_v1_repeated_header_with_other_case_keeps_first_spelling():
    req = FunctionRequest(method="GET", raw_path=b"/", headers=[(b"X-A", b"1"), (b"x-a", b"2")])
    event = build_event_v1(req)
    assert event["headers"] == {"X-A": "2"}
    assert event["multiValueHeaders"] == {"X-A": ["1", "2"]}


def test_v2_decodes_raw_path_but_not_the_raw_query():
    # live captures: "/capture/slash%2Fvalue" arrives as "/capture/slash/value"
    req = FunctionRequest(method="GET", raw_path=b"/a%2Fb%20c", raw_query=b"q=%41&q=b+c")
    event = build_event_v2(req)
    assert event["rawPath"] == "/a/b c" and event["requestContext"]["http"]["path"] == "/a/b c"
    assert event["rawQueryString"] == "q=%41&q=b+c"
    assert event["queryStringParameters"] == {"q": "A,b c"}


def test_v2_cookies_from_several_cookie_headers_and_no_cookie_header():
    req = FunctionRequest(method="GET", raw_path=b"/",
                          headers=[(b"Cookie", b"a=1; b=2"), (b"cookie", b"c=3")])
    event = build_event_v2(req)
    assert event["cookies"] == ["a=1", "b=2", "c=3"]
    assert "cookie" not in event["headers"]


@pytest.mark.parametrize("content_type,binary", [
    (None, True), (b"text/plain; charset=utf-8", False), (b"text/csv", False),
    (b"application/json", False), (b"Application/JSON", False), (b"application/xml", False),
    (b"application/javascript", False), (b"application/x-www-form-urlencoded", True),
    (b"application/octet-stream", True), (b"image/png", True), (b"application/vnd.api+json", True),
])
def test_v2_binary_rule(content_type, binary):
    headers = [(b"content-type", content_type)] if content_type else []
    req = FunctionRequest(method="POST", raw_path=b"/", headers=headers, body=b"\x00\xffdata")
    assert is_binary_v2(req) is binary
    event = build_event_v2(req)
    assert event["isBase64Encoded"] is binary
    if binary:
        assert base64.b64decode(event["body"]) == b"\x00\xffdata"


@pytest.mark.parametrize("media,patterns,match", [
    ("image/png", ("image/png",), True), ("image/png", ("image/*",), True),
    ("image/png", ("*/*",), True), ("image/png", ("image/gif", "text/*"), False),
    ("", ("*/*",), False), ("application/octet-stream", (), False),
])
def test_binary_media_types_wildcards(media, patterns, match):
    assert media_type_matches(media, patterns) is match


def test_v1_body_is_text_without_a_matching_binary_media_type():
    req = FunctionRequest(method="POST", raw_path=b"/", headers=[(b"Content-Type", b"image/png")],
                          body=b"abc", binary_media_types=("image/gif",))
    event = build_event_v1(req)
    assert event["body"] == "abc" and event["isBase64Encoded"] is False


def test_domain_name_drops_the_port():
    req = FunctionRequest(method="GET", raw_path=b"/", headers=[(b"Host", b"api.example.com:8443")])
    ctx = build_event_v2(req)["requestContext"]
    assert (ctx["domainName"], ctx["domainPrefix"]) == ("api.example.com", "api")
    req = FunctionRequest(method="GET", raw_path=b"/", headers=[(b"Host", b"[::1]:8080")])
    assert build_event_v1(req)["requestContext"]["domainName"] == "[::1]"


def test_named_stage_prefixes_the_request_context_path_and_raw_path():
    req = FunctionRequest(method="GET", raw_path=b"/pets/1", stage="prod")
    v1, v2 = build_event_v1(req), build_event_v2(req)
    assert v1["path"] == "/pets/1" and v1["requestContext"]["path"] == "/prod/pets/1"
    assert v2["rawPath"] == "/prod/pets/1" == v2["requestContext"]["http"]["path"]
    req = FunctionRequest(method="GET", raw_path=b"/pets/1", stage="$default")
    assert build_event_v2(req)["rawPath"] == "/pets/1"
    assert build_event_v1(req)["requestContext"]["path"] == "/pets/1"


# --- payload format 1.0 on an HTTP API ------------------------------------------------

def test_http_v1_proxy_event_matches_sample():
    # the request of test_http_proxy_event_matches_sample, with 1.0's authorizer shape
    req = http_pets_request(resource_path="/pets/{petId}",
                            authorizer={"claims": {"sub": "user-7", "iss": "https://issuer.example"},
                                        "scopes": ["pets.read"]})
    event = build_event_v1_http(req)
    assert_same(event, sample("http-v1-proxy.json"))
    assert list(event)[0] == "version"


def test_http_v1_catch_all_route_without_authorizer_matches_sample():
    req = http_request(method="GET", raw_path=b"/", resource_path="/$default",
                       headers=[(b"Accept", b"*/*"), (b"Host", HTTP_HOST), (b"User-Agent", b"curl/8.5.0")],
                       request_id="LV7fzho-PHcEJPw=", request_time_ms=1587481701000)
    event = build_event_v1_http(req)
    assert_same(event, sample("http-v1-get-minimal.json"))
    assert event["requestContext"]["authorizer"] == {"claims": None, "scopes": None}


def test_http_v1_differs_from_rest_v1_where_aws_does():
    req = FunctionRequest(method="POST", raw_path=b"/a%20b", stage="prod", api_id="abc",
                          headers=[(b"Content-Type", b"application/octet-stream"), (b"X-A", b"1")],
                          body=b"\x00\x01", binary_media_types=(),
                          identity={"apiKey": "k", "apiKeyId": "i", "caller": "c"})
    rest, http = build_event_v1(req), build_event_v1_http(req)
    assert "version" not in rest and http["version"] == "1.0"
    assert rest["headers"] == {"Content-Type": "application/octet-stream", "X-A": "1"}
    # an HTTP API keeps the client's spelling too, and adds the body's Content-Length
    assert http["headers"] == {"Content-Type": "application/octet-stream", "X-A": "1", "Content-Length": "2"}
    # binary by the HTTP API rule, not binaryMediaTypes
    assert rest["isBase64Encoded"] is False and http["isBase64Encoded"] is True
    assert base64.b64decode(http["body"]) == b"\x00\x01"
    assert rest["path"] == "/a%20b" and http["path"] == "/prod/a b" == http["requestContext"]["path"]
    assert isinstance(rest["requestContext"]["resourceId"], str)
    assert http["requestContext"]["resourceId"] is None
    assert "apiKey" in rest["requestContext"]["identity"]
    assert "apiKey" not in http["requestContext"]["identity"]
    assert http["requestContext"]["identity"]["caller"] == "c"
