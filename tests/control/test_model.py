"""fastgate.control.model without HTTP: the State interface and the rules of the operations."""

from __future__ import annotations

import json
import re

import pytest

from fastgate.control.api import load_service_model
from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model import OPERATIONS, Model
from fastgate.control.model.gateway_responses import default_gateway_response
from fastgate.control.names import GATEWAY_RESPONSE_STATUS
from fastgate.control.state import State
from fastgate.control.store import Store


@pytest.fixture
def model(tmp_path):
    return Model(Store.in_dir(tmp_path))


def deployable(model):
    api = model.create_rest_api({"name": "a"})
    root = api["rootResourceId"]
    model.put_method({"restApiId": api["id"], "resourceId": root, "httpMethod": "get",
                      "authorizationType": "NONE"})
    model.put_integration({"restApiId": api["id"], "resourceId": root, "httpMethod": "GET",
                           "type": "MOCK"})
    return api


def test_state_shape(model):
    api = deployable(model)
    dep = model.create_deployment({"restApiId": api["id"], "stageName": "prod"})
    s = model.state
    assert isinstance(s, State) and s.version == model.store.version()
    doc = s.apis[api["id"]]
    assert doc["protocolType"] == "REST" and doc["resources"][0]["path"] == "/"
    assert doc["resources"][0]["resourceMethods"]["GET"]["methodIntegration"]["type"] == "MOCK"
    frozen = s.deployments[api["id"]][dep["id"]]
    assert set(frozen) == {"id", "createdDate", "apiSummary", "api"}
    assert frozen["api"]["resources"] == doc["resources"]
    assert s.stages[api["id"]]["prod"]["deploymentId"] == dep["id"]
    json.dumps(s.apis), json.dumps(s.deployments), json.dumps(s.stages)   # plain JSON all the way


def test_ids(model):
    api = model.create_rest_api({"name": "a"})
    assert re.fullmatch(r"[a-z0-9]{10}", api["id"])
    assert re.fullmatch(r"[a-z0-9]{10}", api["rootResourceId"])
    api = deployable(model)
    assert re.fullmatch(r"[a-z0-9]{6}", model.create_deployment({"restApiId": api["id"]})["id"])


def test_failed_operation_changes_nothing(model):
    api = deployable(model)
    model.create_deployment({"restApiId": api["id"], "stageName": "prod"})
    before, version = json.dumps(model.state.stages), model.state.version
    with pytest.raises(BadRequest):
        model.update_stage({"restApiId": api["id"], "stageName": "prod", "patchOperations": [
            {"op": "replace", "path": "/variables/ok", "value": "1"},
            {"op": "replace", "path": "/canarySettings/percentTraffic", "value": "200"}]})
    assert json.dumps(model.state.stages) == before and model.state.version == version
    assert model.store.version() == version


def test_errors_are_typed(model):
    with pytest.raises(NotFound) as e:
        model.get_rest_api({"restApiId": "missing"})
    assert (e.value.status, e.value.code) == (404, "NotFoundException")
    api = model.create_rest_api({"name": "a"})
    model.create_resource({"restApiId": api["id"], "parentId": api["rootResourceId"], "pathPart": "x"})
    with pytest.raises(Conflict) as e:
        model.create_resource({"restApiId": api["id"], "parentId": api["rootResourceId"], "pathPart": "x"})
    assert (e.value.status, e.value.code) == (409, "ConflictException")


def test_greedy_path_part_is_last(model):
    api = model.create_rest_api({"name": "a"})
    proxy = model.create_resource({"restApiId": api["id"], "parentId": api["rootResourceId"],
                                   "pathPart": "{proxy+}"})
    assert proxy["path"] == "/{proxy+}"
    with pytest.raises(BadRequest):
        model.create_resource({"restApiId": api["id"], "parentId": proxy["id"], "pathPart": "x"})
    with pytest.raises(BadRequest):   # one variable per parent
        model.create_resource({"restApiId": api["id"], "parentId": api["rootResourceId"], "pathPart": "{id}"})


def test_gateway_response_table_covers_aws_types():
    spec = load_service_model()
    assert set(GATEWAY_RESPONSE_STATUS) == set(spec["shapes"]["GatewayResponseType"]["enum"])
    assert default_gateway_response("DEFAULT_5XX").get("statusCode") is None
    assert default_gateway_response("INTEGRATION_TIMEOUT")["statusCode"] == "504"
    assert default_gateway_response("QUOTA_EXCEEDED")["statusCode"] == "429"


def test_operations_are_botocore_operations():
    spec = load_service_model()
    assert set(OPERATIONS) <= set(spec["operations"])
    for name, method in OPERATIONS.items():
        assert callable(getattr(Model, method)), name


def test_method_settings_and_remove(model):
    api = deployable(model)
    model.create_deployment({"restApiId": api["id"], "stageName": "prod"})
    st = model.update_stage({"restApiId": api["id"], "stageName": "prod", "patchOperations": [
        {"op": "replace", "path": "/*/*/logging/loglevel", "value": "INFO"},
        {"op": "replace", "path": "/~1pets~1{id}/GET/caching/ttlInSeconds", "value": "60"}]})
    assert st["methodSettings"]["*/*"]["loggingLevel"] == "INFO"
    assert st["methodSettings"]["~1pets~1{id}/GET"]["cacheTtlInSeconds"] == 60
    st = model.update_stage({"restApiId": api["id"], "stageName": "prod", "patchOperations": [
        {"op": "remove", "path": "/~1pets~1{id}/GET"}]})
    assert "~1pets~1{id}/GET" not in st["methodSettings"]


def test_put_integration_checks_an_aws_uri_as_aws_does(model):
    api = deployable(model)
    base = {"restApiId": api["id"], "resourceId": api["rootResourceId"], "httpMethod": "GET",
            "type": "AWS", "integrationHttpMethod": "POST"}
    with pytest.raises(BadRequest, match="AWS ARN for integration must contain path or action"):
        model.put_integration(dict(base, uri="arn:aws:apigateway:us-east-1:sqs:queue/1/q"))
    with pytest.raises(BadRequest, match="Invalid ARN specified in the request"):
        model.put_integration(dict(base, uri="https://sqs.us-east-1.amazonaws.com/1/q"))
    out = model.put_integration(dict(base, uri="arn:aws:apigateway:us-east-1:sqs:path/1/q",
                                     credentials="arn:aws:iam::123456789012:role/r"))
    assert (out["type"], out["httpMethod"], out["credentials"]) == ("AWS", "POST", "arn:aws:iam::123456789012:role/r")
    # UpdateIntegration's patch is checked the same way, and a refused one changes nothing
    where = {k: base[k] for k in ("restApiId", "resourceId", "httpMethod")}
    with pytest.raises(BadRequest, match="AWS ARN for integration must contain path or action"):
        model.update_integration(dict(where, patchOperations=[
            {"op": "replace", "path": "/uri", "value": "arn:aws:apigateway:us-east-1:sqs:queue/1/q"}]))
    assert model.get_integration(where)["uri"] == "arn:aws:apigateway:us-east-1:sqs:path/1/q"
    out = model.update_integration(dict(where, patchOperations=[
        {"op": "replace", "path": "/uri", "value": "arn:aws:apigateway:us-east-1:sqs:action/SendMessage"}]))
    assert out["uri"] == "arn:aws:apigateway:us-east-1:sqs:action/SendMessage"
