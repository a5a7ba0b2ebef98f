"""The apigatewayv2 service over a real socket, driven by boto3's apigatewayv2 client as users
drive AWS: every HTTP-API operation answers, AWS's error shapes, paging, quick create and
automatic deployment, OpenAPI export and re-import, domains shared with apigateway."""

from __future__ import annotations

import json

import boto3
import pytest
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from fastgate.control.v2 import OPERATIONS
from tests.control.test_api import KEY, SECRET, Server

LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:hello"


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.stop()


def v2(server):
    return boto3.client("apigatewayv2", endpoint_url=server.url, region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def error(call, *args, **kw) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as e:
        call(*args, **kw)
    r = e.value.response
    return r["Error"]["Code"], r["Error"]["Message"], r["ResponseMetadata"]["HTTPStatusCode"]


# --- every operation ---------------------------------------------------------------------

def _value(shapes, name, depth=0):
    """A value of a shape that botocore's client-side validation accepts."""
    shape = shapes[name]
    kind = shape["type"]
    if kind == "structure":
        return {m: _value(shapes, shape["members"][m]["shape"], depth + 1)
                for m in shape.get("required", ())}
    if kind == "list":
        return [] if depth > 2 else [_value(shapes, shape["member"]["shape"], depth + 1)]
    if kind == "map":
        return {}
    if kind in ("integer", "long"):
        return max(1, int(shape.get("min", 1)))
    if kind in ("double", "float"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "blob":
        return b"x"
    if kind == "timestamp":
        return 0
    return shape["enum"][0] if "enum" in shape else "x" * max(1, int(shape.get("min", 1)))


def test_every_http_api_operation_is_served(server):
    """Every operation of botocore's apigatewayv2 model but the Portal ones reaches fastgate's
    handler: with made-up ids they answer NotFound or BadRequest, never UnknownOperation."""
    c = v2(server)
    model = c.meta.service_model
    shapes = model._shape_resolver._shape_map
    walked = 0
    for op in model.operation_names:
        portal = "Portal" in op or "ProductPage" in op or "ProductRestEndpointPage" in op
        in_shape = model.operation_model(op).input_shape
        params = _value(shapes, in_shape.name) if in_shape is not None else {}
        try:
            c._make_api_call(op, params)
            code = None
        except ClientError as e:
            code = e.response["Error"]["Code"]
        if portal:
            assert code == "UnknownOperationException", op
        else:
            walked += 1
            assert code != "UnknownOperationException", op
    assert walked == len(OPERATIONS) == 77


# --- APIs, errors, paging ---------------------------------------------------------------------

def test_create_get_update_delete_api_and_errors(server):
    c = v2(server)
    api = c.create_api(Name="pets", ProtocolType="HTTP", Description="d", Tags={"team": "a"})
    assert api["ProtocolType"] == "HTTP"
    assert api["RouteSelectionExpression"] == "$request.method $request.path"
    assert api["ApiKeySelectionExpression"] == "$request.header.x-api-key"
    assert api["ApiEndpoint"] == f"http://{api['ApiId']}.execute-api.localhost"
    assert api["CreatedDate"].year >= 2024           # ISO 8601 on the wire, parsed by botocore
    assert api["Tags"] == {"team": "a"} and api["DisableExecuteApiEndpoint"] is False
    got = c.get_api(ApiId=api["ApiId"])
    assert got["Name"] == "pets" and got["Description"] == "d"
    up = c.update_api(ApiId=api["ApiId"], Name="pets2", DisableExecuteApiEndpoint=True)
    assert up["Name"] == "pets2" and up["DisableExecuteApiEndpoint"] is True

    assert error(c.get_api, ApiId="nope") == (
        "NotFoundException", "Invalid API identifier specified nope", 404)
    code, msg, status = error(c.create_api, Name="ws", ProtocolType="HTTP",
                              RouteSelectionExpression="$request.body.action")
    assert (code, status) == ("BadRequestException", 400) and "route selection" in msg
    code, msg, _ = error(c.create_api, Name="x", ProtocolType="HTTP",
                         CorsConfiguration={"AllowOrigins": ["*"], "AllowCredentials": True})
    assert code == "BadRequestException" and "allow_credentials" in msg
    # REST APIs and HTTP APIs stay apart, as in AWS
    rest = server.client().create_rest_api(name="rest")
    assert [a["ApiId"] for a in c.get_apis()["Items"]] == [api["ApiId"]]
    assert [a["id"] for a in server.client().get_rest_apis()["items"]] == [rest["id"]]
    assert error(c.get_api, ApiId=rest["id"])[0] == "NotFoundException"
    with pytest.raises(ClientError):
        server.client().get_rest_api(restApiId=api["ApiId"])
    c.delete_api(ApiId=api["ApiId"])
    assert error(c.delete_api, ApiId=api["ApiId"])[0] == "NotFoundException"


def test_paging_with_max_results_and_next_token(server):
    c = v2(server)
    ids = [c.create_api(Name=f"a{i}", ProtocolType="HTTP")["ApiId"] for i in range(5)]
    first = c.get_apis(MaxResults="2")
    assert len(first["Items"]) == 2 and first["NextToken"]
    seen = [a["ApiId"] for a in first["Items"]]
    token = first["NextToken"]
    while token:
        page = c.get_apis(MaxResults="2", NextToken=token)
        seen += [a["ApiId"] for a in page["Items"]]
        token = page.get("NextToken")
    everything = [a["ApiId"] for a in c.get_apis()["Items"]]
    assert seen == everything and sorted(seen) == sorted(ids)
    paged = [a["ApiId"] for p in c.get_paginator("get_apis").paginate(PaginationConfig={"PageSize": 2})
             for a in p["Items"]]
    assert paged == everything
    assert error(c.get_apis, MaxResults="zero")[0] == "BadRequestException"
    assert error(c.get_apis, NextToken="!!")[0] == "BadRequestException"


# --- routes, integrations, authorizers ---------------------------------------------------

def test_routes_integrations_and_authorizers(server):
    c = v2(server)
    api_id = c.create_api(Name="pets", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY",
                                 IntegrationUri="http://127.0.0.1:9/pets/{id}",
                                 IntegrationMethod="GET",
                                 RequestParameters={"overwrite:header.x-a": "$request.header.b",
                                                    "append:querystring.y": "1",
                                                    "overwrite:path": "/v2/$request.path.id"},
                                 ResponseParameters={"200": {"overwrite:statuscode": "204",
                                                             "append:header.x-r": "1"}},
                                 TlsConfig={"ServerNameToVerify": "example.com"})
    assert integ["PayloadFormatVersion"] == "1.0" and integ["TimeoutInMillis"] == 30000
    assert integ["ConnectionType"] == "INTERNET"
    # 30 s is AWS's cap; here it is only the default
    long = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=LAMBDA,
                                PayloadFormatVersion="2.0", TimeoutInMillis=120000)
    assert long["TimeoutInMillis"] == 120000
    # a stage may choose the function (function:${stageVariables.fn}), as in AWS
    c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", PayloadFormatVersion="2.0",
                         IntegrationUri=LAMBDA.replace(":hello", ":${stageVariables.fn}"))
    code, msg, _ = error(c.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY",
                         IntegrationUri=LAMBDA)
    assert code == "BadRequestException" and "PayloadFormatVersion" in msg
    assert error(c.create_integration, ApiId=api_id, IntegrationType="MOCK")[0] == "BadRequestException"
    code, msg, _ = error(c.create_integration, ApiId=api_id, IntegrationType="HTTP_PROXY",
                         IntegrationUri="http://x", RequestParameters={"overwrite:header.connection": "x"})
    assert code == "BadRequestException" and "mapping" in msg

    jwt = c.create_authorizer(ApiId=api_id, AuthorizerType="JWT", Name="jwt",
                              IdentitySource=["$request.header.Authorization"],
                              JwtConfiguration={"Issuer": "https://issuer.example", "Audience": ["a"]})
    lam = c.create_authorizer(ApiId=api_id, AuthorizerType="REQUEST", Name="lam",
                              AuthorizerUri=LAMBDA, AuthorizerPayloadFormatVersion="2.0",
                              EnableSimpleResponses=True, AuthorizerResultTtlInSeconds=300,
                              IdentitySource=["$request.header.X-User", "$request.querystring.k"])
    assert lam["IdentitySource"] == ["$request.header.X-User", "$request.querystring.k"]
    assert error(c.create_authorizer, ApiId=api_id, AuthorizerType="JWT", Name="jwt",
                 IdentitySource=["$request.header.Authorization"],
                 JwtConfiguration={"Issuer": "https://i", "Audience": ["a"]})[0] == "ConflictException"
    assert error(c.create_authorizer, ApiId=api_id, AuthorizerType="REQUEST", Name="x",
                 AuthorizerUri=LAMBDA, AuthorizerPayloadFormatVersion="1.0",
                 EnableSimpleResponses=True, IdentitySource=[])[0] == "BadRequestException"

    route = c.create_route(ApiId=api_id, RouteKey="GET /pets/{id}", Target=f"integrations/{integ['IntegrationId']}",
                           AuthorizationType="JWT", AuthorizerId=jwt["AuthorizerId"],
                           AuthorizationScopes=["pets/read"],
                           RequestParameters={"route.request.header.x": {"Required": True}})
    assert route["RouteKey"] == "GET /pets/{id}" and route["AuthorizationScopes"] == ["pets/read"]
    assert error(c.create_route, ApiId=api_id, RouteKey="GET /pets/{id}")[0] == "ConflictException"
    assert error(c.create_route, ApiId=api_id, RouteKey="FETCH /x")[0] == "BadRequestException"
    assert error(c.create_route, ApiId=api_id, RouteKey="GET /{p+}/x")[0] == "BadRequestException"
    assert error(c.create_route, ApiId=api_id, RouteKey="GET /a", AuthorizationType="CUSTOM",
                 AuthorizerId=jwt["AuthorizerId"])[0] == "BadRequestException"
    assert error(c.create_route, ApiId=api_id, RouteKey="GET /b",
                 Target="integrations/nope")[0] == "BadRequestException"
    c.create_route(ApiId=api_id, RouteKey="ANY /{proxy+}", AuthorizationType="CUSTOM",
                   AuthorizerId=lam["AuthorizerId"], Target=f"integrations/{long['IntegrationId']}")
    c.create_route(ApiId=api_id, RouteKey="$default", Target=f"integrations/{long['IntegrationId']}")
    keys = [r["RouteKey"] for r in c.get_routes(ApiId=api_id)["Items"]]
    assert keys == ["$default", "ANY /{proxy+}", "GET /pets/{id}"]

    c.delete_route_request_parameter(ApiId=api_id, RouteId=route["RouteId"],
                                     RequestParameterKey="route.request.header.x")
    assert "RequestParameters" not in c.get_route(ApiId=api_id, RouteId=route["RouteId"]) or \
        c.get_route(ApiId=api_id, RouteId=route["RouteId"])["RequestParameters"] == {}
    up = c.update_route(ApiId=api_id, RouteId=route["RouteId"], AuthorizationType="NONE")
    assert up["AuthorizationType"] == "NONE" and "AuthorizerId" not in up and "AuthorizationScopes" not in up
    # an integration or authorizer in use cannot go
    assert error(c.delete_integration, ApiId=api_id, IntegrationId=long["IntegrationId"])[0] == "ConflictException"
    assert error(c.delete_authorizer, ApiId=api_id, AuthorizerId=lam["AuthorizerId"])[0] == "ConflictException"
    assert error(c.get_route, ApiId=api_id, RouteId="nope") == (
        "NotFoundException", "Invalid Route identifier specified nope", 404)
    # route and integration responses belong to WebSocket APIs
    code, msg, _ = error(c.create_route_response, ApiId=api_id, RouteId=route["RouteId"],
                         RouteResponseKey="$default")
    assert code == "BadRequestException" and "WebSocket" in msg
    # nothing was deployed: no stage, no deployment
    assert c.get_deployments(ApiId=api_id)["Items"] == []


def test_integration_subtypes_are_checked_as_aws_defines_each(server):
    """CreateIntegration / UpdateIntegration with an integrationSubtype: the subtype's
    requestParameters (fastgate.phases.aws.checks), AWS_PROXY and payload format 1.0 only."""
    c = v2(server)
    api_id = c.create_api(Name="svc", ProtocolType="HTTP")["ApiId"]
    queue = "https://sqs.us-east-1.amazonaws.com/123456789012/q"
    ok = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", PayloadFormatVersion="1.0",
                              IntegrationSubtype="SQS-PurgeQueue", RequestParameters={"QueueUrl": queue})
    assert (ok["IntegrationSubtype"], ok["RequestParameters"]) == ("SQS-PurgeQueue", {"QueueUrl": queue})
    assert error(c.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY",
                 PayloadFormatVersion="1.0", IntegrationSubtype="Kinesis-PutRecord",
                 RequestParameters={"StreamName": "s", "Data": "$request.body"}) == (
        "BadRequestException", "Operation: Kinesis-PutRecord requires enabling passthrough, or "
        "defining all of the following parameters: StreamName, Data, PartitionKey", 400)
    code, msg, _ = error(c.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY",
                         PayloadFormatVersion="2.0", IntegrationSubtype="SQS-PurgeQueue",
                         RequestParameters={"QueueUrl": queue})
    assert code == "BadRequestException" and "payload format version 1.0" in msg
    code, msg, _ = error(c.create_integration, ApiId=api_id, IntegrationType="HTTP_PROXY",
                         IntegrationUri="http://127.0.0.1:9/", IntegrationSubtype="SQS-PurgeQueue",
                         RequestParameters={"QueueUrl": queue})
    assert code == "BadRequestException" and "AWS_PROXY" in msg
    code, msg, _ = error(c.create_integration, ApiId=api_id, IntegrationType="AWS_PROXY",
                         PayloadFormatVersion="1.0", IntegrationSubtype="SQS-PurgeQueue",
                         RequestParameters={"QueueUrl": "$request.nowhere.q"})
    assert code == "BadRequestException" and msg.startswith("Invalid mapping expression specified")
    assert error(c.update_integration, ApiId=api_id, IntegrationId=ok["IntegrationId"],
                 RequestParameters={"QueueUrl": queue, "MessageBody": "x"}) == (
        "BadRequestException", "Parameter: MessageBody is not a valid parameter for operation: "
        "SQS-PurgeQueue. Valid parameters are: QueueUrl, Region", 400)
    assert c.get_integration(ApiId=api_id, IntegrationId=ok["IntegrationId"])["RequestParameters"] == \
        {"QueueUrl": queue}
    assert len(c.get_integrations(ApiId=api_id)["Items"]) == 1
    # a route on it exports as AWS writes it, and the export imports back unchanged
    c.create_route(ApiId=api_id, RouteKey="POST /purge", Target=f"integrations/{ok['IntegrationId']}")
    exported = json.loads(c.export_api(ApiId=api_id, Specification="OAS30", OutputType="JSON")["body"].read())
    integ = exported["paths"]["/purge"]["post"]["x-amazon-apigateway-integration"]
    assert (integ["type"], integ["integrationSubtype"], integ["requestParameters"], integ["payloadFormatVersion"]) \
        == ("aws_proxy", "SQS-PurgeQueue", {"QueueUrl": queue}, "1.0")
    again = c.import_api(Body=json.dumps(exported))["ApiId"]
    (copy,) = c.get_integrations(ApiId=again)["Items"]
    assert (copy["IntegrationSubtype"], copy["RequestParameters"]) == ("SQS-PurgeQueue", {"QueueUrl": queue})
    # ImportApi checks a subtype the same way
    doc = {"openapi": "3.0.1", "info": {"title": "imported", "version": "1"}, "paths": {"/q": {"post": {
        "x-amazon-apigateway-integration": {"type": "aws_proxy", "integrationSubtype": "SQS-SendMessage",
                                            "payloadFormatVersion": "1.0",
                                            "requestParameters": {"QueueUrl": queue}}}}}}
    code, msg, _ = error(c.import_api, Body=json.dumps(doc))
    assert code == "BadRequestException" and "requires enabling passthrough" in msg, msg


# --- quick create, stages, auto deploy ---------------------------------------------------

def test_quick_create_and_auto_deploy(server):
    c = v2(server)
    api = c.create_api(Name="quick", ProtocolType="HTTP", Target=LAMBDA)
    api_id = api["ApiId"]
    (route,) = c.get_routes(ApiId=api_id)["Items"]
    assert route["RouteKey"] == "$default" and route["ApiGatewayManaged"] is True
    (integ,) = c.get_integrations(ApiId=api_id)["Items"]
    assert (integ["IntegrationType"], integ["PayloadFormatVersion"]) == ("AWS_PROXY", "2.0")
    assert route["Target"] == f"integrations/{integ['IntegrationId']}"
    (stage,) = c.get_stages(ApiId=api_id)["Items"]
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert stage["ApiGatewayManaged"] is True and stage["DeploymentId"]
    (dep,) = c.get_deployments(ApiId=api_id)["Items"]
    assert dep["AutoDeployed"] is True and dep["DeploymentStatus"] == "DEPLOYED"

    # any change deploys the autoDeploy stage again
    c.create_route(ApiId=api_id, RouteKey="GET /more", Target=route["Target"])
    stage2 = c.get_stage(ApiId=api_id, StageName="$default")
    assert stage2["DeploymentId"] != stage["DeploymentId"]
    assert "Successfully deployed" in stage2["LastDeploymentStatusMessage"]
    assert len(c.get_deployments(ApiId=api_id)["Items"]) == 2
    assert error(c.create_deployment, ApiId=api_id, StageName="$default")[0] == "BadRequestException"

    # quick create's route and target change through UpdateApi
    c.update_api(ApiId=api_id, RouteKey="GET /q", Target="https://example.com/x")
    keys = {r["RouteKey"] for r in c.get_routes(ApiId=api_id)["Items"]}
    assert keys == {"GET /q", "GET /more"}
    integ = c.get_integration(ApiId=api_id, IntegrationId=integ["IntegrationId"])
    assert (integ["IntegrationType"], integ["IntegrationUri"]) == ("HTTP_PROXY", "https://example.com/x")
    plain = c.create_api(Name="plain", ProtocolType="HTTP")["ApiId"]
    assert error(c.update_api, ApiId=plain, Target=LAMBDA)[0] == "BadRequestException"


def test_stages_deployments_and_settings(server):
    c = v2(server)
    api_id = c.create_api(Name="s", ProtocolType="HTTP")["ApiId"]
    stage = c.create_stage(ApiId=api_id, StageName="dev", StageVariables={"host": "a.example"},
                           DefaultRouteSettings={"ThrottlingRateLimit": 10.0, "ThrottlingBurstLimit": 5},
                           RouteSettings={"GET /pets": {"ThrottlingRateLimit": 1.0,
                                                        "DetailedMetricsEnabled": True}},
                           AccessLogSettings={"DestinationArn": "/tmp/x.log",
                                              "Format": "$context.requestId $context.status"})
    assert "DeploymentId" not in stage and stage["StageVariables"] == {"host": "a.example"}
    assert error(c.create_stage, ApiId=api_id, StageName="dev")[0] == "ConflictException"
    assert error(c.create_stage, ApiId=api_id, StageName="bad name")[0] == "BadRequestException"
    assert error(c.create_stage, ApiId=api_id, StageName="x", AccessLogSettings={
        "DestinationArn": "relative.log", "Format": "$context.requestId"})[0] == "BadRequestException"
    dep = c.create_deployment(ApiId=api_id, StageName="dev", Description="first")
    assert c.get_stage(ApiId=api_id, StageName="dev")["DeploymentId"] == dep["DeploymentId"]
    assert c.get_deployment(ApiId=api_id, DeploymentId=dep["DeploymentId"])["Description"] == "first"
    c.update_deployment(ApiId=api_id, DeploymentId=dep["DeploymentId"], Description="second")
    assert c.get_deployment(ApiId=api_id, DeploymentId=dep["DeploymentId"])["Description"] == "second"
    assert error(c.delete_deployment, ApiId=api_id, DeploymentId=dep["DeploymentId"])[0] == "BadRequestException"
    c.delete_route_settings(ApiId=api_id, StageName="dev", RouteKey="GET /pets")
    c.delete_access_log_settings(ApiId=api_id, StageName="dev")
    st = c.get_stage(ApiId=api_id, StageName="dev")
    assert st["RouteSettings"] == {} and "AccessLogSettings" not in st
    assert error(c.delete_route_settings, ApiId=api_id, StageName="dev",
                 RouteKey="GET /pets")[0] == "NotFoundException"
    c.update_stage(ApiId=api_id, StageName="dev", AutoDeploy=True)
    assert c.get_stage(ApiId=api_id, StageName="dev")["DeploymentId"] != dep["DeploymentId"]
    c.reset_authorizers_cache(ApiId=api_id, StageName="dev")
    c.delete_stage(ApiId=api_id, StageName="dev")
    c.delete_deployment(ApiId=api_id, DeploymentId=dep["DeploymentId"])
    assert error(c.get_stage, ApiId=api_id, StageName="dev")[0] == "NotFoundException"


# --- models, vpc links, tags --------------------------------------------------------------

def test_models_and_model_template(server):
    c = v2(server)
    api_id = c.create_api(Name="m", ProtocolType="HTTP")["ApiId"]
    schema = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                             "tags": {"type": "array", "items": {"type": "string"}}}}
    m = c.create_model(ApiId=api_id, Name="Pet", Schema=json.dumps(schema))
    assert m["ContentType"] == "application/json"
    template = c.get_model_template(ApiId=api_id, ModelId=m["ModelId"])["Value"]
    assert template.startswith("#set($inputRoot = $input.path('$'))")
    assert '"name" : "$inputRoot.name"' in template and '"age" : $inputRoot.age' in template
    assert "#foreach($elem1 in $inputRoot.tags)" in template
    assert error(c.create_model, ApiId=api_id, Name="Pet", Schema="{}")[0] == "ConflictException"
    assert error(c.create_model, ApiId=api_id, Name="bad-name", Schema="{}")[0] == "BadRequestException"
    assert error(c.create_model, ApiId=api_id, Name="Bad", Schema="{nope")[0] == "BadRequestException"
    c.update_model(ApiId=api_id, ModelId=m["ModelId"], Description="a pet")
    assert c.get_models(ApiId=api_id)["Items"][0]["Description"] == "a pet"
    c.delete_model(ApiId=api_id, ModelId=m["ModelId"])
    assert error(c.get_model, ApiId=api_id, ModelId=m["ModelId"])[0] == "NotFoundException"


def test_vpc_links_and_tags(server):
    c = v2(server)
    link = c.create_vpc_link(Name="pets", SubnetIds=["subnet-1"], Tags={"a": "1"})
    # no config here names an upstream group "pets"
    assert link["VpcLinkStatus"] == "FAILED" and "pets" in link["VpcLinkStatusMessage"]
    assert link["VpcLinkVersion"] == "V2"
    api_id = c.create_api(Name="p", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
                                 ConnectionType="VPC_LINK", ConnectionId=link["VpcLinkId"],
                                 IntegrationUri="arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/x/1/2")
    assert integ["ConnectionId"] == link["VpcLinkId"]
    assert error(c.create_integration, ApiId=api_id, IntegrationType="HTTP_PROXY",
                 ConnectionType="VPC_LINK", ConnectionId="nope",
                 IntegrationUri="http://x")[0] == "BadRequestException"
    assert error(c.delete_vpc_link, VpcLinkId=link["VpcLinkId"])[0] == "ConflictException"
    assert c.update_vpc_link(VpcLinkId=link["VpcLinkId"], Name="pets2")["Name"] == "pets2"

    arn = f"arn:aws:apigateway:us-east-1::/apis/{api_id}"
    c.tag_resource(ResourceArn=arn, Tags={"team": "x", "env": "dev"})
    c.untag_resource(ResourceArn=arn, TagKeys=["env"])
    assert c.get_tags(ResourceArn=arn)["Tags"] == {"team": "x"}
    assert c.get_api(ApiId=api_id)["Tags"] == {"team": "x"}
    link_arn = f"arn:aws:apigateway:us-east-1::/vpclinks/{link['VpcLinkId']}"
    assert c.get_tags(ResourceArn=link_arn)["Tags"] == {"a": "1"}
    assert error(c.get_tags, ResourceArn="arn:aws:apigateway:us-east-1::/apis/nope")[0] == "NotFoundException"


# --- domains ---------------------------------------------------------------------------

def test_domain_shared_with_rest_base_path_mappings(server):
    c, rest = v2(server), server.client()
    http_id = c.create_api(Name="h", ProtocolType="HTTP", Target="http://127.0.0.1:9/")["ApiId"]
    rest_api = rest.create_rest_api(name="r")
    res = rest.get_resources(restApiId=rest_api["id"])["items"][0]
    rest.put_method(restApiId=rest_api["id"], resourceId=res["id"], httpMethod="GET", authorizationType="NONE")
    rest.put_integration(restApiId=rest_api["id"], resourceId=res["id"], httpMethod="GET", type="MOCK")
    rest.create_deployment(restApiId=rest_api["id"], stageName="prod")

    dom = c.create_domain_name(DomainName="api.example.com", DomainNameConfigurations=[
        {"CertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/abc", "EndpointType": "REGIONAL"}])
    assert dom["DomainNameConfigurations"][0]["DomainNameStatus"] == "AVAILABLE"
    assert dom["RoutingMode"] == "API_MAPPING_ONLY"
    assert rest.get_domain_name(domainName="api.example.com")["regionalCertificateArn"].endswith("/abc")
    rest.create_base_path_mapping(domainName="api.example.com", basePath="rest",
                                  restApiId=rest_api["id"], stage="prod")
    m = c.create_api_mapping(DomainName="api.example.com", ApiId=http_id, Stage="$default",
                             ApiMappingKey="http/v1")
    assert m["ApiMappingKey"] == "http/v1"
    mappings = {x["ApiMappingKey"]: x for x in c.get_api_mappings(DomainName="api.example.com")["Items"]}
    assert mappings["rest"]["ApiId"] == rest_api["id"] and mappings["http/v1"]["ApiId"] == http_id
    assert {b["basePath"] for b in rest.get_base_path_mappings(domainName="api.example.com")["items"]} == \
        {"rest", "http/v1"}
    assert error(c.create_api_mapping, DomainName="api.example.com", ApiId=http_id, Stage="$default",
                 ApiMappingKey="rest")[0] == "ConflictException"
    assert error(c.create_api_mapping, DomainName="api.example.com", ApiId=http_id,
                 Stage="nope")[0] == "BadRequestException"
    up = c.update_api_mapping(DomainName="api.example.com", ApiMappingId=m["ApiMappingId"],
                              ApiId=http_id, ApiMappingKey="")
    assert up["ApiMappingKey"] == "" and up["ApiMappingId"] == m["ApiMappingId"]
    assert rest.get_base_path_mapping(domainName="api.example.com", basePath="(none)")["restApiId"] == http_id
    rest_id = mappings["rest"]["ApiMappingId"]
    assert c.get_api_mapping(DomainName="api.example.com", ApiMappingId=rest_id)["Stage"] == "prod"
    assert error(c.delete_api, ApiId=http_id)[0] == "BadRequestException"

    rule = c.create_routing_rule(DomainName="api.example.com", Priority=10, Conditions=[
        {"MatchHeaders": {"AnyOf": [{"Header": "x-version", "ValueGlob": "beta*"}]}}],
        Actions=[{"InvokeApi": {"ApiId": http_id, "Stage": "$default", "StripBasePath": False}}])
    assert rule["Priority"] == 10 and rule["RoutingRuleArn"].endswith(rule["RoutingRuleId"])
    assert error(c.create_routing_rule, DomainName="api.example.com", Priority=10, Conditions=[],
                 Actions=[{"InvokeApi": {"ApiId": http_id, "Stage": "$default"}}])[0] == "ConflictException"
    c.put_routing_rule(DomainName="api.example.com", RoutingRuleId=rule["RoutingRuleId"], Priority=20,
                       Conditions=[{"MatchBasePaths": {"AnyOf": ["beta"]}}],
                       Actions=[{"InvokeApi": {"ApiId": rest_api["id"], "Stage": "prod"}}])
    (listed,) = c.list_routing_rules(DomainName="api.example.com")["RoutingRules"]
    assert listed["Priority"] == 20
    c.update_domain_name(DomainName="api.example.com", RoutingMode="ROUTING_RULE_THEN_API_MAPPING")
    assert c.get_domain_name(DomainName="api.example.com")["RoutingMode"] == "ROUTING_RULE_THEN_API_MAPPING"
    c.delete_routing_rule(DomainName="api.example.com", RoutingRuleId=rule["RoutingRuleId"])
    c.delete_api_mapping(DomainName="api.example.com", ApiMappingId=m["ApiMappingId"])
    c.delete_domain_name(DomainName="api.example.com")
    assert error(c.get_domain_name, DomainName="api.example.com")[0] == "NotFoundException"


# --- OpenAPI ---------------------------------------------------------------------------

def _built(c) -> str:
    api_id = c.create_api(Name="built", ProtocolType="HTTP", Version="1.2",
                          CorsConfiguration={"AllowOrigins": ["https://a.example"], "AllowMethods": ["GET"],
                                             "MaxAge": 60})["ApiId"]
    jwt = c.create_authorizer(ApiId=api_id, AuthorizerType="JWT", Name="jwt",
                              IdentitySource=["$request.header.Authorization"],
                              JwtConfiguration={"Issuer": "https://issuer.example", "Audience": ["a"]})
    lam = c.create_authorizer(ApiId=api_id, AuthorizerType="REQUEST", Name="lam", AuthorizerUri=LAMBDA,
                              AuthorizerPayloadFormatVersion="2.0", EnableSimpleResponses=True,
                              IdentitySource=["$request.header.X-User"], AuthorizerResultTtlInSeconds=60)
    h = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="GET",
                             IntegrationUri="http://127.0.0.1:9/pets/{id}",
                             RequestParameters={"overwrite:header.x-a": "$request.header.b"},
                             ResponseParameters={"404": {"overwrite:statuscode": "410"}})
    f = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=LAMBDA,
                             PayloadFormatVersion="2.0", TimeoutInMillis=5000)
    c.create_route(ApiId=api_id, RouteKey="GET /pets/{id}", Target=f"integrations/{h['IntegrationId']}",
                   AuthorizationType="JWT", AuthorizerId=jwt["AuthorizerId"], AuthorizationScopes=["read"])
    c.create_route(ApiId=api_id, RouteKey="$default", Target=f"integrations/{f['IntegrationId']}",
                   AuthorizationType="CUSTOM", AuthorizerId=lam["AuthorizerId"])
    return api_id


def _shape(c, api_id) -> dict:
    """What makes an API the same API, ids aside."""
    auth = {a["AuthorizerId"]: a for a in c.get_authorizers(ApiId=api_id)["Items"]}
    integ = {i["IntegrationId"]: i for i in c.get_integrations(ApiId=api_id)["Items"]}
    out = {"api": {k: v for k, v in c.get_api(ApiId=api_id).items()
                   if k in ("Name", "Version", "CorsConfiguration", "ProtocolType")}}
    for r in c.get_routes(ApiId=api_id)["Items"]:
        i = dict(integ[r["Target"].split("/")[1]])
        i.pop("IntegrationId")
        a = dict(auth[r["AuthorizerId"]]) if r.get("AuthorizerId") else None
        if a:
            a.pop("AuthorizerId")
        out[r["RouteKey"]] = {"integration": i, "authorizer": a,
                              "type": r["AuthorizationType"], "scopes": r.get("AuthorizationScopes")}
    return out


def test_export_and_reimport_give_the_same_api(server):
    c = v2(server)
    api_id = _built(c)
    exported = c.export_api(ApiId=api_id, Specification="OAS30", OutputType="YAML")["body"].read()
    doc = yaml.safe_load(exported)
    assert doc["openapi"].startswith("3.0") and doc["x-amazon-apigateway-importexport-version"] == "1.0"
    assert "$default" in doc["paths"] and "x-amazon-apigateway-cors" in doc
    imported = c.import_api(Body=exported.decode())
    assert _shape(c, imported["ApiId"]) == _shape(c, api_id)
    as_json = c.export_api(ApiId=api_id, Specification="OAS30", OutputType="JSON",
                           IncludeExtensions=False)["body"].read()
    assert b"x-amazon-apigateway-integration" not in as_json and b"-authorizer" not in as_json

    # reimport overwrites the definition; the id and stages stay
    other = c.create_api(Name="other", ProtocolType="HTTP", Target=LAMBDA)["ApiId"]
    c.reimport_api(ApiId=other, Body=exported.decode())
    assert _shape(c, other) == _shape(c, api_id)
    assert [s["StageName"] for s in c.get_stages(ApiId=other)["Items"]] == ["$default"]
    # the stage's deployment is what a stage export shows
    staged = yaml.safe_load(c.export_api(ApiId=other, Specification="OAS30", OutputType="YAML",
                                         StageName="$default")["body"].read())
    assert set(staged["paths"]) == {"/pets/{id}", "$default"}
    code, msg, _ = error(c.import_api, Body="openapi: 3.0.1\ninfo: {}\n")
    assert code == "BadRequestException" and "info.title" in msg
    assert error(c.export_api, ApiId=api_id, Specification="RAML", OutputType="JSON")[0] == "BadRequestException"
