"""OpenAPI documents (through fastgate.control.openapi's importer) and YAML route specs compiled
into checks, and the caches shared across routes and reloads."""

from __future__ import annotations

import json

import pytest

from fastgate.compile.access import AccessError, compile_method_access, compile_route_access
from fastgate.phases.auth.caches import AuthCaches
from fastgate.phases.auth.iam import IamCheck
from fastgate.phases.auth.jwt import JwtCheck
from fastgate.phases.auth.lambda_authorizer import LambdaCheck
from fastgate.phases.auth.policy import IpListCheck, ResourcePolicyCheck
from fastgate.control.openapi import import_openapi

from tests.phases.auth.conftest import request

POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke",
     "Resource": "execute-api:/*",
     "Condition": {"IpAddress": {"aws:SourceIp": ["10.0.0.0/8"]}}}]}

REST = {
    "swagger": "2.0", "info": {"title": "pets", "version": "1"},
    "x-amazon-apigateway-policy": POLICY,
    "securityDefinitions": {
        "tok": {"type": "apiKey", "name": "X-Token", "in": "header",
                "x-amazon-apigateway-authtype": "custom",
                "x-amazon-apigateway-authorizer": {
                    "type": "token", "authorizerResultTtlInSeconds": 60,
                    "authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                                     "arn:aws:lambda:us-east-1:123456789012:function:authz/invocations"}},
        "pool": {"type": "apiKey", "name": "Authorization", "in": "header",
                 "x-amazon-apigateway-authtype": "cognito_user_pools",
                 "x-amazon-apigateway-authorizer": {
                     "type": "cognito_user_pools",
                     "providerARNs": ["arn:aws:cognito-idp:eu-west-1:123456789012:userpool/eu-west-1_AbC"]}},
        "sigv4": {"type": "apiKey", "name": "Authorization", "in": "header",
                  "x-amazon-apigateway-authtype": "awsSigv4"},
    },
    "paths": {
        "/a": {"get": {"security": [{"tok": []}], "x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": "{}"}}}},
        "/b": {"get": {"security": [{"pool": ["pets/read"]}], "x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": "{}"}}}},
        "/c": {"get": {"security": [{"sigv4": []}], "x-amazon-apigateway-integration": {
            "type": "mock", "requestTemplates": {"application/json": "{}"}}}},
    },
}

HTTP = {
    "openapi": "3.0.1", "info": {"title": "h", "version": "1"},
    "components": {"securitySchemes": {"jwt": {
        "type": "oauth2", "flows": {},
        "x-amazon-apigateway-authorizer": {
            "type": "jwt", "identitySource": "$request.header.Authorization",
            "jwtConfiguration": {"issuer": "https://issuer.example", "audience": ["app"]}}}}},
    "paths": {"/x": {"get": {"security": [{"jwt": ["read"]}], "x-amazon-apigateway-integration": {
        "type": "http_proxy", "httpMethod": "GET", "uri": "http://127.0.0.1:1/x",
        "payloadFormatVersion": "1.0"}}}},
    "x-amazon-apigateway-importexport-version": "1.0",
}


def methods(api):
    return {r["path"]: r["resourceMethods"]["GET"] for r in api["resources"]
            if r.get("resourceMethods")}


def compile_all(api, caches, warnings=None):
    async def invoke(*a, **k):
        raise AssertionError("not called at compile time")
    return {path: compile_method_access(
        api, m, invoke=invoke, http_client=None, warn=(warnings or []).append,
        iam_credentials={"AK": ("s", "arn:aws:iam::1:user/u")}, caches=caches)
        for path, m in methods(api).items()}


def test_rest_document():
    api, _ = import_openapi(REST, api_id="abc123")
    caches = AuthCaches()
    checks = compile_all(api, caches)
    assert [type(c) for c in checks["/a"]] == [ResourcePolicyCheck, LambdaCheck]
    assert [type(c) for c in checks["/b"]] == [ResourcePolicyCheck, JwtCheck]
    assert [type(c) for c in checks["/c"]] == [ResourcePolicyCheck, IamCheck]
    token = checks["/a"][1]
    assert token.auth.function == "authz" and token.auth.ttl_s == 60
    assert token.auth.sources == (("header", "x-token"),)
    cognito = checks["/b"][1]
    assert list(cognito.keysets) == ["https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"]
    assert cognito.scopes == ("pets/read",) and cognito.cognito and not cognito.http_api
    assert cognito.keysets[list(cognito.keysets)[0]].jwks_uri.endswith("/eu-west-1_AbC/.well-known/jwks.json")
    # the resource policy applies first, whatever the authorizer
    assert checks["/a"][0].check(request(source_ip="10.0.0.1")).allowed
    assert not checks["/a"][0].check(request(source_ip="11.0.0.1")).allowed
    assert checks["/c"][1].needs_body


def test_http_document_and_shared_caches_across_reloads():
    api, _ = import_openapi(HTTP, api_id="h1")
    caches = AuthCaches()
    first = compile_all(api, caches)["/x"][0]
    assert isinstance(first, JwtCheck) and first.audience == ("app",) and first.scopes == ("read",)
    assert first.http_api
    # a reload with the same authorizer keeps the same key set (and its fetched keys)
    caches.sweep()
    second = compile_all(api, caches)["/x"][0]
    assert second.keysets["https://issuer.example"] is first.keysets["https://issuer.example"]
    # a reload without it drops it
    caches.sweep()
    caches.sweep()
    third = compile_all(api, caches)["/x"][0]
    assert third.keysets["https://issuer.example"] is not first.keysets["https://issuer.example"]


def test_broken_methods_raise():
    api, _ = import_openapi(REST, api_id="abc123")
    m = dict(methods(api)["/a"], authorizerId="nope")
    with pytest.raises(AccessError, match="does not exist"):
        compile_method_access(api, m, invoke=None, http_client=None, warn=print,
                              iam_credentials={}, caches=AuthCaches())


def test_yaml_specs(tmp_path):
    caches = AuthCaches()
    jwks = tmp_path / "k.json"
    jwks.write_text(json.dumps({"keys": []}))
    checks = compile_route_access(
        {"ip_allow": ["10.0.0.0/8"], "ip_deny": ["10.1.0.0/16"],
         "jwt": {"issuer": "https://i", "audience": "a", "jwks_file": str(jwks), "scopes": ["s"],
                 "algorithms": ["ES256"], "leeway_s": 5}}, caches=caches)
    assert [type(c) for c in checks] == [IpListCheck, JwtCheck]
    assert checks[1].algorithms == {"ES256"} and checks[1].leeway_s == 5

    async def invoke(*a, **k):
        return None
    lam = compile_route_access({"lambda": {"function": "authz", "type": "token", "ttl_s": 30}},
                               invoke=invoke, caches=caches)[0]
    assert lam.auth.type == "TOKEN" and lam.auth.sources == (("header", "authorization"),)
    assert isinstance(compile_route_access({"iam": True}, caches=caches)[0], IamCheck)
    for bad in ({"jwt": {"issuer": "i"}, "iam": True}, {"jwt": {"issuer": "i", "bogus": 1}},
                {"ip_allow": ["300.1.1.1"]}, {"lambda": {"type": "TOKEN"}}, {"nope": 1},
                {"jwt": {"issuer": "i", "algorithms": ["HS256"]}}):
        with pytest.raises(AccessError):
            compile_route_access(bad, invoke=invoke, caches=caches)
