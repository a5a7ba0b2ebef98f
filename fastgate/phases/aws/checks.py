"""AWS's create-time checks of AWS integrations, light enough for the control plane (no
botocore): an HTTP API integration subtype's parameters (``check_subtype``, for the OpenAPI
importer and apigatewayv2's CreateIntegration / UpdateIntegration) and a REST API's AWS
integration URI (``check_aws_uri``, for the importer and PutIntegration). Each returns None
when the value is acceptable, else the BadRequestException message AWS answers with."""

from __future__ import annotations

import re

__all__ = ["SUBTYPES", "check_subtype", "check_aws_uri", "AWS_URI"]

AWS_URI = re.compile(r"^arn:(aws[a-z-]*):apigateway:([a-z0-9-]+):([A-Za-z0-9.-]+):(action|path)/(.+)$")


def check_aws_uri(uri: str) -> str | None:
    """An AWS integration's uri: arn:aws:apigateway:REGION:SERVICE:{action|path}/..."""
    if "${stageVariables." in uri:
        return None          # checked once the stage's variables are substituted
    if not uri.startswith("arn:aws") or ":apigateway:" not in uri:
        return "Invalid ARN specified in the request"
    if AWS_URI.match(uri) is None:
        return "AWS ARN for integration must contain path or action"
    return None


# subtype -> (service, operation, required parameters, optional parameters), in AWS's order.
# "Region" is optional everywhere: the service's region (else the gateway's, aws.region).
SUBTYPES = {
    "EventBridge-PutEvents": ("events", "PutEvents", ("Detail", "DetailType", "Source"),
                              ("Time", "EventBusName", "Resources", "Region", "TraceHeader")),
    "SQS-SendMessage": ("sqs", "SendMessage", ("QueueUrl", "MessageBody"),
                        ("DelaySeconds", "MessageAttributes", "MessageDeduplicationId",
                         "MessageGroupId", "MessageSystemAttributes", "Region")),
    "SQS-ReceiveMessage": ("sqs", "ReceiveMessage", ("QueueUrl",),
                           ("AttributeNames", "MaxNumberOfMessages", "MessageAttributeNames",
                            "ReceiveRequestAttemptId", "VisibilityTimeout", "WaitTimeSeconds",
                            "Region")),
    "SQS-DeleteMessage": ("sqs", "DeleteMessage", ("ReceiptHandle", "QueueUrl"), ("Region",)),
    "SQS-PurgeQueue": ("sqs", "PurgeQueue", ("QueueUrl",), ("Region",)),
    "AppConfig-GetConfiguration": ("appconfig", "GetConfiguration",
                                   ("Application", "Environment", "Configuration", "ClientId"),
                                   ("ClientConfigurationVersion", "Region")),
    "Kinesis-PutRecord": ("kinesis", "PutRecord", ("StreamName", "Data", "PartitionKey"),
                          ("SequenceNumberForOrdering", "ExplicitHashKey", "Region")),
    "StepFunctions-StartExecution": ("stepfunctions", "StartExecution", ("StateMachineArn",),
                                     ("Name", "Input", "Region")),
    "StepFunctions-StartSyncExecution": ("stepfunctions", "StartSyncExecution", ("StateMachineArn",),
                                         ("Name", "Input", "Region", "TraceHeader")),
    "StepFunctions-StopExecution": ("stepfunctions", "StopExecution", ("ExecutionArn",),
                                    ("Cause", "Error", "Region")),
}

def check_subtype(subtype: str, params: dict | None) -> str | None:
    """AWS's create-time check of a subtype and its requestParameters: None when they are
    acceptable, else the BadRequestException message AWS answers with."""
    spec = SUBTYPES.get(subtype)
    if spec is None:
        return (f"Integration subtype {subtype} is not supported. Supported subtypes: "
                + ", ".join(SUBTYPES))
    _, _, required, optional = spec
    params = params or {}
    unknown = [k for k in params if k not in required and k not in optional]
    if unknown:
        return (f"Parameter: {unknown[0]} is not a valid parameter for operation: {subtype}. "
                f"Valid parameters are: {', '.join(required + optional)}")
    missing = [k for k in required if not params.get(k)]
    if missing:
        return (f"Operation: {subtype} requires enabling passthrough, or defining all of the "
                f"following parameters: {', '.join(required)}")
    for key, value in params.items():
        if not isinstance(value, str):
            return f"Invalid mapping expression specified: {key} must be a string"
        problem = _expression_problem(value)
        if problem is not None:
            return f"Invalid mapping expression specified: {value}: {problem}"
    return None


# --- mapping expressions (HTTP API parameter mapping) ---------------------------------

VARIABLE = re.compile(r"\$\{([^}]*)\}|\$((?:request\.(?:body|header|querystring|path)|context|stageVariables)"
                  r"(?:\.[A-Za-z0-9_$@\[\]'*-]+)*)")
_KNOWN = re.compile(r"^(request\.body(\..+|\[.+)?|request\.(header|querystring|path)\.[^.\s]+|"
                    r"context\.[A-Za-z0-9_.]+|stageVariables\.[A-Za-z0-9_]+)$")


_UNKNOWN_REQUEST = re.compile(r"\$\{?request\.(?!(?:body|header|querystring|path)\b)[A-Za-z0-9_]*")


def _expression_problem(value: str) -> str | None:
    unknown = _UNKNOWN_REQUEST.search(value)
    if unknown is not None:
        return f"${unknown.group(0).lstrip('${')} is not a request, context or stage variable"
    for m in VARIABLE.finditer(value):
        name = m.group(1) if m.group(1) is not None else m.group(2)
        if not _KNOWN.match(name):
            return f"${name} is not a request, context or stage variable"
    return None
