"""fastgate.phases.validation: API Gateway's request validators, against the behaviour AWS documents
for its request-validation sample API (api-gateway-request-validation-test)."""

import json

import orjson
import pytest

from fastgate.control.openapi import import_openapi
from fastgate.phases.validation import BAD_BODY, BAD_PARAMETERS, compile_validator

# The shape of AWS's "ReqValidators Sample": a params-only validator by default, an "all"
# validator on POST, a required query string q1 on GET, a required header h1 on POST.
SAMPLE = {
    "swagger": "2.0",
    "info": {"title": "ReqValidators Sample", "version": "1.0.0"},
    "x-amazon-apigateway-request-validators": {
        "all": {"validateRequestBody": True, "validateRequestParameters": True},
        "params-only": {"validateRequestBody": False, "validateRequestParameters": True},
    },
    "x-amazon-apigateway-request-validator": "params-only",
    "paths": {"/validation": {
        "post": {
            "x-amazon-apigateway-request-validator": "all",
            "parameters": [
                {"in": "header", "name": "h1", "required": True},
                {"in": "body", "name": "RequestBodyModel", "required": True,
                 "schema": {"$ref": "#/definitions/RequestBodyModel"}}],
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "POST", "uri": "http://127.0.0.1:9/pets"}},
        "get": {
            "parameters": [{"name": "q1", "in": "query", "required": True}],
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "GET", "uri": "http://127.0.0.1:9/pets"}},
    }},
    "definitions": {
        "RequestBodyModel": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "type": {"type": "string", "enum": ["dog", "cat", "fish"]},
                "name": {"type": "string"},
                "price": {"type": "number", "minimum": 25, "maximum": 500}},
            "required": ["type", "name", "price"]},
    },
}


def imported(doc=SAMPLE):
    api, _ = import_openapi(json.loads(json.dumps(doc)))
    return api


def method_of(api, path, verb):
    for res in api["resources"]:
        if res["path"] == path:
            return res["resourceMethods"][verb]
    raise KeyError(path)


def compile_(api, method):
    warnings = []
    v = compile_validator(api, method, warn=warnings.append)
    return v, warnings


def message(failure):
    return orjson.loads(failure[1])["message"]


JSON = b"application/json"
MARCO = b'{"name": "Marco", "type": "dog", "price": 260}'


def test_get_needs_q1_present_and_not_blank():
    api = imported()
    v, _ = compile_(api, method_of(api, "/validation", "GET"))
    assert not v.needs_body   # params-only: the body is never buffered for it
    assert v.check(b"q1=cat", [], {}, None, None) is None
    for query in (b"", b"q1=", b"q1", b"q2=cat", b"Q1=cat", b"q1=  "):
        failure = v.check(query, [], {}, None, None)
        assert failure is not None, query
        error_type, body = failure
        assert error_type == BAD_PARAMETERS
        assert orjson.loads(body) == {"message": "Missing required request parameters: [q1]"}
    # a repeated parameter with one non-blank value is present
    assert v.check(b"q1=&q1=cat", [], {}, None, None) is None


def test_post_validates_header_then_body():
    api = imported()
    v, _ = compile_(api, method_of(api, "/validation", "POST"))
    assert v.needs_body
    h1 = [(b"Content-Type", JSON), (b"H1", b"v1")]   # header names ignore case
    assert v.check(b"", h1, {}, JSON, MARCO) is None
    # missing or blank h1: the parameter error wins even though the body is fine
    for headers in ([(b"Content-Type", JSON)], [(b"h1", b"")], [(b"h1", b"  ")]):
        failure = v.check(b"", headers, {}, JSON, MARCO)
        assert failure.error_type == BAD_PARAMETERS
        assert failure.message == "Missing required request parameters: [h1]"
    # type outside the enum, price above its maximum: AWS's "Invalid request body"
    bird = v.check(b"", h1, {}, JSON, b'{"name": "Molly", "type": "bird", "price": 269}')
    assert bird.error_type == BAD_BODY
    body = orjson.loads(bird.body)
    assert body["message"] == "Invalid request body"
    assert [e["path"] for e in body["errors"]] == ["/type"]
    assert "bird" in body["errors"][0]["message"]
    pricey = v.check(b"", h1, {}, JSON, b'{"name": "Molly", "type": "cat", "price": 501}')
    assert orjson.loads(pricey.body)["errors"][0]["path"] == "/price"


def test_body_that_is_not_json_or_empty():
    api = imported()
    v, _ = compile_(api, method_of(api, "/validation", "POST"))
    h1 = [(b"h1", b"v1")]
    for bad in (b"{", b"name=Marco", b'{"price": NaN, "name": "a", "type": "dog"}', b"\xff"):
        failure = v.check(b"", h1, {}, JSON, bad)
        assert failure.message == "Invalid request body", bad
        assert orjson.loads(failure.body)["errors"] == [
            {"path": "", "message": "the body is not valid JSON"}]
    # an empty body is checked as {}: the model's required properties refuse it
    empty = v.check(b"", h1, {}, JSON, b"")
    assert orjson.loads(empty.body)["errors"][0]["path"] == ""
    # integers beyond 64 bits are still JSON (orjson refuses them; the fallback parser does not)
    big = b'{"name": "a", "type": "dog", "price": 30, "serial": 123456789012345678901234567890}'
    assert v.check(b"", h1, {}, JSON, big) is None


def test_model_is_chosen_by_content_type():
    api = imported()
    method = method_of(api, "/validation", "POST")
    assert method["requestModels"] == {"application/json": "RequestBodyModel"}
    v, _ = compile_(api, method)
    h1 = [(b"h1", b"v1")]
    bad = b'{"type": "bird"}'
    # no Content-Type: AWS takes application/json; parameters and case do not matter
    for ctype in (None, b"application/json", b"Application/JSON; charset=utf-8"):
        assert v.check(b"", h1, {}, ctype, bad).error_type == BAD_BODY, ctype
    # no model for text/plain and no $default model: the body is not checked
    assert v.check(b"", h1, {}, b"text/plain", bad) is None
    # a $default model applies to every other media type
    method = dict(method, requestModels={"application/json": "RequestBodyModel",
                                         "$default": "Strict"})
    api = dict(api, models=api["models"] + [
        {"name": "Strict", "contentType": "application/json",
         "schema": json.dumps({"type": "string"})}])
    v, _ = compile_(api, method)
    assert v.check(b"", h1, {}, b"text/plain", b'"ok"') is None
    assert v.check(b"", h1, {}, b"text/plain", bad).error_type == BAD_BODY


def test_missing_parameters_are_listed_in_aws_order():
    api = imported()
    method = dict(method_of(api, "/validation", "GET"), requestParameters={
        "method.request.querystring.q2": True,
        "method.request.querystring.q1": True,
        "method.request.header.X-B": True,
        "method.request.header.a": True,
        "method.request.path.id": True,
        "method.request.querystring.optional": False,
    })
    v, _ = compile_(api, method)
    failure = v.check(b"", [], {b"id": b""}, None, None)
    assert failure.message == "Missing required request parameters: [X-B, a, id, q1, q2]"
    failure = v.check(b"q2=1", [(b"x-b", b"1")], {b"id": b"7"}, None, None)
    assert failure.message == "Missing required request parameters: [a, q1]"
    assert v.check(b"q2=1&q1=2", [(b"x-b", b"1"), (b"A", b"1")], {b"id": b"7"},
                   None, None) is None


def test_nothing_to_validate_compiles_to_none():
    api = imported()
    get = method_of(api, "/validation", "GET")
    assert compile_(api, dict(get, requestValidatorId=None))[0] is None
    # params-only with no required parameter checks nothing
    assert compile_(api, dict(get, requestParameters={"method.request.querystring.q1": False}))[0] \
        is None
    # body validation without a model: nothing to check, and a warning says so
    all_id = next(v["id"] for v in api["requestValidators"] if v["name"] == "all")
    v, warnings = compile_(api, dict(get, requestValidatorId=all_id, requestParameters={}))
    assert v is None and "no request model" in warnings[0]
    with pytest.raises(ValueError, match="does not exist"):
        compile_(api, dict(get, requestValidatorId="nope"))


def body_validator(models: dict, name: str):
    """A validator checking only the body against `name`, with the given models."""
    api = {"requestValidators": [{"id": "b", "name": "body", "validateRequestBody": True}],
           "models": [{"name": n, "contentType": "application/json",
                       "schema": s if isinstance(s, str) else json.dumps(s)}
                      for n, s in models.items()]}
    v, _ = compile_(api, {"requestValidatorId": "b", "requestModels": {"application/json": name}})
    return v


def errors(v, body: bytes):
    failure = v.check(b"", [], {}, JSON, body)
    return None if failure is None else orjson.loads(failure.body)["errors"]


def test_refs_between_models_and_the_failing_path():
    url = "https://apigateway.amazonaws.com/restapis/old0api000/models/"
    v = body_validator({
        "Item": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "maxLength": 5}}},
        "Order": {"type": "object", "properties": {
            "items": {"type": "array", "items": {"$ref": url + "Item"}},
            "note": {"$ref": "#/definitions/Note"}},
            "definitions": {"Note": {"type": "string"}}},
    }, "Order")
    assert errors(v, b'{"items": [{"name": "a"}], "note": "x"}') is None
    assert [e["path"] for e in errors(v, b'{"items": [{"name": "a"}, {"name": "toolong"}]}')] \
        == ["/items/1/name"]
    assert sorted(e["path"] for e in errors(v, b'{"note": 1, "items": [{}]}')) \
        == ["/items/0", "/note"]
    # JSON Pointer escapes "/" and "~" in keys
    v = body_validator({"M": {"additionalProperties": {"type": "integer"}}}, "M")
    assert errors(v, b'{"a/b~c": "x"}')[0]["path"] == "/a~1b~0c"


def test_draft4_by_default_and_2020_12_or_openapi_31_when_declared():
    # draft 4: exclusiveMaximum is a boolean modifier of maximum
    d4 = body_validator({"M": {"type": "number", "maximum": 10, "exclusiveMaximum": True}}, "M")
    assert errors(d4, b"9.5") is None and errors(d4, b"10") is not None
    # 2020-12: prefixItems checks the first item (draft 4 does not know the keyword)
    tup = {"type": "array", "prefixItems": [{"type": "integer"}]}
    assert errors(body_validator({"M": tup}, "M"), b'["x"]') is None   # draft 4 by default
    for dialect in ("https://json-schema.org/draft/2020-12/schema",
                    "https://spec.openapis.org/oas/3.1/dialect/base"):
        v = body_validator({"M": {"$schema": dialect, **tup}}, "M")
        assert errors(v, b"[1]") is None
        assert errors(v, b'["x"]')[0]["path"] == "/0", dialect


def test_broken_models_are_compile_errors():
    with pytest.raises(ValueError, match="not valid JSON"):
        body_validator({"M": "{nope"}, "M")
    with pytest.raises(ValueError, match="cannot be compiled"):
        body_validator({"M": {"type": "nope"}}, "M")
    with pytest.raises(ValueError, match="does not exist"):
        body_validator({}, "M")
    # a $ref is never fetched: only the API's own models resolve
    with pytest.raises(ValueError, match="cannot be compiled"):
        body_validator({"M": {"$ref": "https://example.com/schema.json"}}, "M")
    with pytest.raises(ValueError, match="cannot be compiled"):
        body_validator({"M": {"$ref": "https://apigateway.amazonaws.com/restapis/x/models/Gone"}},
                       "M")


def test_errors_are_bounded():
    v = body_validator({"M": {"type": "array", "items": {"type": "integer"}}}, "M")
    assert len(errors(v, orjson.dumps(["x"] * 50))) == 10
