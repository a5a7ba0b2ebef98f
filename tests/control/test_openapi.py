"""OpenAPI import/export (fastgate/control/openapi.py) over real-world-shaped documents."""

import copy
import json
import pathlib
import re

import pytest

from fastgate.control.openapi import OpenAPIError, export_openapi, import_openapi, load_document

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "openapi"
FIXTURES = sorted(p.name for p in DATA.iterdir())


def load(name: str) -> dict:
    return load_document((DATA / name).read_bytes(), name)


def imported(name: str, **kwargs) -> dict:
    api, _ = import_openapi(load(name), **kwargs)
    return api


def normalised(api: dict) -> dict:
    """The API document with generated ids and dates replaced by stable names."""
    api = copy.deepcopy(api)
    names = {api.pop("id"): "API"}
    api.pop("createdDate")
    api.pop("rootResourceId")
    for kind, prefix, key in (("resources", "R", "path"), ("authorizers", "A", "name"),
                              ("requestValidators", "V", "name"), ("models", "M", "name")):
        for item in api[kind]:
            names[item["id"]] = f"<{prefix}:{item[key]}>"
    text = json.dumps(api, sort_keys=True)
    for old, new in names.items():
        text = text.replace(old, new)
    return json.loads(text)


def resource(api: dict, path: str) -> dict:
    return next(r for r in api["resources"] if r["path"] == path)


def method(api: dict, path: str, verb: str) -> dict:
    return resource(api, path)["resourceMethods"][verb]


def source_version(name: str) -> str:
    return "swagger" if "swagger" in load(name) else "oas30"


# ---------------------------------------------------------------------------------------
# Round trip: import(export(import(doc))) == import(doc) for every fixture


@pytest.mark.parametrize("mode", ["ignore", "prepend", "split"])
@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_same_format(name, mode):
    api, warnings = import_openapi(load(name), base_path=mode)
    exported = export_openapi(api, export_type=source_version(name))
    again, warnings_again = import_openapi(json.loads(json.dumps(exported)), base_path=mode)
    assert normalised(again) == normalised(api)
    assert sorted(warnings_again) == sorted(warnings)


@pytest.mark.parametrize("name", FIXTURES)
def test_round_trip_across_formats(name):
    api = imported(name)
    other = "oas30" if source_version(name) == "swagger" else "swagger"
    again, _ = import_openapi(export_openapi(api, export_type=other))
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
# load_document


def test_load_json_and_yaml_give_the_same_document():
    as_json = load("petstore-swagger2.json")
    as_yaml = load_document(json.dumps(as_json).encode())
    assert as_yaml == as_json


def test_load_yaml_keeps_dates_and_status_codes_as_strings():
    doc = load("petstore-oas3.yaml")
    assert doc["info"]["version"] == "2016-09-12T23:19:28Z"
    assert list(doc["paths"]["/pets"]["get"]["responses"]) == ["200"]


def test_load_reports_json_syntax_with_line():
    with pytest.raises(OpenAPIError, match=r"^api\.json:3:3: invalid JSON: Expecting ','"):
        load_document('{\n "a": 1\n  "b": 2\n}', "api.json")


def test_load_reports_yaml_syntax_with_line():
    with pytest.raises(OpenAPIError, match=r"^api\.yaml:3:14: invalid YAML: expected the node"):
        load_document("openapi: 3.0.1\npaths:\n  /a: {get: [}\n", "api.yaml")


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', "a: 1\na: 2\n"])
def test_load_rejects_duplicate_keys(text):
    with pytest.raises(OpenAPIError, match="duplicate key 'a'"):
        load_document(text, "dup")


@pytest.mark.parametrize("text", ["[1, 2]", "just text", ""])
def test_load_rejects_non_objects(text):
    with pytest.raises(OpenAPIError, match="an OpenAPI document is a JSON/YAML object"):
        load_document(text, "x.yaml")


def test_load_rejects_non_utf8():
    with pytest.raises(OpenAPIError, match=r"x\.json: not UTF-8"):
        load_document(b'{"a": "\xff"}', "x.json")


# ---------------------------------------------------------------------------------------
# Mapping rules


def test_petstore_resource_tree_and_methods():
    api = imported("petstore-swagger2.json")
    assert [r["path"] for r in api["resources"]] == ["/", "/pets", "/pets/{petId}"]
    assert api["name"] == "PetStore" and api["version"] == "2016-09-12T23:19:28Z"
    assert api["protocolType"] == "REST"
    assert api["resources"][2]["pathPart"] == "{petId}"
    assert sorted(resource(api, "/pets")["resourceMethods"]) == ["GET", "OPTIONS", "POST"]
    get = method(api, "/pets", "GET")
    assert get["operationName"] == "ListPets"
    assert get["authorizationType"] == "NONE" and get["apiKeyRequired"] is False
    assert get["requestParameters"] == {"method.request.querystring.type": False,
                                        "method.request.querystring.page": False}
    assert get["methodResponses"] == {"200": {
        "statusCode": "200",
        "responseParameters": {"method.response.header.Access-Control-Allow-Origin": False},
        "responseModels": {"application/json": "Pets"}}}
    assert get["methodIntegration"] == {
        "type": "HTTP", "httpMethod": "GET",
        "uri": "http://petstore.execute-api.us-east-1.amazonaws.com/petstore/pets",
        "requestParameters": {
            "integration.request.querystring.page": "method.request.querystring.page",
            "integration.request.querystring.type": "method.request.querystring.type"},
        "integrationResponses": {"200": {
            "statusCode": "200",
            "responseParameters": {"method.response.header.Access-Control-Allow-Origin": "'*'"}}},
        "passthroughBehavior": "WHEN_NO_MATCH", "timeoutInMillis": 29000,
        "cacheKeyParameters": [], "connectionType": "INTERNET"}
    post = method(api, "/pets", "POST")
    assert post["requestModels"] == {"application/json": "NewPet"}
    assert method(api, "/pets/{petId}", "GET")["requestParameters"] == {
        "method.request.path.petId": True}


def test_mock_integration_keeps_templates():
    root = method(imported("petstore-swagger2.json"), "/", "GET")["methodIntegration"]
    assert root["type"] == "MOCK"
    assert "connectionType" not in root and "uri" not in root
    assert root["requestTemplates"] == {"application/json": '{"statusCode": 200}'}
    assert root["integrationResponses"]["200"]["responseTemplates"] == {
        "text/html": "<html><body><h1>Welcome to your Pet Store API</h1></body></html>"}


def test_models_are_draft4_strings_with_aws_model_urls():
    api = imported("petstore-swagger2.json", api_id="abcde12345")
    models = {m["name"]: m for m in api["models"]}
    assert sorted(models) == ["Empty", "NewPet", "NewPetResponse", "Pet", "PetType", "Pets"]
    pets = json.loads(models["Pets"]["schema"])
    assert pets == {"$schema": "http://json-schema.org/draft-04/schema#", "title": "Pets",
                    "type": "array", "items": {
                        "$ref": "https://apigateway.amazonaws.com/restapis/abcde12345/models/Pet"}}
    assert models["Pets"]["contentType"] == "application/json"
    exported = export_openapi(api, export_type="swagger")
    assert exported["definitions"]["Pets"] == {"title": "Pets", "type": "array",
                                               "items": {"$ref": "#/definitions/Pet"}}


def test_oas3_petstore_matches_swagger2_petstore():
    v2 = normalised(imported("petstore-swagger2.json"))
    v3 = normalised(imported("petstore-oas3.yaml"))
    assert v3["description"] != v2["description"]
    # Same resources, models and integrations; the OAS3 form has a 5 s timeout on GET /pets/{petId},
    # a path-level $ref parameter and no OPTIONS method.
    assert [r["path"] for r in v3["resources"]] == [r["path"] for r in v2["resources"]]
    assert v3["models"] == v2["models"]
    v3_get = v3["resources"][2]["resourceMethods"]["GET"]
    assert v3_get["requestParameters"] == {"method.request.path.petId": True}
    assert v3_get["methodIntegration"]["timeoutInMillis"] == 5000


def test_inline_schemas_become_named_models():
    api = imported("openapi31.yaml")
    get = method(api, "/status", "GET")
    assert get["methodResponses"]["200"]["responseModels"] == {
        "application/json": "getStatus200Response"}
    schema = json.loads(next(m for m in api["models"]
                             if m["name"] == "getStatus200Response")["schema"])
    assert schema["properties"]["state"] == {"type": ["string", "null"]}


def test_openapi31_mock_and_query_parameter():
    api = imported("openapi31.yaml")
    assert method(api, "/status", "GET")["methodIntegration"]["type"] == "MOCK"
    history = method(api, "/status/history", "GET")
    assert history["requestParameters"] == {"method.request.querystring.limit": False}
    assert history["methodResponses"]["200"]["responseModels"] == {"application/json": "History"}


def test_http_api_integrations_cors_and_authorizers():
    api, warnings = import_openapi(load("http-api-lambda.json"))
    assert warnings == []
    assert api["protocolType"] == "HTTP"
    assert api["extensions"]["x-amazon-apigateway-cors"]["allowOrigins"] == [
        "https://www.example.com"]
    assert api["extensions"]["x-amazon-apigateway-importexport-version"] == "1.0"
    orders = method(api, "/orders", "GET")
    assert orders["methodIntegration"] == {
        "type": "AWS_PROXY", "httpMethod": "POST",
        "uri": "arn:aws:apigateway:us-east-2:lambda:path/2015-03-31/functions/"
               "arn:aws:lambda:us-east-2:123456789012:function:orders/invocations",
        "passthroughBehavior": "WHEN_NO_TEMPLATES", "payloadFormatVersion": "2.0",
        "timeoutInMillis": 30000, "connectionType": "INTERNET"}
    assert method(api, "/orders", "POST")["methodIntegration"] == orders["methodIntegration"]
    jwt = next(a for a in api["authorizers"] if a["name"] == "jwt-authorizer")
    assert jwt["type"] == "JWT"
    assert jwt["jwtConfiguration"] == {
        "audience": ["client-one", "client-two"],
        "issuer": "https://cognito-idp.us-east-2.amazonaws.com/us-east-2_abc123"}
    assert orders["authorizationType"] == "JWT" and orders["authorizerId"] == jwt["id"]
    assert orders["authorizationScopes"] == ["orders/read"]
    lam = next(a for a in api["authorizers"] if a["name"] == "lambda-authorizer")
    assert lam["type"] == "REQUEST" and lam["enableSimpleResponses"] is True
    assert lam["authorizerPayloadFormatVersion"] == "2.0"
    assert method(api, "/orders/{orderId}", "GET")["authorizationType"] == "CUSTOM"
    health = method(api, "/health", "GET")["methodIntegration"]
    assert health["payloadFormatVersion"] == "1.0"
    assert health["responseParameters"] == {"200": {"overwrite:header.cache-control": "no-store"}}
    assert health["tlsConfig"] == {"serverNameToVerify": "backend.example.com"}


def test_protocol_type_argument_overrides_detection():
    assert imported("petstore-swagger2.json", protocol_type="HTTP")["protocolType"] == "HTTP"
    with pytest.raises(OpenAPIError, match="protocolType"):
        import_openapi(load("petstore-swagger2.json"), protocol_type="WEBSOCKET")


def test_greedy_any_http_proxy_with_stage_variables():
    api = imported("greedy-proxy.json")
    assert [r["path"] for r in api["resources"]] == ["/", "/{proxy+}"]
    root_any = method(api, "/", "ANY")
    assert root_any["methodIntegration"]["uri"] == "http://${stageVariables.backend}/"
    proxy = method(api, "/{proxy+}", "ANY")
    assert proxy["requestParameters"] == {"method.request.path.proxy": True}
    integ = proxy["methodIntegration"]
    assert integ["type"] == "HTTP_PROXY" and integ["httpMethod"] == "ANY"
    assert integ["uri"] == "http://${stageVariables.backend}/{proxy}"
    assert integ["requestParameters"] == {
        "integration.request.path.proxy": "method.request.path.proxy"}
    assert integ["cacheNamespace"] == "rbftud" and integ["timeoutInMillis"] == 15000
    assert "OPTIONS" in resource(api, "/{proxy+}")["resourceMethods"]
    exported = export_openapi(api)
    assert "x-amazon-apigateway-any-method" in exported["paths"]["/{proxy+}"]
    assert "any" not in exported["paths"]["/{proxy+}"]


def test_cognito_authorizer_scopes_and_api_key():
    api = imported("cognito-authorizer.json")
    (pool,) = api["authorizers"]
    assert pool == {
        "id": pool["id"], "name": "NotesUserPool", "type": "COGNITO_USER_POOLS",
        "authType": "cognito_user_pools",
        "providerARNs": ["arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_ExaMPle"],
        "identitySource": "method.request.header.Authorization"}
    listing = method(api, "/notes", "GET")  # from the document-level security
    assert listing["authorizationType"] == "COGNITO_USER_POOLS"
    assert listing["authorizerId"] == pool["id"] and "authorizationScopes" not in listing
    create = method(api, "/notes", "POST")
    assert create["authorizationScopes"] == ["notes/write", "openid"]
    assert create["apiKeyRequired"] is True
    ping = method(api, "/public/ping", "GET")  # security: [] turns it off
    assert ping["authorizationType"] == "NONE" and "authorizerId" not in ping


def test_lambda_authorizers_iam_and_api_key_source():
    api, warnings = import_openapi(load("lambda-token-authorizer.yaml"))
    assert warnings == []
    assert api["apiKeySource"] == "AUTHORIZER"
    auths = {a["name"]: a for a in api["authorizers"]}
    token = auths["test-authorizer"]
    assert token["type"] == "TOKEN" and token["authType"] == "oauth2"
    assert token["identitySource"] == "method.request.header.Authorization"
    assert token["identityValidationExpression"] == "^Bearer [-0-9a-zA-Z._]+$"
    assert token["authorizerResultTtlInSeconds"] == 60
    assert token["authorizerCredentials"] == "arn:aws:iam::123456789012:role/apigateway-invoke"
    request = auths["request_authorizer_header_query"]
    assert request["type"] == "REQUEST"
    assert request["identitySource"] == ("method.request.header.HeaderAuth1, "
                                         "method.request.querystring.QueryString1")
    assert sorted(auths) == ["request_authorizer_header_query", "test-authorizer"]
    assert method(api, "/http", "GET")["authorizerId"] == token["id"]
    report = method(api, "/reports/{reportId}", "GET")
    assert report["authorizationType"] == "CUSTOM" and report["apiKeyRequired"] is True
    assert report["requestParameters"] == {
        "method.request.path.reportId": True, "method.request.header.HeaderAuth1": True,
        "method.request.querystring.QueryString1": True}
    assert method(api, "/admin", "DELETE")["authorizationType"] == "AWS_IAM"
    assert method(api, "/admin", "PUT")["authorizationType"] == "AWS_IAM"  # x-amazon-apigateway-auth


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


@pytest.mark.parametrize("mode, paths, removed", [
    ("ignore", ["/", "/items", "/items/{sku}"], None),
    ("prepend", ["/", "/v1", "/v1/inventory", "/v1/inventory/items",
                 "/v1/inventory/items/{sku}"], None),
    ("split", ["/", "/inventory", "/inventory/items", "/inventory/items/{sku}"], "/v1"),
])
def test_swagger_base_path_modes(mode, paths, removed):
    api = imported("basepath-v1.json", base_path=mode)
    assert [r["path"] for r in api["resources"]] == paths
    assert api["extensions"].get("basePath") == removed
    # The intermediate resources have no methods, as API Gateway creates them.
    assert all("resourceMethods" not in r for r in api["resources"][:-2])


@pytest.mark.parametrize("mode, first", [("ignore", "/users"), ("prepend", "/api"),
                                         ("split", "/v2")])
def test_oas3_base_path_from_server_url(mode, first):
    api = imported("basepath-servers-oas3.json", base_path=mode)
    assert api["resources"][1]["path"] == first


def test_oas3_base_path_from_server_variable():
    api = imported("petstore-oas3.yaml", base_path="prepend")
    assert api["resources"][1]["path"] == "/test"
    api = imported("petstore-oas3.yaml", base_path="split")
    assert api["extensions"]["basePath"] == "/test"
    assert api["resources"][1]["path"] == "/pets"


def test_base_path_mode_must_be_known():
    with pytest.raises(OpenAPIError, match="basepath: 'drop'"):
        import_openapi(load("basepath-v1.json"), base_path="drop")


def test_integration_responses_keyed_by_status_with_selection_patterns():
    integ = method(imported("basepath-servers-oas3.json"), "/users/{id}", "GET")[
        "methodIntegration"]
    assert integ["integrationResponses"] == {
        "200": {"statusCode": "200", "selectionPattern": "2\\d{2}"},
        "404": {"statusCode": "404", "selectionPattern": "404", "responseTemplates": {
            "application/json": '{"message": "no such user"}'}},
        "500": {"statusCode": "500"}}


def test_gateway_responses_and_request_validators():
    api, warnings = import_openapi(load("gateway-responses-validators.json"))
    assert warnings == []
    assert api["gatewayResponses"]["INVALID_API_KEY"] == {
        "responseType": "INVALID_API_KEY", "statusCode": "429",
        "responseTemplates": {"application/json": '{"message": "test forbidden" }'},
        "defaultResponse": False}
    assert api["gatewayResponses"]["DEFAULT_4XX"]["responseParameters"] == {
        "gatewayresponse.header.Access-Control-Allow-Origin": "'domain.com'"}
    validators = {v["name"]: v for v in api["requestValidators"]}
    assert validators["all"] == {"id": validators["all"]["id"], "name": "all",
                                 "validateRequestBody": True, "validateRequestParameters": True}
    assert validators["params-only"]["validateRequestBody"] is False
    post = method(api, "/validation", "POST")
    assert post["requestValidatorId"] == validators["all"]["id"]
    assert post["apiKeyRequired"] is True and post["authorizationType"] == "NONE"
    assert post["requestModels"] == {"application/json": "RequestBodyModel"}
    assert post["requestParameters"] == {"method.request.header.h1": True}
    # The document-level x-amazon-apigateway-request-validator is the default.
    assert method(api, "/validation", "GET")["requestValidatorId"] == validators[
        "params-only"]["id"]


def test_binary_media_types_compression_policy_endpoint():
    api = imported("binary-compression.json")
    assert api["binaryMediaTypes"] == ["application/octet-stream", "image/jpeg", "image/png",
                                       "*/*"]
    assert api["minimumCompressionSize"] == 1024
    assert api["apiKeySource"] == "HEADER"
    assert isinstance(api["policy"], str)
    assert json.loads(api["policy"])["Statement"][0]["Action"] == "execute-api:Invoke"
    assert api["endpointConfiguration"] == {"types": ["EDGE"],
                                            "vpcEndpointIds": ["vpce-0212a4ababd5b8c3e"]}
    assert api["disableExecuteApiEndpoint"] is True
    get = method(api, "/images/{key}", "GET")
    assert get["methodIntegration"]["contentHandling"] == "CONVERT_TO_BINARY"
    assert get["methodIntegration"]["tlsConfig"] == {"insecureSkipVerification": True}
    assert get["methodResponses"]["200"]["responseParameters"] == {
        "method.response.header.Content-Type": True}
    assert method(api, "/images/{key}", "PUT")["requestModels"] == {
        "image/png": "PUTImagesKeyInput"}
    exported = export_openapi(api)
    assert exported["x-amazon-apigateway-minimum-compression-size"] == 1024
    assert exported["x-amazon-apigateway-policy"] == load("binary-compression.json")[
        "x-amazon-apigateway-policy"]


def test_unknown_extensions_warn_and_are_exported():
    api, warnings = import_openapi(load("unknown-extensions.json"))
    assert sorted(warnings) == sorted([
        "x-amazon-apigateway-documentation at <root>: not implemented, kept for export",
        "x-amazon-apigateway-made-up-root at <root>: not implemented, kept for export",
        "x-amazon-apigateway-made-up-path at paths./products: not implemented, kept for export",
        "x-amazon-apigateway-made-up-operation at paths./products.get: not implemented, "
        "kept for export",
        "x-amazon-apigateway-integration.x-amazon-apigateway-made-up-integration at "
        "paths./products.get: not implemented, kept for export",
        "connectionType VPC_LINK at paths./products.get.x-amazon-apigateway-integration: "
        "not implemented, kept for export"])
    assert api["tags"] == {"Owner": "catalog-team", "CostCenter": "1234"}
    assert api["extensions"]["x-company-owner"] == "catalog@example.com"  # silently kept
    assert resource(api, "/products")["extensions"] == {
        "x-amazon-apigateway-made-up-path": True, "x-internal-route-id": "r-17"}
    get = method(api, "/products", "GET")
    assert get["extensions"] == {"x-amazon-apigateway-made-up-operation": [1, 2],
                                 "x-codegen-name": "listProducts"}
    exported = export_openapi(api)
    source = load("unknown-extensions.json")
    for key in ("x-amazon-apigateway-documentation", "x-amazon-apigateway-made-up-root",
                "x-company-owner"):
        assert exported[key] == source[key]
    op = exported["paths"]["/products"]["get"]
    assert op["x-amazon-apigateway-integration"]["x-amazon-apigateway-made-up-integration"] == "kept"
    assert op["x-codegen-name"] == "listProducts"
    assert exported["paths"]["/products"]["x-internal-route-id"] == "r-17"
    assert {"name": "Owner", "x-amazon-apigateway-tag-value": "catalog-team"} in exported["tags"]


def test_fail_on_warnings_lists_them():
    with pytest.raises(OpenAPIError, match="failonwarnings") as info:
        import_openapi(load("unknown-extensions.json"), fail_on_warnings=True)
    assert "x-amazon-apigateway-made-up-path at paths./products" in str(info.value)
    api, _ = import_openapi(load("petstore-swagger2.json"), fail_on_warnings=True)
    assert api["name"] == "PetStore"


def test_unsupported_parameter_locations_warn():
    doc = load("petstore-oas3.yaml")
    doc["paths"]["/pets"]["get"]["parameters"].append(
        {"name": "session", "in": "cookie", "schema": {"type": "string"}})
    _, warnings = import_openapi(doc)
    assert warnings == ["cookie parameter 'session' at paths./pets.get: API Gateway has no "
                        "cookie request parameters; not imported"]


def test_api_id_argument_and_generated_ids():
    assert imported("greedy-proxy.json", api_id="myapi00001")["id"] == "myapi00001"
    first, second = imported("greedy-proxy.json"), imported("greedy-proxy.json")
    assert first["id"] != second["id"]
    assert isinstance(first["createdDate"], float)


# ---------------------------------------------------------------------------------------
# PutRestApi: merge and overwrite


def test_overwrite_keeps_identity_and_replaces_definition():
    existing = imported("petstore-swagger2.json")
    existing["tags"] = {"team": "pets"}
    api, _ = import_openapi(load("greedy-proxy.json"), existing=existing, mode="overwrite")
    assert api["id"] == existing["id"] and api["createdDate"] == existing["createdDate"]
    assert api["rootResourceId"] == existing["rootResourceId"]
    assert [r["path"] for r in api["resources"]] == ["/", "/{proxy+}"]
    assert api["name"] == "PetStoreWithProxyResource"
    assert api["models"] == [] and api["tags"] == {"team": "pets"}


def test_merge_replaces_same_methods_and_keeps_the_rest():
    existing = imported("petstore-swagger2.json")
    update = {
        "swagger": "2.0", "info": {"title": "PetStore v2", "version": "2"},
        "paths": {
            "/pets": {"get": {
                "responses": {"200": {"description": "ok"}, "400": {"description": "bad"}},
                "x-amazon-apigateway-integration": {
                    "type": "http_proxy", "httpMethod": "GET", "uri": "https://new.example.com/pets"}}},
            "/owners": {"get": {"responses": {}, "x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json": "{\"statusCode\": 200}"}}}},
        },
        "definitions": {"Pet": {"type": "object"}},
    }
    api, _ = import_openapi(update, existing=existing, mode="merge")
    assert api["id"] == existing["id"] and api["name"] == "PetStore v2"
    assert api["description"] == existing["description"]
    pets = resource(api, "/pets")
    assert pets["id"] == resource(existing, "/pets")["id"]
    assert sorted(pets["resourceMethods"]) == ["GET", "OPTIONS", "POST"]
    assert sorted(pets["resourceMethods"]["GET"]["methodResponses"]) == ["200", "400"]
    assert pets["resourceMethods"]["POST"] == method(existing, "/pets", "POST")
    owners = resource(api, "/owners")
    assert owners["parentId"] == existing["rootResourceId"]
    models = {m["name"]: m for m in api["models"]}
    old_pet = next(m for m in existing["models"] if m["name"] == "Pet")
    assert models["Pet"]["id"] == old_pet["id"]
    assert json.loads(models["Pet"]["schema"])["type"] == "object"
    assert "properties" not in json.loads(models["Pet"]["schema"])
    assert "NewPet" in models


def test_merge_keeps_authorizer_ids_used_by_methods():
    existing = imported("cognito-authorizer.json")
    api, _ = import_openapi(load("cognito-authorizer.json"), existing=existing, mode="merge")
    assert api["authorizers"] == existing["authorizers"]
    assert method(api, "/notes", "GET")["authorizerId"] == existing["authorizers"][0]["id"]


def test_mode_must_be_known():
    with pytest.raises(OpenAPIError, match="mode: 'replace'"):
        import_openapi(load("greedy-proxy.json"), existing=imported("greedy-proxy.json"),
                       mode="replace")


# ---------------------------------------------------------------------------------------
# Export


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


# ---------------------------------------------------------------------------------------
# Errors name the location


def _petstore():
    return load("petstore-swagger2.json")


def _set(path: str, value):
    def mutate(doc):
        *parents, last = path.split("|")
        node = doc
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return mutate


_PET_GET = "paths|/pets|get|x-amazon-apigateway-integration"

ERRORS = [
    ("no paths", _set("paths", KeyError), r"^paths: required"),
    ("not openapi", _set("swagger", KeyError), r"not an OpenAPI document"),
    ("old swagger", _set("swagger", "1.2"), r"swagger: version '1.2' is not 2.0"),
    ("no title", _set("info|title", KeyError), r"info.title: required"),
    ("bad method", _set("paths|/pets|fetch", {"responses": {}}),
     r"paths./pets.fetch: 'fetch' is not an HTTP method"),
    ("no type", _set(f"{_PET_GET}|type", KeyError),
     r"^paths./pets.get.x-amazon-apigateway-integration.type: required"),
    ("bad type", _set(f"{_PET_GET}|type", "lambda"),
     r"paths./pets.get.x-amazon-apigateway-integration.type: 'lambda' is not one of"),
    ("http without uri", _set(f"{_PET_GET}|uri", KeyError),
     r"paths./pets.get.x-amazon-apigateway-integration.uri: required for a http integration"),
    ("http without method", _set(f"{_PET_GET}|httpMethod", KeyError),
     r"x-amazon-apigateway-integration.httpMethod: required"),
    ("bad uri", _set(f"{_PET_GET}|uri", "petstore/pets"),
     r"integration.uri: an http integration needs an http:// or https:// URL"),
    ("bad stage variable", _set(f"{_PET_GET}|uri", "http://${stageVariables.my-host}/"),
     r"stage variable name 'my-host'"),
    ("unclosed stage variable", _set(f"{_PET_GET}|uri", "http://${stageVariables.host/"),
     r"unclosed"),
    ("bad passthrough", _set(f"{_PET_GET}|passthroughBehavior", "always"),
     r"passthroughBehavior: 'always' is not one of when_no_match"),
    ("bad timeout", _set(f"{_PET_GET}|timeoutInMillis", 10),
     r"timeoutInMillis: must be an integer of at least 50"),
    ("undeclared mapping", _set(f"{_PET_GET}|requestParameters",
                                {"integration.request.header.x": "method.request.header.x"}),
     r"requestParameters.integration.request.header.x: method.request.header.x is not a "
     r"request parameter"),
    ("bad mapping target", _set(f"{_PET_GET}|requestParameters", {"path.id": "'1'"}),
     r"requestParameters.path.id: target must be"),
    ("response without status", _set(f"{_PET_GET}|responses", {"default": {}}),
     r"responses.default.statusCode: required"),
    ("two patterns one status", _set(f"{_PET_GET}|responses", {
        "default": {"statusCode": "200"}, "2\\d{2}": {"statusCode": "200"}}),
     r"status code 200 is already used"),
    ("greedy not last", _set("paths|/{proxy+}/x", {"get": {"responses": {}}}),
     r"paths./{proxy\+}/x: greedy path parameter {proxy\+} must be the last path part"),
    ("sibling variables", _set("paths|/pets/{id}", {"get": {"responses": {}}}),
     r"path part {id} conflicts with sibling {petId}"),
    ("duplicate resource path", _set("paths|/pets/", {"get": {"responses": {}}}),
     r"paths./pets/: duplicates paths./pets"),
    ("bad path part", _set("paths|/pets:search", {"get": {"responses": {}}}),
     r"paths./pets:search: path part 'pets:search'"),
    ("relative path", _set("paths|pets", {"get": {"responses": {}}}),
     r"paths.pets: a path must start with '/'"),
    ("empty path part", _set("paths|/a//b", {"get": {"responses": {}}}),
     r"paths./a//b: empty path part"),
    ("unresolved ref", _set("paths|/pets|get|responses|200|schema", {"$ref": "#/definitions/Nope"}),
     r"paths./pets.get.responses.200.schema.\$ref: '#/definitions/Nope' does not resolve"),
    ("external ref", _set("paths|/pets|get|responses|200|schema", {"$ref": "other.json#/Pet"}),
     r"is not a local reference"),
    ("ref in model", _set("definitions|Pets|items", {"$ref": "#/definitions/Missing"}),
     r"definitions.Pets.items.\$ref: '#/definitions/Missing' does not resolve"),
    ("bad model name", _set("definitions|Pet_List", {"type": "array"}),
     r"definitions.Pet_List: model name 'Pet_List' must be alphanumeric"),
    ("undefined scheme", _set("paths|/pets|get|security", [{"nope": []}]),
     r"paths./pets.get.security.0.nope: security scheme 'nope' is not defined"),
    ("undefined validator", _set("paths|/pets|get|x-amazon-apigateway-request-validator", "all"),
     r"paths./pets.get.x-amazon-apigateway-request-validator: request validator 'all' is not "
     r"defined"),
    ("bad gateway response", _set("x-amazon-apigateway-gateway-responses", {"OOPS": {}}),
     r"x-amazon-apigateway-gateway-responses.OOPS: unknown gateway response type"),
    ("bad compression", _set("x-amazon-apigateway-minimum-compression-size", -1),
     r"x-amazon-apigateway-minimum-compression-size: must be an integer"),
    ("bad key source", _set("x-amazon-apigateway-api-key-source", "QUERY"),
     r"x-amazon-apigateway-api-key-source: must be HEADER or AUTHORIZER"),
    ("bad binary types", _set("x-amazon-apigateway-binary-media-types", "image/png"),
     r"x-amazon-apigateway-binary-media-types: must be a list"),
    ("bad policy", _set("x-amazon-apigateway-policy", "{not json"),
     r"x-amazon-apigateway-policy: not a JSON policy"),
    ("path param not in path", _set("paths|/pets|get|parameters", [
        {"name": "petId", "in": "path", "required": True, "type": "string"}]),
     r"paths./pets.get.parameters: path parameter 'petId' is not in the path"),
    ("bad status code", _set("paths|/pets|get|responses|20x", {"description": "x"}),
     r"paths./pets.get.responses.20x: '20x' is not an HTTP status code"),
    ("bad authorizer", _set("securityDefinitions", {"a": {
        "type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authorizer": {"type": "magic"}}}),
     r"securityDefinitions.a.x-amazon-apigateway-authorizer.type: must be one of token"),
    ("token without uri", _set("securityDefinitions", {"a": {
        "type": "apiKey", "name": "Authorization", "in": "header",
        "x-amazon-apigateway-authorizer": {"type": "token"}}}),
     r"securityDefinitions.a.x-amazon-apigateway-authorizer.authorizerUri: required"),
]


@pytest.mark.parametrize("mutate, message", [(m, e) for _, m, e in ERRORS],
                         ids=[name for name, _, _ in ERRORS])
def test_errors_name_the_location(mutate, message):
    doc = _petstore()
    mutate(doc)
    with pytest.raises(OpenAPIError, match=message):
        import_openapi(doc)


def test_http_api_lambda_needs_payload_format_version():
    doc = load("http-api-lambda.json")
    del doc["components"]["x-amazon-apigateway-integrations"]["orders"]["payloadFormatVersion"]
    with pytest.raises(OpenAPIError, match=r"paths./orders.get.x-amazon-apigateway-integration"
                                           r".payloadFormatVersion: required"):
        import_openapi(doc)


def test_rest_api_has_no_default_route():
    doc = _petstore()
    doc["paths"]["$default"] = {"x-amazon-apigateway-any-method": {}}
    with pytest.raises(OpenAPIError, match=r"paths.\$default: the \$default route exists only"):
        import_openapi(doc)


def test_http_api_default_route_is_imported_and_exported():
    doc = load("http-api-lambda.json")
    doc["paths"]["$default"] = {"x-amazon-apigateway-any-method": {
        "x-amazon-apigateway-integration": {"$ref": "#/components/x-amazon-apigateway-integrations/orders"}}}
    api, warnings = import_openapi(doc)
    assert warnings == []
    (res,) = [r for r in api["resources"] if r["path"] == "/$default"]
    assert res["pathPart"] == "$default" and list(res["resourceMethods"]) == ["ANY"]
    exported = export_openapi(api)
    assert "x-amazon-apigateway-any-method" in exported["paths"]["$default"]
    again, _ = import_openapi(exported)
    assert [r["resourceMethods"]["ANY"]["methodIntegration"] for r in again["resources"]
            if r["path"] == "/$default"] == [res["resourceMethods"]["ANY"]["methodIntegration"]]


def test_self_referencing_ref_is_an_error():
    doc = _petstore()
    doc["definitions"]["Loop"] = {"$ref": "#/definitions/Loop"}
    doc["paths"]["/pets"]["get"]["responses"]["200"]["schema"] = {"$ref": "#/definitions/Loop"}
    with pytest.raises(OpenAPIError, match="refers to itself"):
        import_openapi(doc)


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
