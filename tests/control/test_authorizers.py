"""Authorizers over the control API (CreateAuthorizer ... DeleteAuthorizer, UpdateMethod),
driven by boto3 as users drive AWS; export and re-import keep them."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from fastgate.control.openapi import import_openapi
from tests.control.test_api import Server, build_api, c, code_of, server  # noqa: F401 (fixtures)

FN_URI = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
          "arn:aws:lambda:us-east-1:123456789012:function:authz/invocations")
POOL = "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_AbCdEf123"


def error(fn, **kw) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        fn(**kw)
    return (*code_of(e), e.value.response["Error"]["Message"])


def token_authorizer(c, api_id, name="tok", **kw):
    return c.create_authorizer(restApiId=api_id, name=name, type="TOKEN", authorizerUri=FN_URI,
                               identitySource="method.request.header.Authorization", **kw)


def test_create_get_list_update_delete(c):
    api, pets, _ = build_api(c)
    tok = token_authorizer(c, api["id"], identityValidationExpression="^Bearer .+$")
    assert len(tok["id"]) == 6 and tok["type"] == "TOKEN" and tok["name"] == "tok"
    assert tok["authorizerResultTtlInSeconds"] == 300          # AWS's default
    assert tok["ResponseMetadata"]["HTTPStatusCode"] == 201
    req = c.create_authorizer(restApiId=api["id"], name="req", type="REQUEST", authorizerUri=FN_URI,
                              identitySource="method.request.header.X-User, method.request.querystring.q",
                              authorizerResultTtlInSeconds=0)
    cog = c.create_authorizer(restApiId=api["id"], name="pool", type="COGNITO_USER_POOLS",
                              providerARNs=[POOL])
    assert cog["identitySource"] == "method.request.header.Authorization"
    got = c.get_authorizer(restApiId=api["id"], authorizerId=tok["id"])
    assert got["identityValidationExpression"] == "^Bearer .+$" and got["authorizerUri"] == FN_URI
    listed = c.get_authorizers(restApiId=api["id"])["items"]
    assert [a["name"] for a in listed] == ["tok", "req", "pool"]
    assert [a["name"] for a in c.get_authorizers(restApiId=api["id"], limit=2)["items"]] == ["tok", "req"]

    upd = c.update_authorizer(restApiId=api["id"], authorizerId=req["id"], patchOperations=[
        {"op": "replace", "path": "/name", "value": "req2"},
        {"op": "replace", "path": "/authorizerResultTtlInSeconds", "value": "60"}])
    assert upd["name"] == "req2" and upd["authorizerResultTtlInSeconds"] == 60
    other = POOL.replace("AbCdEf123", "Other9")
    upd = c.update_authorizer(restApiId=api["id"], authorizerId=cog["id"], patchOperations=[
        {"op": "add", "path": "/providerARNs", "value": other}])
    assert upd["providerARNs"] == [POOL, other]
    upd = c.update_authorizer(restApiId=api["id"], authorizerId=cog["id"], patchOperations=[
        {"op": "remove", "path": "/providerARNs/" + POOL.replace("/", "~1")}])
    assert upd["providerARNs"] == [other]

    r = c.delete_authorizer(restApiId=api["id"], authorizerId=req["id"])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert [a["name"] for a in c.get_authorizers(restApiId=api["id"])["items"]] == ["tok", "pool"]


def test_authorizer_errors_are_aws_shaped(c):
    api, _, _ = build_api(c)
    assert error(c.get_authorizer, restApiId=api["id"], authorizerId="nope00") == (
        "NotFoundException", 404, "Invalid Authorizer identifier specified")
    assert error(c.get_authorizers, restApiId="missing000")[:2] == ("NotFoundException", 404)
    assert error(c.create_authorizer, restApiId=api["id"], name="x", type="TOKEN",
                 authorizerUri="not-an-arn:x", identitySource="method.request.header.A") == (
        "BadRequestException", 400, "Invalid Authorizer URI: not-an-arn:x. Authorizer URI should "
        "be a valid API Gateway ARN that represents a Lambda function invocation.")
    code, status, _ = error(c.create_authorizer, restApiId=api["id"], name="x", type="TOKEN")
    assert (code, status) == ("BadRequestException", 400)
    code, status, msg = error(c.create_authorizer, restApiId=api["id"], name="x", type="TOKEN",
                              authorizerUri=FN_URI, identitySource="method.request.querystring.t")
    assert (code, status) == ("BadRequestException", 400) and "TOKEN" in msg
    # REQUEST with caching on needs identity sources: they are the cache key
    assert error(c.create_authorizer, restApiId=api["id"], name="x", type="REQUEST",
                 authorizerUri=FN_URI)[:2] == ("BadRequestException", 400)
    assert error(c.create_authorizer, restApiId=api["id"], name="x", type="COGNITO_USER_POOLS")[:2] == (
        "BadRequestException", 400)
    assert error(c.create_authorizer, restApiId=api["id"], name="x", type="COGNITO_USER_POOLS",
                 providerARNs=["arn:aws:iam::123456789012:role/x"])[2] == (
        "Invalid Cognito User Pool ARN: arn:aws:iam::123456789012:role/x")
    assert error(c.create_authorizer, restApiId=api["id"], name="x", type="TOKEN", authorizerUri=FN_URI,
                 identitySource="method.request.header.A",
                 authorizerResultTtlInSeconds=3601)[:2] == ("BadRequestException", 400)
    token_authorizer(c, api["id"])
    assert error(token_authorizer, c=c, api_id=api["id"])[:2] == ("ConflictException", 409)
    for i in range(9):
        token_authorizer(c, api["id"], name=f"a{i}")
    assert error(token_authorizer, c=c, api_id=api["id"], name="eleventh")[:2] == (
        "LimitExceededException", 429)
    tok = c.get_authorizers(restApiId=api["id"])["items"][0]
    assert error(c.update_authorizer, restApiId=api["id"], authorizerId=tok["id"], patchOperations=[
        {"op": "replace", "path": "/id", "value": "x"}]) == (
        "BadRequestException", 400, "Invalid patch path '/id' specified for op 'replace'.")


def test_methods_attach_authorizers_by_type(c):
    api, pets, pet = build_api(c)
    tok = token_authorizer(c, api["id"])
    cog = c.create_authorizer(restApiId=api["id"], name="pool", type="COGNITO_USER_POOLS",
                              providerARNs=[POOL])
    m = c.put_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST",
                     authorizationType="CUSTOM", authorizerId=tok["id"])
    assert m["authorizationType"] == "CUSTOM" and m["authorizerId"] == tok["id"]
    # a COGNITO method cannot name a TOKEN authorizer, nor a CUSTOM one a user pool
    # (AWS's text names both types whichever was asked for: its recordings)
    msg = ("Invalid authorizer ID specified. Setting the authorization type to CUSTOM or "
           "COGNITO_USER_POOLS requires a valid authorizer.")
    assert error(c.put_method, restApiId=api["id"], resourceId=pets["id"], httpMethod="PUT",
                 authorizationType="COGNITO_USER_POOLS", authorizerId=tok["id"]) == (
        "BadRequestException", 400, msg)
    m = c.update_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/authorizationType", "value": "COGNITO_USER_POOLS"},
        {"op": "replace", "path": "/authorizerId", "value": cog["id"]},
        {"op": "add", "path": "/authorizationScopes", "value": "pets/read"},
        {"op": "replace", "path": "/apiKeyRequired", "value": "true"}])
    assert m["authorizationType"] == "COGNITO_USER_POOLS" and m["authorizerId"] == cog["id"]
    assert m["authorizationScopes"] == ["pets/read"] and m["apiKeyRequired"] is True
    got = c.get_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET")
    assert got["authorizationScopes"] == ["pets/read"]
    assert error(c.update_method, restApiId=api["id"], resourceId=pet["id"], httpMethod="GET",
                 patchOperations=[{"op": "replace", "path": "/authorizerId", "value": tok["id"]}]) == (
        "BadRequestException", 400, msg)
    # an authorizer a method uses cannot go, nor change to a type the method cannot use
    code, status, text = error(c.delete_authorizer, restApiId=api["id"], authorizerId=cog["id"])
    assert (code, status) == ("ConflictException", 409) and "GET /pets/{id}" in text
    assert error(c.update_authorizer, restApiId=api["id"], authorizerId=tok["id"], patchOperations=[
        {"op": "replace", "path": "/type", "value": "COGNITO_USER_POOLS"},
        {"op": "add", "path": "/providerARNs", "value": POOL}])[:2] == ("BadRequestException", 400)
    # back to NONE drops the authorizer and its scopes, as AWS does
    m = c.update_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/authorizationType", "value": "NONE"}])
    assert "authorizerId" not in m and "authorizationScopes" not in m
    c.delete_authorizer(restApiId=api["id"], authorizerId=cog["id"])


def test_export_carries_the_authorizers_and_reimports_stably(c):
    api, pets, pet = build_api(c)
    tok = token_authorizer(c, api["id"], identityValidationExpression="^Bearer .+$")
    cog = c.create_authorizer(restApiId=api["id"], name="pool", type="COGNITO_USER_POOLS",
                              providerARNs=[POOL])
    c.update_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/authorizationType", "value": "CUSTOM"},
        {"op": "replace", "path": "/authorizerId", "value": tok["id"]}])
    c.update_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET", patchOperations=[
        {"op": "replace", "path": "/authorizationType", "value": "COGNITO_USER_POOLS"},
        {"op": "replace", "path": "/authorizerId", "value": cog["id"]},
        {"op": "add", "path": "/authorizationScopes", "value": "pets/read"}])
    c.create_deployment(restApiId=api["id"], stageName="prod", variables={"host": "example.com"})
    for export_type, key in (("oas30", None), ("swagger", "securityDefinitions")):
        doc = json.loads(c.get_export(restApiId=api["id"], stageName="prod", exportType=export_type,
                                      parameters={"extensions": "authorizers"})["body"].read())
        schemes = doc["components"]["securitySchemes"] if key is None else doc[key]
        assert schemes["tok"]["x-amazon-apigateway-authorizer"] == {
            "type": "token", "authorizerUri": FN_URI,
            "identitySource": "method.request.header.Authorization",
            "identityValidationExpression": "^Bearer .+$", "authorizerResultTtlInSeconds": 300}
        assert schemes["tok"]["name"] == "Authorization" and schemes["tok"]["in"] == "header"
        assert schemes["pool"]["x-amazon-apigateway-authorizer"]["providerARNs"] == [POOL]
        assert doc["paths"]["/pets"]["get"]["security"] == [{"tok": []}]
        assert doc["paths"]["/pets/{id}"]["get"]["security"] == [{"pool": ["pets/read"]}]

        # import -> export -> import: the same authorizers and the same security
        again = c.import_rest_api(body=json.dumps(doc).encode())
        auths = {a["name"]: a for a in c.get_authorizers(restApiId=again["id"])["items"]}
        assert set(auths) == {"tok", "pool"}
        for name, original in (("tok", tok), ("pool", cog)):
            assert {k: v for k, v in auths[name].items() if k != "id"} == \
                {k: v for k, v in c.get_authorizer(restApiId=api["id"], authorizerId=original["id"]).items()
                 if k not in ("id", "ResponseMetadata")}
        c.create_deployment(restApiId=again["id"], stageName="prod", variables={"host": "example.com"})
        second = json.loads(c.get_export(restApiId=again["id"], stageName="prod", exportType=export_type,
                                         parameters={"extensions": "authorizers"})["body"].read())
        assert (second["components"]["securitySchemes"] if key is None else second[key]) == schemes
        # (a call-by-call API gains its declared path parameter on the way: not authorizers' business)
        assert {p: op["get"]["security"] for p, op in second["paths"].items()} == \
            {p: op["get"]["security"] for p, op in doc["paths"].items()}
        assert import_openapi(second)[0]["authorizers"][0]["name"] in ("tok", "pool")
