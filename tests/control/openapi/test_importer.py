"""import_openapi (fastgate/control/openapi/importer.py and the parts it runs) over
real-world-shaped documents: what each extension and OpenAPI field becomes, and errors
that name the location."""

import json

import pytest

from fastgate.control.openapi import OpenAPIError, export_openapi, import_openapi
from tests.control.openapi.documents import imported, load, method, normalised, resource


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
        "cacheKeyParameters": [], "connectionType": "INTERNET",
        "cacheNamespace": resource(api, "/pets")["id"]}
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


def test_models_are_json_strings_with_aws_model_urls():
    api = imported("petstore-swagger2.json", api_id="abcde12345")
    models = {m["name"]: m for m in api["models"]}
    assert sorted(models) == ["Empty", "NewPet", "NewPetResponse", "Pet", "PetType", "Pets"]
    pets = json.loads(models["Pets"]["schema"])
    # as written, $refs turned into model URLs (AWS's recording of the same file)
    assert pets == {"type": "array", "items": {
                        "$ref": "https://apigateway.amazonaws.com/restapis/abcde12345/models/Pet"}}
    assert models["Pets"]["contentType"] == "application/json"
    exported = export_openapi(api, export_type="swagger")
    assert exported["definitions"]["Pets"] == {"type": "array", "items": {"$ref": "#/definitions/Pet"}}


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
        "x-amazon-apigateway-made-up-root at <root>: not implemented, kept for export",
        "x-amazon-apigateway-made-up-path at paths./products: not implemented, kept for export",
        "x-amazon-apigateway-made-up-operation at paths./products.get: not implemented, "
        "kept for export",
        "x-amazon-apigateway-integration.x-amazon-apigateway-made-up-integration at "
        "paths./products.get: not implemented, kept for export"])
    # documentation parts and VPC links are read, not warned about
    assert [(d["location"], json.loads(d["properties"])) for d in api["documentationParts"]] == [
        ({"type": "API"}, {"description": "The catalog"})]
    assert method(api, "/products", "GET")["methodIntegration"]["connectionType"] == "VPC_LINK"
    assert api["tags"] == {"Owner": "catalog-team", "CostCenter": "1234"}
    assert api["extensions"]["x-company-owner"] == "catalog@example.com"  # silently kept
    assert resource(api, "/products")["extensions"] == {
        "x-amazon-apigateway-made-up-path": True, "x-internal-route-id": "r-17"}
    get = method(api, "/products", "GET")
    assert get["extensions"] == {"x-amazon-apigateway-made-up-operation": [1, 2],
                                 "x-codegen-name": "listProducts"}
    exported = export_openapi(api)
    source = load("unknown-extensions.json")
    for key in ("x-amazon-apigateway-made-up-root", "x-company-owner"):
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
    assert isinstance(first["createdDate"], int)     # whole epoch seconds, as every date


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


def _http_api(integration: dict) -> dict:
    return {"openapi": "3.0.1", "info": {"title": "subtypes", "version": "1"},
            "x-amazon-apigateway-importexport-version": "1.0",
            "paths": {"/send": {"post": {"x-amazon-apigateway-integration": integration}}}}


def test_integration_subtypes_import_with_their_parameters_checked_as_aws_does():
    ok = {"type": "aws_proxy", "integrationSubtype": "SQS-SendMessage",
          "credentials": "arn:aws:iam::123456789012:role/r",
          "requestParameters": {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q",
                                "MessageBody": "$request.body.message"}}
    api, warnings = import_openapi(_http_api(ok))
    integ = method(api, "/send", "POST")["methodIntegration"]
    assert integ["integrationSubtype"] == "SQS-SendMessage" and "uri" not in integ
    assert integ["payloadFormatVersion"] == "1.0" and warnings == []
    missing = dict(ok, requestParameters={"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"})
    with pytest.raises(OpenAPIError, match="Operation: SQS-SendMessage requires enabling passthrough, "
                                           "or defining all of the following parameters: QueueUrl, MessageBody"):
        import_openapi(_http_api(missing))
    with pytest.raises(OpenAPIError, match="is not a valid parameter for operation: SQS-SendMessage"):
        import_openapi(_http_api(dict(ok, requestParameters=dict(ok["requestParameters"], Bogus="x"))))


def test_aws_integrations_import_without_warnings_and_bad_uris_are_refused():
    doc = {"swagger": "2.0", "info": {"title": "aws", "version": "1"}, "paths": {"/q": {"post": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {
            "type": "aws", "httpMethod": "POST",
            "uri": "arn:aws:apigateway:us-east-1:sqs:path/123456789012/q",
            "responses": {"default": {"statusCode": "200"}}}}}}}
    api, warnings = import_openapi(doc)
    assert warnings == [] and method(api, "/q", "POST")["methodIntegration"]["type"] == "AWS"
    doc["paths"]["/q"]["post"]["x-amazon-apigateway-integration"]["uri"] = \
        "arn:aws:apigateway:us-east-1:sqs:queue/123456789012/q"
    with pytest.raises(OpenAPIError, match="AWS ARN for integration must contain path or action"):
        import_openapi(doc)
