"""fastgate.compile.apis: API state -> mounts and routes (compile rules, canary split,
gateway response inheritance, conflicts), checked on the compiled objects."""

from __future__ import annotations

import pytest

from fastgate.compile.apis import Compiler, compile_state, gateway_responses
from fastgate.control.state import State, merge_states
from fastgate._core.pipeline import Integration
from fastgate.compile.config import Limits
from fastgate.phases.access import Services


def api_doc(api_id: str, *, created: float = 0.0, protocol: str = "REST", **extra) -> dict:
    doc = {
        "id": api_id, "name": api_id, "createdDate": created, "protocolType": protocol,
        "resources": [
            {"id": "root", "path": "/"},
            {"id": "r1", "parentId": "root", "pathPart": "pets", "path": "/pets", "resourceMethods": {
                "GET": {"httpMethod": "GET", "methodIntegration": {
                    "type": "HTTP_PROXY", "httpMethod": "GET",
                    "uri": "http://${stageVariables.host}:8080/pets"}},
                "POST": {"httpMethod": "POST", "methodIntegration": {
                    "type": "MOCK", "requestTemplates": {"application/json": '{"statusCode": 201}'},
                    "integrationResponses": {
                        "201": {"statusCode": "201", "selectionPattern": "201",
                                "responseTemplates": {"application/json": '{"created": true}'}},
                        "default": {"statusCode": "200"}}}},
            }},
        ],
    }
    doc.update(extra)
    return doc


def state_with(*apis, stages=None, deployments=None) -> State:
    st = State()
    for api in apis:
        st.apis[api["id"]] = api
        st.deployments[api["id"]] = {"d1": {"id": "d1", "api": api}}
        st.stages[api["id"]] = {"prod": {"stageName": "prod", "deploymentId": "d1",
                                         "variables": {"host": "127.0.0.1"}}}
    for (api_id, name), stage in (stages or {}).items():
        st.stages[api_id][name] = stage
    for (api_id, dep_id), dep in (deployments or {}).items():
        st.deployments[api_id][dep_id] = dep
    return st


def compile_(state, functions=None):
    routes, series, groups = [], [], {}
    c = Compiler(routes=routes, series=series, groups=groups, metrics=None, limits=Limits(),
                 functions=functions)
    return c, routes, groups, compile_state(state, c)


def test_stage_mounts_and_route_integrations():
    c, routes, groups, (host_mounts, api_mounts, any_mounts, stages) = compile_(state_with(api_doc("aaaa")))
    assert [m.prefix for m in any_mounts] == [b"/restapis/aaaa/prod/_user_request_", b"/prod"]
    assert [m.prefix for m in api_mounts[b"aaaa"]] == [b"/prod"]
    assert host_mounts == {}
    (stage,) = stages
    assert stage.rest and stage.stage == "prod" and stage.deployment_id == "d1"
    get = stage.router.match(b"x", b"GET", b"/pets")[0]
    assert get.integration == Integration.INTEGRATION_HTTP
    assert list(groups) == ["http://127.0.0.1:8080"]          # the stage variable filled the host
    assert get.first_byte_timeout == 29.0                       # AWS's default timeoutInMillis
    post = stage.router.match(b"x", b"POST", b"/pets")[0]
    assert post.integration == Integration.INTEGRATION_MOCK
    assert post.mock_status == 201 and post.mock_body.source == '{"created": true}'
    assert stage.router.match(b"x", b"DELETE", b"/pets") is None
    assert c.warnings == []


def test_default_stage_is_the_root_and_http_apis_404():
    api = api_doc("bbbb", protocol="HTTP")
    st = state_with(api, stages={("bbbb", "$default"): {"stageName": "$default", "deploymentId": "d1",
                                                        "variables": {"host": "h"}}})
    _, _, _, (_, _, any_mounts, stages) = compile_(st)
    assert any_mounts[-1].prefix == b""           # the root mount is tried last
    assert all(not s.rest for s in stages)


def test_stage_name_conflict_goes_to_the_older_api_with_a_warning():
    old, new = api_doc("old1", created=1.0), api_doc("new1", created=2.0)
    c, _, _, (_, api_mounts, any_mounts, _) = compile_(state_with(new, old))
    plain = [m for m in any_mounts if m.prefix == b"/prod"]
    assert len(plain) == 1 and plain[0].main.api_id == "old1"
    assert api_mounts[b"new1"][0].main.api_id == "new1"        # still reachable on its host
    assert any("new1" in w and "already serves API old1" in w for w in c.warnings)


def test_canary_split_and_variable_overrides():
    api = api_doc("cccc")
    canary_api = api_doc("cccc")
    canary_api["resources"][1]["resourceMethods"].pop("POST")
    st = state_with(api, deployments={("cccc", "d2"): {"id": "d2", "api": canary_api}})
    st.stages["cccc"]["prod"]["canarySettings"] = {
        "percentTraffic": 25.0, "deploymentId": "d2", "stageVariableOverrides": {"host": "10.0.0.9"}}
    _, _, groups, (_, _, any_mounts, stages) = compile_(st)
    mount = next(m for m in any_mounts if m.prefix == b"/prod")
    assert mount.canary.is_canary and mount.canary.deployment_id == "d2"
    assert mount.canary.variables == {"host": "10.0.0.9"} and mount.main.variables == {"host": "127.0.0.1"}
    assert "http://10.0.0.9:8080" in groups
    # the canary deployment's routes: no POST there
    assert mount.canary.router.match(b"x", b"POST", b"/pets") is None
    picks = [mount.pick_stage().is_canary for _ in range(20000)]
    share = sum(picks) / len(picks)
    assert 0.23 < share < 0.27


def test_missing_deployment_or_canary_is_a_warning_not_a_crash():
    st = state_with(api_doc("dddd"))
    st.stages["dddd"]["beta"] = {"stageName": "beta", "deploymentId": "zzz"}
    st.stages["dddd"]["prod"]["canarySettings"] = {"percentTraffic": 10, "deploymentId": "nope"}
    c, _, _, (_, _, _, stages) = compile_(st)
    assert [s.stage for s in stages] == ["prod"]
    assert any("beta" in w and "'zzz' does not exist" in w for w in c.warnings)
    assert any("canary deployment 'nope'" in w for w in c.warnings)


def test_domain_mappings_longest_base_path_first():
    st = state_with(api_doc("eeee"))
    st.stages["eeee"]["dev"] = {"stageName": "dev", "deploymentId": "d1", "variables": {"host": "h"}}
    st.domains["api.example.com"] = {"domainName": "api.example.com"}
    st.mappings["api.example.com"] = {
        "(none)": {"basePath": "(none)", "restApiId": "eeee", "stage": "dev"},
        "v1/admin": {"basePath": "v1/admin", "restApiId": "eeee", "stage": "prod"},
        "v1": {"basePath": "v1", "restApiId": "eeee", "stage": "prod"},
        "gone": {"basePath": "gone", "restApiId": "eeee", "stage": "nope"},
    }
    c, _, _, (host_mounts, _, _, _) = compile_(st)
    assert [m.prefix for m in host_mounts[b"api.example.com"]] == [b"/v1/admin", b"/v1", b""]
    assert any("gone" in w for w in c.warnings)


def test_gateway_responses_inherit_default_4xx_and_render_templates():
    warnings = []
    table = gateway_responses({"gatewayResponses": {
        "DEFAULT_4XX": {"responseType": "DEFAULT_4XX",
                        "responseParameters": {"gatewayresponse.header.Access-Control-Allow-Origin": "'*'"},
                        "responseTemplates": {"application/json": '{"error": $context.error.messageString}'}},
        "MISSING_AUTHENTICATION_TOKEN": {"statusCode": "404"},
        "DEFAULT_5XX": {"statusCode": "503",
                        "responseParameters": {"gatewayresponse.querystring.x": "'1'"}},
    }}, warnings.append)
    mat = table["MISSING_AUTHENTICATION_TOKEN"]
    assert mat.status == 404 and mat.body is None                      # its own spec: no template
    thr = table["THROTTLED"]                                            # inherits DEFAULT_4XX
    assert thr.status == 429 and thr.error_type == b"TooManyRequestsException"
    assert thr.headers[0][0] == b"Access-Control-Allow-Origin"
    assert thr.body.source == '{"error": $context.error.messageString}'
    assert table["INTEGRATION_TIMEOUT"].status == 503                   # DEFAULT_5XX's status
    assert table["UNAUTHORIZED"].message == "Unauthorized"
    assert any("only headers" in w for w in warnings)


def test_merge_states_rejects_duplicate_ids():
    a = state_with(api_doc("ffff"))
    with pytest.raises(ValueError, match="ffff"):
        merge_states(a, state_with(api_doc("ffff")))
    assert set(merge_states(a, state_with(api_doc("gggg"))).apis) == {"ffff", "gggg"}


def test_unservable_integrations_answer_500_with_a_warning():
    api = api_doc("hhhh")
    methods = api["resources"][1]["resourceMethods"]
    methods["PUT"] = {"httpMethod": "PUT", "methodIntegration": {
        "type": "AWS", "uri": "arn:aws:apigateway:us-east-1:s3:path/bucket"}}       # no httpMethod
    methods["POST"] = {"httpMethod": "POST", "methodIntegration": {
        "type": "AWS", "httpMethod": "POST", "uri": "arn:aws:apigateway:us-east-1:nosuchservice:action/Go"}}
    methods["DELETE"] = {"httpMethod": "DELETE", "methodIntegration": {
        "type": "AWS_PROXY", "integrationSubtype": "SQS-SendMessage", "requestParameters": {
            "QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q"}}}                  # no MessageBody
    methods["GET"]["methodIntegration"]["uri"] = "ftp://nope"
    c = Compiler(routes=[], series=[], groups={}, metrics=None, limits=Limits(), services=Services())
    (_, _, _, (stage,)) = compile_state(state_with(api), c)
    for method in (b"PUT", b"POST", b"DELETE", b"GET"):
        r = stage.router.match(b"x", method, b"/pets")[0]
        assert r.integration == Integration.INTEGRATION_MOCK and r.mock_status == 500
    assert any("PUT /pets: an AWS integration needs its httpMethod" in w for w in c.warnings)
    assert any("'nosuchservice' is unknown" in w for w in c.warnings)
    assert any("Operation: SQS-SendMessage requires enabling passthrough" in w for w in c.warnings)
    assert any("ftp://nope" in w for w in c.warnings)


def test_aws_integrations_compile_to_python_runners():
    api = api_doc("iiii")
    methods = api["resources"][1]["resourceMethods"]
    methods["POST"] = {"httpMethod": "POST", "methodIntegration": {
        "type": "AWS", "httpMethod": "POST", "credentials": "arn:aws:iam::123456789012:role/r",
        "uri": "arn:aws:apigateway:eu-west-1:dynamodb:action/PutItem",
        "requestTemplates": {"application/json": '{"TableName": "t"}'},
        "integrationResponses": {"200": {"statusCode": "200"}}, "timeoutInMillis": 1500}}
    c = Compiler(routes=[], series=[], groups={}, metrics=None, limits=Limits(), services=Services())
    (_, _, _, (stage,)) = compile_state(state_with(api), c)
    r = stage.router.match(b"x", b"POST", b"/pets")[0]
    assert r.integration == Integration.INTEGRATION_PYTHON and r.first_byte_timeout == 1.5
    runner = r.runner
    assert (runner.uri.region, runner.service.name, runner.role_arn) == (
        "eu-west-1", "dynamodb", "arn:aws:iam::123456789012:role/r")
    assert runner.target == "DynamoDB_20120810.PutItem"
    assert runner.json_type == "application/x-amz-json-1.0"


def test_aws_proxy_function_arn_takes_stage_variables():
    api = api_doc("ffff")
    api["resources"][1]["resourceMethods"]["GET"]["methodIntegration"] = {
        "type": "AWS_PROXY", "httpMethod": "POST",
        "uri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
               "arn:aws:lambda:us-east-1:123456789012:function:${stageVariables.fn}/invocations"}
    st = state_with(api)
    st.stages["ffff"]["prod"]["variables"]["fn"] = "pets_v2"
    st.stages["ffff"]["beta"] = {"stageName": "beta", "deploymentId": "d1", "variables": {"fn": "pets_v3"}}
    c, _, _, (_, _, _, stages) = compile_(st, functions={"pets_v2": None, "pets_v3": None})
    by_stage = {s.stage: s.router.match(b"x", b"GET", b"/pets")[0] for s in stages}
    assert by_stage["prod"].integration == Integration.INTEGRATION_FUNCTION
    assert by_stage["prod"].function_name == "pets_v2"
    assert by_stage["beta"].function_name == "pets_v3"


def test_http_non_proxy_integrations_compile_their_mapping():
    from fastgate.phases.vtl import HttpMapping
    api = api_doc("tttt")
    get = api["resources"][1]["resourceMethods"]["GET"]["methodIntegration"]
    get.update(type="HTTP", requestTemplates={"application/json": '{"q": "$input.params(\'q\')"}'},
               integrationResponses={"200": {"statusCode": "200", "responseTemplates": {
                   "application/json": "$input.json('$.items')"}}})
    c, _, _, (_, _, _, (stage,)) = compile_(state_with(api))
    route = stage.router.match(b"x", b"GET", b"/pets")[0]
    assert route.integration == Integration.INTEGRATION_HTTP
    assert isinstance(route.http_map, HttpMapping) and route.http_map.maps_request
    # http_proxy relays as it is, whatever templates it carries
    get.update(type="HTTP_PROXY")
    c, _, _, (_, _, _, (stage,)) = compile_(state_with(api))
    assert stage.router.match(b"x", b"GET", b"/pets")[0].http_map is None
    # a template that does not parse: a warning, and the method answers 500
    get.update(type="HTTP", requestTemplates={"application/json": "#if($x"})
    c, _, _, (_, _, _, (stage,)) = compile_(state_with(api))
    assert stage.router.match(b"x", b"GET", b"/pets")[0].mock_status == 500
    assert any("mapping template does not parse" in w for w in c.warnings)


def test_authorizer_function_arn_takes_stage_variables():
    from fastgate.phases.access import Services
    api = api_doc("aaut")
    api["authorizers"] = [{
        "id": "au1", "name": "tok", "type": "TOKEN", "identitySource": "method.request.header.Authorization",
        "authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                         "arn:aws:lambda:us-east-1:123456789012:function:${stageVariables.authfn}/invocations"}]
    get = api["resources"][1]["resourceMethods"]["GET"]
    get.update(authorizationType="CUSTOM", authorizerId="au1")
    st = state_with(api)
    st.stages["aaut"]["prod"]["variables"]["authfn"] = "auth_prod"
    routes, series, groups = [], [], {}
    c = Compiler(routes=routes, series=series, groups=groups, metrics=None, limits=Limits(),
                 services=Services())
    (_, _, _, (stage,)) = compile_state(st, c)
    access = stage.router.match(b"x", b"GET", b"/pets")[0].access
    assert [chk.auth.function for chk in access.checks] == ["auth_prod"]
