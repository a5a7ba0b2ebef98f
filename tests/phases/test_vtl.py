"""fastgate.phases.vtl: API Gateway mapping templates (Velocity) and the mock integration."""

from __future__ import annotations

import json

import pytest

from fastgate.compile.apis import needs_vtl
from fastgate.phases.vtl import Input, MappingError, MockIntegration, Util, compile_template, jsonpath


DOC = {"store": {"pets": [{"name": "rex", "tags": ["a"]}, {"name": "tom"}], "owner": None},
       "a.b": 1}


@pytest.mark.parametrize("path, want", [
    ("$", DOC),
    ("$.store.pets[0].name", "rex"),
    ("$.store.pets[*].name", ["rex", "tom"]),
    ("$['a.b']", 1),
    ("$.store.pets[5]", None),
    ("$.nope.deeper", None),
    ("$.store.owner", None),
])
def test_jsonpath_subset(path, want):
    assert jsonpath(DOC, path) == want


def test_jsonpath_rejects_what_it_cannot_read():
    with pytest.raises(MappingError):
        jsonpath(DOC, "store")
    with pytest.raises(MappingError):
        jsonpath(DOC, "$..name")


def render(text: str, **ns) -> str:
    return compile_template(text, "t").merge({"util": Util(), **ns})


def test_input_params_json_and_path():
    inp = Input('{"pets": [{"id": 1}, {"id": 2}], "q": "x"}', {"id": "7"}, {"id": "q", "scope": "s"},
                {"X-Trace": "t1"})
    # path parameters win over the query string, which wins over headers; headers ignore case
    assert render("$input.params('id') $input.params('scope') $input.params('x-trace')",
                  input=inp) == "7 s t1"
    assert render("$input.params().querystring.scope", input=inp) == "s"
    assert render("$input.json('$.pets[1]')", input=inp) == '{"id":2}'
    assert render("$input.path('$.pets').size()", input=inp) == "2"
    assert render("#foreach($p in $input.path('$.pets'))$p.id;#end", input=inp) == "1;2;"
    assert render("[$input.params('missing')]", input=inp) == "[]"


def test_util_functions_as_api_gateway_defines_them():
    assert render("$util.escapeJavaScript($s)", s='a"b\'c/\n\té') == 'a\\"b\\\'c\\/\\n\\t\\u00E9'
    assert render("$util.urlEncode('a b&c')") == "a+b%26c"
    assert render("$util.urlDecode('a+b%26c')") == "a b&c"
    assert render("$util.base64Encode('hi!')") == "aGkh"
    assert render("$util.base64Decode('aGkh')") == "hi!"
    assert render("#set($o = $util.parseJson('{\"n\": [1, 2]}'))$o.n.get(1)") == "2"


def test_values_print_as_api_gateways_java_velocity():
    inp = Input('{"a": 1, "b": [{"c": 5}, true], "t": true, "f": false, "n": null, "m": {"x": "y"}, '
                '"p": [{"name": "rex"}, {"name": "tom"}]}', {}, {}, {})
    # maps: Java's {k=v, ...}; the payload's arrays: compact JSON, inside maps too
    assert render("$input.path('$')", input=inp) == \
        '{a=1, b=[{"c":5},true], t=true, f=false, n=null, m={x=y}, p=[{"name":"rex"},{"name":"tom"}]}'
    assert render("$input.path('$.b')|$input.path('$.m')", input=inp) == '[{"c":5},true]|{x=y}'
    assert render("$input.path('$.p[*].name')", input=inp) == '["rex","tom"]'
    assert render("$input.path('$.t') $input.path('$.f')", input=inp) == "true false"
    # null, missing and undefined print nothing, quiet or not
    assert render("[$input.path('$.n')][$input.path('$.zz')][$nothing][$!nothing]", input=inp) == "[][][][]"
    # what the template builds prints as Java's ArrayList / LinkedHashMap
    assert render('#set($l = [1, "a", true])$l #set($m = {"k": false, "z": $l})$m') == \
        "[1, a, true] {k=false, z=[1, a, true]}"
    assert render("#set($s = \"x$input.path('$.t')\")$s", input=inp) == "xtrue"
    assert render("$util.parseJson('{\"a\": [1, 2], \"b\": {\"c\": null}}')") == "{a=[1,2], b={c=null}}"
    # still lists to Velocity, and a lone $ is text
    assert render("$input.path('$.b').size() #foreach($x in $input.path('$.p'))$x.name,#end", input=inp) == \
        "2 rex,tom,"
    assert render("costs $5 and ${x|'no x'}") == "costs $5 and no x"


def test_decimals_print_as_javas_double():
    inp = Input('{"small": 0.00001, "big": 12345678.5, "plain": 2.5, "whole": 100.0, "n": 7, '
                '"neg": -0.0004}', {}, {}, {})
    assert render("$input.path('$.small') $input.path('$.big') $input.path('$.plain') "
                  "$input.path('$.whole') $input.path('$.n') $input.path('$.neg')", input=inp) == \
        "1.0E-5 1.23456785E7 2.5 100.0 7 -4.0E-4"
    assert render("$input.path('$')", input=Input('{"x": 1e21}', {}, {}, {})) == "{x=1.0E21}"


def test_bad_template_is_a_load_time_error_naming_it():
    with pytest.raises(MappingError, match="where.json: mapping template does not parse"):
        compile_template("#if($x", "where.json")


def event(query=None, headers=None, path=None, stage_vars=None):
    return {"multiValueQueryStringParameters": {k: [v] for k, v in (query or {}).items()} or None,
            "headers": headers or {}, "pathParameters": path,
            "requestContext": {"requestId": "rid-1", "stage": "prod", "resourcePath": "/pets",
                               "identity": {"sourceIp": "127.0.0.1"}},
            "stageVariables": stage_vars}


# the mock of AWS's "Enable mock integration" walkthrough
AWS_MOCK = {
    "type": "mock",
    "requestTemplates": {"application/json":
                         '{ #if( $input.params(\'scope\') == "internal" ) "statusCode": 200 '
                         '#else "statusCode": 500 #end }'},
    "responses": {
        "default": {"statusCode": "200", "responseTemplates": {
            "application/json": '{"statusCode": 200, "message": "Go ahead without me", '
                                '"id": "$context.requestId"}'}},
        "5\\d{2}": {"statusCode": "500", "selectionPattern": "5\\d{2}",
                    "responseParameters": {"method.response.header.X-Reason": "'scope'",
                                           "method.response.header.X-Stage": "context.stage"},
                    "responseTemplates": {"application/json": '{"statusCode": 500, "message": '
                                          '"The invoked method is not supported on the API resource."}'}},
    },
}


def test_mock_status_chosen_by_the_request_template():
    warnings = []
    mock = MockIntegration(AWS_MOCK, "paths./x.get", warnings.append)
    assert needs_vtl(AWS_MOCK) and warnings == []
    status, headers, body = mock.respond(event({"scope": "internal"}), b"", None, None)
    assert status == 200 and json.loads(body) == {"statusCode": 200, "message": "Go ahead without me",
                                                  "id": "rid-1"}
    assert headers == [(b"Content-Type", b"application/json")]
    status, headers, body = mock.respond(event({"scope": "outside"}), b"", None, None)
    assert status == 500 and json.loads(body)["statusCode"] == 500
    assert (b"X-Reason", b"scope") in headers and (b"X-Stage", b"prod") in headers


def test_mock_passthrough_and_missing_default():
    only_500 = {"type": "mock", "passthroughBehavior": "NEVER",
                "requestTemplates": {"application/json": '#set($s = 500){"statusCode": $s}'},
                "responses": {"5xx": {"statusCode": "503", "selectionPattern": "5\\d{2}"}}}
    mock = MockIntegration(only_500, "w", print)
    assert mock.respond(event(), b"", "application/json", None)[0] == 503
    # NEVER: a body of a type without a template is refused with 415
    assert mock.respond(event(), b"<x/>", "application/xml", None) == "UNSUPPORTED_MEDIA_TYPE"
    # a status no integration response selects, and no default: 500, as API Gateway's
    # "No match for output mapping and no default output mapping configured"
    no_default = dict(only_500, requestTemplates={"application/json": '#set($s = 200){"statusCode": $s}'})
    assert MockIntegration(no_default, "w", print).respond(event(), b"", None, None) == "DEFAULT_5XX"


def test_response_template_chosen_by_accept():
    integ = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
             "responses": {"default": {"statusCode": "200", "responseTemplates": {
                 "application/json": '#set($n = 1){"n": $n}', "text/plain": "#set($n = 2)n=$n"}}}}
    mock = MockIntegration(integ, "w", print)
    assert mock.respond(event(), b"", None, "text/plain")[1:] == ([(b"Content-Type", b"text/plain")], b"n=2")
    assert mock.respond(event(), b"", None, None)[2] == b'{"n": 1}'
    assert mock.respond(event(), b"", None, "image/png, text/plain;q=0.5")[2] == b"n=2"


def test_static_mocks_stay_on_the_compiled_template():
    static = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
              "responses": {"default": {"statusCode": "200",
                                        "responseTemplates": {"application/json": '{"id": "$context.requestId"}'}}}}
    assert not needs_vtl(static)
