"""An integration subtype's parameters per request (fastgate/phases/aws/subtypes.py): HTTP API
mapping expressions rendered, typed as botocore's model says, serialized in the protocol."""

from __future__ import annotations

import json

from fastgate.phases.access import Services
from fastgate.phases.aws.subtypes import Expression, SubtypeIntegration

REQUEST = {"body": json.dumps({"message": "hi", "order": {"id": 7}, "n": 3}),
           "headers": {"x-user": "ada"}, "query": {"q": "x y"}, "path": {"id": "42"},
           "context": {"requestId": "r-1", "identity": {"sourceIp": "127.0.0.1"}},
           "stage": {"queue": "https://sqs.us-east-1.amazonaws.com/1/q"}}


def render(source: str):
    return Expression(source).render(dict(REQUEST))


def test_expressions():
    assert render("$request.body") == REQUEST["body"]
    assert render("$request.body.message") == "hi"                  # a string as it is
    assert render("$request.body.order") == '{"id":7}'              # anything else as JSON
    assert render("$request.body.n") == "3"
    assert render("$request.header.X-User") == "ada"
    assert render("$request.querystring.q") == "x y"
    assert render("run-${request.path.id}-${context.requestId}") == "run-42-r-1"
    assert render("$context.identity.sourceIp") == "127.0.0.1"
    assert render("$stageVariables.queue") == REQUEST["stage"]["queue"]
    assert render("'static' text") == "'static' text"
    assert render("$request.body.missing") is None                  # left out of the call
    assert render("$request.header.none") is None


def runner(subtype: str, params: dict) -> SubtypeIntegration:
    return SubtypeIntegration(subtype, params, None, "test", Services(), 10)


def test_values_take_the_models_types_and_member_names():
    r = runner("SQS-ReceiveMessage", {"QueueUrl": "$stageVariables.queue", "MaxNumberOfMessages": "$request.body.n",
                                      "AttributeNames": "All", "MessageAttributeNames": '["a", "b"]'})
    params, region = r.operation_input(dict(REQUEST))
    assert params == {"QueueUrl": REQUEST["stage"]["queue"], "MaxNumberOfMessages": 3,
                      "AttributeNames": ["All"], "MessageAttributeNames": ["a", "b"]} and region is None
    r = runner("StepFunctions-StartExecution", {"StateMachineArn": "arn:sm", "Input": "$request.body",
                                                "Region": "eu-west-1"})
    params, region = r.operation_input(dict(REQUEST))
    assert params == {"stateMachineArn": "arn:sm", "input": REQUEST["body"]} and region == "eu-west-1"
    r = runner("Kinesis-PutRecord", {"StreamName": "s", "Data": "$request.body.message", "PartitionKey": "p"})
    params, _ = r.operation_input(dict(REQUEST))
    assert params["Data"] == b"hi"
    body = r.serializer.serialize_to_request(params, r.operation)["body"]
    assert json.loads(body)["Data"] == "aGk="                       # base64 on the wire, as the SDKs send it


def test_eventbridge_parameters_are_one_entry():
    r = runner("EventBridge-PutEvents", {"Detail": "$request.body.order", "DetailType": "order",
                                         "Source": "shop", "Resources": '["arn:x"]'})
    params, _ = r.operation_input(dict(REQUEST))
    assert params == {"Entries": [{"Detail": '{"id":7}', "DetailType": "order", "Source": "shop",
                                   "Resources": ["arn:x"]}]}


def test_appconfig_is_a_rest_json_get():
    r = runner("AppConfig-GetConfiguration", {"Application": "app", "Environment": "$request.path.id",
                                              "Configuration": "cfg", "ClientId": "$context.requestId"})
    params, _ = r.operation_input(dict(REQUEST))
    req = r.serializer.serialize_to_request(params, r.operation)
    assert (req["method"], req["url_path"]) == ("GET", "/applications/app/environments/42/configurations/cfg")
    assert req["query_string"] == {"client_id": "r-1"}
