"""fastgate.phases.mapping: API Gateway's REST and HTTP API parameter mappings compiled into header
transforms, query rewrites and path templates, applied to real request contexts."""

import pytest

from fastgate._core.pipeline import ApiStage, RequestContext
from fastgate.phases.mapping import QueryMapping, QueryOp, compile_request_mapping

REST = {"protocolType": "REST"}
HTTP = {"protocolType": "HTTP"}


def make_ctx(query=b"", headers=(), path_params=None, path=b"/pets/7"):
    ctx = RequestContext()
    ctx.method = b"GET"
    ctx.path = path
    ctx.query = query
    ctx.headers = list(headers)
    ctx.path_params = path_params or {}
    ctx.request_id = b"req-1"
    ctx.api = ApiStage(api_id="a1b2c3d4e5", stage="prod", variables={"env": "blue"})
    return ctx


def rest(params, itype="HTTP", uri="https://backend.test/pets"):
    return compile_request_mapping(REST, {}, {"type": itype, "uri": uri,
                                              "requestParameters": params})


def test_rest_sample_api_mappings():
    # AWS's request-validation sample: q1 becomes the backend's ?type=, h1 its custom_h1 header
    m = rest({"integration.request.querystring.type": "method.request.querystring.q1"})
    ctx = make_ctx(query=b"q1=cat&other=x")
    assert m.query.apply(ctx) == b"type=cat"          # HTTP (custom): only what is mapped
    assert not m.keep_query and not m.keep_headers
    m = rest({"integration.request.header.custom_h1": "method.request.header.h1"})
    ctx = make_ctx(headers=[(b"H1", b"v1")])
    assert m.headers.apply([], ctx) == [(b"custom_h1", b"v1")]


def test_rest_sources_static_context_stage_variables():
    m = rest({
        "integration.request.header.x-static": "'fixed $5'",
        "integration.request.header.x-req": "context.requestId",
        "integration.request.header.x-env": "stageVariables.env",
        "integration.request.querystring.id": "method.request.path.id",
        "integration.request.querystring.note": "'a b&c=d'",
    }, itype="HTTP_PROXY")
    ctx = make_ctx(query=b"keep=1", path_params={b"id": b"7"})
    assert m.headers.apply([(b"Accept", b"*/*")], ctx) == [
        (b"Accept", b"*/*"), (b"x-static", b"fixed $5"), (b"x-req", b"req-1"),
        (b"x-env", b"blue")]
    # HTTP_PROXY keeps the client's query string; mapped values are percent-encoded
    assert m.keep_query and m.keep_headers
    assert m.query.apply(ctx) == b"keep=1&id=7&note=a%20b%26c%3Dd"


def test_rest_query_copies_keep_encoding_and_take_the_last_value():
    m = rest({"integration.request.querystring.q": "method.request.querystring.q1",
              "integration.request.querystring.all": "method.request.multivaluequerystring.m"})
    ctx = make_ctx(query=b"q1=a%20b&q1=c+d&m=1&m=2")
    assert m.query.apply(ctx) == b"q=c+d&all=1&all=2"
    assert m.query.apply(make_ctx(query=b"")) == b""


def test_rest_path_parameters_fill_the_integration_uri():
    m = rest({"integration.request.path.petId": "method.request.path.id",
              "integration.request.path.v": "stageVariables.env"},
             uri="https://backend.test/{v}/pets/{petId}/{rest+}")
    assert m.path == "/${stageVariables.env}/pets/{id}/{rest}"
    ctx = make_ctx(path_params={b"id": b"7", b"rest": b"a/b"})
    assert m.path_rewrite().apply(ctx) == b"/blue/pets/7/a/b"
    with pytest.raises(ValueError, match="has no {nope}"):
        rest({"integration.request.path.nope": "method.request.path.id"})


@pytest.mark.parametrize("params,match", [
    ({"integration.request.header.Content-Length": "'1'"}, "reserved header"),
    ({"integration.request.header.Host": "'evil'"}, "reserved header"),
    ({"integration.request.body.x": "'1'"}, "target must be"),
    ({"integration.request.header.x": "method.request.body.name"}, "request body"),
    ({"integration.request.header.x": "somewhere"}, "source must be"),
    ({"integration.request.header.x": ""}, "non-empty"),
])
def test_rest_compile_errors(params, match):
    with pytest.raises(ValueError, match=match):
        rest(params)


def http(params):
    return compile_request_mapping(HTTP, {}, {"type": "HTTP_PROXY",
                                              "requestParameters": params})


def test_http_api_header_operations_from_the_docs():
    # "Add a header": append:header.header1 = $context.requestId
    m = http({"append:header.header1": "$context.requestId"})
    assert m.headers.apply([(b"header1", b"client")], make_ctx()) == [
        (b"header1", b"client"), (b"header1", b"req-1")]
    # "Rename a request header": append header2 from header1, remove header1
    m = http({"append:header.header2": "$request.header.header1", "remove:header.header1": "''"})
    ctx = make_ctx(headers=[(b"Header1", b"v"), (b"Accept", b"*/*")])
    assert m.headers.apply(list(ctx.headers), ctx) == [(b"Accept", b"*/*"), (b"header2", b"v")]
    m = http({"overwrite:header.x-env": "env-${stageVariables.env}"})
    assert m.headers.apply([(b"X-Env", b"client")], make_ctx()) == [(b"x-env", b"env-blue")]


def test_http_api_query_operations():
    m = http({"overwrite:querystring.page": "$request.header.x-page",
              "append:querystring.tag": "static",
              "remove:querystring.secret": "''"})
    assert m.keep_query
    ctx = make_ctx(query=b"page=1&tag=a&secret=s&x", headers=[(b"X-Page", b"9 & 10")])
    assert m.query.apply(ctx) == b"tag=a&x&page=9%20%26%2010&tag=static"
    # overwrite with a value that renders empty removes the parameter
    assert m.query.apply(make_ctx(query=b"page=1")) == b"tag=static"


def test_http_api_overwrite_path():
    m = http({"overwrite:path": "/v2/$request.path.proxy"})
    ctx = make_ctx(path_params={b"proxy": b"a b/c"})
    assert m.path_rewrite().apply(ctx) == b"/v2/a%20b/c"
    with pytest.raises(ValueError, match="must start with '/'"):
        http({"overwrite:path": "v2"})


@pytest.mark.parametrize("key", [
    "overwrite:header.Authorization", "append:header.access-control-allow-origin",
    "overwrite:header.X-Amzn-Trace-Id", "overwrite:header.x-amz-date",
    "overwrite:header.apigw-requestid", "remove:header.Connection", "overwrite:header.Via",
    "overwrite:header.X-Forwarded-For", "overwrite:header.Origin",
])
def test_http_api_reserved_headers(key):
    with pytest.raises(ValueError, match="reserved header"):
        http({key: "x"})


@pytest.mark.parametrize("params,match", [
    ({"overwrite:body": "x"}, "the key must be"),
    ({"overwrite:header.x": "$request.body.name"}, "unknown variable"),
    ({"overwrite:header.x": "$context.nope"}, "unknown variable"),
])
def test_http_api_compile_errors(params, match):
    with pytest.raises(ValueError, match=match):
        http(params)


def test_query_mapping_never_lets_a_value_add_parameters():
    qm = QueryMapping([QueryOp("set", "q", "$request.header.x")], keep_query=False)
    for value, sent in [(b"a&admin=1", b"q=a%26admin%3D1"), (b"#frag", b"q=%23frag"),
                        (b"100%", b"q=100%25"), (b"%41ok", b"q=%41ok"), (b"\xc3\xa9", b"q=%C3%A9")]:
        assert qm.apply(make_ctx(headers=[(b"x", value)])) == sent
    # a name with reserved characters is matched and sent encoded
    qm = QueryMapping([QueryOp("set", "a b", "'x'".strip("'"))], keep_query=True)
    assert qm.apply(make_ctx(query=b"a%20b=old&c=1")) == b"c=1&a%20b=x"
