"""fastgate._core.headers: templates, header transforms, path rewrites."""
import importlib.machinery

import pytest
from hypothesis import given, settings, strategies as st

from fastgate._core import headers as headers_mod
from fastgate._core.headers import HeaderTransform, PathRewrite, Template
from fastgate._core.pipeline import RequestContext, Route


def make_ctx(**fields):
    ctx = RequestContext()
    ctx.method = b"GET"
    ctx.path = b"/api/items/42"
    ctx.query = b"a=1&b=two&a=3&flag"
    ctx.host = b"api.example.com:8443"
    ctx.headers = [
        (b"Host", b"api.example.com:8443"),
        (b"User-Agent", b"curl/8.5"),
        (b"X-Foo", b"foo1"),
        (b"Accept", b"*/*"),
        (b"x-foo", b"foo2"),
    ]
    ctx.http_minor = 1
    ctx.source_ip = b"203.0.113.7"
    ctx.request_id = b"req-123"
    ctx.request_time_ms = 1700000000123
    ctx.path_params = {b"id": b"42", b"proxy": b"a/b/c"}
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def render(source, **fields):
    return Template(source).render(make_ctx(**fields))


def test_compiled_module_is_loaded():
    assert isinstance(headers_mod.__loader__, importlib.machinery.ExtensionFileLoader)
    assert headers_mod.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


# --- variables -------------------------------------------------------------------

@pytest.mark.parametrize("source, expected", [
    ("$request.header.Accept", b"*/*"),
    ("$request.header.accept", b"*/*"),                 # names are case-insensitive
    ("$request.header.X-Foo", b"foo1,foo2"),            # repeats joined with "," like API Gateway
    ("$request.header.X-Missing", b""),
    ("$request.path.id", b"42"),
    ("$request.path.proxy", b"a/b/c"),
    ("$request.path.nope", b""),
    ("$request.path", b"/api/items/42"),
    ("$request.querystring.b", b"two"),
    ("$request.querystring.a", b"1,3"),
    ("$request.querystring.flag", b""),
    ("$request.querystring.A", b""),                    # query names are case-sensitive
    ("$context.requestId", b"req-123"),
    ("$context.identity.sourceIp", b"203.0.113.7"),
    ("$context.requestTimeEpoch", b"1700000000123"),
    ("$context.httpMethod", b"GET"),
    ("$context.path", b"/api/items/42"),
    ("$context.protocol", b"HTTP/1.1"),
    ("$context.domainName", b"api.example.com"),
    ("$context.identity.userAgent", b"curl/8.5"),
    ("$context.routeKey", b""),
])
def test_each_variable(source, expected):
    assert render(source) == expected


def test_every_table_variable_is_covered():
    covered = {"request.path", "context.path", "context.requestId", "context.identity.sourceIp",
               "context.identity.userAgent", "context.requestTimeEpoch", "context.httpMethod",
               "context.protocol", "context.domainName", "context.routeKey",
               # API-stage and gateway-response variables: test_api_stage_variables
               "context.stage", "context.apiId", "context.resourcePath", "context.error.message",
               "context.error.messageString", "context.error.responseType",
               # mutual TLS: tests/compile/test_tls.py::test_client_cert_template_variables
               "context.identity.clientCert.clientCertPem", "context.identity.clientCert.subjectDN",
               "context.identity.clientCert.issuerDN", "context.identity.clientCert.serialNumber",
               "context.identity.clientCert.validity.notBefore",
               "context.identity.clientCert.validity.notAfter"}
    assert set(headers_mod._EXACT) == covered


def test_api_stage_variables():
    from fastgate._core.pipeline import ApiStage, Route
    api = ApiStage(api_id="a1b2c3d4e5", stage="prod", variables={"backend": "b1.internal", "v": "2"})
    ctx = make_ctx()
    assert Template("$context.stage/$context.apiId/${stageVariables.backend}").render(ctx) == b"//"
    ctx.api = api
    ctx.route = Route(route_key="GET /pets/{id}", resource_path="/pets/{id}", api=api)
    assert Template("$context.stage/$context.apiId/${stageVariables.backend}").render(ctx) == \
        b"prod/a1b2c3d4e5/b1.internal"
    assert Template("v$stageVariables.v-$stageVariables.none.").render(ctx) == b"v2-."
    assert Template("$context.resourcePath").render(ctx) == b"/pets/{id}"
    ctx.error_message = 'say "hi"'
    ctx.error_type = "THROTTLED"
    assert Template('{"m":$context.error.messageString,"t":"$context.error.responseType"}',
                    body=True).render(ctx) == b'{"m":"say \\"hi\\"","t":"THROTTLED"}'
    assert Template("$context.error.message").render(ctx) == b'say "hi"'
    with pytest.raises(ValueError, match="stage variable"):
        Template("${stageVariables.bad-name}")


def test_protocol_http10_and_route_key():
    assert render("$context.protocol", http_minor=0) == b"HTTP/1.0"
    ctx = make_ctx()
    ctx.route = Route(route_key="GET /items/{id}")
    assert Template("$context.routeKey").render(ctx) == b"GET /items/{id}"


@pytest.mark.parametrize("host, expected", [
    (b"example.com", b"example.com"),
    (b"example.com:80", b"example.com"),
    (b"[::1]:8080", b"[::1]"),
    (b"[::1]", b"[::1]"),
    (b"", b""),
])
def test_domain_name_strips_port(host, expected):
    assert render("$context.domainName", host=host) == expected


def test_missing_sources_render_empty():
    ctx = RequestContext()   # nothing filled in
    for source in ["$request.header.a", "$request.path.id", "$request.querystring.q",
                   "$context.requestId", "$context.identity.userAgent", "$context.routeKey"]:
        assert Template(source).render(ctx) == b"", source


# --- syntax ----------------------------------------------------------------------

def test_mixed_template_from_the_brief():
    ctx = make_ctx(headers=[(b"x-foo", b"F")])
    assert Template("prefix-$request.header.X-Foo-$context.requestId").render(ctx) == b"prefix-F-req-123"


def test_braced_form_adjacent_to_text():
    assert render("${request.path.id}abc") == b"42abc"
    assert render("v${context.httpMethod}${context.protocol}") == b"vGETHTTP/1.1"
    assert render("${request.header.X-Foo}-x") == b"foo1,foo2-x"


def test_unbraced_name_ends_at_punctuation():
    assert render("$context.requestId.") == b"req-123."
    assert render("$context.requestId-tail") == b"req-123-tail"
    assert render("($request.querystring.b)") == b"(two)"
    assert render("$request.path/x") == b"/api/items/42/x"


def test_dollar_literals():
    assert render("$$context.requestId") == b"$context.requestId"
    assert render("costs $5 $") == b"costs $5 $"


def test_static_template_returns_same_object():
    t = Template("plain text")
    assert t.is_static
    a = t.render(make_ctx())
    assert a == b"plain text" and a is t.render(make_ctx(method=b"POST"))
    assert not Template("x$context.requestId").is_static
    assert Template("").render(make_ctx()) == b""


@pytest.mark.parametrize("source, message", [
    ("x-$context.bogus", "unknown variable $context.bogus at column 3"),
    ("${request.headers.x}", "unknown variable $request.headers.x at column 1"),
    ("ab${context.requestId", "unterminated ${ at column 3"),
    ("${request.header.bad name}", "invalid header name 'bad name'"),
    ("${request.header.}", "unknown variable $request.header. at column 1"),
    ("${request.path.a/b}", "invalid path parameter name 'a/b'"),
    ("${request.querystring.a=b}", "invalid query string name 'a=b'"),
    ("a\r\nb", "CR, LF or NUL in literal text at column 2"),
    ("$stageVariable.x", "unknown variable $stageVariable.x at column 1"),
])
def test_compile_errors_name_variable_and_column(source, message):
    with pytest.raises(ValueError) as exc:
        Template(source)
    assert message in str(exc.value)


# --- injection -------------------------------------------------------------------

@pytest.mark.parametrize("evil", [
    b"a\r\nX-Injected: 1", b"a\nb", b"a\rb", b"a\x00b", b"\r\n\r\nGET / HTTP/1.1",
])
def test_crlf_nul_never_rendered(evil):
    ctx = make_ctx(headers=[(b"X-In", evil)], path_params={b"id": evil}, query=b"q=" + evil,
                   request_id=evil)
    for source in ["$request.header.X-In", "p-$request.path.id-s", "$request.querystring.q",
                   "${context.requestId}"]:
        out = Template(source).render(ctx)
        assert b"\r" not in out and b"\n" not in out and b"\x00" not in out, source
    t = HeaderTransform([("set", "X-Out", "v=$request.header.X-In")])
    for name, value in t.apply([], ctx):
        assert value == b"v=" + evil.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")


def test_path_rewrite_encodes_unsafe_bytes():
    ctx = make_ctx(headers=[(b"X-Tenant", b"a b?c#d\r\n\xc3\xa9")])
    out = PathRewrite("/t/$request.header.X-Tenant").apply(ctx)
    assert out == b"/t/a%20b%3Fc%23d%0D%0A%C3%A9"


# --- header operations -----------------------------------------------------------

BASE = [(b"Host", b"h"), (b"X-A", b"1"), (b"Accept", b"*/*"), (b"x-a", b"2"), (b"Via", b"v")]


def apply(ops, headers=BASE, **fields):
    return HeaderTransform(ops).apply(list(headers), make_ctx(**fields))


def test_set_replaces_all_at_first_position():
    assert apply([("set", "X-A", "new")]) == [
        (b"Host", b"h"), (b"X-A", b"new"), (b"Accept", b"*/*"), (b"Via", b"v")]


def test_set_appends_when_absent():
    assert apply([("set", "X-New", "$context.requestId")]) == BASE + [(b"X-New", b"req-123")]


def test_set_with_empty_result_removes_client_value():
    # A client must not be able to supply a header that the gateway meant to derive.
    out = apply([("set", "x-a", "$request.header.X-Absent")])
    assert out == [(b"Host", b"h"), (b"Accept", b"*/*"), (b"Via", b"v")]


def test_append_adds_one_and_skips_empty():
    assert apply([("append", "X-A", "3")]) == BASE + [(b"X-A", b"3")]
    assert apply([("append", "X-A", "$request.header.nope")]) == BASE


def test_remove_all_case_insensitive():
    assert apply([("remove", "X-A")]) == [(b"Host", b"h"), (b"Accept", b"*/*"), (b"Via", b"v")]
    assert apply([("remove", "x-absent")]) == BASE


def test_rename_keeps_values_and_positions():
    assert apply([("rename", "x-A", "X-B")]) == [
        (b"Host", b"h"), (b"X-B", b"1"), (b"Accept", b"*/*"), (b"X-B", b"2"), (b"Via", b"v")]


def test_ops_run_in_order_and_templates_read_the_request():
    ops = [("rename", "Accept", "X-Accept"),
           ("set", "Accept", "$request.header.accept"),   # reads ctx.headers, not the list
           ("remove", "X-Accept")]
    out = HeaderTransform(ops).apply(list(BASE), make_ctx(headers=BASE))
    assert out == [(b"Host", b"h"), (b"X-A", b"1"), (b"x-a", b"2"), (b"Via", b"v"), (b"Accept", b"*/*")]


def test_apply_returns_new_list():
    src = list(BASE)
    out = HeaderTransform([("remove", "Via")]).apply(src, make_ctx())
    assert src == BASE and out is not src
    assert HeaderTransform([]).apply(src, make_ctx()) == src


@pytest.mark.parametrize("ops, message", [
    ([("set", "Bad Name", "x")], "op 0: invalid header name 'Bad Name'"),
    ([("remove", "X-A"), ("append", "", "x")], "op 1: invalid header name ''"),
    ([("rename", "X-A", "B:C")], "op 0: invalid header name 'B:C'"),
    ([("set", "Content-Length", "0")], "managed by the proxy"),
    ([("remove", "transfer-encoding")], "managed by the proxy"),
    ([("frob", "X-A")], "op 0: expected (set|append|remove|rename"),
    ([("set", "X-A")], "'set' takes 2 arguments"),
    ([("remove", "X-A", "x")], "'remove' takes 1 arguments"),
    ([("set", "X-A", "")], "empty value"),
    ([("set", "X-A", 5)], "must be a template string"),
    ([("set", "X-A", "$context.nope")], "op 0 (set X-A): unknown variable $context.nope at column 1"),
])
def test_transform_compile_errors(ops, message):
    with pytest.raises(ValueError) as exc:
        HeaderTransform(ops)
    assert message in str(exc.value)


def naive_apply(ops, headers, ctx):
    """Oracle: the documented semantics written plainly."""
    out = list(headers)
    for op in ops:
        kind, name = op[0], op[1].lower().encode()
        same = lambda pair: pair[0].lower() == name
        if kind == "set":
            value = Template(op[2]).render(ctx)
            idx = [i for i, p in enumerate(out) if same(p)]
            if idx:
                first = idx[0]
                out = [p for i, p in enumerate(out) if i == first or not same(p)]
                if value:
                    out[first] = (op[1].encode(), value)
                else:
                    del out[first]
            elif value:
                out.append((op[1].encode(), value))
        elif kind == "append":
            value = Template(op[2]).render(ctx)
            if value:
                out.append((op[1].encode(), value))
        elif kind == "remove":
            out = [p for p in out if not same(p)]
        else:
            out = [(op[2].encode(), p[1]) if same(p) else p for p in out]
    return out


NAMES = st.sampled_from(["X-A", "x-a", "X-B", "Accept", "Via"])
VALUES = st.sampled_from(["v", "$request.header.x-a", "$request.header.none", "a-${context.requestId}"])
OPS = st.one_of(
    st.tuples(st.sampled_from(["set", "append"]), NAMES, VALUES),
    st.tuples(st.just("remove"), NAMES),
    st.tuples(st.just("rename"), NAMES, NAMES),
)


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OPS, max_size=5),
       hdrs=st.lists(st.tuples(NAMES.map(str.encode), st.sampled_from([b"1", b"2", b""])), max_size=6))
def test_transform_matches_naive_oracle(ops, hdrs):
    ctx = make_ctx(headers=hdrs)
    assert HeaderTransform(ops).apply(hdrs, ctx) == naive_apply(ops, hdrs, ctx)


# --- path rewrite -----------------------------------------------------------------

def test_path_template_with_params_and_greedy():
    ctx = make_ctx()
    assert PathRewrite("/v2/items/{id}/{proxy}").apply(ctx) == b"/v2/items/42/a/b/c"
    assert PathRewrite("/v2/{proxy+}").apply(ctx) == b"/v2/a/b/c"
    assert PathRewrite("/v2/{missing}/x").apply(ctx) == b"/v2//x"
    assert PathRewrite("/v2/${request.path.id}/$context.httpMethod").apply(ctx) == b"/v2/42/GET"
    assert PathRewrite("/static").apply(ctx) == b"/static"


def test_path_template_keeps_percent_encoding_of_params():
    ctx = make_ctx(path_params={b"id": b"a%2Fb"})
    assert PathRewrite("/x/{id}").apply(ctx) == b"/x/a%2Fb"


@pytest.mark.parametrize("path, expected", [
    (b"/api/items/42", b"/items/42"),
    (b"/api", b"/"),
    (b"/api/", b"/"),
    (b"/apix/1", b"/apix/1"),       # whole segments only
    (b"/other", b"/other"),
    (b"/ap", b"/ap"),
])
def test_strip_prefix(path, expected):
    assert PathRewrite(strip_prefix="/api/").apply(make_ctx(path=path)) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one"),
    ({"template": "/a", "strip_prefix": "/b"}, "exactly one"),
    ({"template": "v2/{id}"}, "must start with '/'"),
    ({"template": "/v2/{id"}, "unterminated { at column 5"),
    ({"template": "/v2/{a/b}"}, "invalid path parameter name 'a/b'"),
    ({"template": "/v2?x=1"}, "'?' in a path template at column 4"),
    ({"template": "/v2/$context.nope"}, "unknown variable $context.nope at column 5"),
    ({"strip_prefix": "/"}, "must start with '/' and not be '/'"),
    ({"strip_prefix": "api"}, "must start with '/'"),
])
def test_path_rewrite_errors(kwargs, message):
    with pytest.raises(ValueError) as exc:
        PathRewrite(**kwargs)
    assert message in str(exc.value)


def test_body_template_keeps_newlines():
    ctx = make_ctx(headers=[(b"X-In", b"a\r\nb")])
    t = Template('{\n  "id": "$context.requestId",\n  "in": "$request.header.X-In"\n}', body=True)
    assert t.render(ctx) == b'{\n  "id": "req-123",\n  "in": "a\r\nb"\n}'
    with pytest.raises(ValueError, match="CR, LF or NUL in literal text at column 2"):
        Template("{\n}")
