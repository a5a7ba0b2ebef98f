"""export_openapi (fastgate/control/openapi/exporter.py): the round trip
import(export(import(doc))) == import(doc) for every document, and the export's own rules."""

import json
import re

import pytest

from fastgate.control.openapi import OpenAPIError, export_openapi, import_openapi
from tests.control.openapi.documents import FIXTURES, imported, load, normalised, source_version


# ---------------------------------------------------------------------------------------
# Round trip: import(export(import(doc))) == import(doc) for every fixture


@pytest.mark.parametrize("mode", ["ignore", "prepend", "split"])
@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_same_format(name, mode):
    api, warnings = import_openapi(load(name), base_path=mode)
    exported = export_openapi(api, export_type=source_version(name), documentation=True)
    again, warnings_again = import_openapi(json.loads(json.dumps(exported)), base_path=mode)
    assert normalised(again) == normalised(api)
    assert sorted(warnings_again) == sorted(warnings)


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_across_formats(name):
    api = imported(name)
    other = "oas30" if source_version(name) == "swagger" else "swagger"
    again, _ = import_openapi(export_openapi(api, export_type=other, documentation=True))
    expected = normalised(api)
    if name == "binary-compression.json":
        # Swagger 2 response headers have no `required`: the one required header comes back
        # optional. Everything else survives.
        params = (expected["resources"][2]["resourceMethods"]["GET"]["methodResponses"]["200"]
                  ["responseParameters"])
        assert params == {"method.response.header.Content-Type": True}
        params["method.response.header.Content-Type"] = False
    assert normalised(again) == expected


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_is_json_serialisable_and_has_aws_ids(name):
    api = imported(name)
    assert json.loads(json.dumps(api)) == api
    assert re.fullmatch(r"[a-z0-9]{10}", api["id"])
    assert api["rootResourceId"] == api["resources"][0]["id"]
    assert api["resources"][0] == {k: v for k, v in api["resources"][0].items()
                                   if k in ("id", "path", "resourceMethods")}
    for res in api["resources"][1:]:
        assert re.fullmatch(r"[a-z0-9]{6}", res["id"])
        parent = next(r for r in api["resources"] if r["id"] == res["parentId"])
        assert res["path"] == parent["path"].rstrip("/") + "/" + res["pathPart"]
    for auth in api["authorizers"]:
        assert re.fullmatch(r"[a-z0-9]{6}", auth["id"])
    for item in api["resources"]:
        for verb, m in item.get("resourceMethods", {}).items():
            assert m["httpMethod"] == verb
            assert None not in m.values()


# ---------------------------------------------------------------------------------------
# Export


def test_export_writes_aws_security_schemes():
    exported = export_openapi(imported("lambda-token-authorizer.yaml"), export_type="swagger")
    schemes = exported["securityDefinitions"]
    assert schemes["sigv4"] == {"type": "apiKey", "name": "Authorization", "in": "header",
                                "x-amazon-apigateway-authtype": "awsSigv4"}
    assert schemes["api_key"] == {"type": "apiKey", "name": "x-api-key", "in": "header"}
    assert schemes["test-authorizer"]["x-amazon-apigateway-authorizer"]["type"] == "token"
    assert exported["paths"]["/reports/{reportId}"]["get"]["security"] == [
        {"request_authorizer_header_query": [], "api_key": []}]
    assert exported["x-amazon-apigateway-api-key-source"] == "AUTHORIZER"


def test_export_with_stage_sets_base_path_like_aws():
    api = imported("greedy-proxy.json")
    stage = {"stageName": "prod", "variables": {"backend": "10.0.0.1:8080"},
             "createdDate": 1700000000.0}
    oas = export_openapi(api, stage=stage)
    assert oas["openapi"] == "3.0.1"
    assert oas["servers"] == [{"url": "/{basePath}", "variables": {"basePath": {"default": "/prod"}}}]
    swagger = export_openapi(api, export_type="swagger", stage=stage)
    assert swagger["basePath"] == "/prod"
    # Like AWS, the export keeps ${stageVariables.*} references; values live on the stage.
    assert (swagger["paths"]["/{proxy+}"]["x-amazon-apigateway-any-method"]
            ["x-amazon-apigateway-integration"]["uri"]) == "http://${stageVariables.backend}/{proxy}"
    again, _ = import_openapi(swagger, base_path="split")
    assert again["extensions"]["basePath"] == "/prod"


def test_export_without_extensions_is_plain_openapi():
    exported = export_openapi(imported("gateway-responses-validators.json"), extensions=False)
    assert not any(k.startswith("x-amazon-apigateway") for k in exported)
    op = exported["paths"]["/validation"]["post"]
    assert not any(k.startswith("x-amazon-apigateway") for k in op)
    assert op["security"] == [{"api_key": []}]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RequestBodyModel"}


def test_export_version_defaults_to_the_creation_date():
    api = imported("greedy-proxy.json")
    del api["version"]
    api["createdDate"] = 1473722368.0
    assert export_openapi(api)["info"]["version"] == "2016-09-12T23:19:28Z"


def test_export_type_must_be_known():
    with pytest.raises(OpenAPIError, match="exportType: 'postman'"):
        export_openapi(imported("greedy-proxy.json"), export_type="postman")


def test_export_refuses_non_json_models_like_aws():
    api = imported("petstore-swagger2.json")
    api["models"][0]["contentType"] = "application/xml"
    with pytest.raises(OpenAPIError, match="only application/json models"):
        export_openapi(api)


def test_authorizers_made_by_the_control_api_round_trip(tmp_path):
    """Authorizers as CreateAuthorizer stores them (TOKEN, REQUEST, COGNITO_USER_POOLS) and
    the methods naming them: import(export(api)) gives the same, and so does the next turn."""
    from fastgate.control.model import Model
    from fastgate.control.store import Store
    m = Model(Store.in_dir(tmp_path))
    api = m.create_rest_api({"name": "guarded"})
    uri = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
           "arn:aws:lambda:us-east-1:123456789012:function:authz/invocations")
    tok = m.create_authorizer({"restApiId": api["id"], "name": "tok", "type": "TOKEN", "authorizerUri": uri,
                               "identitySource": "method.request.header.X-Token",
                               "identityValidationExpression": "^t-.+$", "authorizerResultTtlInSeconds": 60})
    req = m.create_authorizer({"restApiId": api["id"], "name": "req", "type": "REQUEST", "authorizerUri": uri,
                               "identitySource": "method.request.header.X-A, method.request.querystring.q"})
    pool = m.create_authorizer({"restApiId": api["id"], "name": "pool", "type": "COGNITO_USER_POOLS",
                                "providerARNs": ["arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_Ab1"]})
    for part, atype, auth in (("t", "CUSTOM", tok), ("r", "CUSTOM", req), ("p", "COGNITO_USER_POOLS", pool)):
        res = m.create_resource({"restApiId": api["id"], "parentId": api["rootResourceId"], "pathPart": part})
        extra = {"authorizationScopes": ["pets/read"]} if part == "p" else {}
        m.put_method({"restApiId": api["id"], "resourceId": res["id"], "httpMethod": "GET",
                      "authorizationType": atype, "authorizerId": auth["id"], **extra})
        m.put_integration({"restApiId": api["id"], "resourceId": res["id"], "httpMethod": "GET",
                           "type": "HTTP_PROXY", "integrationHttpMethod": "GET", "uri": "http://example.com/"})
    doc = m.state.apis[api["id"]]

    def auth_view(a: dict) -> dict:
        by_id = {x["id"]: x["name"] for x in a["authorizers"]}
        methods = {r["path"]: {k: (by_id.get(v, v) if k == "authorizerId" else v)
                               for k, v in r["resourceMethods"]["GET"].items()
                               if k in ("authorizationType", "authorizerId", "authorizationScopes")}
                   for r in a["resources"] if r.get("resourceMethods")}
        return {"authorizers": sorted(({k: v for k, v in x.items() if k != "id"} for x in a["authorizers"]),
                                      key=lambda x: x["name"]), "methods": methods}

    for export_type in ("swagger", "oas30"):
        once, _ = import_openapi(json.loads(json.dumps(export_openapi(doc, export_type=export_type))))
        assert auth_view(once) == auth_view(doc)
        twice, _ = import_openapi(json.loads(json.dumps(export_openapi(once, export_type=export_type))))
        assert normalised(twice) == normalised(once)
