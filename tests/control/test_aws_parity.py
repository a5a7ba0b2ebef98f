"""The management API exactly as AWS answers it, through boto3 on a real socket: each case
replays a call of LocalStack's AWS-validated tests (tests/aws/services/apigateway/
test_apigateway_api.py and test_apigateway_import.py in localstack/localstack) and expects
the answer AWS recorded (error code, status, message text; output shapes)."""

from __future__ import annotations

import orjson
import pytest
from botocore.exceptions import ClientError

from fastgate.control import messages as msg
from tests.control.test_api import Server, build_api, c, code_of, server  # noqa: F401 (fixtures)

ACCOUNT = msg.ACCOUNT_ID


@pytest.fixture
def loose(server):
    """A client that sends what botocore's own checks would stop (AWS's tests do the same):
    the server's answer to a wrong JSON type is what is tested."""
    import boto3
    from botocore.config import Config
    from tests.control.test_api import KEY, SECRET
    return boto3.client("apigateway", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}, parameter_validation=False))


def error(fn, *args, **kw) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as e:
        fn(*args, **kw)
    err = e.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def patch(c, api_id, *ops):
    return c.update_rest_api(restApiId=api_id, patchOperations=[dict(zip(("op", "path", "value"), o))
                                                                for o in ops])


# ---------------------------------------------------------------- RestApi

def test_rest_api_outputs_and_defaults(c):
    api = c.create_rest_api(name="a")
    assert api["endpointConfiguration"] == {"types": ["EDGE"], "ipAddressType": "ipv4"}
    assert "tags" not in api                     # CreateRestApi: no tags key without tags
    got = c.get_rest_api(restApiId=api["id"])
    assert got["tags"] == {} and got["endpointConfiguration"]["ipAddressType"] == "ipv4"
    private = c.create_rest_api(name="p", endpointConfiguration={"types": ["PRIVATE"]})
    assert private["endpointConfiguration"] == {"types": ["PRIVATE"], "ipAddressType": "dualstack"}


def test_get_rest_apis_items_show_tags_only_when_there_are_some(c):
    # AWS's recording (test_apigateway_api.py::test_list_and_delete_apis)
    plain = c.create_rest_api(name="a")
    tagged = c.create_rest_api(name="b", tags={"k": "v"})
    items = {a["id"]: a for a in c.get_rest_apis()["items"]}
    assert "tags" not in items[plain["id"]] and items[tagged["id"]]["tags"] == {"k": "v"}


def test_create_rest_api_validation(c):
    assert error(c.create_rest_api, name="a", description="") == (
        "BadRequestException", 400, "Description cannot be an empty string")
    assert error(c.create_rest_api, name="a", minimumCompressionSize=-1) == (
        "BadRequestException", 400, "Invalid minimum compression size, must be between 0 and 10485760")
    assert error(c.create_rest_api, name="a", endpointConfiguration={"types": []}) == (
        "BadRequestException", 400, "REGIONAL Configuration and EDGE Configuration cannot be both DISABLED.")
    assert error(c.create_rest_api, name="a", endpointConfiguration={"types": ["EDGE", "REGIONAL"]}) == (
        "BadRequestException", 400, "Cannot create an api with multiple Endpoint Types.")
    assert error(c.create_rest_api, name="a", endpointConfiguration={
        "types": ["PRIVATE"], "ipAddressType": "ipv4"}) == (
        "BadRequestException", 400, "Only dualstack ipAddressType is supported for Private APIs.")
    assert error(c.create_rest_api, name="a", endpointConfiguration={"types": ["wrong"],
                                                                     "ipAddressType": "wrong"}) == (
        "ValidationException", 400,
        "2 validation errors detected: Value '[wrong]' at 'createRestApiInput.endpointConfiguration.types' "
        "failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value "
        "set: [PRIVATE, EDGE, REGIONAL]]; Value 'wrong' at 'createRestApiInput.endpointConfiguration."
        "ipAddressType' failed to satisfy constraint: Member must satisfy enum value set: [ipv4, dualstack]")


def test_missing_api_names_the_account(c):
    assert error(c.get_rest_api, restApiId="api_id") == (
        "NotFoundException", 404, f"Invalid API identifier specified {ACCOUNT}:api_id")
    assert error(c.update_rest_api, restApiId="api_id",
                 patchOperations=[{"op": "replace", "path": "/apiKeySource", "value": "AUTHORIZER"}]) == (
        "NotFoundException", 404, f"Invalid API identifier specified {ACCOUNT}:api_id")


def test_update_rest_api_patch_operations(c):
    api = c.create_rest_api(name="a", description="this is my api")
    out = patch(c, api["id"], ("add", "/binaryMediaTypes/image~1png"), ("add", "/binaryMediaTypes/image~1jpeg"))
    assert out["binaryMediaTypes"] == ["image/png", "image/jpeg"] and out["tags"] == {}
    out = patch(c, api["id"], ("replace", "/binaryMediaTypes/image~1png", "image/gif"))
    assert out["binaryMediaTypes"] == ["image/jpeg", "image/gif"]
    out = patch(c, api["id"], ("remove", "/binaryMediaTypes/image~1gif"), ("remove", "/description"))
    assert out["binaryMediaTypes"] == ["image/jpeg"] and "description" not in out
    for op in ("add", "replace", "remove"):
        assert error(patch, c, api["id"], (op, "/binaryMediaTypes", "image/gif")) == (
            "BadRequestException", 400, "Invalid patch path /binaryMediaTypes")
    out = patch(c, api["id"], ("replace", "/endpointConfiguration/types/0", "REGIONAL"),
                ("replace", "/endpointConfiguration/types/0", "PRIVATE"))
    assert out["endpointConfiguration"] == {"types": ["PRIVATE"], "ipAddressType": "dualstack"}
    assert error(patch, c, api["id"], ("replace", "/endpointConfiguration/ipAddressType", "ipv4")) == (
        "BadRequestException", 400, "Only dualstack ipAddressType is supported for Private APIs.")
    assert error(patch, c, api["id"], ("replace", "/endpointConfiguration/ipAddressType", "wrong")) == (
        "BadRequestException", 400, "ipAddressType must be either ipv4 or dualstack.")
    assert error(patch, c, api["id"], ("replace", "/endpointConfiguration/types/0", "wrong")) == (
        "BadRequestException", 400, "Invalid EndpointTypes specified. Valid options are REGIONAL,EDGE,PRIVATE")
    assert error(patch, c, api["id"], ("remove", "/endpointConfiguration/ipAddressType", "dualstack")) == (
        "BadRequestException", 400, "Invalid patch operation specified. Must be one of: [replace]")
    assert error(patch, c, api["id"], ("remove", "/endpointConfiguration/types/0", "EDGE")) == (
        "BadRequestException", 400, "Invalid patch operation specified. Must be 'add'|'remove'|'replace'")
    assert error(patch, c, api["id"], ("replace", "/minimumCompressionSize", "-1")) == (
        "BadRequestException", 400, "Invalid minimum compression size, must be between 0 and 10485760")
    assert error(patch, c, api["id"], ("add", "/minimumCompressionSize", "10")) == (
        "BadRequestException", 400, "Invalid patch operation specified. Must be one of: [replace]")
    assert error(patch, c, api["id"], ("wrong", "/endpointConfiguration/ipAddressType", "x"),
                 ("wrong", "/endpointConfiguration/types/0", "EDGE")) == (
        "ValidationException", 400,
        "2 validation errors detected: Value 'wrong' at 'updateRestApiInput.patchOperations.1.member.op' "
        "failed to satisfy constraint: Member must satisfy enum value set: [add, remove, move, test, "
        "replace, copy]; Value 'wrong' at 'updateRestApiInput.patchOperations.2.member.op' failed to "
        "satisfy constraint: Member must satisfy enum value set: [add, remove, move, test, replace, copy]")


# ---------------------------------------------------------------- methods

def test_nested_calls_on_a_missing_api_name_the_resource(c):
    for fn, kw in ((c.put_method, {"httpMethod": "GET", "authorizationType": "NONE"}),
                   (c.get_method, {"httpMethod": "GET"}), (c.get_integration, {"httpMethod": "GET"}),
                   (c.get_resource, {})):
        assert error(fn, restApiId="nope", resourceId="r1", **kw) == (
            "NotFoundException", 404, "Invalid Resource identifier specified")
    # a missing API (404) is found before a bad HTTP method (400), as AWS checks
    assert error(c.put_method, restApiId="nope", resourceId="r1", httpMethod="WRONG",
                 authorizationType="NONE")[:2] == ("NotFoundException", 404)
    api, pets, _ = build_api(c)
    assert error(c.put_method, restApiId=api["id"], resourceId=pets["id"], httpMethod="WRONG",
                 authorizationType="NONE") == (
        "BadRequestException", 400,
        "Invalid HttpMethod specified. Valid options are GET,PUT,POST,DELETE,PATCH,OPTIONS,HEAD,ANY")


def test_method_request_validation(c, loose):
    api, pets, _ = build_api(c)
    kw = dict(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST", authorizationType="NONE")
    assert error(c.put_method, requestParameters={"method.request.querystring.optional": False,
                                                  "method.request.header.optional": False}, **kw) == (
        "BadRequestException", 400, "Parameter names must be unique across querystring, header and path")
    assert error(loose.put_method, requestParameters={"method.request.path.testPath": True, True: True}, **kw) == (
        "BadRequestException", 400, "Invalid mapping expression specified: Validation Result: warnings : [], "
                                    "errors : [Invalid mapping expression specified: true]")
    assert error(c.put_method, requestValidatorId="wrong", **kw) == (
        "BadRequestException", 400, "Invalid Request Validator identifier specified")
    assert error(c.put_method, requestModels={"application/json": "petModel"}, **kw) == (
        "BadRequestException", 400, "Invalid model identifier specified: petModel")
    c.put_method(requestModels={"application/json": "Empty"}, **kw)     # AWS's predefined model


def test_update_method_patch_operations(c):
    api, pets, _ = build_api(c)
    kw = dict(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET")

    def upd(*ops):
        return c.update_method(patchOperations=[dict(zip(("op", "path", "value"), o)) for o in ops], **kw)

    assert upd(("replace", "/apiKeyRequired", "whatever"))["apiKeyRequired"] is False
    assert upd(("replace", "/apiKeyRequired", "true"))["apiKeyRequired"] is True
    out = upd(("add", "/requestModels/application~1json", "Empty"))
    assert out["requestModels"] == {"application/json": "Empty"}
    assert "requestModels" not in upd(("remove", "/requestModels/application~1json"))
    assert error(upd, ("add", "/operationName", "x")) == (
        "BadRequestException", 400, "Invalid patch operation specified. Must be one of: [replace]")
    assert error(upd, ("add", "/httpMethod", "PUT")) == (
        "BadRequestException", 400, "Invalid patch path /httpMethod")
    assert error(upd, ("add", "/requestModels/application/json", "Empty")) == (
        "BadRequestException", 400, "Invalid patch path /requestModels/application/json")
    assert error(upd, ("replace", "/requestValidatorId", "wrong-id")) == (
        "BadRequestException", 400, "Invalid Request Validator identifier specified")


def test_mock_integration_has_no_connection_type_in_get_method(c):
    api, pets, _ = build_api(c)
    kw = dict(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST")
    c.put_method(authorizationType="NONE", **kw)
    c.put_integration(type="MOCK", **kw)
    assert "connectionType" not in c.get_method(**kw)["methodIntegration"]


def test_put_integration_checks_and_outputs(c):
    # AWS's recordings (test_apigateway_integrations.py::test_put_integration_validation)
    api = c.create_rest_api(name="a")
    kw = dict(restApiId=api["id"], resourceId=api["rootResourceId"], httpMethod="GET")
    c.put_method(authorizationType="NONE", **kw)
    for itype in ("HTTP", "HTTP_PROXY", "AWS"):
        assert error(c.put_integration, type=itype, uri="http://example.com", **kw) == (
            "BadRequestException", 400, "Enumeration value for HttpMethod must be non-empty")
    out = c.put_integration(type="MOCK", uri="http://example.com", **kw)
    assert "uri" not in out and "connectionType" not in out and out["timeoutInMillis"] == 29000
    for itype in ("HTTP", "HTTP_PROXY"):
        out = c.put_integration(type=itype, uri="http://example.com", integrationHttpMethod="POST", **kw)
        assert out["connectionType"] == "INTERNET" and out["uri"] == "http://example.com"
        assert error(c.put_integration, type=itype, uri="non-valid-http", integrationHttpMethod="POST", **kw) == (
            "BadRequestException", 400, "Invalid HTTP endpoint specified for URI")
    out = c.put_integration(type="AWS", uri="arn:aws:apigateway:us-east-1:s3:path/b/k",
                            credentials="arn:aws:iam::123456789012:role/r", integrationHttpMethod="POST", **kw)
    assert "connectionType" not in out
    lam = ("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
           "arn:aws:lambda:us-east-1:123456789012:function:MyLambda/invocations")
    for itype in ("AWS", "AWS_PROXY"):
        out = c.put_integration(type=itype, uri=lam, integrationHttpMethod="POST", **kw)
        assert "connectionType" not in out and out["uri"] == lam
    assert error(c.put_integration, type="AWS_PROXY", uri="arn:aws:apigateway:us-east-1:s3:path/b/k",
                 integrationHttpMethod="POST", **kw) == (
        "BadRequestException", 400, "Integrations of type 'AWS_PROXY' currently only supports Lambda "
                                    "function and Firehose stream invocations.")
    # (test_apigateway_lambda.py::test_put_integration_aws_proxy_uri)
    fn = "arn:aws:lambda:us-east-1:123456789012:function:f"
    for uri, text in (
            (fn, "AWS ARN for integration must contain path or action"),
            (f"bad-arn:lambda:path/2015-03-31/functions/{fn}/invocations", "Invalid ARN specified in the request"),
            (f"arn:aws:apigateway:us-east-1:lambda:test/2015-03-31/functions/{fn}/invocations",
             "AWS ARN for integration must contain path or action"),
            (f"arn:aws:apigateway:us-east-1:firehose:path/2015-03-31/functions/{fn}/invocations",
             "Integrations of type 'AWS_PROXY' currently only supports Lambda function and Firehose stream invocations."),
            (f"arn:aws:apigateway:us-east-1:lambda:path/random/value/{fn}/invocations",
             "Integrations of type 'AWS_PROXY' currently only supports Lambda function and Firehose stream invocations.")):
        assert error(c.put_integration, type="AWS_PROXY", uri=uri, integrationHttpMethod="POST", **kw) == (
            "BadRequestException", 400, text), uri
    assert error(c.put_integration, type="AWS", uri="non-valid-arn", integrationHttpMethod="POST", **kw) == (
        "BadRequestException", 400, "Invalid ARN specified in the request")
    assert error(c.put_integration, type="AWS", uri="arn:aws:iam::0000000000:role/service-role/asdf",
                 integrationHttpMethod="POST", **kw) == (
        "BadRequestException", 400, "AWS ARN for integration must contain path or action")
    # a stage variable may stand for the host, as AWS's stage-variable tutorials have it
    c.put_integration(type="HTTP_PROXY", uri="http://${stageVariables.host}/pets",
                      integrationHttpMethod="GET", **kw)


def test_integration_response_templates(c, loose):
    api, pets, _ = build_api(c)
    kw = dict(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", statusCode="200")
    out = c.put_integration_response(selectionPattern="", responseTemplates={"application/json": ""}, **kw)
    assert out["responseTemplates"] == {"application/json": None} and out["selectionPattern"] == ""
    assert error(loose.put_integration_response, responseTemplates={"application/json": 123}, **kw) == (
        "SerializationException", 400,
        "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String")
    assert error(c.put_integration_response, responseTemplates={"123": "x"}, **kw) == (
        "BadRequestException", 400, "Validation Result: warnings : [], errors : [Invalid content type specified: 123]")
    assert error(loose.put_integration, restApiId=api["id"], resourceId=pets["id"], httpMethod="GET",
                 type="HTTP", integrationHttpMethod="GET", uri="http://x",
                 requestParameters={"integration.request.path.testPath": True}) == (
        "SerializationException", 400, "class java.lang.Boolean can not be converted to an String")
    assert error(c.put_integration_response, restApiId=api["id"], resourceId=pets["id"], httpMethod="GET",
                 statusCode="wrong") == (
        "ValidationException", 400, "1 validation error detected: Value 'wrong' at 'statusCode' failed to "
                                    "satisfy constraint: Member must satisfy regular expression pattern: [1-5]\\d\\d")


# ---------------------------------------------------------------- stages

def test_stage_access_log_settings(c):
    api, _, _ = build_api(c)
    c.create_deployment(restApiId=api["id"], stageName="dev")

    def upd(op, path, value=None):
        o = {"op": op, "path": path}
        if value is not None:
            o["value"] = value
        return c.update_stage(restApiId=api["id"], stageName="dev", patchOperations=[o])

    arn = "arn:aws:logs:us-east-1:123456789012:log-group:x"
    assert upd("add", "/accessLogSettings/destinationArn", arn)["accessLogSettings"] == {"destinationArn": arn}
    out = upd("add", "/accessLogSettings/format", "$context.requestId")
    assert out["accessLogSettings"] == {"destinationArn": arn, "format": "$context.requestId"}
    for op in ("add", "replace"):
        assert error(upd, op=op, path="/accessLogSettings/randomValue", value="u") == (
            "BadRequestException", 400, "Invalid accessLogSettings path. Must be one of : "
                                        "[/accessLogSettings/destinationArn, /accessLogSettings/format]")
    assert error(upd, op="replace", path="/accessLogSettings/format", value="") == (
        "BadRequestException", 400, "Access Log value must not be empty")
    assert error(upd, op="remove", path="/accessLogSettings/destinationArn") == (
        "BadRequestException", 400, "Cannot remove method setting accessLogSettings/destinationArn because "
                                    "there is no method setting for this method ")
    assert "accessLogSettings" not in upd("remove", "/accessLogSettings")


def test_stage_patch_paths_and_method_settings(c):
    # AWS's recordings (test_apigateway_common.py::TestStages)
    api, _, _ = build_api(c)
    c.create_deployment(restApiId=api["id"], stageName="s1")

    def upd(*ops):
        return c.update_stage(restApiId=api["id"], stageName="s1",
                              patchOperations=[dict(zip(("op", "path", "value"), o)) for o in ops])

    for path in ("/documentation_version", "/tags/tag1"):
        assert error(upd, ("replace", path, "123")) == (
            "BadRequestException", 400, msg.STAGE_PATCH_PATH.format(path=path))
    assert msg.STAGE_PATCH_PATH.format(path="/x").startswith(
        "Invalid method setting path: /x. Must be one of: [/deploymentId, /description, ")
    # removing the settings of */* before any are set is refused, as Terraform meets it
    assert error(upd, ("remove", "/*/*")) == (
        "BadRequestException", 400,
        "Cannot remove method setting */* because there is no method setting for this method ")
    assert upd(("replace", "/*/*/caching/enabled", "true"))["methodSettings"]["*/*"]["cachingEnabled"] is True
    assert "*/*" not in upd(("remove", "/*/*")).get("methodSettings", {})


# ---------------------------------------------------------------- gateway responses

def test_gateway_response_defaults_and_default_families(c):
    api = c.create_rest_api(name="a")
    out = c.put_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN",
                                 responseParameters={"gatewayresponse.header.x": "'y'"})
    assert out["statusCode"] == "403" and out["defaultResponse"] is False
    assert out["responseTemplates"] == {"application/json": '{"message":$context.error.messageString}'}
    c.put_gateway_response(restApiId=api["id"], responseType="DEFAULT_5XX", statusCode="599",
                           responseTemplates={"application/json": '{"m": 1}'})
    c.put_gateway_response(restApiId=api["id"], responseType="AUTHORIZER_FAILURE",
                           responseParameters={"gatewayresponse.header.foo": "'bar'"})
    items = {i["responseType"]: i for i in c.get_gateway_responses(restApiId=api["id"])["items"]}
    # a DEFAULT_5XX put flows into the 5XX types not customised themselves
    assert items["INTEGRATION_FAILURE"]["statusCode"] == "599"
    assert items["INTEGRATION_FAILURE"]["responseTemplates"] == {"application/json": '{"m": 1}'}
    assert items["INTEGRATION_FAILURE"]["defaultResponse"] is True
    assert items["AUTHORIZER_FAILURE"]["statusCode"] == "500"
    assert items["THROTTLED"]["statusCode"] == "429" and "statusCode" not in items["DEFAULT_4XX"]
    assert c.get_gateway_response(restApiId=api["id"], responseType="API_CONFIGURATION_ERROR")["statusCode"] == "599"
    assert error(c.get_gateway_response, restApiId=api["id"], responseType="FAKE_RESPONSE_TYPE")[:2] == (
        "ValidationException", 400)
    assert error(c.delete_gateway_response, restApiId=api["id"], responseType="THROTTLED") == (
        "NotFoundException", 404, "Gateway response type not defined on api")


# ---------------------------------------------------------------- import and put

OAS_WITH_AWS_LENIENCY = {
    "openapi": "3.0.1", "info": {"title": "lenient", "version": "1"},
    "servers": [{"url": "https://testdomain.com/base-url/part/"}],
    "paths": {"/test": {"get": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET", "uri": "http://example.com/pets",
            "payloadFormatVersion": 1.0,
            "requestParameters": {"integration.request.header.nothing": True,
                                  "integration.request.header.kept": "'True'"}}}}}}


@pytest.mark.parametrize("basepath,resource", [("ignore", "/test"), ("split", "/part/test"),
                                               ("prepend", "/base-url/part/test")])
def test_import_is_as_lenient_as_aws(c, basepath, resource):
    api = c.import_rest_api(body=orjson.dumps(OAS_WITH_AWS_LENIENCY), parameters={"basepath": basepath})
    assert api["warnings"] == [
        "Invalid format for 'requestParameters'. Expected type string for property "
        f"'integration.request.header.nothing' of resource '{resource}' and method 'GET' but got 'true'"]
    assert api["endpointConfiguration"] == {"types": ["EDGE"], "ipAddressType": "ipv4"}
    assert "tags" not in api
    res = next(r for r in c.get_resources(restApiId=api["id"])["items"] if r["path"] == resource)
    integ = c.get_integration(restApiId=api["id"], resourceId=res["id"], httpMethod="GET")
    assert integ["requestParameters"] == {"integration.request.header.kept": "'True'"}
    # a REST API's integration however the document looks (payloadFormatVersion is an HTTP
    # API's field): AWS's REST defaults, the resource's id as cacheNamespace (AWS's recordings
    # of openapi.cognito-auth.json, which has one too)
    assert (integ["timeoutInMillis"], integ["passthroughBehavior"], integ["cacheKeyParameters"]) == (
        29000, "WHEN_NO_MATCH", [])
    assert integ["cacheNamespace"] == res["id"] and integ["connectionType"] == "INTERNET"
    # AWS's warning fails failOnWarnings
    assert error(c.import_rest_api, body=orjson.dumps(OAS_WITH_AWS_LENIENCY), failOnWarnings=True)[:2] == (
        "BadRequestException", 400)


def test_fail_on_warnings_ignores_fastgates_own_notes(c):
    # an AWS service integration (type aws): AWS takes it; fastgate notes what it lacks
    doc = {"swagger": "2.0", "info": {"title": "docs", "version": "1"},
           "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}},
                                    "x-amazon-apigateway-integration": {
                                        "type": "aws", "httpMethod": "POST",
                                        "uri": "arn:aws:apigateway:us-east-1:sqs:path/123456789012/q"}}}}}
    api = c.import_rest_api(body=orjson.dumps(doc), failOnWarnings=True)
    assert api["name"] == "docs"


def test_bad_files_answer_invalid_openapi_input(c):
    for body in (b"{'key:value}", b'test:\n    value:\n        - "value ... \\"escaped\\": $var"\n'):
        code, status, message = error(c.import_rest_api, body=body)
        assert (code, status) == ("BadRequestException", 400)
        assert message.startswith("Invalid OpenAPI input.") and len(message) > len("Invalid OpenAPI input.")
        # the document is read before the API is looked for, as AWS does
        code, status, message = error(c.put_rest_api, restApiId="nope", body=body)
        assert (code, status) == ("BadRequestException", 400) and message.startswith("Invalid OpenAPI input.")


@pytest.mark.parametrize("mode,expected", [("merge", ["image/heif", "image/png", "image/jpg"]),
                                           ("overwrite", ["image/png", "image/jpg"])])
def test_put_rest_api_binary_media_types(c, mode, expected):
    api = c.create_rest_api(name="a", binaryMediaTypes=["image/heif"])
    doc = {"swagger": "2.0", "info": {"title": "b", "version": "1.0.0"},
           "x-amazon-apigateway-binary-media-types": ["image/png", "image/jpg"],
           "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}},
                                    "x-amazon-apigateway-integration": {"type": "mock"}}}}}
    out = c.put_rest_api(restApiId=api["id"], mode=mode, body=orjson.dumps(doc))
    assert out["binaryMediaTypes"] == expected
    assert out["tags"] == {} and out["endpointConfiguration"]["ipAddressType"] == "ipv4"


def test_identifier_messages(c):
    api, pets, _ = build_api(c)
    kw = dict(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST")
    c.put_method(authorizationType="NONE", **kw)
    assert error(c.get_integration, **kw) == ("NotFoundException", 404, "Invalid Integration identifier specified")
    assert error(c.get_integration_response, statusCode="200", **kw) == (
        "NotFoundException", 404, "Invalid Integration identifier specified")
    assert error(c.get_method, restApiId=api["id"], resourceId=pets["id"], httpMethod="PUT") == (
        "NotFoundException", 404, "Invalid Method identifier specified")
    proxy = c.create_resource(restApiId=api["id"], parentId=api["rootResourceId"], pathPart="{proxy+}")
    assert error(c.create_resource, restApiId=api["id"], parentId=proxy["id"], pathPart="x") == (
        "BadRequestException", 400, "Cannot create a child of a resource with a greedy path variable: {proxy+}")
    assert error(c.create_resource, restApiId=api["id"], parentId=api["rootResourceId"], pathPart="{other}") == (
        "BadRequestException", 400,
        "A sibling ({proxy+}) of this resource already has a variable path part -- only one is allowed")


def test_authorizer_messages(c):
    assert error(c.create_authorizer, restApiId="test-fake-rest-id", name="a", type="TOKEN",
                 authorizerUri="arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                               "arn:aws:lambda:us-east-1:123456789012:function:f/invocations",
                 identitySource="method.request.header.Auth") == (
        "ConflictException", 409, "Unable to complete operation due to concurrent modification. Please try again later.")
    assert error(c.get_authorizers, restApiId="test-fake-rest-id") == (
        "NotFoundException", 404, f"Invalid API identifier specified {ACCOUNT}:test-fake-rest-id")
    api, pets, _ = build_api(c)
    for auth_type in ("CUSTOM", "COGNITO_USER_POOLS"):
        assert error(c.put_method, restApiId=api["id"], resourceId=pets["id"], httpMethod="POST",
                     authorizationType=auth_type) == (
            "BadRequestException", 400, "Invalid authorizer ID specified. Setting the authorization type to "
                                        "CUSTOM or COGNITO_USER_POOLS requires a valid authorizer.")


# ---------------------------------------------------------------- API keys and usage plans

def test_api_key_checks_and_outputs(c):
    # AWS's recordings (test_apigateway_extended.py::TestApigatewayApiKeysCrud)
    assert error(c.create_api_key, name="a" * 1025) == (
        "BadRequestException", 400, "Invalid API Key name, can be at most 1024 characters.")
    assert error(c.create_api_key, value="short") == (
        "BadRequestException", 400, "API Key value should be at least 20 characters")
    assert error(c.create_api_key, value="a" * 129) == (
        "BadRequestException", 400, "API Key value exceeds maximum size of 128 characters")
    assert error(c.create_api_key, description="a" * 125001) == (
        "BadRequestException", 400, "Invalid API Key description specified.")
    key = c.create_api_key(name="")             # an empty name, an empty value: both taken
    assert "name" not in key and len(key["value"]) >= 20 and key["enabled"] is False
    assert "tags" not in key
    key = c.create_api_key(value="")
    assert len(key["value"]) >= 20
    assert error(c.update_api_key, apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/description", "value": "a" * 125001}]) == (
        "BadRequestException", 400, "Invalid API Key description specified.")
    assert error(c.update_api_key, apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/id", "value": "new-id"}]) == (
        "BadRequestException", 400, "Invalid patch path  '/id' specified for op 'replace'. "
                                    "Must be one of: [/description, /enabled, /name, /customerId]")
    c.update_api_key(apiKey=key["id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "true"}])
    out = c.update_api_key(apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "not-a-boolean"}])
    assert out["enabled"] is False and out["tags"] == {}
    assert c.get_api_key(apiKey=key["id"])["tags"] == {}
    assert error(c.get_api_key, apiKey="nope") == (
        "NotFoundException", 404, "Invalid API Key identifier specified")


def test_usage_plan_messages_and_outputs(c):
    # AWS's recordings (test_apigateway_common.py::TestUsagePlans::test_usage_plan_crud), and
    # CreateUsagePlan's answer as AWS CLI and CloudFormation users report it (%s left in)
    api, _, _ = build_api(c)
    c.create_deployment(restApiId=api["id"], stageName="dev")
    assert error(c.create_usage_plan, name="p", apiStages=[{"apiId": api["id"], "stage": "nope"}]) == (
        "BadRequestException", 400, "Invalid API Stage {api: %s, stage: %s} specified for usageplan %s")
    plan = c.create_usage_plan(name="p", apiStages=[{"apiId": api["id"], "stage": "dev"}])
    assert "tags" not in plan and c.get_usage_plan(usagePlanId=plan["id"])["tags"] == {}
    out = c.update_usage_plan(usagePlanId=plan["id"], patchOperations=[
        {"op": "replace", "path": "/throttle/burstLimit", "value": "100"},
        {"op": "replace", "path": "/throttle/rateLimit", "value": "200"}])
    assert out["throttle"] == {"burstLimit": 100, "rateLimit": 200.0} and out["tags"] == {}

    def remove(value=None, path="/apiStages"):
        op = {"op": "remove", "path": path}
        if value is not None:
            op["value"] = value
        return c.update_usage_plan(usagePlanId=plan["id"], patchOperations=[op])

    assert error(c.update_usage_plan, usagePlanId="wrong", patchOperations=[
        {"op": "replace", "path": "/throttle/burstLimit", "value": "100"}]) == (
        "NotFoundException", 404, "Invalid Usage Plan ID specified")
    assert error(remove) == ("BadRequestException", 400, "Invalid API Stage specified")
    assert error(remove, "fakevalue") == ("BadRequestException", 400, "Invalid API Stage specified")
    assert error(remove, f"{api['id']}b:dev") == (
        "NotFoundException", 404, f"Invalid API Stage {{api: {api['id']}b, stage: dev}} specified for "
                                  f"usageplan {plan['id']}")
    assert error(remove, f"{api['id']}:fakestagename") == (
        "NotFoundException", 404, f"Invalid API Stage {{api: {api['id']}, stage: fakestagename}} "
                                  f"specified for usageplan {plan['id']}")
    assert error(remove, path=f"/apiStages/{api['id']}:dev") == (
        "BadRequestException", 400,
        f"Invalid patch path  '/apiStages/{api['id']}:dev' specified for op 'remove'. Must be one of: "
        "[/apiStages, /quota, /throttle, /productCode, /apiStages/<apidId:stageName>/throttle/"
        "<resourcePath>/<httpMethod>, /apiStages/<apidId:stageName>/throttle]")
    assert remove(f"{api['id']}:dev")["apiStages"] == []


def test_canary_deployments_and_patches(c):
    # AWS's recordings (test_apigateway_canary.py::TestStageCrudCanary)
    api, _, _ = build_api(c)
    a = api["id"]
    canary = {"percentTraffic": 50, "stageVariableOverrides": {"testVar": "canary"}}
    text = ("Invalid deployment content specified.Non null and non empty stageName must be provided "
            "for canary deployment. Provided value is ")
    assert error(c.create_deployment, restApiId=a, canarySettings=canary) == (
        "BadRequestException", 400, text + "null")
    assert error(c.create_deployment, restApiId=a, stageName="", canarySettings=canary) == (
        "BadRequestException", 400, text)
    assert error(c.create_deployment, restApiId=a, stageName="non-existing", canarySettings=canary) == (
        "BadRequestException", 400, "Invalid deployment content specified.Stage non-existing must "
                                    "already be created before making a canary release deployment")
    assert c.get_deployments(restApiId=a)["items"] == []     # none of them made a deployment
    dep = c.create_deployment(restApiId=a, stageName="dev")["id"]
    assert error(c.create_stage, restApiId=a, stageName="dev3", deploymentId=dep,
                 canarySettings={"deploymentId": "deploy"}) == (
        "BadRequestException", 400, "Deployment id does not exist")
    c.create_deployment(restApiId=a, stageName="dev", canarySettings=canary)

    def upd(stage, *ops):
        return c.update_stage(restApiId=a, stageName=stage, patchOperations=[
            dict(zip(("op", "path", "value"), o)) for o in ops])

    nothing = "because there is no method setting for this method "
    assert error(upd, "dev", ("remove", "/canarySettings/stageVariableOverrides")) == (
        "BadRequestException", 400, f"Cannot remove method setting canarySettings/stageVariableOverrides {nothing}")
    assert error(upd, "dev", ("remove", "/canarySettings/badPath")) == (
        "BadRequestException", 400, f"Cannot remove method setting canarySettings/badPath {nothing}")
    for path in ("/canarySettings", "/canarySettings/badPath"):
        assert error(upd, "dev", ("replace", path, "x")) == (
            "BadRequestException", 400, msg.STAGE_PATCH_PATH.format(path=path))
    dep2 = c.create_deployment(restApiId=a, stageName="dev2")["id"]
    assert error(upd, "dev2", ("add", "/canarySettings/deploymentId", dep2)) == (
        "BadRequestException", 400, "Invalid add operation with path: /canarySettings/deploymentId")
    assert error(upd, "dev2", ("replace", "/canarySettings/deploymentId", "deploy")) == (
        "BadRequestException", 400, "Deployment id does not exist")
    # the first replace makes a canary on the stage's deployment
    out = upd("dev2", ("replace", "/canarySettings/percentTraffic", "50"))
    assert out["canarySettings"] == {"deploymentId": dep2, "percentTraffic": 50.0, "useStageCache": False}
    bad_copy = {"op": "copy", "path": "/canarySettings/stageVariableOverrides", "from": "/variables"}
    with pytest.raises(ClientError) as e:
        c.update_stage(restApiId=a, stageName="dev2", patchOperations=[bad_copy])
    assert e.value.response["Error"]["Message"] == (
        "Invalid copy operation with path: /canarySettings/stageVariableOverrides and from /variables. "
        "Valid copy:path are [/deploymentId, /variables] and valid copy:from are "
        "[/canarySettings/deploymentId, /canarySettings/stageVariableOverrides]")


SWAGGER_MOCK_AND_MODELS = {
    "swagger": "2.0", "info": {"title": "m", "version": "1"},
    "paths": {"/": {"options": {
        "responses": {"200": {"description": "ok", "schema": {"$ref": "#/definitions/Pets"}}},
        "x-amazon-apigateway-integration": {
            "type": "mock", "httpMethod": "POST", "uri": "http://ignored.example",
            "requestTemplates": {"application/json": "{\"statusCode\": 200}"},
            "responses": {"default": {"statusCode": "200"}}}}}},
    "definitions": {"Pets": {"type": "array", "items": {"$ref": "#/definitions/Pet"}},
                    "Pet": {"type": "object", "properties": {"id": {"type": "integer"}}}}}


def test_imported_mock_integrations_and_models_as_aws_keeps_them(c):
    # AWS's recordings (test_apigateway_import.py: openapi-http-method-integration.json's MOCK
    # OPTIONS with an httpMethod, petstore-authorizer.swagger.json's models)
    api = c.import_rest_api(body=orjson.dumps(SWAGGER_MOCK_AND_MODELS), failOnWarnings=True)
    integ = c.get_integration(restApiId=api["id"], resourceId=api["rootResourceId"], httpMethod="OPTIONS")
    assert "httpMethod" not in integ and "uri" not in integ and "connectionType" not in integ
    assert integ["cacheNamespace"] == api["rootResourceId"]
    models = {m["name"]: orjson.loads(m["schema"]) for m in c.get_models(restApiId=api["id"])["items"]}
    # the schema as written, no $schema or title added; $refs become AWS's model URLs
    assert models["Pet"] == {"type": "object", "properties": {"id": {"type": "integer"}}}
    assert models["Pets"] == {"type": "array", "items": {
        "$ref": f"https://apigateway.amazonaws.com/restapis/{api['id']}/models/Pet"}}


def test_delete_integration_response_names_the_integration(c):
    # AWS's recording (test_apigateway_api.py::test_delete_integration_response_errors)
    api = c.create_rest_api(name="a")
    kw = dict(restApiId=api["id"], resourceId=api["rootResourceId"])
    c.put_method(httpMethod="GET", authorizationType="NONE", **kw)
    c.put_integration(httpMethod="GET", type="MOCK", **kw)
    c.put_integration_response(httpMethod="GET", statusCode="200", selectionPattern="", **kw)
    for http_method in ("POST", "WRONG"):
        assert error(c.delete_integration_response, httpMethod=http_method, statusCode="200", **kw) == (
            "NotFoundException", 404, "Invalid Integration identifier specified")
    assert error(c.delete_integration_response, httpMethod="GET", statusCode="201", **kw) == (
        "NotFoundException", 404, "Invalid Response status code specified")
    assert error(c.delete_integration_response, restApiId="bad-api-id", resourceId=api["rootResourceId"],
                 httpMethod="GET", statusCode="200") == (
        "NotFoundException", 404, "Invalid Resource identifier specified")
    c.delete_integration_response(httpMethod="GET", statusCode="200", **kw)
