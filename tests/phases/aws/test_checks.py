"""AWS's create-time checks (fastgate/phases/aws/checks.py): integration subtypes' parameters
and AWS integration URIs, with AWS's messages."""

from __future__ import annotations

import pytest

from fastgate.phases.aws.checks import SUBTYPES, check_aws_uri, check_subtype


@pytest.mark.parametrize("subtype", sorted(SUBTYPES))
def test_every_subtype_accepts_its_required_parameters_and_refuses_without_one(subtype):
    _, _, required, optional = SUBTYPES[subtype]
    params = {name: "$request.body.x" for name in required}
    assert check_subtype(subtype, params) is None
    assert check_subtype(subtype, dict(params, **{name: "'static'" for name in optional})) is None
    for name in required:
        missing = {k: v for k, v in params.items() if k != name}
        assert check_subtype(subtype, missing) == (
            f"Operation: {subtype} requires enabling passthrough, or defining all of the "
            f"following parameters: {', '.join(required)}")


def test_the_reference_tables_required_parameters():
    # the developer guide's "Integration subtype reference", required columns
    assert {k: v[2] for k, v in SUBTYPES.items()} == {
        "EventBridge-PutEvents": ("Detail", "DetailType", "Source"),
        "SQS-SendMessage": ("QueueUrl", "MessageBody"),
        "SQS-ReceiveMessage": ("QueueUrl",),
        "SQS-DeleteMessage": ("ReceiptHandle", "QueueUrl"),
        "SQS-PurgeQueue": ("QueueUrl",),
        "AppConfig-GetConfiguration": ("Application", "Environment", "Configuration", "ClientId"),
        "Kinesis-PutRecord": ("StreamName", "Data", "PartitionKey"),
        "StepFunctions-StartExecution": ("StateMachineArn",),
        "StepFunctions-StartSyncExecution": ("StateMachineArn",),
        "StepFunctions-StopExecution": ("ExecutionArn",),
    }


def test_unknown_subtypes_parameters_and_variables_are_refused():
    assert check_subtype("SQS-SendMessageBatch", {}).startswith(
        "Integration subtype SQS-SendMessageBatch is not supported")
    assert check_subtype("SQS-PurgeQueue", {"QueueUrl": "u", "MessageBody": "b"}) == (
        "Parameter: MessageBody is not a valid parameter for operation: SQS-PurgeQueue. "
        "Valid parameters are: QueueUrl, Region")
    assert "$request.bodyx" in check_subtype("SQS-PurgeQueue", {"QueueUrl": "${request.bodyx}"})
    # a $request. variable of no known source is refused, braced or not (not sent as text)
    assert check_subtype("SQS-PurgeQueue", {"QueueUrl": "$request.nowhere.q"}) == (
        "Invalid mapping expression specified: $request.nowhere.q: $request.nowhere is not a "
        "request, context or stage variable")
    assert "$request.query" in check_subtype("SQS-PurgeQueue", {"QueueUrl": "https://q/$request.query.x"})
    assert check_subtype("SQS-PurgeQueue", {"QueueUrl": "${request.header.q}-${stageVariables.v}"}) is None


def test_aws_integration_uris():
    assert check_aws_uri("arn:aws:apigateway:us-east-1:sqs:path/123456789012/q") is None
    assert check_aws_uri("arn:aws:apigateway:us-east-1:dynamodb:action/PutItem") is None
    assert check_aws_uri("arn:aws:apigateway:${stageVariables.region}:sqs:path/1/q") is None
    assert check_aws_uri("arn:aws:apigateway:us-east-1:sqs:queue/1/q") == \
        "AWS ARN for integration must contain path or action"
    assert check_aws_uri("https://sqs.us-east-1.amazonaws.com/1/q") == "Invalid ARN specified in the request"
